// SPDX-License-Identifier: MIT
// Symmetric-transfer depth: a million synchronously completing awaits in one
// task must not overflow the stack in any build.  g++ 12 does not emit
// symmetric transfer as a tail call at -O0/-O1 or under ASan/TSan, where a
// plain implementation overflows an 8 MiB stack below 100k (-O0) or 50k
// (sanitizers) awaits (docs/pitfalls.md); the runtime must trampoline.
//
// The counts stay at 1e6 under the sanitizers too: that is exactly where the
// overflow happens, and each of these tests takes only seconds there.
#include <pthread.h>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

constexpr long kAwaits = 1'000'000;

weft::task<long> trivial(long i) { co_return i; }

constexpr long sum_below(long n) { return n * (n - 1) / 2; }

weft::task<long> million_task_awaits(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += co_await trivial(i);
  co_return sum;
}

class DepthTest : public ::testing::TestWithParam<unsigned> {
 protected:
  // Runs make(n) on a runtime of GetParam() workers: it must return `want`,
  // and no frame may outlive the runtime.
  void expect_result_and_no_frame_left(weft::task<long> (*make)(long), long n, long want) {
    expect_result_leaving_no_frame(GetParam(), [make, n] { return make(n); }, want);
  }
};

TEST_P(DepthTest, MillionSynchronousAwaitsOfTasksDoNotOverflowTheStack) {
  watchdog wd(60s);
  expect_result_and_no_frame_left(million_task_awaits, kAwaits, sum_below(kAwaits));
}

// A nested chain: each level awaits the next, 1e5 frames deep (1e5 frames are
// alive at once, ~10-40 MB), all completing synchronously on the way back.
weft::task<long> nested(long depth) {
  if (depth == 0) co_return 0;
  const long below = co_await nested(depth - 1);
  co_return below + 1;
}

TEST_P(DepthTest, DeeplyNestedAwaitChainCompletesWithoutOverflow) {
  watchdog wd(60s);
  const long depth = 100'000;
  expect_result_and_no_frame_left(nested, depth, depth);
}

// Handles that finished before they are awaited: spawn a batch, let it run
// (yield until every child is done), then await each finished handle.
struct finished_stats {
  long awaited_unfinished = 0;
};

weft::task<long> await_finished_handles(long n, finished_stats* st) {
  const long batch = 1024;
  std::vector<weft::join_handle<long>> hs;
  hs.reserve(batch);
  long sum = 0;
  for (long base = 0; base < n; base += batch) {
    hs.clear();
    const long m = std::min(batch, n - base);
    for (long i = 0; i < m; ++i) hs.push_back(weft::spawn(trivial(base + i)));
    for (;;) {
      bool all = true;
      for (auto& h : hs) {
        if (!h.done()) {
          all = false;
          break;
        }
      }
      if (all) break;
      co_await weft::yield();
    }
    for (auto& h : hs) {
      if (!h.done()) ++st->awaited_unfinished;
      sum += co_await h;
    }
  }
  co_return sum;
}

TEST_P(DepthTest, MillionAwaitsOfAlreadyFinishedHandles) {
  watchdog wd(90s);
  frame_baseline frames;
  {
    finished_stats st;
    weft::runtime rt(with_workers(GetParam()));
    EXPECT_EQ(rt.block_on(await_finished_handles(kAwaits, &st)), sum_below(kAwaits));
    EXPECT_EQ(st.awaited_unfinished, 0);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Spawn a child and await it at once: on this worker the child is usually
// popped back and run inline, which is another synchronous completion.
weft::task<long> spawn_then_await(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    auto h = weft::spawn(trivial(i));
    sum += co_await h;
  }
  co_return sum;
}

TEST_P(DepthTest, MillionSpawnedThenImmediatelyAwaitedChildren) {
  watchdog wd(90s);
  expect_result_and_no_frame_left(spawn_then_await, kAwaits, sum_below(kAwaits));
}

INSTANTIATE_TEST_SUITE_P(Workers, DepthTest, ::testing::Values(1u, 2u),
                         [](const auto& info) { return "Workers" + std::to_string(info.param); });

// Destroying a frame that holds the last handle of another finished task
// destroys that one too, and so on.  With one nested call per link, 10^5
// links dropped at once on a thread with a 2 MiB stack overflow it (SIGSEGV):
// the runtime queues nested destructions on the thread instead.

weft::task<long> link(weft::join_handle<long> prev) {
  long v = 0;
  if (prev.valid()) v = co_await prev;  // `prev` stays in this frame until it is destroyed
  co_return v + 1;
}

template <class F>
void run_on_small_stack(std::size_t bytes, F& f) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, bytes);
  pthread_t t;
  ASSERT_EQ(pthread_create(
                &t, &attr,
                [](void* p) -> void* {
                  (*static_cast<F*>(p))();
                  return nullptr;
                },
                &f),
            0);
  pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
}

TEST(DepthTest, DroppingTheLastHandleOfALongChainOfFinishedTasksDoesNotRecurse) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  const weft_test::frame_baseline frames;
  const long n = 100'000;
  {
    weft::join_handle<long> last;
    weft::runtime rt(weft_test::with_workers(2));
    for (long i = 0; i < n; ++i) last = rt.spawn(link(std::move(last)));
    EXPECT_EQ(last.join(), n);  // every link is done; each frame holds the previous one
    auto drop = [&last] { last = {}; };
    run_on_small_stack(2u << 20, drop);  // 10^5 nested destructions would need far more
    EXPECT_FALSE(last.valid());
  }
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
}

}  // namespace
