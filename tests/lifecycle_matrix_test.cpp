// SPDX-License-Identifier: MIT
// The task lifecycle matrix (after Tokio's combinatorial lifecycle test):
//   workers {1, 2} x outcome {value, throws}
//   x handle {dropped early, dropped after completion, joined}
//   x cancel {never, before start, while suspended, after completion, twice}
// Each combination asserts the exact outcome: what join() gives, done() /
// cancelled() / cancelling(), cancel()'s return values, whether the body ran,
// how often the unhandled-exception hook fired, RAII cleanup, and that no
// frame leaks.
#include <latch>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

enum class outcome_mode { value, throws };
enum class handle_mode { dropped_early, dropped_after_completion, joined };
enum class cancel_mode { never, before_start, while_suspended, after_completion, twice };

struct matrix_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct matrix_state {
  std::atomic<bool> body_ran{false};
  std::latch at_suspend{1};
  raii_counter rc;
};

weft::task<int> matrix_body(matrix_state* s, bool throws, bool long_wait) {
  raii_probe g(s->rc);
  s->body_ran.store(true, std::memory_order_relaxed);  // read after the runtime is gone
  s->at_suspend.count_down();
  if (long_wait)
    co_await weft::sleep_for(std::chrono::hours(1));  // only a cancel ends this
  else
    co_await weft::yield();
  if (throws) throw matrix_error("boom");
  co_return 7;
}

weft::task<void> block_worker(std::latch* started, std::latch* release) {
  started->count_down();
  release->wait();  // deliberately blocks this worker thread
  co_return;
}

void PrintTo(outcome_mode m, std::ostream* os) {
  *os << (m == outcome_mode::value ? "value" : "throws");
}
void PrintTo(handle_mode m, std::ostream* os) {
  *os << (m == handle_mode::dropped_early              ? "dropped early"
          : m == handle_mode::dropped_after_completion ? "dropped after completion"
                                                       : "joined");
}
void PrintTo(cancel_mode m, std::ostream* os) {
  const char* names[] = {"never", "before start", "while suspended", "after completion", "twice"};
  *os << names[static_cast<int>(m)];
}

using matrix_param = std::tuple<unsigned, outcome_mode, handle_mode, cancel_mode>;

class LifecycleMatrixTest : public ::testing::TestWithParam<matrix_param> {};

TEST_P(LifecycleMatrixTest, OutcomeIsExactlyAsSpecified) {
  const auto [workers, om, hm, cm] = GetParam();
  watchdog wd(30s);
  frame_baseline frames;

  const bool throws = om == outcome_mode::throws;
  const bool long_wait = cm == cancel_mode::while_suspended || cm == cancel_mode::twice;
  const bool expect_cancelled = cm == cancel_mode::before_start ||
                                cm == cancel_mode::while_suspended || cm == cancel_mode::twice;
  const bool expect_body = cm != cancel_mode::before_start;
  const bool handle_observes = hm == handle_mode::joined;
  const int expect_hook = (!expect_cancelled && throws && !handle_observes) ? 1 : 0;

  matrix_state s;
  // Relaxed, these and the RAII counters: polled as signs of progress, and
  // checked after the runtime was destroyed (its workers joined).
  std::atomic<int> hook_calls{0}, hook_right_type{0};
  std::latch blockers_started{static_cast<std::ptrdiff_t>(workers)}, release{1};
  int r1 = -1, r2 = -1;  // cancel() results: -1 not called, 0 false, 1 true
  {
    weft::runtime_options opts;
    opts.workers = workers;
    opts.unhandled_exception = [&](std::exception_ptr e) {
      hook_calls.fetch_add(1, std::memory_order_relaxed);
      try {
        std::rethrow_exception(e);
      } catch (const matrix_error&) {
        hook_right_type.fetch_add(1, std::memory_order_relaxed);
      } catch (...) {
      }
    };
    weft::runtime rt(opts);

    std::vector<weft::join_handle<void>> blockers;
    if (cm == cancel_mode::before_start) {
      for (unsigned i = 0; i < workers; ++i)
        blockers.push_back(rt.spawn(block_worker(&blockers_started, &release)));
      blockers_started.wait();  // every worker is stuck: the body cannot start
    }

    std::optional<weft::join_handle<int>> h;
    h.emplace(rt.spawn(matrix_body(&s, throws, long_wait)));

    switch (cm) {
      case cancel_mode::never:
      case cancel_mode::after_completion:
        break;
      case cancel_mode::before_start:
        r1 = h->cancel("m");
        release.count_down();
        break;
      case cancel_mode::while_suspended:
        s.at_suspend.wait();
        r1 = h->cancel("m");
        break;
      case cancel_mode::twice:
        s.at_suspend.wait();
        r1 = h->cancel("m");
        r2 = h->cancel("m2");
        break;
    }

    switch (hm) {
      case handle_mode::dropped_early:
        h.reset();
        // Wait (bounded) until the detached task has run its course, so that
        // the runtime's shutdown does not change its outcome.
        if (expect_body) {
          ASSERT_TRUE(
              spin_until([&] { return s.rc.destroyed.load(std::memory_order_relaxed) == 1; }));
          if (expect_hook) {
            ASSERT_TRUE(spin_until(
                [&] { return hook_calls.load(std::memory_order_relaxed) == expect_hook; }));
          }
        }
        break;
      case handle_mode::dropped_after_completion:
        ASSERT_TRUE(wait_done(*h));
        if (cm == cancel_mode::after_completion) r1 = h->cancel("late");
        EXPECT_EQ(h->cancelled(), expect_cancelled);
        h.reset();
        break;
      case handle_mode::joined: {
        if (cm == cancel_mode::after_completion) {
          ASSERT_TRUE(wait_done(*h));
          r1 = h->cancel("late");
        }
        bool got_value = false, got_error = false, got_cancel = false;
        std::string reason;
        cancel_kind kind = cancel_kind::timeout;
        try {
          EXPECT_EQ(h->join(), 7);
          got_value = true;
        } catch (const matrix_error&) {
          got_error = true;
        } catch (const cancelled_error& e) {
          got_cancel = true;
          reason = std::string(e.reason());
          kind = e.kind();
        }
        EXPECT_TRUE(h->done());
        EXPECT_EQ(h->cancelled(), expect_cancelled);
        if (expect_cancelled) {
          EXPECT_TRUE(got_cancel);
          EXPECT_TRUE(reason == "m" || (cm == cancel_mode::twice && reason == "m2")) << reason;
          EXPECT_EQ(kind, cancel_kind::explicit_request);
        } else if (throws) {
          EXPECT_TRUE(got_error);
        } else {
          EXPECT_TRUE(got_value);
        }
        unsigned expect_cancelling = 0;
        if (cm == cancel_mode::before_start || cm == cancel_mode::while_suspended)
          expect_cancelling = 1;
        if (cm == cancel_mode::twice) expect_cancelling = r2 == 1 ? 2 : 1;
        EXPECT_EQ(h->cancelling(), expect_cancelling);
        EXPECT_FALSE(h->cancel("after join"));
        h.reset();
        break;
      }
    }
    if (cm != cancel_mode::before_start) release.count_down();  // (counted down above otherwise)
    for (auto& b : blockers) b.join();
  }

  // cancel() results
  switch (cm) {
    case cancel_mode::never:
      EXPECT_EQ(r1, -1);
      break;
    case cancel_mode::before_start:
    case cancel_mode::while_suspended:
      EXPECT_EQ(r1, 1);
      break;
    case cancel_mode::twice:
      EXPECT_EQ(r1, 1);
      EXPECT_NE(r2, -1);
      break;
    case cancel_mode::after_completion:
      EXPECT_EQ(r1, 0) << "cancel after completion must return false";
      break;
  }
  EXPECT_EQ(s.body_ran.load(std::memory_order_relaxed), expect_body);
  EXPECT_EQ(hook_calls.load(std::memory_order_relaxed), expect_hook)
      << "unhandled-exception hook calls";
  EXPECT_EQ(hook_right_type.load(std::memory_order_relaxed), expect_hook);
  EXPECT_EQ(s.rc.constructed.load(std::memory_order_relaxed), expect_body ? 1 : 0);
  EXPECT_EQ(s.rc.destroyed.load(std::memory_order_relaxed),
            s.rc.constructed.load(std::memory_order_relaxed));
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
}

std::string matrix_name(const ::testing::TestParamInfo<matrix_param>& info) {
  const auto [w, om, hm, cm] = info.param;
  std::string n = "W" + std::to_string(w);
  n += om == outcome_mode::value ? "_Value" : "_Throws";
  switch (hm) {
    case handle_mode::dropped_early:
      n += "_DroppedEarly";
      break;
    case handle_mode::dropped_after_completion:
      n += "_DroppedAfterCompletion";
      break;
    case handle_mode::joined:
      n += "_Joined";
      break;
  }
  switch (cm) {
    case cancel_mode::never:
      n += "_NeverCancelled";
      break;
    case cancel_mode::before_start:
      n += "_CancelBeforeStart";
      break;
    case cancel_mode::while_suspended:
      n += "_CancelWhileSuspended";
      break;
    case cancel_mode::after_completion:
      n += "_CancelAfterCompletion";
      break;
    case cancel_mode::twice:
      n += "_CancelTwice";
      break;
  }
  return n;
}

// Every combination but one pair: "dropped early" x "cancel after completion"
// does not exist (cancelling after completion needs the handle until then; it
// is the "dropped after completion" case).  56 cases.
std::vector<matrix_param> matrix_params() {
  std::vector<matrix_param> v;
  for (unsigned w : {1u, 2u})
    for (auto om : {outcome_mode::value, outcome_mode::throws})
      for (auto hm :
           {handle_mode::dropped_early, handle_mode::dropped_after_completion, handle_mode::joined})
        for (auto cm : {cancel_mode::never, cancel_mode::before_start, cancel_mode::while_suspended,
                        cancel_mode::after_completion, cancel_mode::twice})
          if (!(hm == handle_mode::dropped_early && cm == cancel_mode::after_completion))
            v.emplace_back(w, om, hm, cm);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Matrix, LifecycleMatrixTest, ::testing::ValuesIn(matrix_params()),
                         matrix_name);

}  // namespace
