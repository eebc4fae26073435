// SPDX-License-Identifier: MIT
// A driven runtime (runtime_options::driven): no thread of its own, run by its
// owner's event loop through run_ready() and wakeup_fd(), or by a blocking
// call (block_on, join, shutdown) on the calling thread.
//
// Adversarial: work arrives from other threads while the loop sleeps in
// poll(), timers are the only thing left, cancellation comes from outside,
// tasks refuse their shutdown, a CPU loop would hog the loop's thread, and
// the API is misused.
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <latch>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "weft/fork.hpp"

namespace {

using namespace std::chrono_literals;

weft::runtime_options driven_options() {
  weft::runtime_options o;
  o.driven = true;
  return o;
}

// Is the descriptor readable within `ms` milliseconds?
bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

weft::task<int> add(int a, int b) { co_return a + b; }

weft::task<std::thread::id> where_it_runs() { co_return std::this_thread::get_id(); }

weft::task<int> sleeper(std::chrono::milliseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

// ---------------------------------------------------------------- the example

// An event loop that owns a weft runtime: it waits in poll() on the runtime's
// wakeup_fd() (and, in a real program, its own sockets and pipes), and runs
// what is ready when it becomes readable.
int run_loop_until(weft::runtime& rt, weft::join_handle<int>& h) {
  while (!h.done()) {
    pollfd fds[1] = {{rt.wakeup_fd(), POLLIN, 0}};
    ::poll(fds, 1, -1);  // sleeps until a task is ready or a timer is due
    rt.run_ready(5ms);   // at most about 5 ms of tasks, then back to the loop
  }
  return h.join();  // done: join() returns at once
}

TEST(DrivenRuntimeTest, AnEventLoopRunsASleepingTask) {
  weft_test::watchdog dog(60s);
  weft::runtime_options o;
  o.driven = true;  // no thread of its own
  weft::runtime rt(o);
  weft::join_handle<int> h = rt.spawn(sleeper(20ms, 42));
  EXPECT_EQ(run_loop_until(rt, h), 42);
}

// ---------------------------------------------------------------- threads and descriptors

TEST(DrivenRuntimeTest, StartsNoThreadAtAll) {
  weft_test::watchdog dog(60s);
  const std::size_t before = thread_count();
  weft::runtime rt(driven_options());
  EXPECT_EQ(thread_count(), before);
  EXPECT_TRUE(rt.driven());
  EXPECT_EQ(rt.workers(), 1u);
  EXPECT_GE(rt.wakeup_fd(), 0);
  EXPECT_EQ(rt.block_on(add(1, 2)), 3);
  EXPECT_EQ(thread_count(), before);
}

TEST(DrivenRuntimeTest, TasksRunOnTheThreadThatDrives) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  EXPECT_EQ(rt.block_on(where_it_runs()), std::this_thread::get_id());
  weft::join_handle<std::thread::id> h = rt.spawn(where_it_runs());
  while (!h.done()) rt.run_ready();
  EXPECT_EQ(h.join(), std::this_thread::get_id());
}

TEST(DrivenRuntimeTest, ASpawnFromAnotherThreadMakesTheDescriptorReadable) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  EXPECT_FALSE(readable(rt.wakeup_fd(), 0)) << "nothing to do yet";
  std::optional<weft::join_handle<int>> h;
  std::thread producer([&] { h.emplace(rt.spawn(add(20, 22))); });
  producer.join();
  EXPECT_TRUE(readable(rt.wakeup_fd(), 30'000));
  EXPECT_EQ(rt.run_ready(), 1u);
  EXPECT_TRUE(h->done());
  EXPECT_FALSE(readable(rt.wakeup_fd(), 0)) << "run_ready() emptied it";
  EXPECT_EQ(h->join(), 42);
}

TEST(DrivenRuntimeTest, ATimerIsTheOnlyThingLeftAndTheDescriptorFiresForIt) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  weft::join_handle<int> h = rt.spawn(sleeper(30ms, 7));
  EXPECT_EQ(rt.run_ready(), 1u);  // starts, arms its sleep
  EXPECT_FALSE(h.done());
  const std::optional<std::chrono::steady_clock::time_point> at = rt.next_timer();
  ASSERT_TRUE(at.has_value());
  EXPECT_GT(*at, std::chrono::steady_clock::now() - 1s);
  EXPECT_TRUE(readable(rt.wakeup_fd(), 30'000)) << "timer_fd fires at the deadline";
  EXPECT_GE(std::chrono::steady_clock::now(), *at);
  EXPECT_EQ(rt.run_ready(), 1u);
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.join(), 7);
  EXPECT_FALSE(rt.next_timer().has_value());
}

// ---------------------------------------------------------------- cancellation from outside

weft::task<int> sleep_for_an_hour(std::atomic<int>* cleanups) {
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    cleanups->fetch_add(1, std::memory_order_relaxed);  // Relaxed: read after join
    throw;
  }
  co_return 0;
}

TEST(DrivenRuntimeTest, ACancelFromAnotherThreadWakesTheLoopAndIsDelivered) {
  weft_test::watchdog dog(60s);
  std::atomic<int> cleanups{0};
  weft::runtime rt(driven_options());
  weft::join_handle<int> h = rt.spawn(sleep_for_an_hour(&cleanups));
  rt.run_ready();
  EXPECT_FALSE(readable(rt.wakeup_fd(), 0));
  std::thread canceller([&] { EXPECT_TRUE(h.cancel("from outside")); });
  canceller.join();
  EXPECT_TRUE(readable(rt.wakeup_fd(), 30'000));
  rt.run_ready();
  ASSERT_TRUE(h.done());
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(cleanups.load(), 1);
  try {
    h.join();
    ADD_FAILURE() << "join() of a cancelled task returned";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "from outside");
  }
}

weft::task<void> wait_event(weft::event* ev, std::atomic<int>* woke) {
  co_await ev->wait();
  woke->fetch_add(1, std::memory_order_relaxed);  // Relaxed: read after join
}

TEST(DrivenRuntimeTest, AnEventSetOnAnotherThreadWakesTheLoop) {
  weft_test::watchdog dog(60s);
  weft::event ev;
  std::atomic<int> woke{0};
  weft::runtime rt(driven_options());
  weft::join_handle<void> h = rt.spawn(wait_event(&ev, &woke));
  rt.run_ready();
  EXPECT_EQ(woke.load(), 0);
  std::thread setter([&] { ev.set(); });
  setter.join();
  EXPECT_TRUE(readable(rt.wakeup_fd(), 30'000));
  rt.run_ready();
  EXPECT_TRUE(h.done());
  EXPECT_EQ(woke.load(), 1);
  h.join();
}

// ---------------------------------------------------------------- the loop's thread is not hogged

weft::task<long> spin_until(std::atomic<bool>* stop) {
  long rounds = 0;
  // Relaxed: a flag; the task that sets it runs on this same thread.
  while (!stop->load(std::memory_order_relaxed)) {
    ++rounds;
    co_await weft::checkpoint();
  }
  co_return rounds;
}

weft::task<void> set_flag(std::atomic<bool>* stop) {
  stop->store(true, std::memory_order_relaxed);  // Relaxed: see spin_until
  co_return;
}

TEST(DrivenRuntimeTest, ACheckpointLoopGivesWayWhenItsSliceIsSpent) {
  weft_test::watchdog dog(60s);
  std::atomic<bool> stop{false};
  weft::runtime_options o = driven_options();
  o.time_slice = 1ms;
  weft::runtime rt(o);
  weft::join_handle<long> spinner = rt.spawn(spin_until(&stop));
  weft::join_handle<void> setter = rt.spawn(set_flag(&stop));
  // One worker: the setter runs only if the spinner's checkpoint re-queues it.
  while (!spinner.done()) rt.run_ready();
  EXPECT_TRUE(setter.done());
  EXPECT_GT(spinner.join(), 1) << "checkpoints ran on within the slice";
  setter.join();
}

weft::task<void> yield_forever(std::atomic<long>* rounds) {
  for (;;) {
    rounds->fetch_add(1, std::memory_order_relaxed);  // Relaxed: a counter
    co_await weft::yield();
  }
}

TEST(DrivenRuntimeTest, RunReadyReturnsWhenItsBudgetIsSpent) {
  weft_test::watchdog dog(60s);
  std::atomic<long> rounds{0};
  weft::runtime rt(driven_options());
  weft::join_handle<void> h = rt.spawn(yield_forever(&rounds));
  for (int i = 0; i < 3; ++i) {
    const long before = rounds.load();
    EXPECT_GT(rt.run_ready(2ms), 0u);  // returns: the task never stops being ready
    EXPECT_GT(rounds.load(), before);
    EXPECT_TRUE(readable(rt.wakeup_fd(), 0)) << "work is left: the loop must come back";
  }
  EXPECT_EQ(rt.run_ready(0ns), 1u) << "a zero budget runs one task";
  h.cancel();
  while (!h.done()) rt.run_ready();
  EXPECT_TRUE(h.cancelled());
}

// ---------------------------------------------------------------- blocking calls drive

weft::task<int> spawn_and_sum(int n) {
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < n; ++i)
    hs.push_back(weft::spawn(sleeper(std::chrono::milliseconds(i % 3), i)));
  int sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

TEST(DrivenRuntimeTest, BlockOnDrivesSpawnsSleepsAndTimeouts) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  EXPECT_EQ(rt.block_on(spawn_and_sum(100)), 99 * 100 / 2);
  EXPECT_THROW(rt.block_on(weft::wait_for(sleeper(1h, 0), 10ms)), weft::timeout_error);
  EXPECT_EQ(rt.block_on(weft::wait_for(sleeper(1ms, 5), 1h)), 5);
}

weft::fork_task<long> fib(int n) {
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib(n - 1));
  long b = co_await fib(n - 2);
  co_await weft::join();
  co_return a + b;
}

TEST(DrivenRuntimeTest, AForkTreeRunsOnTheDrivingThread) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  EXPECT_EQ(rt.block_on(weft::as_task(fib(20))), 6765);
}

TEST(DrivenRuntimeTest, AJoinOnAnotherThreadWaitsForTheLoopOrDrivesItself) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  weft::join_handle<int> h = rt.spawn(sleeper(10ms, 3));
  std::atomic<bool> joined{false};
  int got = 0;
  std::thread joiner([&] {
    got = h.join();
    joined.store(true, std::memory_order_release);  // Release: pairs with the loop's acquire
  });
  // The loop keeps driving; whichever thread drives, the task ends.
  while (!joined.load(std::memory_order_acquire)) {
    readable(rt.wakeup_fd(), 5);
    rt.run_ready(1ms);
  }
  joiner.join();
  EXPECT_EQ(got, 3);
}

weft::task<int> drive_another(weft::runtime* driven) {
  // Blocks this worker while it drives the other runtime: allowed, as a
  // join() of another runtime's task is.
  co_return driven->block_on(spawn_and_sum(10)) + static_cast<int>(driven->run_ready());
}

TEST(DrivenRuntimeTest, ATaskOfAThreadedRuntimeDrivesADrivenOne) {
  weft_test::watchdog dog(60s);
  weft::runtime driven(driven_options());
  weft::runtime_options o;
  o.workers = 2;
  weft::runtime threaded(o);
  // The worker's own state (which runtime it belongs to) survives the drive:
  // the task goes on spawning on its own runtime afterwards.
  EXPECT_EQ(threaded.block_on(drive_another(&driven)), 45);
  EXPECT_EQ(threaded.block_on(spawn_and_sum(10)), 45);
}

weft::task<std::thread::id> await_elsewhere(weft::runtime* threaded) {
  // The awaited task runs (and finishes) on the threaded runtime's worker; the
  // awaiting task resumes on its own runtime, here the driving thread.
  weft::join_handle<int> h = threaded->spawn(sleeper(1ms, 1));
  co_await h;
  co_return std::this_thread::get_id();
}

TEST(DrivenRuntimeTest, AnAwaitOfAThreadedRuntimesTaskResumesOnTheDrivingThread) {
  weft_test::watchdog dog(60s);
  weft::runtime_options o;
  o.workers = 2;
  weft::runtime threaded(o);
  weft::runtime driven(driven_options());
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(driven.block_on(await_elsewhere(&threaded)), std::this_thread::get_id());
}

weft::task<int> blocking_sum(int n) {
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await weft::blocking([i] { return i; });
  co_return sum;
}

TEST(DrivenRuntimeTest, ABlockingCallsPoolThreadWakesTheLoop) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(driven_options());
  weft::join_handle<int> h = rt.spawn(blocking_sum(20));
  // Every step of the task waits for a pool thread, which wakes the loop
  // through wakeup_fd(): a lost wake-up fails the readable() check.
  while (!h.done()) {
    ASSERT_TRUE(readable(rt.wakeup_fd(), 30'000)) << "a pool thread's wake-up was lost";
    rt.run_ready();
  }
  EXPECT_EQ(h.join(), 19 * 20 / 2);
  EXPECT_EQ(rt.block_on(blocking_sum(5)), 10);
}

// ---------------------------------------------------------------- a producer hammers the loop

TEST(DrivenRuntimeTest, SpawnsFromManyThreadsWhileTheLoopPollsAreNeverLost) {
  weft_test::watchdog dog(120s);
  constexpr int kThreads = 3;
  const int per_thread = static_cast<int>(weft_test::scaled(3000, 300));
  weft::runtime rt(driven_options());
  std::vector<std::vector<weft::join_handle<int>>> handles(kThreads);
  std::atomic<int> producers_done{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) handles[t].push_back(rt.spawn(add(t, i)));
      producers_done.fetch_add(1, std::memory_order_release);  // Release: pairs with the loop
    });
  }
  // The loop: only poll() with no timeout tells it to run; a lost wake-up
  // hangs here (the watchdog reports it).
  while (producers_done.load(std::memory_order_acquire) < kThreads) {
    pollfd p{rt.wakeup_fd(), POLLIN, 0};
    ::poll(&p, 1, 1000);
    rt.run_ready();
  }
  for (auto& p : producers) p.join();
  for (;;) {
    bool all = true;
    for (auto& hs : handles)
      for (auto& h : hs) all = all && h.done();
    if (all) break;
    ASSERT_TRUE(readable(rt.wakeup_fd(), 30'000)) << "tasks are queued but the fd is silent";
    rt.run_ready();
  }
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < per_thread; ++i) EXPECT_EQ(handles[t][i].join(), t + i);
}

weft::task<int> sleep_or_wait(weft::event* ev, int i, std::atomic<int>* cleanups) {
  try {
    if (i % 2 == 0) {
      co_await weft::sleep_for(std::chrono::microseconds(i % 500));
    } else {
      co_await ev->wait();
    }
    co_await weft::yield();
  } catch (const weft::cancelled_error&) {
    cleanups->fetch_add(1, std::memory_order_relaxed);  // Relaxed: read after the joins
    throw;
  }
  co_return i;
}

TEST(DrivenRuntimeTest, ACancelStormFromAnotherThreadLosesNothing) {
  weft_test::watchdog dog(120s);
  const int n = static_cast<int>(weft_test::scaled(4000, 400));
  weft::event ev;
  std::atomic<int> cleanups{0};
  const std::int64_t frames = weft::diagnostics::live_frames();
  {
    weft::runtime rt(driven_options());
    std::vector<weft::join_handle<int>> hs;
    for (int i = 0; i < n; ++i) hs.push_back(rt.spawn(sleep_or_wait(&ev, i, &cleanups)));
    std::atomic<int> accepted{0};
    std::atomic<bool> storm_done{false};
    // Cancels every third task, at whatever moment the loop is at, then sets
    // the event for the rest.
    std::thread storm([&] {
      for (int i = 0; i < n; i += 3) {
        if (hs[i].cancel("storm")) accepted.fetch_add(1, std::memory_order_relaxed);
      }
      ev.set();
      storm_done.store(true, std::memory_order_release);  // Release: pairs with the loop
    });
    auto all_done = [&] {
      return std::all_of(hs.begin(), hs.end(), [](auto& h) { return h.done(); });
    };
    while (!storm_done.load(std::memory_order_acquire) || !all_done()) {
      pollfd p{rt.wakeup_fd(), POLLIN, 0};
      ::poll(&p, 1, 1000);
      rt.run_ready(1ms);
    }
    storm.join();
    int cancelled = 0, despite = 0;
    for (int i = 0; i < n; ++i) {
      if (hs[i].cancelled()) {
        ++cancelled;
        EXPECT_EQ(i % 3, 0) << "only the storm cancels";
        EXPECT_THROW(hs[i].join(), weft::cancelled_error);
      } else {
        if (hs[i].completed_despite_cancel()) ++despite;  // accepted after its last await
        EXPECT_EQ(hs[i].join(), i);
      }
    }
    // The contract: every accepted cancel was delivered, or the task finished
    // past its last cancellation point and says so.
    EXPECT_EQ(cancelled + despite, accepted.load());
    EXPECT_LE(cleanups.load(), cancelled) << "cleanups run only in started tasks";
  }
  EXPECT_EQ(weft::diagnostics::live_frames(), frames);
}

// ---------------------------------------------------------------- shutdown drives the drain

weft::task<int> refuse_shutdown_then_sleep(std::atomic<int>* after) {
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    // Refuses the shutdown: sleeps for real, then finishes.
  }
  co_await weft::sleep_for(10ms);
  after->fetch_add(1, std::memory_order_relaxed);  // Relaxed: read after shutdown
  co_return 1;
}

TEST(DrivenRuntimeTest, ShutdownDrivesTheDrainIncludingATaskThatRefusesIt) {
  weft_test::watchdog dog(60s);
  std::atomic<int> cleanups{0};
  std::atomic<int> after{0};
  weft::runtime rt(driven_options());
  weft::join_handle<int> a = rt.spawn(sleep_for_an_hour(&cleanups));
  weft::join_handle<int> b = rt.spawn(refuse_shutdown_then_sleep(&after));
  weft::join_handle<int> c = rt.spawn(add(1, 1));  // never run before the shutdown
  rt.run_ready();
  rt.shutdown();
  EXPECT_TRUE(a.cancelled());
  EXPECT_EQ(cleanups.load(), 1);
  EXPECT_EQ(b.join(), 1);
  EXPECT_EQ(after.load(), 1);
  EXPECT_TRUE(c.done());
  weft::join_handle<int> late = rt.spawn(add(2, 2));
  EXPECT_TRUE(late.cancelled()) << "a spawn after shutdown is cancelled at once";
  EXPECT_EQ(rt.run_ready(), 0u);
}

TEST(DrivenRuntimeTest, TheDestructorShutsDownTasksNobodyDrove) {
  weft_test::watchdog dog(60s);
  std::atomic<int> cleanups{0};
  const std::int64_t frames = weft::diagnostics::live_frames();
  {
    weft::runtime rt(driven_options());
    for (int i = 0; i < 10; ++i) (void)rt.spawn(sleep_for_an_hour(&cleanups));  // detached
    rt.run_ready();
  }
  EXPECT_EQ(cleanups.load(), 10);
  EXPECT_EQ(weft::diagnostics::live_frames(), frames);
}

// ---------------------------------------------------------------- misuse

weft::task<void> run_ready_inside(weft::runtime* rt) {
  rt->run_ready();
  co_return;
}

TEST(DrivenRuntimeTest, MisuseIsRefusedWithAClearError) {
  weft_test::watchdog dog(60s);
  weft::runtime_options two = driven_options();
  two.workers = 2;
  EXPECT_THROW(weft::runtime{two}, std::invalid_argument);
  weft::runtime_options sim = driven_options();
  sim.simulation = weft::sim::options{};
  EXPECT_THROW(weft::runtime{sim}, std::invalid_argument);

  weft::runtime_options one = driven_options();
  one.workers = 1;
  weft::runtime ok(one);
  EXPECT_THROW(ok.block_on(run_ready_inside(&ok)), weft::usage_error);

  weft::runtime_options threaded;
  threaded.workers = 1;
  weft::runtime rt(threaded);
  EXPECT_FALSE(rt.driven());
  EXPECT_EQ(rt.wakeup_fd(), -1);
  EXPECT_FALSE(rt.next_timer().has_value());
  EXPECT_THROW(rt.run_ready(), weft::usage_error);
}

}  // namespace
