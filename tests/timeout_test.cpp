// SPDX-License-Identifier: MIT
// Black-box tests of wait_for / wait_until (asyncio.wait_for) and of timers at
// scale: finishing in time, timing out only after the task's cleanup ran, a
// task that refuses the timeout and returns a value, d <= 0 with a done
// handle, durations that never expire (and saturate instead of overflowing),
// cancelling the waiter (cancelled_error, not timeout_error), sleep_until as
// a cancellation point, and 10^6 pending timers of which half are cancelled:
// every kind of deadline (PendingTimers...), and all 10^6 pending at once with
// the memory they used given back while the runtime runs (AllPendingAtOnce...).
#include <malloc.h>

#include <fstream>
#include <latch>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// What a task saw.  Relaxed, every access: the readers are ordered after the
// writes by weft itself -- the test reads after join()/block_on(), and a
// waiter reads `cleanup_done` after its wait for the task returned (a join:
// the task's completion synchronises with it; if weft failed to wait for the
// cleanup, the load could see 0, which is the failure the tests look for).
// `started` is only polled as a sign of progress.
struct task_probe {
  std::atomic<int> started{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> cleanup_done{0};
  std::atomic<int> kind{-1};
  std::string reason;  // read after join()/block_on()
};

weft::task<int> sleeps_then(std::chrono::nanoseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

weft::task<int> throws_soon() {
  co_await weft::yield();
  throw std::runtime_error("inner failure");
  co_return 0;
}

// Sleeps "forever"; on cancellation records it, runs a cleanup that suspends
// (30 ms), then rethrows.
weft::task<int> slow_with_cleanup(task_probe* p, std::latch* started) {
  if (started != nullptr) started->count_down();
  p->started.store(1, std::memory_order_relaxed);
  std::exception_ptr cancel;
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error& e) {
    p->kind.store(static_cast<int>(e.kind()), std::memory_order_relaxed);
    p->reason = std::string(e.reason());
    p->cancelled.fetch_add(1, std::memory_order_relaxed);
    cancel = std::current_exception();
  }
  if (!cancel) co_return 0;
  co_await weft::sleep_for(30ms);  // no request pending any more: a real sleep
  p->cleanup_done.store(1, std::memory_order_relaxed);
  std::rethrow_exception(cancel);
}

weft::task<int> refuses_the_timeout() {
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error&) {
    co_return 99;  // caught: a value instead of the cancellation
  }
  co_return 0;
}

// ------------------------------------------------------------ wait_for

weft::task<int> wait_for_quick() { co_return co_await weft::wait_for(sleeps_then(1ms, 5), 10s); }

weft::task<std::string> wait_for_inner_failure() {
  try {
    (void)co_await weft::wait_for(throws_soon(), 10s);
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no exception";
}

TEST(WaitForTest, FinishingInTimeGivesTheValueOrTheException) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  const auto t0 = clock_type::now();
  EXPECT_EQ(rt.block_on(wait_for_quick()), 5);
  EXPECT_LT(seconds_since(t0), 5.0) << "waited for the 10 s timer";
  EXPECT_EQ(rt.block_on(wait_for_inner_failure()), "inner failure");
}

weft::task<std::string> wait_for_times_out(task_probe* p) {
  try {
    (void)co_await weft::wait_for(slow_with_cleanup(p, nullptr), 50ms);
  } catch (const weft::timeout_error&) {
    co_return p->cleanup_done.load(std::memory_order_relaxed) == 1 ? "timeout after cleanup"
                                                                   : "timeout before cleanup";
  }
  co_return "no timeout";
}

TEST(WaitForTest, TimesOutOnlyAfterTheTaskFinishedItsCleanup) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    task_probe p;
    weft::runtime rt(with_workers(2));
    const auto t0 = clock_type::now();
    EXPECT_EQ(rt.block_on(wait_for_times_out(&p)), "timeout after cleanup");
    const double took = seconds_since(t0);
    EXPECT_GE(took, 0.050 + 0.030) << "timeout + cleanup";
    EXPECT_LT(took, 5.0);
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(p.kind.load(std::memory_order_relaxed), static_cast<int>(cancel_kind::timeout));
    EXPECT_EQ(p.reason, "timeout");
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<int> wait_for_refused() {
  co_return co_await weft::wait_for(refuses_the_timeout(), 20ms);
}

TEST(WaitForTest, TaskThatCatchesTheTimeoutAndReturnsAValueGivesThatValue) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(wait_for_refused()), 99);
}

weft::task<int> nonpositive_with_done_handle(std::chrono::nanoseconds d) {
  auto h = weft::spawn(weft_test::value_task(7));
  while (!h.done()) co_await weft::yield();
  co_return co_await weft::wait_for(h, d);
}

// A task that is running (suspended in its sleep): cancelled at once, and the
// timeout comes after its cleanup.
weft::task<std::string> nonpositive_with_running_task(task_probe* p) {
  auto h = weft::spawn(slow_with_cleanup(p, nullptr));
  while (p->started.load(std::memory_order_relaxed) == 0) co_await weft::yield();
  try {
    (void)co_await weft::wait_for(h, -5s);
  } catch (const weft::timeout_error&) {
    co_return p->cleanup_done.load(std::memory_order_relaxed) == 1 ? "timeout after cleanup"
                                                                   : "timeout before cleanup";
  }
  co_return "no timeout";
}

// A task given as a task (spawned by wait_for) with d <= 0 is cancelled at
// once; on one worker nothing can start it before that, so its body never runs.
weft::task<std::string> nonpositive_with_fresh_task(task_probe* p) {
  try {
    (void)co_await weft::wait_for(slow_with_cleanup(p, nullptr), 0ns);
  } catch (const weft::timeout_error&) {
    co_return "timeout";
  }
  co_return "no timeout";
}

TEST(WaitForTest, NonPositiveDurationIsAlreadyExpiredButADoneTaskGivesItsResult) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(nonpositive_with_done_handle(0ns)), 7);
  EXPECT_EQ(rt.block_on(nonpositive_with_done_handle(-1s)), 7);
  EXPECT_EQ(rt.block_on(nonpositive_with_done_handle(std::chrono::nanoseconds::min())), 7);
  task_probe p;
  const auto t0 = clock_type::now();
  EXPECT_EQ(rt.block_on(nonpositive_with_running_task(&p)), "timeout after cleanup");
  EXPECT_LT(seconds_since(t0), 5.0);
  EXPECT_EQ(p.kind.load(std::memory_order_relaxed), static_cast<int>(cancel_kind::timeout));
  task_probe q;
  weft::runtime one(with_workers(1));
  EXPECT_EQ(one.block_on(nonpositive_with_fresh_task(&q)), "timeout");
  EXPECT_EQ(q.started.load(std::memory_order_relaxed), 0)
      << "a task cancelled before it started ran its body";
}

weft::task<int> never_expires(std::chrono::nanoseconds d) {
  co_return co_await weft::wait_for(sleeps_then(50ms, 3), d);
}

weft::task<int> until_never() {
  co_return co_await weft::wait_until(sleeps_then(20ms, 4), clock_type::time_point::max());
}

TEST(WaitForTest, MaximalDurationsNeverExpireAndDeadlinesSaturate) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(never_expires(std::chrono::nanoseconds::max())), 3);
  // Not the "never" sentinel: now + d must saturate, not wrap into the past.
  EXPECT_EQ(rt.block_on(never_expires(std::chrono::nanoseconds::max() - 1ns)), 3);
  EXPECT_EQ(rt.block_on(never_expires(std::chrono::hours(24 * 365 * 200))), 3);
  EXPECT_EQ(rt.block_on(until_never()), 4);
}

weft::task<int> waits_for_handle(weft::join_handle<int>* inner, std::latch* waiting) {
  waiting->count_down();  // a cancel from here on reaches `inner` (a join forwards it)
  co_return co_await weft::wait_for(*inner, 1h);
}

// The test thread owns the awaited task's handle and drops it only after it
// read the exception: under TSan the exception object must not be freed by
// wait_for's detached timer (it holds a reference to the task) without a
// happens-before edge weft's own atomics give -- libstdc++'s exception_ptr
// refcount is not instrumented (see the report of this helper).
TEST(WaitForTest, CancellingTheWaiterCancelsTheTaskAndTheWaiterSeesCancelledNotTimeout) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    task_probe p;
    std::latch started(2);
    weft::runtime rt(with_workers(2));
    auto inner = rt.spawn(slow_with_cleanup(&p, &started));
    auto waiter = rt.spawn(waits_for_handle(&inner, &started));
    started.wait();
    const auto t0 = clock_type::now();
    unsigned line = __LINE__ + 1;
    waiter.cancel("stop waiting");
    try {
      (void)waiter.join();
      ADD_FAILURE() << "no exception";
    } catch (const weft::timeout_error&) {
      ADD_FAILURE() << "timeout_error instead of cancelled_error";
    } catch (const cancelled_error& e) {
      EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
      EXPECT_EQ(e.reason(), "stop waiting");
      EXPECT_EQ(e.where().line(), line);
    }
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_TRUE(inner.cancelled()) << "the awaited task was not cancelled";
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(p.kind.load(std::memory_order_relaxed),
              static_cast<int>(cancel_kind::explicit_request));
    EXPECT_EQ(p.reason, "stop waiting");
    EXPECT_EQ(p.cleanup_done.load(std::memory_order_relaxed), 1)
        << "the waiter returned before the task's cleanup";
    inner = weft::join_handle<int>();  // after every read of the exception
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ wait_until

weft::task<std::string> wait_until_expires(task_probe* p, clock_type::time_point tp) {
  try {
    (void)co_await weft::wait_until(slow_with_cleanup(p, nullptr), tp);
  } catch (const weft::timeout_error&) {
    co_return "timeout";
  }
  co_return "no timeout";
}

weft::task<int> wait_until_past_with_done_handle() {
  auto h = weft::spawn(weft_test::value_task(11));
  while (!h.done()) co_await weft::yield();
  co_return co_await weft::wait_until(h, clock_type::now() - 1h);
}

weft::task<int> wait_until_in_time() {
  co_return co_await weft::wait_until(sleeps_then(1ms, 12), clock_type::now() + 10s);
}

TEST(WaitUntilTest, ExpiresAtTheDeadlineAndAPastDeadlineStillGivesADoneResult) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  task_probe p;
  const auto t0 = clock_type::now();
  EXPECT_EQ(rt.block_on(wait_until_expires(&p, t0 + 60ms)), "timeout");
  EXPECT_GE(seconds_since(t0), 0.060);
  EXPECT_LT(seconds_since(t0), 5.0);
  EXPECT_EQ(p.kind.load(std::memory_order_relaxed), static_cast<int>(cancel_kind::timeout));
  EXPECT_EQ(rt.block_on(wait_until_past_with_done_handle()), 11);
  const auto t1 = clock_type::now();
  EXPECT_EQ(rt.block_on(wait_until_in_time()), 12);
  EXPECT_LT(seconds_since(t1), 5.0);
}

// The extremes below zero: time_point::min() and nanoseconds::min() are
// already expired (no overflow computing a deadline from them): a running
// task is cancelled at once and the timeout comes after its cleanup.
weft::task<std::string> already_expired_extremes(task_probe* p, bool use_wait_until) {
  auto h = weft::spawn(slow_with_cleanup(p, nullptr));
  while (p->started.load(std::memory_order_relaxed) == 0) co_await weft::yield();
  try {
    if (use_wait_until) {
      (void)co_await weft::wait_until(h, clock_type::time_point::min());
    } else {
      (void)co_await weft::wait_for(h, std::chrono::nanoseconds::min());
    }
  } catch (const weft::timeout_error&) {
    co_return p->cleanup_done.load(std::memory_order_relaxed) == 1 ? "timeout after cleanup"
                                                                   : "timeout before cleanup";
  }
  co_return "no timeout";
}

TEST(WaitUntilTest, MinimalTimePointAndDurationAreAlreadyExpired) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  for (bool use_wait_until : {true, false}) {
    task_probe p;
    const auto t0 = clock_type::now();
    EXPECT_EQ(rt.block_on(already_expired_extremes(&p, use_wait_until)), "timeout after cleanup");
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_EQ(p.kind.load(std::memory_order_relaxed), static_cast<int>(cancel_kind::timeout));
  }
}

// ------------------------------------------------------------ sleep_until

weft::task<int> sleeps_until(clock_type::time_point tp, std::latch* started, task_probe* p) {
  started->count_down();
  try {
    co_await weft::sleep_until(tp);
  } catch (const cancelled_error& e) {
    p->kind.store(static_cast<int>(e.kind()), std::memory_order_relaxed);
    p->cancelled.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  co_return 1;
}

TEST(SleepUntilTest, IsACancellationPointThatWakesPromptly) {
  watchdog dog(std::chrono::seconds(60));
  task_probe p;
  std::latch started(1);
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(sleeps_until(clock_type::now() + 1h, &started, &p));
  started.wait();
  const auto t0 = clock_type::now();
  h.cancel("wake up");
  EXPECT_THROW((void)h.join(), cancelled_error);
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 1);
  // A time point in the past: no wait at all (behaves as yield()).
  std::latch started2(1);
  auto h2 = rt.spawn(sleeps_until(clock_type::now() - 1h, &started2, &p));
  EXPECT_EQ(h2.join(), 1);
}

// ------------------------------------------------------------ 10^6 timers

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

long read_status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line)) {
    if (line.rfind(k, 0) == 0) return std::strtol(line.c_str() + k.size(), nullptr, 10);
  }
  return -1;
}

enum class timer_mode : std::uint8_t {
  zero,        // sleep_for(0): behaves as yield()
  negative,    // sleep_for(-d)
  until_now,   // sleep_until(now)
  short_rand,  // sleep_for(random 0..300 ms)
  long_1h,     // sleep_for(1 h): only ever ends by cancel
  never,       // sleep_for(nanoseconds::max()): only ever ends by cancel
};

struct timer_rec {
  std::int64_t deadline_ns = 0;  // when it may fire at the earliest (INT64_MAX: never)
  std::int64_t param_ns = 0;
  std::int64_t cancel_end_ns = 0;  // written by the canceller
  bool cancel_ok = false;          // cancel() returned true
  timer_mode mode = timer_mode::zero;
  std::atomic<std::uint8_t> outcome{0};  // 0 pending, 1 woke normally, 2 cancelled
};

struct timer_stats {
  std::atomic<long> armed{0};
  std::atomic<long> woke{0};
  std::atomic<long> cancelled{0};
  std::atomic<long> early{0};
};

weft::task<void> timer_task(timer_stats* st, timer_rec* r) {
  const std::int64_t t = now_ns();
  std::int64_t deadline = t;
  // The sleep is chosen before the co_await (named: no temporaries in it).
  auto tag = weft::sleep_for(0ns);
  switch (r->mode) {
    case timer_mode::zero:
      tag = weft::sleep_for(0ns);
      break;
    case timer_mode::negative:
      tag = weft::sleep_for(std::chrono::nanoseconds(-r->param_ns));
      break;
    case timer_mode::until_now:
      tag = weft::sleep_until(clock_type::now());
      break;
    case timer_mode::short_rand:
      deadline = t + r->param_ns;
      tag = weft::sleep_for(std::chrono::nanoseconds(r->param_ns));
      break;
    case timer_mode::long_1h:
      deadline = t + std::chrono::nanoseconds(1h).count();
      tag = weft::sleep_for(1h);
      break;
    case timer_mode::never:
      deadline = std::numeric_limits<std::int64_t>::max();
      tag = weft::sleep_for(std::chrono::nanoseconds::max());
      break;
  }
  r->deadline_ns = deadline;
  st->armed.fetch_add(1, std::memory_order_relaxed);
  bool cancelled = false;
  try {
    co_await tag;
  } catch (const cancelled_error&) {
    cancelled = true;
  }
  if (cancelled) {
    r->outcome.store(2, std::memory_order_release);
    st->cancelled.fetch_add(1, std::memory_order_release);
    co_return;
  }
  if (now_ns() < deadline) st->early.fetch_add(1, std::memory_order_relaxed);
  r->outcome.store(1, std::memory_order_release);
  st->woke.fetch_add(1, std::memory_order_release);
}

weft::task<void> spawn_timers(timer_stats* st, timer_rec* recs, long n,
                              std::vector<weft::join_handle<void>>* hs) {
  hs->reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) hs->push_back(weft::spawn(timer_task(st, &recs[i])));
  co_return;
}

TEST(MillionTimersTest, PendingTimersHalfCancelledNoneEarlyNoneAfterCancelNoFrameLeaks) {
  watchdog dog(std::chrono::seconds(110));
  const long n = scaled(1'000'000, 100'000, 250'000);
  frame_baseline frames;
  {
    std::ofstream clear("/proc/self/clear_refs");  // "5": reset VmHWM (Linux >= 4.0)
    if (clear) clear << "5" << std::flush;
  }
  const long rss_before = read_status_kib("VmRSS");
  auto recs = std::make_unique<timer_rec[]>(static_cast<std::size_t>(n));
  rng r(42);
  long must_cancel = 0;  // cancelled half, deadlines beyond the test
  for (long i = 0; i < n; ++i) {
    timer_rec& rec = recs[i];
    if (i % 2 == 1) {  // the half that gets cancelled
      const auto k = r.below(10);
      rec.mode = k < 4 ? timer_mode::never : k < 8 ? timer_mode::long_1h : timer_mode::short_rand;
      if (rec.mode != timer_mode::short_rand) ++must_cancel;
    } else {
      const auto k = r.below(10);
      rec.mode = k == 0   ? timer_mode::zero
                 : k == 1 ? timer_mode::negative
                 : k == 2 ? timer_mode::until_now
                          : timer_mode::short_rand;
    }
    rec.param_ns = static_cast<std::int64_t>(r.below(300'000'000));
  }
  timer_stats st;
  double arm_s = 0, cancel_calls_s = 0, cancel_all_s = 0, total_s = 0;
  long cancel_true = 0;
  {
    weft::runtime rt(with_workers(2));
    std::vector<weft::join_handle<void>> hs;
    const auto t0 = clock_type::now();
    rt.block_on(spawn_timers(&st, recs.get(), n, &hs));
    // Relaxed: `armed` is only a sign of progress.  Acquire (the two waits
    // below): pairs with the timers' release increments.
    ASSERT_TRUE(
        spin_until([&] { return st.armed.load(std::memory_order_relaxed) == n; }, 100'000ms));
    arm_s = seconds_since(t0);

    const auto t1 = clock_type::now();
    for (long i = 1; i < n; i += 2) {
      recs[i].cancel_ok = hs[static_cast<std::size_t>(i)].cancel("half");
      recs[i].cancel_end_ns = now_ns();
      cancel_true += recs[i].cancel_ok;
    }
    cancel_calls_s = seconds_since(t1);
    ASSERT_TRUE(spin_until(
        [&] { return st.cancelled.load(std::memory_order_acquire) >= must_cancel; }, 100'000ms));
    cancel_all_s = seconds_since(t1);
    ASSERT_TRUE(spin_until(
        [&] {
          return st.woke.load(std::memory_order_acquire) +
                     st.cancelled.load(std::memory_order_acquire) ==
                 n;
        },
        100'000ms));
    total_s = seconds_since(t0);
    hs.clear();
  }
  const long hwm = read_status_kib("VmHWM");
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
  EXPECT_EQ(st.early.load(std::memory_order_relaxed), 0)  // the runtime is gone
      << "timers fired before their deadline";
  long fired_after_cancel = 0, not_cancelled = 0, even_cancelled = 0;
  for (long i = 0; i < n; ++i) {
    const timer_rec& rec = recs[i];
    const auto o = rec.outcome.load(std::memory_order_acquire);
    if (i % 2 == 0) {
      even_cancelled += o != 1;
      continue;
    }
    // A successful cancel() that completed before the deadline: the timer can
    // not have fired first (none fires early), so the task must be cancelled.
    if (rec.cancel_ok && rec.cancel_end_ns < rec.deadline_ns && o != 2) ++fired_after_cancel;
    if (rec.mode != timer_mode::short_rand && (o != 2 || !rec.cancel_ok)) ++not_cancelled;
  }
  EXPECT_EQ(fired_after_cancel, 0);
  EXPECT_EQ(not_cancelled, 0);
  EXPECT_EQ(even_cancelled, 0);
  std::printf(
      "[ timers   ] n=%ld: arm all %.3f s, %ld cancel() calls %.3f s (true: %ld), cancelled "
      "tasks finished %.3f s after the first cancel, all done %.3f s; VmRSS before %ld KiB, "
      "VmHWM %ld KiB (+%ld KiB, %.0f B/timer)\n",
      n, arm_s, n / 2, cancel_calls_s, cancel_true, cancel_all_s, total_s, rss_before, hwm,
      hwm - rss_before, 1024.0 * static_cast<double>(hwm - rss_before) / static_cast<double>(n));
}

// ---- all 10^6 pending at once; memory back to baseline while the runtime runs
//
// n timers (10^5 under TSan) armed from an outside thread; the half that is not
// cancelled sleeps until a common moment `fire_at`, chosen so that every timer
// is armed before the first can fire: the test checks that at the moment the
// last one was armed none had ended (n pending at once).  Of the cancelled
// half, 80% have deadlines that can never be reached (1 h, nanoseconds::max())
// and are cancelled while everything is pending; 20% share the firing window
// and are cancelled while the others fire (cancel racing the timer).  Checks:
// none fires before its deadline; a cancel() that returned true before the
// deadline always wins; every unreachable one ends cancelled; every other one
// fires.  Then, with the runtime still running and every handle dropped, the
// bytes the allocator has handed out are back at the level measured before the
// timers (after a warm-up round): nothing the timers used is kept.

using weft_test::allocated_bytes;

enum class pending_mode : std::uint8_t { fire, never, hour, racing };

struct pending_rec {
  std::int64_t sleep_until_ns = 0;  // fire / racing: the absolute deadline
  std::int64_t cancel_end_ns = 0;   // written by the canceller (the test thread)
  bool cancel_ok = false;           // cancel() returned true
  pending_mode mode = pending_mode::fire;
  std::atomic<std::uint8_t> outcome{0};  // 0 pending, 1 woke normally, 2 cancelled
};

weft::task<void> pending_timer(timer_stats* st, pending_rec* r) {
  auto tag = weft::sleep_for(std::chrono::hours(1));  // named: no temporaries in the co_await
  switch (r->mode) {
    case pending_mode::fire:
    case pending_mode::racing:
      tag = weft::sleep_until(clock_type::time_point(std::chrono::nanoseconds(r->sleep_until_ns)));
      break;
    case pending_mode::never:
      tag = weft::sleep_for(std::chrono::nanoseconds::max());
      break;
    case pending_mode::hour:
      break;
  }
  // Relaxed: a counter the test polls; the outcome below is what it checks
  // with acquire after the run.
  st->armed.fetch_add(1, std::memory_order_relaxed);
  bool cancelled = false;
  try {
    co_await tag;
  } catch (const cancelled_error&) {
    cancelled = true;
  }
  if (cancelled) {
    // Release: publishes nothing more than the counter; pairs with the
    // test's acquire polls (kept symmetric with `woke`).
    r->outcome.store(2, std::memory_order_release);
    st->cancelled.fetch_add(1, std::memory_order_release);
    co_return;
  }
  const bool timed = r->mode == pending_mode::fire || r->mode == pending_mode::racing;
  // Relaxed: counters, read after every task ended (their handles' joins and
  // the acquire polls below order them).
  if (!timed || now_ns() < r->sleep_until_ns) st->early.fetch_add(1, std::memory_order_relaxed);
  r->outcome.store(1, std::memory_order_release);  // pairs with the test's acquire loads
  st->woke.fetch_add(1, std::memory_order_release);
}

TEST(MillionTimersTest, AllPendingAtOnceHalfCancelledAndMemoryBackToBaselineWhileTheRuntimeRuns) {
  const long n = scaled(1'000'000, 100'000, 250'000);
  // Arming takes 0.5-1.7 s for 10^6 here (2 shared cores); the firing half
  // sleeps until fire_at, after that budget.
  const auto arm_budget = std::chrono::seconds(scaled(6, 20, 12));
  watchdog dog(std::chrono::seconds(110), std::chrono::seconds(60));
  frame_baseline frames;
  auto recs = std::make_unique<pending_rec[]>(static_cast<std::size_t>(n));
  timer_stats st;
  long long base_bytes = 0, after_bytes = 0, peak_pending = 0;
  long woke_when_all_armed = -1, ended_when_all_armed = -1;
  double arm_s = 0, cancel_s = 0;
  {
    weft::runtime rt(with_workers(2));
    // Warm-up: the same path with a few thousand timers, so that whatever the
    // runtime keeps for good after first use (queues, caches) is in the baseline.
    {
      dog.phase("warm-up");
      const long warm = 3 * 4096;
      auto wrecs = std::make_unique<pending_rec[]>(static_cast<std::size_t>(warm));
      timer_stats wst;
      std::vector<weft::join_handle<void>> whs;
      whs.reserve(static_cast<std::size_t>(warm));
      for (long i = 0; i < warm; ++i) {
        wrecs[i].mode = pending_mode::hour;
        whs.push_back(rt.spawn(pending_timer(&wst, &wrecs[i])));
      }
      ASSERT_TRUE(spin_until([&] { return wst.armed.load(std::memory_order_relaxed) == warm; }));
      for (auto& h : whs) (void)h.cancel("warm-up");
      for (auto& h : whs) h.join();  // the timer task catches its cancellation
    }
    base_bytes = allocated_bytes();

    // The plan: odd i cancelled (40% never, 40% 1 h, 20% racing), even i fire.
    rng r(7);
    const auto t0 = clock_type::now();
    const std::int64_t fire_at = now_ns() + std::chrono::nanoseconds(arm_budget).count();
    const std::int64_t window = std::chrono::nanoseconds(300ms).count();
    long unreachable = 0;
    for (long i = 0; i < n; ++i) {
      pending_rec& rec = recs[i];
      if (i % 2 == 1) {
        const auto k = r.below(10);
        rec.mode = k < 4 ? pending_mode::never : k < 8 ? pending_mode::hour : pending_mode::racing;
        unreachable += rec.mode != pending_mode::racing;
      } else {
        rec.mode = pending_mode::fire;
      }
      rec.sleep_until_ns = fire_at + static_cast<std::int64_t>(r.below(window));
    }

    dog.phase("arming");
    std::vector<weft::join_handle<void>> hs;
    hs.reserve(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) {
      hs.push_back(rt.spawn(pending_timer(&st, &recs[i])));
      if ((i & 4095) == 0) dog.kick();
    }
    ASSERT_TRUE(spin_until([&] { return st.armed.load(std::memory_order_relaxed) == n; },
                           std::chrono::milliseconds(100'000)));
    // Acquire: pairs with the timers' release increments.
    woke_when_all_armed = st.woke.load(std::memory_order_acquire);
    ended_when_all_armed = woke_when_all_armed + st.cancelled.load(std::memory_order_acquire);
    peak_pending = n - ended_when_all_armed;
    arm_s = seconds_since(t0);

    dog.phase("cancelling the unreachable ones");
    const auto t1 = clock_type::now();
    for (long i = 1; i < n; i += 2) {
      if (recs[i].mode == pending_mode::racing) continue;
      recs[i].cancel_ok = hs[static_cast<std::size_t>(i)].cancel("half");
      recs[i].cancel_end_ns = now_ns();
      if ((i & 4095) == 1) dog.kick();
    }
    cancel_s = seconds_since(t1);
    // The racing ones: cancelled while the firing half fires.
    while (now_ns() < fire_at) std::this_thread::yield();
    dog.phase("cancelling the racing ones");
    for (long i = 1; i < n; i += 2) {
      if (recs[i].mode != pending_mode::racing) continue;
      recs[i].cancel_ok = hs[static_cast<std::size_t>(i)].cancel("racing");
      recs[i].cancel_end_ns = now_ns();
    }
    dog.phase("waiting for every timer");
    ASSERT_TRUE(spin_until(
        [&] {
          dog.kick();
          return st.woke.load(std::memory_order_acquire) +
                     st.cancelled.load(std::memory_order_acquire) ==
                 n;
        },
        std::chrono::milliseconds(100'000)));
    for (auto& h : hs) h.join();  // every timer task returns normally (it catches)
    std::vector<weft::join_handle<void>>().swap(hs);  // frees the handles' vector too
    (void)unreachable;
    after_bytes = allocated_bytes();
  }
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
  EXPECT_EQ(ended_when_all_armed, 0)
      << "timers ended before all " << n << " were armed: they were not all pending at once "
      << "(arming took " << arm_s << " s)";
  EXPECT_EQ(st.early.load(std::memory_order_relaxed), 0) << "timers fired before their deadline";
  long fired_after_cancel = 0, unreachable_not_cancelled = 0, fire_half_not_fired = 0;
  long racing_cancelled = 0, racing_fired = 0;
  for (long i = 0; i < n; ++i) {
    const pending_rec& rec = recs[i];
    const auto o = rec.outcome.load(std::memory_order_acquire);
    switch (rec.mode) {
      case pending_mode::fire:
        fire_half_not_fired += o != 1;
        break;
      case pending_mode::never:
      case pending_mode::hour:
        unreachable_not_cancelled += o != 2 || !rec.cancel_ok;
        break;
      case pending_mode::racing:
        // A successful cancel() that returned before the deadline: the timer
        // cannot have fired first (none fires early), so the cancel wins.
        if (rec.cancel_ok && rec.cancel_end_ns < rec.sleep_until_ns && o != 2) ++fired_after_cancel;
        racing_cancelled += o == 2;
        racing_fired += o == 1;
        break;
    }
  }
  EXPECT_EQ(fired_after_cancel, 0) << "a timer fired after a successful cancel()";
  EXPECT_EQ(unreachable_not_cancelled, 0);
  EXPECT_EQ(fire_half_not_fired, 0);
  // Nothing the timers used is kept: no per-timer residue (10^6 timers leaving
  // even 4 bytes each would be 4 MB).
  const long long slack = 1 << 20;
  EXPECT_LE(after_bytes - base_bytes, slack)
      << "allocated bytes did not return to the baseline after the timers were gone: " << base_bytes
      << " -> " << after_bytes;
  std::printf(
      "[ timers   ] n=%ld all pending at once: %lld (arming %.3f s from an outside thread); "
      "%ld cancel() calls on pending timers %.3f s; racing cancels: %ld won, %ld lost to the "
      "timer; allocated bytes before %lld, after %lld (%+lld)\n",
      n, peak_pending, arm_s, n / 2 - (racing_cancelled + racing_fired), cancel_s, racing_cancelled,
      racing_fired, base_bytes, after_bytes, after_bytes - base_bytes);
}

// wait_for() cancels its deadline task and then awaits it.  A cancel of the
// waiter arriving after the awaited task has answered is forwarded to the
// deadline task by that await; wait_for must not swallow it with what that
// await throws.  Here the answer's move constructor (which runs in the waiter,
// after its join ended) cancels the waiter; the next await must deliver it.
// Deterministic.

struct cancels_on_second_move {
  weft::join_handle<std::string>* victim = nullptr;
  int moves = 0;
  int value = 0;
  cancels_on_second_move(weft::join_handle<std::string>* v, int x) : victim(v), value(x) {}
  // Move 1: into the promise, in the finishing task.  Move 2: out of it, in
  // the waiter (promise::take_value), after its join ended.
  cancels_on_second_move(cancels_on_second_move&& o)
      : victim(o.victim), moves(o.moves + 1), value(o.value) {
    if (moves == 2 && victim != nullptr) victim->cancel("late");
  }
};

weft::task<cancels_on_second_move> answer_then_cancel_the_waiter(
    weft::join_handle<std::string>* waiter) {
  co_return cancels_on_second_move(waiter, 9);
}

weft::task<std::string> wait_for_then_await_again(weft::event* ready,
                                                  weft::join_handle<std::string>* self) {
  co_await ready->wait();  // `self` is assigned by now
  weft::join_handle<cancels_on_second_move> h = weft::spawn(answer_then_cancel_the_waiter(self));
  cancels_on_second_move v = co_await weft::wait_for(h, 1h);
  if (v.value != 9) co_return "wrong value";
  try {
    co_await weft::yield();  // asyncio: a cancel after the answer lands at the next await
  } catch (const weft::cancelled_error& e) {
    co_return "cancelled at the next await: " + std::string(e.reason());
  }
  co_return "the cancel was lost";
}

TEST(WaitForTest, ACancelOfTheWaiterAfterTheAnswerIsDeliveredAtTheNextAwait) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::event ready;
  weft::runtime rt(weft_test::with_workers(1));
  weft::join_handle<std::string> w;
  w = rt.spawn(wait_for_then_await_again(&ready, &w));
  ready.set();
  EXPECT_EQ(w.join(), "cancelled at the next await: late");
  EXPECT_EQ(w.cancelling(), 1u);
}

weft::task<int> sleeps_an_hour() {
  co_await weft::sleep_for(std::chrono::hours(1));
  co_return 1;
}

// The inner wait_for (1 h) sees the outer timeout's cancellation come through
// its task; it must let the cancelled_error through (its own deadline is far
// away), and only the outer wait_for turns it into timeout_error.
// `inner_saw`: relaxed, read after block_on().
weft::task<int> inner_wait(std::atomic<int>* inner_saw) {
  try {
    co_return co_await weft::wait_for(sleeps_an_hour(), std::chrono::hours(1));
  } catch (const weft::timeout_error&) {
    inner_saw->store(1, std::memory_order_relaxed);  // wrong: not the inner one's timeout
    throw;
  } catch (const weft::cancelled_error& e) {
    inner_saw->store(e.kind() == weft::cancel_kind::timeout ? 2 : 3, std::memory_order_relaxed);
    throw;
  }
}

weft::task<int> outer_wait(std::atomic<int>* inner_saw) {
  try {
    co_return co_await weft::wait_for(inner_wait(inner_saw), std::chrono::milliseconds(20));
  } catch (const weft::timeout_error&) {
    co_return -1;
  }
}

TEST(WaitForTest, NestedWaitForReportsTheOuterTimeoutOnlyAtTheOuterWaitFor) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::atomic<int> inner_saw{0};
  weft::runtime rt(weft_test::with_workers(2));
  EXPECT_EQ(rt.block_on(outer_wait(&inner_saw)), -1) << "the outer wait_for times out";
  EXPECT_EQ(inner_saw.load(std::memory_order_relaxed), 2)
      << "1: the inner wait_for threw timeout_error; 3: other kind";
}

// wait_for(h, d) takes a reference on h's task for the deadline task it spawns
// (which may outlive the wait).  The deadline task must drop it also when it
// is cancelled before it starts -- it then never runs its body, so a guard
// declared in the body would never drop it and h's frame would leak.  That
// happens whenever the wait ends before the deadline task got a worker:
// (a) h is already done (one worker: the waiter does not suspend, cancels the
// deadline task, and only then lets it run); (b) during shutdown, where the
// spawn of the deadline task completes it at once as cancelled.

weft::task<int> wait_for_finished_handles(int rounds) {
  int sum = 0;
  for (int i = 0; i < rounds; ++i) {
    auto h = weft::spawn(weft_test::value_task(i));
    while (!h.done()) co_await weft::yield();
    sum += co_await weft::wait_for(h, std::chrono::hours(1));
  }
  co_return sum;
}

weft::task<int> wait_for_during_shutdown(std::latch* asleep) {
  asleep->count_down();
  try {
    co_await weft::sleep_for(std::chrono::hours(1));
  } catch (const weft::cancelled_error&) {
    // refused: carry on with a wait_for while the runtime stops
  }
  auto h = weft::spawn(weft_test::value_task(5));  // comes back cancelled ("shutdown")
  try {
    co_return co_await weft::wait_for(h, std::chrono::hours(1));
  } catch (const weft::cancelled_error& e) {
    co_return e.kind() == weft::cancel_kind::shutdown ? -1 : -2;
  }
}

TEST(WaitForTest, TheAwaitedTaskIsFreedWhenItsDeadlineTaskNeverRan) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  const weft_test::frame_baseline frames;
  const int rounds = 100;
  {
    std::latch asleep{1};
    weft::runtime rt(weft_test::with_workers(1));
    EXPECT_EQ(rt.block_on(wait_for_finished_handles(rounds)), rounds * (rounds - 1) / 2);
    auto h = rt.spawn(wait_for_during_shutdown(&asleep));
    asleep.wait();
    rt.shutdown();
    EXPECT_EQ(h.join(), -1) << "the handle spawned during shutdown is cancelled (shutdown)";
  }
  EXPECT_EQ(frames.now(), frames.start)
      << "frames leaked (one per wait_for whose deadline task never ran)";
}

// ---------------------------------------------------------------- the chain

// What a timeout_error carried: its cause() and what std::rethrow_if_nested
// rethrows.
struct chain {
  bool timed_out = false;
  std::optional<cancelled_error> cause;
  std::optional<cancelled_error> nested;
};

template <class T>
weft::task<chain> chain_of(weft::task<T> t) {
  chain c;
  try {
    co_await std::move(t);
  } catch (const weft::timeout_error& e) {
    c.timed_out = true;
    if (e.cause() != nullptr) c.cause = *e.cause();
    try {
      std::rethrow_if_nested(e);
    } catch (const cancelled_error& n) {
      c.nested = n;
    }
  }
  co_return c;
}

weft::task<chain> wait_for_chain(std::chrono::nanoseconds d) {
  co_return co_await chain_of(weft::wait_for(sleeps_then(10s, 1), d));
}

weft::task<chain> wait_until_handle_chain() {
  weft::join_handle<int> h = weft::spawn(sleeps_then(10s, 1));
  co_return co_await chain_of(weft::wait_until(h, clock_type::now() + 10ms));
}

// asyncio raises TimeoutError from the CancelledError; weft's timeout_error
// carries that cancelled_error (kind timeout, reason "timeout", the wait's
// call site) both as cause() and as its nested exception -- also when the
// deadline had passed before the task could start (the cancellation it would
// have been delivered).
TEST(WaitForTest, TimeoutErrorIsChainedFromTheCancellationThatCausedIt) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  for (const std::chrono::nanoseconds d :
       {std::chrono::nanoseconds(10ms), std::chrono::nanoseconds(0)}) {
    const chain c = rt.block_on(wait_for_chain(d));
    ASSERT_TRUE(c.timed_out) << d.count();
    ASSERT_TRUE(c.cause.has_value()) << d.count();
    ASSERT_TRUE(c.nested.has_value()) << d.count();
    EXPECT_EQ(c.cause->kind(), cancel_kind::timeout);
    EXPECT_EQ(c.cause->reason(), "timeout");
    EXPECT_EQ(c.nested->reason(), "timeout");
    EXPECT_NE(std::string(c.cause->where().file_name()).find("timeout_test.cpp"),
              std::string::npos);
    EXPECT_EQ(c.cause->where().line(), c.nested->where().line());
  }
  const chain h = rt.block_on(wait_until_handle_chain());
  ASSERT_TRUE(h.cause.has_value());
  EXPECT_EQ(h.cause->kind(), cancel_kind::timeout);
  // A timeout_error made by user code has no cause (and no nested exception).
  EXPECT_EQ(weft::timeout_error().cause(), nullptr);
}

}  // namespace
