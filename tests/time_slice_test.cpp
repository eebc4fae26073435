// Time slices cost nothing while nobody waits for them: the timer thread
// watches slices at its fine tick only while a task waits in the injection
// queue or a cancel may need a slice to reach a child run inline, and
// otherwise only takes a coarse look now and then (docs/architecture.md,
// "Time slices").  These tests count the timer thread's wake-ups
// (runtime_impl::timer_wakeups) while workers overstay with nobody waiting,
// and check that every kind of waiter still gets its slice.
#include <latch>
#include <mutex>
#include <vector>

#include "task_internals.hpp"
#include "test_support.hpp"

namespace {

using namespace weft_test;
using weft::detail::runtime_impl;

runtime_impl* impl_of(weft::runtime& rt) {
  std::atomic<runtime_impl*> impl{nullptr};
  rt.block_on(find_runtime(&impl));
  // Relaxed: block_on ordered the task's store before this load.
  return impl.load(std::memory_order_relaxed);
}

std::uint64_t timer_wakeups(runtime_impl* impl) {
  std::lock_guard lk(impl->timer_mutex);
  return impl->timer_wakeups;
}

bool watching_slices(runtime_impl* impl) {
  // seq_cst: a look at the timer thread's state, as the injector takes it.
  return impl->slice_watch.load(std::memory_order_seq_cst);
}

weft::runtime_options sliced(unsigned workers, std::chrono::microseconds slice) {
  weft::runtime_options o = with_workers(workers);
  o.time_slice = slice;
  return o;
}

// How long the overstaying tasks of the wake-up test run.
constexpr auto kOverstay = 300ms;

// Overstays for `span` of wall time with a checkpoint() on every iteration,
// then counts `done` down.  Nobody waits for its worker meanwhile, so no
// checkpoint may suspend.
weft::task<long> overstay_for(std::chrono::nanoseconds span, std::latch* running,
                              std::latch* done) {
  running->count_down();
  running->wait();  // both workers busy before the span starts
  const auto end = clock_type::now() + span;
  long iterations = 0;
  while (clock_type::now() < end) {
    ++iterations;
    co_await weft::checkpoint();
  }
  done->count_down();
  co_return iterations;
}

// Two workers overstay for kOverstay each with a 1 ms slice.  Before, the
// timer thread ticked every slice / 4 while a worker was busy: about 1,200
// wake-ups here.  Now it may wake a few times while the spawns pass through
// the injection queue, and then once per coarse look (100 ms).
TEST(SliceWatchTest, TwoOverstayingWorkersWithNobodyWaitingCostAlmostNoTimerWakeUps) {
  watchdog wd(60s);
  weft::runtime rt(sliced(2, 1ms));
  runtime_impl* impl = impl_of(rt);
  std::latch running{3};
  std::latch done{2};
  auto a = rt.spawn(overstay_for(kOverstay, &running, &done));
  auto b = rt.spawn(overstay_for(kOverstay, &running, &done));
  running.arrive_and_wait();
  const std::uint64_t before = timer_wakeups(impl);
  const auto t0 = clock_type::now();
  done.wait();
  const double span = seconds_since(t0);
  const std::uint64_t wakeups = timer_wakeups(impl) - before;
  EXPECT_GT(a.join(), 0);
  EXPECT_GT(b.join(), 0);
  std::printf("[ info ] %llu timer wake-ups in %.3f s of two overstaying workers\n",
              static_cast<unsigned long long>(wakeups), span);
  // 10 coarse looks a second, and a few fine ticks at the start.
  const auto allowed = static_cast<std::uint64_t>(4 + span * 10 * 1.5);
  EXPECT_LE(wakeups, allowed) << "the timer thread ticks while nobody waits for a slice";
}

// Loops with a checkpoint() on every iteration until `stop`.
weft::task<long> overstay_until(const std::atomic<bool>* stop, std::latch* running) {
  running->count_down();
  long iterations = 0;
  // Relaxed: a stop sign; nothing is published with it.
  while (!stop->load(std::memory_order_relaxed)) {
    ++iterations;
    co_await weft::checkpoint();
  }
  co_return iterations;
}

weft::task<int> mark_ran(std::latch* ran) {
  ran->count_down();
  co_return 1;
}

// A runtime whose every worker is held by a task that checkpoints until
// release(); once constructed, the timer thread has stopped watching slices
// (nobody waits).
struct overstaying_workers {
  overstaying_workers(unsigned workers, std::chrono::microseconds slice)
      : rt(sliced(workers, slice)), impl(impl_of(rt)), running(workers) {
    for (unsigned i = 0; i < workers; ++i)
      held.push_back(rt.spawn(overstay_until(&stop, &running)));
    running.wait();
    // The queue is empty again: the timer thread stops watching.
    watch_went_off = spin_until([&] { return !watching_slices(impl); });
  }
  void release() {
    stop.store(true, std::memory_order_relaxed);
    for (auto& h : held) EXPECT_GT(h.join(), 0);
  }

  weft::runtime rt;
  runtime_impl* impl;
  std::atomic<bool> stop{false};
  std::latch running;
  std::vector<weft::join_handle<long>> held;
  bool watch_went_off = false;
};

// Slices still end when someone waits: a task spawned from outside while two
// CPU-bound checkpointing tasks hold both workers, and the timer thread is not
// watching slices, runs within a few slices.
TEST(SliceWatchTest, TaskQueuedBehindTwoOverstayingWorkersGetsToRun) {
  watchdog wd(60s);
  overstaying_workers w(2, 1ms);
  EXPECT_TRUE(w.watch_went_off) << "the timer thread keeps watching slices with nobody waiting";
  std::latch ran{1};
  const auto t0 = clock_type::now();
  auto c = w.rt.spawn(mark_ran(&ran));
  ran.wait();  // bounded by the watchdog: without a slice ending, never
  const double latency = seconds_since(t0);
  std::printf("[ info ] the queued task ran after %.2f ms\n", latency * 1000);
  EXPECT_LT(latency, 1.0 * kSlowdown);
  EXPECT_EQ(c.join(), 1);
  w.release();
}

// The restart step: the injection that makes the queue non-empty while the
// timer thread is not watching turns the watch back on before inject()
// returns.  One worker and a 2 s slice: the queued task cannot run before
// release() unless this thread stalls for most of a slice, so the queue stays
// non-empty and the timer thread cannot turn the watch off again.
TEST(SliceWatchTest, InjectionIntoAnEmptyQueueRestartsTheSliceWatchAtOnce) {
  watchdog wd(60s);
  overstaying_workers w(1, 2s);
  ASSERT_TRUE(w.watch_went_off) << "the timer thread keeps watching slices with nobody waiting";
  std::latch ran{1};
  auto c = w.rt.spawn(mark_ran(&ran));
  const bool watching = watching_slices(w.impl);
  EXPECT_TRUE(watching || ran.try_wait())
      << "a task waits in the queue and the timer thread does not watch slices";
  w.release();
  ran.wait();
  EXPECT_EQ(c.join(), 1);
}

// A task on the deque of a worker that overstays, with every worker busy
// (one worker here), is waiting too: the coarse look ends the slice.  The
// parent waits for its child by polling at checkpoints, which without a slice
// ending would never let the child run.
struct deque_wait_state {
  std::atomic<bool> child_ran{false};
  std::atomic<bool> give_up{false};
};

weft::task<void> set_child_ran(deque_wait_state* s) {
  // Release: pairs with the parent's acquire load.
  s->child_ran.store(true, std::memory_order_release);
  co_return;
}

weft::task<bool> poll_for_child(deque_wait_state* s) {
  // Only the coarse look may end this slice: first checkpoint until the timer
  // thread has stopped watching (the spawn of this task passed through the
  // injection queue; a flag left from before is cleared on the way).
  runtime_impl* impl = weft::detail::current_worker()->rt;
  while (watching_slices(impl)) co_await weft::checkpoint();
  auto h = weft::spawn(set_child_ran(s));  // onto this worker's own deque
  // Acquire: pairs with the child's release store.  Relaxed give_up: a stop
  // sign for a failing test.
  while (!s->child_ran.load(std::memory_order_acquire) &&
         !s->give_up.load(std::memory_order_relaxed)) {
    co_await weft::checkpoint();
  }
  co_await h;
  co_return s->child_ran.load(std::memory_order_acquire);
}

TEST(SliceWatchTest, ChildOnTheDequeOfAnOverstayingWorkerRunsWhenNoWorkerIsFree) {
  watchdog wd(60s);
  weft::runtime rt(sliced(1, 1ms));
  deque_wait_state s;
  const auto t0 = clock_type::now();
  auto h = rt.spawn(poll_for_child(&s));
  const bool ran = spin_until([&] { return s.child_ran.load(std::memory_order_acquire); });
  const double latency = seconds_since(t0);
  s.give_up.store(true, std::memory_order_relaxed);
  EXPECT_TRUE(ran) << "a child queued on its overstaying parent's deque never ran";
  EXPECT_TRUE(h.join());
  std::printf("[ info ] the child on the deque ran after %.1f ms\n", latency * 1000);
}

// A cancel of a task that runs its child inline lands on the parent; the
// child's checkpoints see it only once the slice expires.  With nobody else
// waiting, the cancel itself must make the timer thread watch the slice.
struct inline_cancel_state {
  std::latch running{1};
  std::atomic<bool> give_up{false};
};

weft::task<long> inline_child_loop(inline_cancel_state* s) {
  s->running.count_down();
  long iterations = 0;
  // Relaxed: a stop sign for a failing test.
  while (!s->give_up.load(std::memory_order_relaxed)) {
    ++iterations;
    co_await weft::checkpoint();
  }
  co_return iterations;
}

weft::task<long> run_child_inline(inline_cancel_state* s) {
  auto h = weft::spawn(inline_child_loop(s));
  co_return co_await h;  // one worker: taken back from its deque and run inline
}

TEST(SliceWatchTest, CancelOfAParentRunningItsChildInlineReachesTheChildWithNobodyWaiting) {
  watchdog wd(60s);
  weft::runtime rt(sliced(1, 1ms));
  runtime_impl* impl = impl_of(rt);
  inline_cancel_state s;
  auto h = rt.spawn(run_child_inline(&s));
  s.running.wait();
  ASSERT_TRUE(spin_until([&] { return !watching_slices(impl); }))
      << "the timer thread keeps watching slices with nobody waiting";
  const auto t0 = clock_type::now();
  EXPECT_TRUE(h.cancel("parent"));
  const bool done = wait_done(h, 5'000ms);
  const double latency = seconds_since(t0);
  s.give_up.store(true, std::memory_order_relaxed);
  EXPECT_TRUE(done) << "the cancel never reached the child run inline";
  const cancelled_error e = expect_cancelled([&] { (void)h.join(); });
  EXPECT_EQ(e.reason(), "parent");
  std::printf("[ info ] the inline child took the cancel after %.2f ms\n", latency * 1000);
}

}  // namespace
