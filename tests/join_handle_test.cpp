// SPDX-License-Identifier: MIT
// join_handle: joining a task inline on the joiner's worker, and what dropping
// handles frees.
//
// House rules (tests/test_support.hpp): a watchdog in every test, no wall-clock
// sleeps as synchronisation, coroutines are free functions taking their state
// by pointer, that state is declared before the runtime, counts are scaled down
// under sanitizers.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// The inline join takes the child from the bottom of the joiner's own deque
// and runs it.  A child there may have started already: a task that cancels
// its sleeping child pushes the woken child onto its own deque.  Started again
// instead of resumed, it would count as cancelled before it started: its catch
// block would never run and the joiner would get cancelled_error.
// Deterministic (one worker).

// Relaxed, both: `asleep` is polled as a sign of progress (one worker), and
// `caught` is read after block_on().
struct woken_child {
  std::atomic<bool> asleep{false};
  std::atomic<int> caught{0};
};

weft::task<std::string> sleeps_until_cancelled(woken_child* s) {
  try {
    s->asleep.store(true, std::memory_order_relaxed);
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    s->caught.fetch_add(1, std::memory_order_relaxed);
    co_return "Canceled";
  }
  co_return "Finished";
}

weft::task<std::string> cancel_sleeping_child_then_join(woken_child* s) {
  weft::join_handle<std::string> h = weft::spawn(sleeps_until_cancelled(s));
  // One worker: once the flag is up, the child has run into its sleep.
  while (!s->asleep.load(std::memory_order_relaxed)) co_await weft::yield();
  h.cancel("stop");      // wakes the child onto this worker's own deque
  co_return co_await h;  // taken inline: it must resume the child, not start it
}

TEST(JoinHandleTest, InlineJoinOfAChildWokenByItsCancelResumesItSoItsCatchBlockRuns) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  for (int round = 0; round < 20; ++round) {
    woken_child s;
    weft::runtime rt(weft_test::with_workers(1));
    try {
      EXPECT_EQ(rt.block_on(cancel_sleeping_child_then_join(&s)), "Canceled");
    } catch (const weft::cancelled_error& e) {
      ADD_FAILURE() << "the joiner got cancelled_error (" << e.what()
                    << "): the woken child was treated as never started";
    }
    EXPECT_EQ(s.caught.load(std::memory_order_relaxed), 1) << "the child's catch block did not run";
    if (::testing::Test::HasFailure()) break;
  }
}

// The inline join must publish the child's outcome with kDone (a release):
// done() / cancelled() on another thread may otherwise see kDone before the
// outcome.  The test thread polls the handle of a child that is joined inline
// and reads its outcome.  Plain x86-64 builds cannot tell (a relaxed and a
// release store are the same instruction there); ThreadSanitizer reports a
// data race between the child's write of promise::result and cancelled()'s
// read when the store is relaxed.

struct inline_observer {
  std::atomic<weft::join_handle<int>*> child{nullptr};
  std::atomic<bool> seen{false};
};

weft::task<int> join_child_inline(inline_observer* o) {
  weft::join_handle<int> h = weft::spawn(weft_test::value_task(8));
  o->child.store(&h, std::memory_order_release);
  int v = co_await h;  // one worker: inline
  while (!o->seen.load(std::memory_order_acquire)) std::this_thread::yield();
  co_return v;
}

TEST(JoinHandleTest, DoneSeenFromAnotherThreadDuringAnInlineJoinComesWithTheOutcome) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(weft_test::with_workers(1));
  const long rounds = scaled(200, 50);
  for (long r = 0; r < rounds; ++r) {
    inline_observer o;
    weft::join_handle<int> j = rt.spawn(join_child_inline(&o));
    weft::join_handle<int>* child = nullptr;
    await_true([&] { return (child = o.child.load(std::memory_order_acquire)) != nullptr; });
    await_true([&] { return child->done(); });
    EXPECT_FALSE(child->cancelled());  // reads the outcome the child wrote
    o.seen.store(true, std::memory_order_release);
    EXPECT_EQ(j.join(), 8);
  }
}

// join_handle::reset frees a finished frame inline when its value was taken
// and its parameters own nothing (promise_base::plain_params), and through
// destroy_task otherwise.  Both must free every frame and run every parameter's
// destructor once; a parameter of incomplete type must not stop a coroutine
// from compiling (the promise's constructor looks at the parameters' types).
struct counted_param {
  std::atomic<int>* destroyed;
  explicit counted_param(std::atomic<int>* d) : destroyed(d) {}
  counted_param(counted_param&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  ~counted_param() {
    // Relaxed: read after the runtime is gone.
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
};
weft::task<long> plain_leaf(int a, long b) { co_return a + b; }
weft::task<long> owning_leaf(counted_param p, int a) {
  (void)p;
  co_return a;
}
struct never_defined;
weft::task<long> takes_incomplete(never_defined& x) {
  (void)&x;
  co_return 1;
}
weft::task<long> awaits_both_kinds(std::atomic<int>* destroyed, int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i) {
    auto a = weft::spawn(plain_leaf(i, 1));
    auto b = weft::spawn(owning_leaf(counted_param(destroyed), 2));
    sum += co_await a;
    sum += co_await b;
  }  // both handles dropped here, each the last reference to a finished task
  co_return sum;
}

TEST(JoinHandleTest, DroppedHandlesFreeFramesAndParametersWhetherOrNotTheParametersOwnAnything) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  const weft_test::frame_baseline frames;
  std::atomic<int> destroyed{0};
  const int n = 10'000;
  {
    weft::runtime rt(weft_test::with_workers(2));
    long expect = 0;
    for (int i = 0; i < n; ++i) expect += i + 1 + 2;
    EXPECT_EQ(rt.block_on(awaits_both_kinds(&destroyed, n)), expect);
  }
  // Relaxed: the runtime joined its workers.
  EXPECT_EQ(destroyed.load(std::memory_order_relaxed), n) << "each owning parameter destroyed once";
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
  (void)&takes_incomplete;  // compiled is the test
}

// shield() makes the watched task's watcher list before it tries to wait.
// When the shielding task has a cancellation pending, the wait is refused
// before the watcher is linked, so the list exists but kWatched stays clear.
// The inline destruction in join_handle::reset must free the list whenever it
// exists: testing kWatched instead would leak it, 24 bytes per task.
// `stage`: 1 = the shielding task runs, 2 = its cancel() has returned.
// Acquire/release: the stages order the cancel() before the shield().
weft::task<long> shield_with_a_request_pending(weft::join_handle<long>* h,
                                               std::atomic<int>* stage) {
  stage->store(1, std::memory_order_release);
  // No cancellation point in this loop: the request stays pending.
  while (stage->load(std::memory_order_acquire) != 2) std::this_thread::yield();
  try {
    co_return co_await weft::shield(*h);
  } catch (const weft::cancelled_error&) {
    co_return -1;
  }
}

TEST(JoinHandleTest, DroppingAHandleAfterAShieldRefusedByAPendingCancelLeavesNothingBehind) {
  weft_test::watchdog dog(std::chrono::seconds(120));
  const weft_test::frame_baseline frames;
  const int n = 5'000;
  // Measured around the runtime's whole life: the workers' frame caches,
  // whose size depends on which worker freed which frame, are freed with it,
  // so what remains is what the tasks left behind.
  const long long before = weft_test::allocated_bytes();
  {
    weft::runtime rt(weft_test::with_workers(2));
    auto round = [&rt, n] {
      int refused = 0;
      for (int i = 0; i < n; ++i) {
        auto h = rt.spawn(plain_leaf(i, 0));
        std::atomic<int> stage{0};
        auto c = rt.spawn(shield_with_a_request_pending(&h, &stage));
        while (stage.load(std::memory_order_acquire) != 1) std::this_thread::yield();
        c.cancel();
        stage.store(2, std::memory_order_release);
        if (c.join() == -1) ++refused;
        EXPECT_EQ(h.join(), i);  // value taken: h's frame is freed when h goes
      }
      return refused;
    };
    EXPECT_EQ(round(), n) << "every shield() met its pending cancel";
    EXPECT_EQ(round(), n);
  }
  const long long grown = weft_test::allocated_bytes() - before;
  // A leaked list per task would be 2 * n * 24 = 240,000 bytes.
  EXPECT_LT(grown, 40'000) << "bytes still allocated after " << 2 * n
                           << " shielded tasks were dropped";
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
}

// ---------------------------------------------------------------- awaits across runtimes

weft::task<std::thread::id> thread_of_task() { co_return std::this_thread::get_id(); }

weft::task<int> slow_value(int v) {
  co_await weft::sleep_for(std::chrono::microseconds(200));
  co_return v;
}

// Awaits a task of runtime `b`, then reports where it resumed.
weft::task<std::thread::id> await_across(weft::runtime* b, int v) {
  weft::join_handle<int> h = b->spawn(slow_value(v));
  if (co_await h != v) throw std::logic_error("wrong value");
  co_return std::this_thread::get_id();
}

TEST(JoinHandleTest, AnAwaitOfAnotherRuntimesTaskResumesOnTheAwaitersOwnRuntime) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime b(with_workers(1));
  const std::thread::id b_worker = b.block_on(thread_of_task());
  weft::runtime a(with_workers(2));
  for (int i = 0; i < 50; ++i) {
    // The awaited task finishes on b's one worker; before, the awaiter went
    // on there by a transfer, and a weft::spawn in it spawned onto b.
    EXPECT_NE(a.block_on(await_across(&b, i)), b_worker) << "round " << i;
  }
}

}  // namespace
