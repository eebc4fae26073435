// SPDX-License-Identifier: MIT
// Black-box tests of weft::cancellation_source / cancellation_token /
// cancellation_registration: mass cancellation of bound tasks, child sources
// following their parent (kind parent, the parent's reason and location),
// callbacks that run exactly once (also when registration or deregistration
// races cancel() on another thread), waits outside weft interrupted through
// the token, and provenance through a source, a nested await and a group.
#include <weft/cancellation.hpp>
#include <weft/task_group.hpp>

#include <barrier>
#include <condition_variable>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// What bound tasks saw.  Each task checks the cancellation against the
// expectation itself (reason/kind/line) and counts.  Relaxed, every access:
// the counters are read after the tasks were joined (or polled as progress);
// `want_line` is stored by the test just before the cancel() whose request
// reaches the task, and that hand-over (release/acquire inside weft) orders
// the store before the task's load.
struct bound_probe {
  std::atomic<int> started{0};
  std::atomic<int> body_ran{0};
  std::atomic<int> matched{0};     // cancelled_error with the expected provenance
  std::atomic<int> mismatched{0};  // cancelled_error with something else
  std::atomic<int> not_cancelled{0};
  std::string want_reason;
  cancel_kind want_kind = cancel_kind::explicit_request;
  std::atomic<unsigned> want_line{0};
  void check(const cancelled_error& e) {
    if (e.reason() == want_reason && e.kind() == want_kind &&
        e.where().line() == want_line.load(std::memory_order_relaxed))
      matched.fetch_add(1, std::memory_order_relaxed);
    else
      mismatched.fetch_add(1, std::memory_order_relaxed);
  }
};

weft::task<int> bound_sleeper(bound_probe* p, std::latch* started) {
  p->started.fetch_add(1, std::memory_order_relaxed);
  p->body_ran.fetch_add(1, std::memory_order_relaxed);
  if (started != nullptr) started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error& e) {
    p->check(e);
    throw;
  }
  p->not_cancelled.fetch_add(1, std::memory_order_relaxed);
  co_return 0;
}

weft::task<std::vector<weft::join_handle<int>>> spawn_bound(bound_probe* p, std::latch* started,
                                                            int n, weft::cancellation_token tok) {
  std::vector<weft::join_handle<int>> hs;
  hs.reserve(n);
  for (int i = 0; i < n; ++i) hs.push_back(weft::spawn(bound_sleeper(p, started), tok));
  co_return hs;
}

TEST(CancellationSourceTest, CancelCancelsEveryBoundTaskAtOnce) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    const int n = 1000;  // spawned bound to the token, and as many bound with bind()
    bound_probe p;
    p.want_reason = "mass cancel";
    p.want_kind = cancel_kind::explicit_request;
    std::latch started(2 * n);
    weft::runtime rt(with_workers(2));
    weft::cancellation_source src;
    auto hs = rt.block_on(spawn_bound(&p, &started, n, src.token()));
    std::vector<weft::join_handle<int>> more;
    std::vector<weft::cancellation_registration> regs;
    for (int i = 0; i < n; ++i) {
      more.push_back(rt.spawn(bound_sleeper(&p, &started)));
      regs.push_back(src.token().bind(more.back()));
    }
    started.wait();
    const auto t0 = clock_type::now();
    p.want_line.store(__LINE__ + 1, std::memory_order_relaxed);  // the next line
    EXPECT_TRUE(src.cancel("mass cancel"));
    for (auto* v : {&hs, &more}) {
      for (auto& h : *v) {
        EXPECT_THROW((void)h.join(), cancelled_error);
        EXPECT_TRUE(h.cancelled());
      }
    }
    EXPECT_LT(seconds_since(t0), 10.0);
    EXPECT_EQ(p.matched.load(std::memory_order_relaxed), 2 * n);
    EXPECT_EQ(p.mismatched.load(std::memory_order_relaxed), 0);
    EXPECT_EQ(p.not_cancelled.load(std::memory_order_relaxed), 0);
    EXPECT_FALSE(src.cancel("again")) << "a source is cancelled once";
    EXPECT_EQ(src.token().reason(), "mass cancel");
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(CancellationSourceTest, ChildSourcesFollowTheirParentWithKindParent) {
  watchdog dog(std::chrono::seconds(60));
  bound_probe p;
  p.want_reason = "top";
  p.want_kind = cancel_kind::parent;
  std::latch started(20);
  weft::runtime rt(with_workers(2));
  weft::cancellation_source parent;
  weft::cancellation_source child(parent.token());
  weft::cancellation_source grandchild(child.token());
  auto a = rt.block_on(spawn_bound(&p, &started, 10, child.token()));
  auto b = rt.block_on(spawn_bound(&p, &started, 10, grandchild.token()));
  started.wait();
  EXPECT_FALSE(grandchild.cancel_requested());
  p.want_line.store(__LINE__ + 1, std::memory_order_relaxed);  // the next line
  EXPECT_TRUE(parent.cancel("top"));
  for (auto* v : {&a, &b})
    for (auto& h : *v) EXPECT_THROW((void)h.join(), cancelled_error);
  EXPECT_EQ(p.matched.load(std::memory_order_relaxed), 20);
  EXPECT_EQ(p.mismatched.load(std::memory_order_relaxed), 0);
  for (const auto* s : {&child, &grandchild}) {
    auto t = s->token();
    EXPECT_TRUE(t.cancel_requested());
    EXPECT_EQ(t.kind(), cancel_kind::parent);
    EXPECT_EQ(t.reason(), "top");
    EXPECT_EQ(t.where().line(), p.want_line.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(parent.token().kind(), cancel_kind::explicit_request);
  EXPECT_FALSE(child.cancel("too late")) << "already cancelled through its parent";
}

TEST(CancellationSourceTest, CancellingAChildDoesNotTouchItsParent) {
  weft::cancellation_source parent;
  weft::cancellation_source child(parent.token());
  weft::cancellation_source sibling(parent.token());
  EXPECT_TRUE(child.cancel("child only"));
  EXPECT_TRUE(child.cancel_requested());
  EXPECT_EQ(child.token().kind(), cancel_kind::explicit_request);
  EXPECT_FALSE(parent.cancel_requested());
  EXPECT_FALSE(sibling.cancel_requested());
  EXPECT_TRUE(parent.cancel("now the parent"));
  EXPECT_TRUE(sibling.cancel_requested());
  EXPECT_EQ(child.token().reason(), "child only") << "the first cancellation stays";
}

TEST(CancellationSourceTest, ChildOfACancelledParentIsBornCancelled) {
  weft::cancellation_source parent;
  unsigned line = __LINE__ + 1;
  parent.cancel("before the child");
  weft::cancellation_source child(parent.token());
  EXPECT_TRUE(child.cancel_requested());
  EXPECT_EQ(child.token().kind(), cancel_kind::parent);
  EXPECT_EQ(child.token().reason(), "before the child");
  EXPECT_EQ(child.token().where().line(), line);
}

TEST(CancellationSourceTest, DefaultTokenIsNeverCancelledAndRegistersNothing) {
  weft::cancellation_token t;
  EXPECT_FALSE(t.can_be_cancelled());
  EXPECT_FALSE(t.cancel_requested());
  EXPECT_EQ(t.reason(), "");
  int calls = 0;
  auto reg = t.on_cancel([&] { ++calls; });
  EXPECT_FALSE(reg.active());
  EXPECT_NO_THROW(t.throw_if_cancel_requested());
  EXPECT_EQ(calls, 0);
  weft::cancellation_source root_from_default(t);
  EXPECT_TRUE(root_from_default.cancel("root"));
  EXPECT_EQ(root_from_default.token().kind(), cancel_kind::explicit_request);
}

// ------------------------------------------------------------ callbacks

TEST(CancellationSourceTest, CallbackRunsExactlyOnceOnCancel) {
  weft::cancellation_source src;
  // Relaxed: read before the cancelling thread starts and after it joined.
  std::atomic<int> calls{0};
  std::thread::id ran_on;
  auto reg = src.token().on_cancel([&] {
    calls.fetch_add(1, std::memory_order_relaxed);
    ran_on = std::this_thread::get_id();
  });
  EXPECT_TRUE(reg.active());
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 0);
  std::thread t([&] { src.cancel("from another thread"); });
  t.join();
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
  EXPECT_NE(ran_on, std::this_thread::get_id()) << "runs on the cancelling thread";
  src.cancel("again");
  reg.reset();
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
}

TEST(CancellationSourceTest, CallbackRegisteredAfterCancelRunsAtOnceOnTheRegisteringThread) {
  weft::cancellation_source src;
  src.cancel("early");
  int calls = 0;
  std::thread::id ran_on;
  auto reg = src.token().on_cancel([&] {
    ++calls;
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(calls, 1) << "ran inside on_cancel()";
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  src.cancel("again");
  EXPECT_EQ(calls, 1);
}

TEST(CancellationSourceTest, DeregisteredCallbackNeverRuns) {
  weft::cancellation_source src;
  int calls = 0;
  {
    auto reg = src.token().on_cancel([&] { ++calls; });
  }
  auto reg2 = src.token().on_cancel([&] { ++calls; });
  reg2 = weft::cancellation_registration();  // move-assign resets
  src.cancel();
  EXPECT_EQ(calls, 0);
}

// Registration on one thread racing cancel() on another, 10^4 times: the
// callback runs exactly once every time.
TEST(CancellationSourceTest, RegistrationRacingCancelRunsTheCallbackExactlyOnce) {
  watchdog dog(std::chrono::seconds(60));
  const int rounds = static_cast<int>(scaled(10'000, 2'000));
  std::vector<std::unique_ptr<weft::cancellation_source>> sources(rounds);
  for (auto& s : sources) s = std::make_unique<weft::cancellation_source>();
  std::vector<std::atomic<int>> calls(rounds);
  std::vector<weft::cancellation_registration> regs(rounds);
  std::barrier sync(2);
  std::thread canceller([&] {
    for (int i = 0; i < rounds; ++i) {
      sync.arrive_and_wait();
      sources[i]->cancel("race");
    }
  });
  for (int i = 0; i < rounds; ++i) {
    std::atomic<int>* c = &calls[i];
    sync.arrive_and_wait();
    // Relaxed: each count is read after the canceller was joined.
    regs[i] = sources[i]->token().on_cancel([c] { c->fetch_add(1, std::memory_order_relaxed); });
  }
  canceller.join();
  int wrong = 0;
  for (int i = 0; i < rounds; ++i) wrong += calls[i].load(std::memory_order_relaxed) != 1;
  EXPECT_EQ(wrong, 0) << "callbacks that did not run exactly once";
}

// Deregistration racing cancel(): once reset() returns, the callback is not
// running and never runs again; it ran at most once.
TEST(CancellationSourceTest, DeregistrationRacingCancelIsSafe) {
  watchdog dog(std::chrono::seconds(60));
  const int rounds = static_cast<int>(scaled(10'000, 2'000));
  std::barrier sync(2);
  std::vector<std::unique_ptr<weft::cancellation_source>> sources(rounds);
  for (auto& s : sources) s = std::make_unique<weft::cancellation_source>();
  struct slot {
    std::atomic<int> calls{0};
    std::atomic<bool> running{false};
    std::atomic<bool> deregistered{false};
    std::atomic<int> after_reset{0};  // callback started after reset() returned
  };
  std::vector<slot> slots(rounds);
  std::thread canceller([&] {
    for (int i = 0; i < rounds; ++i) {
      sync.arrive_and_wait();
      sources[i]->cancel("race");
    }
  });
  int ran_during_or_after = 0;
  for (int i = 0; i < rounds; ++i) {
    slot* s = &slots[i];
    // seq_cst for `deregistered` and `running`: the checks rely on one total
    // order of the callback's and this thread's accesses -- a callback that
    // started after reset() returned must see `deregistered`, and one still
    // running after it must show `running`.  `calls`: relaxed, read after the
    // canceller was joined.
    auto reg = sources[i]->token().on_cancel([s] {
      if (s->deregistered.load(std::memory_order_seq_cst))
        s->after_reset.fetch_add(1, std::memory_order_relaxed);
      s->running.store(true, std::memory_order_seq_cst);
      s->calls.fetch_add(1, std::memory_order_relaxed);
      s->running.store(false, std::memory_order_seq_cst);
    });
    sync.arrive_and_wait();
    reg.reset();
    s->deregistered.store(true, std::memory_order_seq_cst);
    ran_during_or_after += s->running.load(std::memory_order_seq_cst) ? 1 : 0;
  }
  canceller.join();
  int bad = 0;
  for (auto& s : slots)
    bad += (s.calls.load(std::memory_order_relaxed) > 1) +
           s.after_reset.load(std::memory_order_relaxed);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(ran_during_or_after, 0) << "a callback was still running after reset() returned";
}

// A wait outside weft (a std::condition_variable_any waiting with the token's
// std::stop_token, and a hand-made queue woken from a callback) is interrupted.
TEST(CancellationSourceTest, TokenInterruptsWaitsOutsideWeft) {
  watchdog dog(std::chrono::seconds(60));
  weft::cancellation_source src;
  std::mutex mu;
  std::condition_variable_any cv;
  bool item = false;
  std::atomic<bool> woke_by_stop{false};
  std::latch waiting(2);
  std::thread a([&] {
    std::unique_lock lk(mu);
    waiting.count_down();
    bool got = cv.wait(lk, src.token().stop_token(), [&] { return item; });
    woke_by_stop.store(!got, std::memory_order_relaxed);  // read after a.join()
  });
  // A queue that does not know stop tokens: the callback wakes it.
  std::mutex qmu;
  std::condition_variable qcv;
  bool interrupted = false;
  auto reg = src.token().on_cancel([&] {
    std::lock_guard lk(qmu);
    interrupted = true;
    qcv.notify_all();
  });
  std::atomic<bool> b_interrupted{false};
  std::thread b([&] {
    std::unique_lock lk(qmu);
    waiting.count_down();
    qcv.wait(lk, [&] { return interrupted; });
    b_interrupted.store(true, std::memory_order_relaxed);  // read after b.join()
  });
  waiting.wait();
  src.cancel("wake the threads");
  a.join();
  b.join();
  EXPECT_TRUE(woke_by_stop.load(std::memory_order_relaxed));
  EXPECT_TRUE(b_interrupted.load(std::memory_order_relaxed));
}

// ------------------------------------------------------------ spawn / bind

weft::task<weft::join_handle<int>> spawn_one_bound(bound_probe* p, weft::cancellation_token tok) {
  co_return weft::spawn(bound_sleeper(p, nullptr), tok);
}

TEST(CancellationSourceTest, SpawnWithACancelledTokenNeverRunsTheBody) {
  watchdog dog(std::chrono::seconds(60));
  bound_probe p;
  p.want_reason = "cancelled before spawn";
  weft::runtime rt(with_workers(2));
  weft::cancellation_source src;
  p.want_line.store(__LINE__ + 1, std::memory_order_relaxed);  // the next line
  src.cancel("cancelled before spawn");
  auto h = rt.block_on(spawn_one_bound(&p, src.token()));
  try {
    (void)h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const cancelled_error& e) {
    EXPECT_EQ(e.reason(), "cancelled before spawn");
    EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
    EXPECT_EQ(e.where().line(), p.want_line.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(p.body_ran.load(std::memory_order_relaxed), 0);
}

TEST(CancellationSourceTest, BindAfterCancelCancelsAtOnceAndARegistrationMayOutliveTheHandle) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    bound_probe p;
    p.want_reason = "later";
    std::latch started(1);
    weft::runtime rt(with_workers(2));
    weft::cancellation_source src;
    // Bound, then the handle is dropped (the task runs on, detached); the
    // registration keeps the frame alive, so cancelling later is safe.
    weft::cancellation_registration reg;
    {
      auto h = rt.spawn(bound_sleeper(&p, &started));
      reg = src.token().bind(h);
    }
    // A second source already cancelled: bind cancels at once.
    weft::cancellation_source early;
    early.cancel("early bind");
    auto h2 = rt.spawn(bound_sleeper(&p, nullptr));
    auto reg2 = early.token().bind(h2);
    EXPECT_THROW((void)h2.join(), cancelled_error);
    started.wait();
    p.want_line.store(__LINE__ + 1, std::memory_order_relaxed);  // the next line
    src.cancel("later");
    EXPECT_TRUE(spin_until([&] { return p.matched.load(std::memory_order_relaxed) == 1; }));
    reg.reset();  // may drop the last reference: the frame goes now
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ provenance

weft::task<int> group_of_sleepers(bound_probe* p, std::latch* started, int n) {
  weft::task_group g;
  for (int i = 0; i < n; ++i) (void)g.spawn(bound_sleeper(p, started));
  co_await g.join();
  co_return 1;
}

weft::task<int> nested_caller(bound_probe* p, std::latch* started, int n) {
  co_return co_await group_of_sleepers(p, started, n);
}

weft::task<weft::join_handle<int>> spawn_nested_bound(bound_probe* p, std::latch* started, int n,
                                                      weft::cancellation_token tok) {
  co_return weft::spawn(nested_caller(p, started, n), tok);
}

TEST(ProvenanceTest, SourceCancellationKeepsItsLineThroughANestedAwaitAndAGroup) {
  watchdog dog(std::chrono::seconds(60));
  const int n = 4;
  bound_probe p;
  p.want_reason = "source says stop";
  p.want_kind = cancel_kind::parent;  // the group's children: cancelled as children
  std::latch started(n);
  weft::runtime rt(with_workers(2));
  weft::cancellation_source parent;
  weft::cancellation_source src(parent.token());
  auto h = rt.block_on(spawn_nested_bound(&p, &started, n, src.token()));
  started.wait();
  p.want_line.store(__LINE__ + 1, std::memory_order_relaxed);  // the next line
  parent.cancel("source says stop");
  try {
    (void)h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const cancelled_error& e) {
    // The bound task: cancelled by `src`, which followed `parent`.
    EXPECT_EQ(e.kind(), cancel_kind::parent);
    EXPECT_EQ(e.reason(), "source says stop");
    EXPECT_EQ(e.where().line(), p.want_line.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(p.matched.load(std::memory_order_relaxed), n);
  EXPECT_EQ(p.mismatched.load(std::memory_order_relaxed), 0);
}

}  // namespace
