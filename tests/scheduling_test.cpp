// SPDX-License-Identifier: MIT
// Black-box tests of scheduling: yield() always reschedules, checkpoint() and
// time slices, CPU-bound loops and cancellation, and tasks that migrate
// between workers seeing the worker they are really on.
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "task_internals.hpp"
#include "test_support.hpp"

namespace {

using namespace weft_test;

// ------------------------------------------------------------- checkpoint

// `iters`: relaxed, polled by the test as a sign of progress only.
weft::task<long> cpu_loop_with_checkpoint(std::latch* running, std::atomic<long>* iters) {
  running->count_down();
  for (;;) {
    iters->fetch_add(1, std::memory_order_relaxed);
    co_await weft::checkpoint();
  }
}

class CheckpointCancelTest : public ::testing::TestWithParam<std::chrono::microseconds> {};

TEST_P(CheckpointCancelTest, CpuLoopWithCheckpointIsCancelledPromptly) {
  watchdog wd(30s);
  std::latch running{1};
  std::atomic<long> iters{0};
  weft::runtime_options opts;
  opts.workers = 2;
  opts.time_slice = GetParam();
  weft::runtime rt(opts);
  EXPECT_EQ(rt.time_slice(), GetParam());
  auto h = rt.spawn(cpu_loop_with_checkpoint(&running, &iters));
  running.wait();
  // Let it spin a little (no sleep: wait for visible progress).
  ASSERT_TRUE(spin_until([&] { return iters.load(std::memory_order_relaxed) > 1000; }));
  const auto t0 = clock_type::now();
  EXPECT_TRUE(h.cancel("cpu"));
  try {
    (void)h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const cancelled_error& e) {
    EXPECT_EQ(e.reason(), "cpu");
  }
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_TRUE(h.cancelled());
}

// The default 2 ms slice, and a 10 s slice: a pending cancel does not wait
// for the slice to be spent.
INSTANTIATE_TEST_SUITE_P(Slices, CheckpointCancelTest,
                         ::testing::Values(std::chrono::microseconds(2000),
                                           std::chrono::microseconds(10'000'000)),
                         [](const auto& info) {
                           return "Slice" + std::to_string(info.param.count()) + "us";
                         });

// ---------------------------------------------------------------- idle spin

weft::task<int> trivial_task() { co_return 7; }

// runtime_options::idle_spin bounds how long an idle worker spins: with any
// setting, every worker of a runtime with nothing to do parks, and a task
// spawned afterwards still runs (the parked workers are woken).
class IdleSpinTest : public ::testing::TestWithParam<std::chrono::microseconds> {};

TEST_P(IdleSpinTest, IdleWorkersParkOnceTheirSpinIsOverAndWakeForNewWork) {
  watchdog dog(60s);
  weft::runtime_options o = with_workers(2);
  o.idle_spin = GetParam();
  weft::runtime rt(std::move(o));
  EXPECT_EQ(rt.block_on(trivial_task()), 7);
  // Both workers run dry after the task: each must park (parks counts every
  // park, so >= 2 also covers a worker that parked, was woken and parked
  // again).  Bounded by the watchdog, not a sleep.
  EXPECT_TRUE(spin_until([&] { return rt.stats().total.parks >= 2; }, 20'000ms))
      << "an idle worker never parked (spinning forever?)";
  EXPECT_EQ(rt.block_on(trivial_task()), 7);
}

INSTANTIATE_TEST_SUITE_P(Spins, IdleSpinTest,
                         ::testing::Values(std::chrono::microseconds(0),
                                           std::chrono::microseconds(100),
                                           std::chrono::microseconds(20'000)),
                         [](const auto& info) {
                           return "Spin" + std::to_string(info.param.count()) + "us";
                         });

// shutdown() waits until every worker is parked (its drain step).  A worker
// spinning out a long idle_spin must park at once when the runtime stops, not
// when its spin ends: with the 1 ms default every shutdown took 1 ms more
// (and a short-lived runtime twice as long), with 10 minutes it would hang
// for 10 minutes.  The watchdog (60 s) is the bound.
TEST(IdleSpinShutdownTest, ShutdownDoesNotWaitForSpinningWorkersToEndTheirSpin) {
  watchdog dog(60s);
  weft::runtime_options o = with_workers(2);
  o.idle_spin = std::chrono::minutes(10);
  weft::runtime rt(std::move(o));
  EXPECT_EQ(rt.block_on(trivial_task()), 7);  // the workers now spin, for up to 10 minutes
  rt.shutdown();
  EXPECT_GE(rt.stats().total.parks, 2u) << "every worker parked for the shutdown";
}

TEST(RuntimeOptionsTest, DefaultIdleSpinIsOneMillisecond) {
  EXPECT_EQ(weft::runtime_options{}.idle_spin, std::chrono::microseconds(1000));
}

TEST(CheckpointTest, DefaultTimeSliceIsTwoMilliseconds) {
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.time_slice(), std::chrono::microseconds(2000));
}

// A pending cancel does not wait for the slice: the very next checkpoint
// delivers it.  The test publishes "cancel() has returned" (release) after the
// call; an iteration that saw that (acquire) has the request visible at its
// checkpoint (cancel()'s exchange happens-before it), so that checkpoint must
// throw: no iteration may complete after it.  A 10 s slice: the slice cannot
// be what ends the loop.
struct next_checkpoint_state {
  std::latch running{1};
  std::atomic<bool> cancel_returned{false};
  std::atomic<long> passed_after_cancel{0};  // checkpoints passed with the request visible
};

weft::task<long> checkpoint_loop_after_cancel(next_checkpoint_state* s) {
  s->running.count_down();
  for (;;) {
    // Acquire: pairs with the test's release store made after cancel() returned.
    const bool cancel_visible = s->cancel_returned.load(std::memory_order_acquire);
    co_await weft::checkpoint();
    // Relaxed: a counter the test reads after join().
    if (cancel_visible) s->passed_after_cancel.fetch_add(1, std::memory_order_relaxed);
  }
}

TEST(CheckpointTest, PendingCancelIsDeliveredAtTheVeryNextCheckpointNotAtTheSliceEnd) {
  watchdog wd(30s);
  weft::runtime_options opts;
  opts.workers = 2;
  opts.time_slice = std::chrono::seconds(10);
  weft::runtime rt(opts);
  for (int round = 0; round < 200; ++round) {
    next_checkpoint_state st;
    auto h = rt.spawn(checkpoint_loop_after_cancel(&st));
    st.running.wait();
    EXPECT_TRUE(h.cancel("next checkpoint"));
    // Release: pairs with the task's acquire load (see the struct comment).
    st.cancel_returned.store(true, std::memory_order_release);
    EXPECT_THROW((void)h.join(), cancelled_error);
    // Relaxed: the join above ordered the task's writes before this read.
    EXPECT_EQ(st.passed_after_cancel.load(std::memory_order_relaxed), 0)
        << "a checkpoint let the loop go on with a cancel pending (round " << round << ")";
    if (::testing::Test::HasFailure()) break;
  }
}

// Documents a limit, as asyncio does: a loop with no resume point cannot be
// cancelled.  It runs to its (bounded) end and the task completes despite the
// request, which stays visible to this_task::cancel_requested().
weft::task<long> cpu_loop_without_await(std::latch* running, std::atomic<bool>* cancel_issued,
                                        std::atomic<bool>* saw_request) {
  running->count_down();
  while (!cancel_issued->load(std::memory_order_acquire)) std::this_thread::yield();
  volatile long sink = 0;
  const long n = scaled(20'000'000, 2'000'000);
  for (long i = 0; i < n; ++i) sink = sink + i;
  saw_request->store(weft::this_task::cancel_requested(),
                     std::memory_order_relaxed);  // read after join()
  co_return n;
}

TEST(CheckpointTest, LoopWithoutAnyAwaitCannotBeCancelled) {
  watchdog wd(60s);
  std::latch running{1};
  std::atomic<bool> cancel_issued{false}, saw{false};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(cpu_loop_without_await(&running, &cancel_issued, &saw));
  running.wait();
  EXPECT_TRUE(h.cancel("ignored"));
  cancel_issued.store(true, std::memory_order_release);
  EXPECT_EQ(h.join(), scaled(20'000'000, 2'000'000));  // ran to its end
  EXPECT_FALSE(h.cancelled());
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_TRUE(saw.load(std::memory_order_relaxed));
}

// Two CPU-bound tasks on ONE worker, each with checkpoint() in its loop.  Each
// counts how often it saw the other's counter change between two of its own
// iterations: on one worker that can only happen if the slice ended, the
// task was rescheduled and the other ran.  Without time slicing the first
// task would spin forever (the watchdog would fire).
struct slice_state {
  std::atomic<long> count[2]{};
  std::atomic<int> switches_seen[2]{};
};

weft::task<long> sliced_spinner(slice_state* s, int me) {
  const int other = 1 - me;
  long last_other = s->count[other].load(std::memory_order_relaxed);
  long iterations = 0;
  while (s->switches_seen[me].load(std::memory_order_relaxed) < 3) {
    const long o = s->count[other].load(std::memory_order_relaxed);
    if (o != last_other) {
      s->switches_seen[me].fetch_add(1, std::memory_order_relaxed);
      last_other = o;
    }
    s->count[me].fetch_add(1, std::memory_order_relaxed);
    ++iterations;
    co_await weft::checkpoint();
  }
  co_return iterations;
}

TEST(CheckpointTest, TimeSliceInterleavesCpuBoundTasksOnOneWorker) {
  watchdog wd(30s);
  slice_state s;
  weft::runtime_options opts;
  opts.workers = 1;
  opts.time_slice = std::chrono::microseconds(1000);
  weft::runtime rt(opts);
  auto a = rt.spawn(sliced_spinner(&s, 0));
  auto b = rt.spawn(sliced_spinner(&s, 1));
  const long ia = a.join();
  const long ib = b.join();
  EXPECT_GE(s.switches_seen[0].load(std::memory_order_relaxed), 3);
  EXPECT_GE(s.switches_seen[1].load(std::memory_order_relaxed), 3);
  EXPECT_GT(ia, 0);
  EXPECT_GT(ib, 0);
  std::printf("[ info ] time-slice interleave: %ld and %ld iterations\n", ia, ib);
}

// ------------------------------------------------------------------ yield

// One worker: every access is made on the same thread, so relaxed is enough
// throughout.
struct yield_state {
  std::atomic<bool> b_started{false};
  std::atomic<bool> a_done{false};
  std::atomic<long> b_count{0};
  std::atomic<int> a_yields_without_b_progress{0};
};

weft::task<int> yielder_a(yield_state* s, int n) {
  while (!s->b_started.load(std::memory_order_relaxed)) co_await weft::yield();
  for (int i = 0; i < n; ++i) {
    const long before = s->b_count.load(std::memory_order_relaxed);
    co_await weft::yield();
    if (s->b_count.load(std::memory_order_relaxed) == before)
      s->a_yields_without_b_progress.fetch_add(1, std::memory_order_relaxed);
  }
  s->a_done.store(true, std::memory_order_relaxed);
  co_return n;
}

weft::task<long> counter_b(yield_state* s) {
  s->b_started.store(true, std::memory_order_relaxed);
  while (!s->a_done.load(std::memory_order_relaxed)) {
    s->b_count.fetch_add(1, std::memory_order_relaxed);
    co_await weft::yield();
  }
  co_return s->b_count.load(std::memory_order_relaxed);
}

TEST(YieldTest, YieldAlwaysReschedulesBehindOtherReadyTasks) {
  watchdog wd(30s);
  yield_state s;
  weft::runtime rt(with_workers(1));
  auto a = rt.spawn(yielder_a(&s, 1000));
  auto b = rt.spawn(counter_b(&s));
  EXPECT_EQ(a.join(), 1000);
  EXPECT_GE(b.join(), 1000);
  EXPECT_EQ(s.a_yields_without_b_progress.load(std::memory_order_relaxed), 0)
      << "yield() resumed A although B was ready to run";
}

weft::task<int> lone_yielder(int n) {
  for (int i = 0; i < n; ++i) co_await weft::yield();
  co_return n;
}

TEST(YieldTest, YieldWithNothingElseToRunReturns) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(lone_yielder(10000)), 10000);
}

// `woke`: relaxed, read after the tasks were joined.
weft::task<int> sleeper_set(std::chrono::nanoseconds d, std::atomic<int>* woke) {
  co_await weft::sleep_for(d);
  woke->fetch_add(1, std::memory_order_relaxed);
  co_return 1;
}

TEST(SleepTest, SleepLastsAtLeastItsDurationAndNonPositiveBehavesAsYield) {
  watchdog wd(30s);
  std::atomic<int> woke{0};
  weft::runtime rt(with_workers(2));
  const auto t0 = clock_type::now();
  EXPECT_EQ(rt.block_on(sleeper_set(20ms, &woke)), 1);
  EXPECT_GE(clock_type::now() - t0, 20ms);
  EXPECT_EQ(rt.block_on(sleeper_set(0ns, &woke)), 1);
  EXPECT_EQ(rt.block_on(sleeper_set(-5s, &woke)), 1);
  EXPECT_EQ(rt.block_on(sleeper_set(std::chrono::nanoseconds::min(), &woke)), 1);
  EXPECT_EQ(woke.load(std::memory_order_relaxed), 4);
}

TEST(SleepTest, HugeDeadlineSaturatesAndIsStillCancellable) {
  watchdog wd(30s);
  std::atomic<int> woke{0};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(sleeper_set(std::chrono::nanoseconds::max(), &woke));
  auto h2 = rt.spawn(sleeper_set(std::chrono::hours(1), &woke));
  EXPECT_TRUE(h.cancel("max"));
  EXPECT_TRUE(h2.cancel("hour"));
  EXPECT_THROW((void)h.join(), cancelled_error);
  EXPECT_THROW((void)h2.join(), cancelled_error);
  EXPECT_EQ(woke.load(std::memory_order_relaxed), 0);
}

// ------------------------------------------------------------------ timers
//
// Many timers with deadlines 0, negative, minimum, random (0-2 ms), maximum,
// an hour, and sleep_until(min/max/past); every task with an unreachable
// deadline is cancelled, a third of the others too.  No timer fires early; a
// task whose deadline cannot be reached ends cancelled (the timer cannot fire
// after a successful cancel); deadline arithmetic saturates (UBSan build);
// every frame is freed.

// Relaxed counters: read after every handle was joined.
struct timer_state {
  std::atomic<long> early{0};
  std::atomic<long> woke{0};
};

enum class timer_kind : int {
  zero,
  negative,
  min,
  random,
  max,
  hour,
  until_max,
  until_min,
  until_past,
  count
};

weft::task<int> timed_sleeper(timer_kind k, std::chrono::nanoseconds d, timer_state* s) {
  const auto t0 = clock_type::now();
  switch (k) {
    case timer_kind::until_max:
      co_await weft::sleep_until(clock_type::time_point::max());
      break;
    case timer_kind::until_min:
      co_await weft::sleep_until(clock_type::time_point::min());
      break;
    case timer_kind::until_past:
      co_await weft::sleep_until(t0 - std::chrono::seconds(1));
      break;
    default:
      co_await weft::sleep_for(d);
      break;
  }
  const auto slept = clock_type::now() - t0;
  const bool unreachable =
      k == timer_kind::max || k == timer_kind::hour || k == timer_kind::until_max;
  if (unreachable || (d.count() > 0 && slept < d)) s->early.fetch_add(1, std::memory_order_relaxed);
  s->woke.fetch_add(1, std::memory_order_relaxed);
  co_return 1;
}

TEST(TimerTest, ManyTimersNoneEarlyNoneAfterASuccessfulCancel) {
  watchdog wd(100s, 20s);
  const long n = scaled(1'000'000, 100'000, 200'000);
  const long batch = 2000;
  timer_state s;
  long cancelled = 0, values = 0, unreachable_not_cancelled = 0, cancel_refused = 0;
  frame_baseline frames;
  const auto t0 = clock_type::now();
  {
    weft::runtime rt(with_workers(2));
    rng r(42);
    std::vector<weft::join_handle<int>> hs;
    std::vector<char> must_cancel, asked;
    hs.reserve(batch);
    for (long base = 0; base < n; base += batch) {
      wd.kick();
      hs.clear();
      must_cancel.assign(batch, 0);
      asked.assign(batch, 0);
      for (long i = 0; i < batch && base + i < n; ++i) {
        const auto k = static_cast<timer_kind>((base + i) % static_cast<long>(timer_kind::count));
        std::chrono::nanoseconds d{0};
        switch (k) {
          case timer_kind::zero:
            d = 0ns;
            break;
          case timer_kind::negative:
            d = -1s;
            break;
          case timer_kind::min:
            d = std::chrono::nanoseconds::min();
            break;
          case timer_kind::random:
            d = std::chrono::nanoseconds(r.below(2'000'000));
            break;
          case timer_kind::max:
            d = std::chrono::nanoseconds::max();
            break;
          case timer_kind::hour:
            d = std::chrono::hours(1);
            break;
          default:
            break;
        }
        must_cancel[i] =
            k == timer_kind::max || k == timer_kind::hour || k == timer_kind::until_max;
        hs.push_back(rt.spawn(timed_sleeper(k, d, &s)));
      }
      for (std::size_t i = 0; i < hs.size(); ++i) {
        if (must_cancel[i] || r.below(3) == 0) {
          asked[i] = 1;
          if (!hs[i].cancel("timer") && must_cancel[i]) ++cancel_refused;
        }
      }
      for (std::size_t i = 0; i < hs.size(); ++i) {
        try {
          values += hs[i].join();
          if (must_cancel[i]) ++unreachable_not_cancelled;
          if (!asked[i] && hs[i].cancelled()) ADD_FAILURE() << "cancelled without a request";
        } catch (const cancelled_error&) {
          ++cancelled;
          if (!asked[i]) ADD_FAILURE() << "cancelled without a request";
        }
      }
      if (::testing::Test::HasFailure()) break;
    }
  }
  EXPECT_EQ(s.early.load(std::memory_order_relaxed), 0) << "timers fired before their deadline";
  EXPECT_EQ(unreachable_not_cancelled, 0);
  EXPECT_EQ(cancel_refused, 0);
  EXPECT_EQ(values + cancelled, n);
  EXPECT_EQ(s.woke.load(std::memory_order_relaxed), values);
  EXPECT_EQ(frames.now(), frames.start);
  std::printf("[ info ] timers: %ld in %.2f s; %ld fired, %ld cancelled\n", n, seconds_since(t0),
              values, cancelled);
}

// ------------------------------------------------------------- migration

// The cached-thread-identity pitfall (docs/pitfalls.md: clang caches
// pthread_self()/thread-local addresses across a co_await that resumes on
// another thread): a task must always see the worker it is really on.
thread_local long tl_slot = 0;
[[gnu::noinline]] long* tl_slot_addr() { return &tl_slot; }
[[gnu::noinline]] std::thread::id real_thread_id() { return std::this_thread::get_id(); }

// Relaxed, every field: counters and flags read after the tasks were joined,
// or polled as signs of progress (`loops_done`, `victim_finished`); none
// publishes data.  (`cancel_issued` is the one release/acquire pair.)
struct migrate_state {
  std::atomic<long> migrations{0};
  std::atomic<long> bad_thread_local{0};
  std::atomic<long> spurious_cancel{0};
  std::atomic<int> loops_done{0};
  std::atomic<bool> cancel_issued{false};
  std::atomic<bool> victim_saw_request{false};
  std::atomic<bool> victim_finished{false};
};

weft::task<long> migrating_task(migrate_state* s, long id, int n, bool victim) {
  std::thread::id prev = real_thread_id();
  for (int i = 0; i < n; ++i) {
    co_await weft::yield();
    const std::thread::id now = real_thread_id();
    if (now != prev) s->migrations.fetch_add(1, std::memory_order_relaxed);
    prev = now;
    const long token = id * 1'000'000 + i;
    *tl_slot_addr() = token;
    if (*tl_slot_addr() != token) s->bad_thread_local.fetch_add(1, std::memory_order_relaxed);
    if (weft::this_task::cancel_requested())
      s->spurious_cancel.fetch_add(1, std::memory_order_relaxed);
  }
  s->loops_done.fetch_add(1, std::memory_order_relaxed);
  if (victim) {
    // Spin (no resume point) until the test cancelled us, then check that the
    // request is seen by *this* task on the worker it is on now.
    while (!s->cancel_issued.load(std::memory_order_acquire)) std::this_thread::yield();
    while (!weft::this_task::cancel_requested())
      std::this_thread::yield();  // bounded by the watchdog
    s->victim_saw_request.store(true, std::memory_order_relaxed);
    co_await weft::yield();  // delivers
    co_return -1;
  }
  // The bystander keeps migrating and must never see the victim's request.
  while (!s->victim_finished.load(std::memory_order_relaxed)) {
    co_await weft::yield();
    if (weft::this_task::cancel_requested())
      s->spurious_cancel.fetch_add(1, std::memory_order_relaxed);
  }
  co_return id;
}

TEST(MigrationTest, TaskSeesTheWorkerItIsReallyOnAfterEveryYield) {
  watchdog wd(120s);
  const int n = 10000;  // cheap even under TSan
  migrate_state s;
  weft::runtime rt(with_workers(2));
  auto victim = rt.spawn(migrating_task(&s, 1, n, true));
  std::vector<weft::join_handle<long>> others;
  for (long id = 2; id <= 4; ++id) others.push_back(rt.spawn(migrating_task(&s, id, n, false)));
  ASSERT_TRUE(
      spin_until([&] { return s.loops_done.load(std::memory_order_relaxed) == 4; }, 60'000ms));
  EXPECT_TRUE(victim.cancel("migrated"));
  s.cancel_issued.store(true, std::memory_order_release);
  EXPECT_THROW((void)victim.join(), cancelled_error);
  s.victim_finished.store(true, std::memory_order_relaxed);
  for (long id = 2; id <= 4; ++id) EXPECT_EQ(others[id - 2].join(), id);
  EXPECT_TRUE(s.victim_saw_request.load(std::memory_order_relaxed));
  EXPECT_EQ(s.bad_thread_local.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(s.spurious_cancel.load(std::memory_order_relaxed), 0);
  std::printf("[ info ] migrations observed: %ld in %d yields x 4 tasks\n",
              s.migrations.load(std::memory_order_relaxed), n);
}

// ------------------------------------------------------------- stealing

// A thief pauses after each steal that found a task cancelled before it
// started (nothing to run), doubling up to a bound, and starts over once a
// steal finds a task to run (runtime.cpp, worker_main).  Here the victim's
// worker is blocked, so every task must be stolen: first a run of cancelled
// ones (the top of the deque), then the real ones behind them.  The pauses
// must neither lose a task nor stall the thief for good.
struct steal_state {
  std::latch* gate = nullptr;  // holds the other worker until the tasks are queued
  std::atomic<bool> gate_held{false};
  std::atomic<int> cancelled_bodies{0};
  std::atomic<int> real_runs{0};
  std::latch* real_done = nullptr;
  int cancelled = 0, real = 0;
  std::vector<weft::join_handle<void>> cancelled_handles;
  std::vector<weft::join_handle<void>> real_handles;
};

weft::task<void> must_not_run(steal_state* s) {
  s->cancelled_bodies.fetch_add(1, std::memory_order_relaxed);
  co_return;
}

weft::task<void> real_work(steal_state* s) {
  s->real_runs.fetch_add(1, std::memory_order_relaxed);
  s->real_done->count_down();
  co_return;
}

// Takes the other worker (its thread blocks on the gate, deliberately not a
// weft wait) so that no task is stolen before it is cancelled.
weft::task<void> hold_worker(steal_state* s) {
  s->gate_held.store(true, std::memory_order_release);
  s->gate->wait();
  co_return;
}

weft::task<void> spawn_then_block(steal_state* s) {
  for (int i = 0; i < s->cancelled; ++i) {
    s->cancelled_handles.push_back(weft::spawn(must_not_run(s)));
    s->cancelled_handles.back().cancel("before start");
  }
  for (int i = 0; i < s->real; ++i) s->real_handles.push_back(weft::spawn(real_work(s)));
  s->gate->count_down();  // the other worker becomes the thief
  // Block this worker's thread: only the thief can take the tasks above.
  s->real_done->wait();
  co_return;
}

TEST(StealingTest, ThiefWorksThroughCancelledTasksToTheRealOnesBehindThem) {
  watchdog wd(60s);
  steal_state s;
  s.cancelled = static_cast<int>(scaled(4000, 1000));
  s.real = 200;
  std::latch real_done(s.real);
  s.real_done = &real_done;
  std::latch gate(1);
  s.gate = &gate;
  weft::runtime rt(with_workers(2));
  auto holder = rt.spawn(hold_worker(&s));
  ASSERT_TRUE(spin_until([&] { return s.gate_held.load(std::memory_order_acquire); }));
  const auto before = rt.stats();
  rt.block_on(spawn_then_block(&s));  // runs on the one free worker
  EXPECT_NO_THROW(holder.join());
  const auto after = rt.stats();
  EXPECT_EQ(s.real_runs.load(std::memory_order_relaxed), s.real);
  for (auto& h : s.real_handles) EXPECT_NO_THROW(h.join());
  for (auto& h : s.cancelled_handles) {
    ASSERT_TRUE(wait_done(h));
    EXPECT_TRUE(h.cancelled());
  }
  EXPECT_EQ(s.cancelled_bodies.load(std::memory_order_relaxed), 0);
  // The real tasks sat below the cancelled ones: the thief had to take every
  // cancelled task first (the driver's worker never drained its deque).
  EXPECT_GE(after.total.steals - before.total.steals,
            static_cast<std::uint64_t>(s.cancelled + s.real));
}

// checkpoint() in a child joined inline sees the joiner's request (it looks
// at the whole chain); it must deliver it too, not only a request of the
// child's own: otherwise it neither delivers nor reschedules, and the loop
// runs on (to its 5 s bound) as if nothing was asked.

// Relaxed, both: `running` is polled as a sign of progress, `delivered` is
// read after join().
struct inline_cruncher {
  std::atomic<bool> running{false};
  std::atomic<bool> delivered{false};
};

weft::task<int> crunch_with_checkpoints(inline_cruncher* s) {
  s->running.store(true, std::memory_order_relaxed);
  const auto t0 = weft_test::clock_type::now();
  try {
    while (weft_test::clock_type::now() - t0 < 5s * kSlowdown) co_await weft::checkpoint();
  } catch (const weft::cancelled_error&) {
    s->delivered.store(true, std::memory_order_relaxed);
    throw;
  }
  co_return 0;
}

weft::task<int> join_cruncher_inline(inline_cruncher* s) {
  weft::join_handle<int> h = weft::spawn(crunch_with_checkpoints(s));
  co_return co_await h;  // one worker: h is at the bottom of our deque, run inline
}

TEST(CheckpointTest, CheckpointInAChildJoinedInlineDeliversTheJoinersCancel) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  inline_cruncher s;
  weft::runtime rt(weft_test::with_workers(1));
  weft::join_handle<int> h = rt.spawn(join_cruncher_inline(&s));
  await_true([&] { return s.running.load(std::memory_order_relaxed); });
  const auto t0 = weft_test::clock_type::now();
  EXPECT_TRUE(h.cancel("stop the joiner"));
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_TRUE(s.delivered.load(std::memory_order_relaxed))
      << "checkpoint() in the inline child never delivered the cancel";
  EXPECT_LT(weft_test::seconds_since(t0), 2.0 * kSlowdown);
}

// yield() must go on rescheduling while the runtime stops.  Were its
// await_ready "maybe cancelled", true for good once the runtime stopped, a
// task's yield() would no longer let anything else run after its one
// "shutdown" delivery: a task that refuses the shutdown and yields until a
// sibling on its worker has cleaned up would spin forever (shutdown would
// never return).  Here it gives up after 10^6 yields.

// `sibling_done`: relaxed, a sign of progress between two tasks on one worker.
struct refusing_pair {
  std::latch both{2};
  std::atomic<bool> sibling_done{false};
  weft::event never;
};

weft::task<bool> refuse_shutdown_and_yield(refusing_pair* s) {
  s->both.count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    // refused: carry on until the sibling has cleaned up
  }
  for (long i = 0; i < 1'000'000; ++i) {
    if (s->sibling_done.load(std::memory_order_relaxed)) co_return true;
    co_await weft::yield();
  }
  co_return false;  // yield() never let the sibling run
}

weft::task<void> clean_up_at_shutdown(refusing_pair* s) {
  s->both.count_down();
  try {
    co_await s->never.wait();
  } catch (const weft::cancelled_error&) {
  }
  s->sibling_done.store(true, std::memory_order_relaxed);
}

TEST(YieldTest, YieldStillLetsASiblingRunAfterShutdownBegan) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  refusing_pair s;
  std::atomic<weft::detail::runtime_impl*> impl{nullptr};
  weft::runtime rt(weft_test::with_workers(1));
  rt.block_on(find_runtime(&impl));
  weft::join_handle<bool> a = rt.spawn(refuse_shutdown_and_yield(&s));
  weft::join_handle<void> b = rt.spawn(clean_up_at_shutdown(&s));
  s.both.wait();
  // Both suspended: the only worker has parked.  Shutdown then wakes the
  // sleeper first (timers before list waits), so `a` runs before `b`.
  // Relaxed: `impl` was stored before block_on() returned; num_sleepers is
  // only polled for a state.
  await_true([&] {
    return impl.load(std::memory_order_relaxed)->num_sleepers.load(std::memory_order_relaxed) == 1;
  });
  rt.shutdown();
  EXPECT_TRUE(a.join()) << "yield() did not let the sibling run after shutdown began";
  b.join();
}

}  // namespace
