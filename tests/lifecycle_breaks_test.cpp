// SPDX-License-Identifier: MIT
// Regression tests for three lifecycle breaks found by an independent test
// campaign:
//
//   TimerSaturation*, RuntimeOptionsSaturationTest (break 7): every duration
//     and time point a user can pass saturates; a sleep of "forever" neither
//     overflows (the timer thread spun in condition_variable::wait_for, and
//     cancel() and shutdown() then blocked on its mutex) nor escapes cancel()
//     or shutdown().
//   ShutdownRefusalTest, ShutdownReportTest (break 11): a task that refuses
//     the shutdown and sleeps again really sleeps (it spun, re-cancelled
//     millions of times), shutdown waits for it, and after a bound says which
//     tasks it waits for, with their spawn sites.
//   RuntimeStartFailureTest (break 12): a thread that fails to start makes the
//     constructor join the threads it started and throw.
//
// House rules (tests/test_support.hpp): a watchdog in every test, no wall-clock
// sleeps as synchronisation, coroutines are free functions taking their state
// by pointer, that state is declared before the runtime.
#include <dirent.h>
#include <time.h>

#include <condition_variable>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "runtime_impl.hpp"  // detail::testing::fail_thread_start_after
#include "test_support.hpp"

namespace {

using namespace weft_test;

// CPU time this process used so far (every thread), in seconds.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A runtime that keeps its idle CPU near zero: workers park at once.
weft::runtime_options quiet_options(unsigned workers) {
  weft::runtime_options o = with_workers(workers);
  o.idle_spin = std::chrono::microseconds(0);
  return o;
}

// ================================================================ break 7

using steady = std::chrono::steady_clock;
using hours_point = std::chrono::time_point<steady, std::chrono::hours>;

// Sleeps that end "never": only cancel() or shutdown() wakes them.
enum class forever : int {
  for_ns_max,
  for_ns_max_minus_1s,
  for_hours_max,
  for_seconds_max_minus_1s,
  until_max,
  until_max_minus_1s,
  until_hours_max,
};

std::string name_of(forever k) {
  switch (k) {
    case forever::for_ns_max:
      return "SleepForNanosecondsMax";
    case forever::for_ns_max_minus_1s:
      return "SleepForNanosecondsMaxMinusOneSecond";
    case forever::for_hours_max:
      return "SleepForHoursMax";
    case forever::for_seconds_max_minus_1s:
      return "SleepForSecondsMaxMinusOneSecond";
    case forever::until_max:
      return "SleepUntilTimePointMax";
    case forever::until_max_minus_1s:
      return "SleepUntilTimePointMaxMinusOneSecond";
    case forever::until_hours_max:
      return "SleepUntilHoursTimePointMax";
  }
  return "?";
}

weft::detail::sleep_tag forever_sleep(forever k) {
  switch (k) {
    case forever::for_ns_max:
      return weft::sleep_for(std::chrono::nanoseconds::max());
    case forever::for_ns_max_minus_1s:
      return weft::sleep_for(std::chrono::nanoseconds::max() - 1s);
    case forever::for_hours_max:
      return weft::sleep_for(std::chrono::hours::max());
    case forever::for_seconds_max_minus_1s:
      return weft::sleep_for(std::chrono::seconds::max() - 1s);
    case forever::until_max:
      return weft::sleep_until(steady::time_point::max());
    case forever::until_max_minus_1s:
      return weft::sleep_until(steady::time_point::max() - 1s);
    case forever::until_hours_max:
      return weft::sleep_until(hours_point::max());
  }
  return weft::sleep_for(0ns);
}

// Relaxed, every field: each is read after the task's handle reported done
// (join), or is a sign of progress only.
struct forever_state {
  std::latch asleep{2};
  std::atomic<int> kind_seen[2] = {-1, -1};
};

weft::task<int> sleep_forever(forever k, forever_state* s, int slot) {
  s->asleep.count_down();
  try {
    co_await forever_sleep(k);
  } catch (const cancelled_error& e) {
    s->kind_seen[slot].store(static_cast<int>(e.kind()), std::memory_order_relaxed);
    throw;
  }
  co_return 1;  // the sleep ended by itself: a saturation bug
}

weft::task<int> sleep_then(std::chrono::milliseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

// Wall time passes: a task of a runtime of its own sleeps `d` (weft's timer
// is what these tests are about; the runtime under test keeps no other timer
// armed, so its timer thread waits for the far deadline alone meanwhile).
// Returns the CPU time the whole process used during it, in seconds.
double cpu_during_a_sleep_elsewhere(std::chrono::milliseconds d) {
  weft::runtime elsewhere(quiet_options(1));
  const double cpu0 = process_cpu_seconds();
  const auto t0 = clock_type::now();
  EXPECT_EQ(elsewhere.block_on(sleep_then(d, 7)), 7);
  const double cpu = process_cpu_seconds() - cpu0;
  EXPECT_GE(seconds_since(t0), 0.9 * std::chrono::duration<double>(d).count());
  return cpu;
}

// Spinning costs a core for the whole window; parked threads next to nothing.
constexpr double kIdleCpuBound = 0.1;  // seconds of CPU in a 500 ms window

class TimerSaturationTest : public ::testing::TestWithParam<forever> {};

// A sleep of "forever" arms a timer that the timer thread waits for without
// spinning (process CPU time stays low for 500 ms), and both cancel() and
// shutdown() wake it at once.  Before the fix the timer thread busy-looped in
// condition_variable::wait_for (signed overflow adding the far deadline to
// steady_clock::now(); the wait returned at once) holding the timer mutex
// between rounds; a duration of a coarser unit (hours::max()) overflowed
// converting to nanoseconds and ended at once.
TEST_P(TimerSaturationTest, ForeverSleepDoesNotSpinAndCancelAndShutdownWakeIt) {
  watchdog dog(60s);
  forever_state s;
  weft::runtime rt(quiet_options(2));
  weft::join_handle<int> cancelled = rt.spawn(sleep_forever(GetParam(), &s, 0));
  weft::join_handle<int> at_shutdown = rt.spawn(sleep_forever(GetParam(), &s, 1));
  s.asleep.wait();

  dog.phase("500 ms with only the sleeps of forever armed");
  const double cpu = cpu_during_a_sleep_elsewhere(500ms);
  EXPECT_LT(cpu, kIdleCpuBound) << "the process used " << cpu
                                << " s of CPU in 500 ms: the timer thread spins";

  dog.phase("cancel");
  const auto t1 = clock_type::now();
  EXPECT_TRUE(cancelled.cancel("enough"));
  EXPECT_THROW((void)cancelled.join(), cancelled_error);
  EXPECT_LT(seconds_since(t1), 2.0 * kSlowdown);

  dog.phase("shutdown");
  const auto t2 = clock_type::now();
  rt.shutdown();
  EXPECT_LT(seconds_since(t2), 2.0 * kSlowdown);
  EXPECT_TRUE(at_shutdown.cancelled());
  EXPECT_EQ(s.kind_seen[0].load(std::memory_order_relaxed),
            static_cast<int>(cancel_kind::explicit_request));
  EXPECT_EQ(s.kind_seen[1].load(std::memory_order_relaxed),
            static_cast<int>(cancel_kind::shutdown));
}

INSTANTIATE_TEST_SUITE_P(Extremes, TimerSaturationTest,
                         ::testing::Values(forever::for_ns_max, forever::for_ns_max_minus_1s,
                                           forever::for_hours_max,
                                           forever::for_seconds_max_minus_1s, forever::until_max,
                                           forever::until_max_minus_1s, forever::until_hours_max),
                         [](const auto& info) { return name_of(info.param); });

// Durations <= 0 and time points in the past, down to min() of any unit:
// each behaves as yield() (no overflow computing the deadline, which for
// hours::min() used to wrap around to a deadline centuries away).
weft::task<int> expired_sleeps() {
  int n = 0;
  co_await weft::sleep_for(0ns);
  ++n;
  co_await weft::sleep_for(-1ns);
  ++n;
  co_await weft::sleep_for(std::chrono::nanoseconds::min());
  ++n;
  co_await weft::sleep_for(std::chrono::hours::min());
  ++n;
  co_await weft::sleep_for(std::chrono::seconds::min() + 1s);
  ++n;
  co_await weft::sleep_for(std::chrono::milliseconds(-5));
  ++n;
  co_await weft::sleep_until(steady::time_point::min());
  ++n;
  co_await weft::sleep_until(steady::time_point{});
  ++n;
  co_await weft::sleep_until(steady::now() - 1h);
  ++n;
  co_await weft::sleep_until(hours_point::min());
  ++n;
  co_await weft::sleep_until(hours_point{});
  ++n;
  co_return n;
}

TEST(TimerSaturationEdgesTest, ZeroNegativeAndMinimalSleepsReturnAtOnce) {
  watchdog dog(60s);
  weft::runtime rt(quiet_options(1));
  const auto t0 = clock_type::now();
  EXPECT_EQ(rt.block_on(expired_sleeps()), 11);
  EXPECT_LT(seconds_since(t0), 2.0 * kSlowdown);
}

// wait_for / wait_until at their extremes.  Far deadlines (max() - 1s of any
// unit) arm the deadline task's timer: the wait gives the task's value, and
// the timer thread does not spin meanwhile.  max() (any unit) never expires.
// Durations <= 0 (min() of any unit) and past time points are already
// expired: a task still running is cancelled ("timeout").
weft::task<int> wait_for_event(weft::event* ev, int v) {
  co_await ev->wait();
  co_return v;
}

weft::task<int> wait_for_far(int which, weft::event* ev) {
  weft::join_handle<int> h = weft::spawn(wait_for_event(ev, 40 + which));
  switch (which) {
    case 0:
      co_return co_await weft::wait_for(h, std::chrono::nanoseconds::max() - 1s);
    case 1:
      co_return co_await weft::wait_for(h, std::chrono::hours::max() - 1h);
    case 2:
      co_return co_await weft::wait_until(h, steady::time_point::max() - 1s);
    case 3:
      co_return co_await weft::wait_until(h, hours_point::max() - 1h);
    case 4:
      co_return co_await weft::wait_for(h, std::chrono::hours::max());
    case 5:
      co_return co_await weft::wait_until(h, hours_point::max());
    case 6:
      co_return co_await weft::wait_for(h, std::chrono::nanoseconds::max());
    // The overloads that spawn the task themselves.
    case 7:
      co_return co_await weft::wait_for(wait_for_event(ev, 47), std::chrono::hours::max() - 1h);
    case 8:
      co_return co_await weft::wait_for(wait_for_event(ev, 48), std::chrono::hours::max());
    case 9:
      co_return co_await weft::wait_until(wait_for_event(ev, 49), hours_point::max() - 1h);
    default:
      co_return co_await weft::wait_until(wait_for_event(ev, 50), hours_point::max());
  }
}

TEST(TimerSaturationEdgesTest, WaitForAndWaitUntilWithFarDeadlinesGiveTheValueWithoutSpinning) {
  watchdog dog(60s);
  for (int which = 0; which < 11; ++which) {
    weft::event ev;
    weft::runtime rt(quiet_options(2));
    weft::join_handle<int> h = rt.spawn(wait_for_far(which, &ev));
    // Whether the deadline task is armed yet or not, nothing else is: the
    // timer thread waits for that deadline alone (or for nothing).
    const double cpu = cpu_during_a_sleep_elsewhere(300ms);
    EXPECT_LT(cpu, kIdleCpuBound) << "case " << which << ": " << cpu
                                  << " s of CPU in 300 ms: the timer thread spins";
    EXPECT_FALSE(h.done()) << "case " << which << ": the wait ended early";
    ev.set();
    try {
      EXPECT_EQ(h.join(), 40 + which) << "case " << which;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << which << ": " << e.what();
    }
  }
}

weft::task<int> wait_expired(int which, std::atomic<int>* cancelled) {
  weft::join_handle<int> h = weft::spawn(sleep_then(1h, 1));
  try {
    switch (which) {
      case 0:
        co_return co_await weft::wait_for(h, 0ns);
      case 1:
        co_return co_await weft::wait_for(h, -1ns);
      case 2:
        co_return co_await weft::wait_for(h, std::chrono::nanoseconds::min());
      case 3:
        co_return co_await weft::wait_for(h, std::chrono::hours::min());
      case 4:
        co_return co_await weft::wait_for(h, std::chrono::seconds::min() + 1s);
      case 5:
        co_return co_await weft::wait_until(h, steady::time_point::min());
      case 6:
        co_return co_await weft::wait_until(h, hours_point::min());
      case 7:
        co_return co_await weft::wait_until(h, hours_point{});
      case 8:
        co_return co_await weft::wait_until(h, steady::now() - 1h);
      // The overloads that spawn the task themselves: timeout_error says
      // that task ended by the timeout's cancellation.
      case 9:
        co_return co_await weft::wait_for(sleep_then(1h, 1), std::chrono::hours::min());
      default:
        co_return co_await weft::wait_until(sleep_then(1h, 1), hours_point::min());
    }
  } catch (const weft::timeout_error&) {
    cancelled->fetch_add(which >= 9 || h.cancelled() ? 1 : 0, std::memory_order_relaxed);
    h.cancel();  // cases 9 and 10 did not wait on h
    co_return -1;
  }
}

TEST(TimerSaturationEdgesTest, WaitForAndWaitUntilAtOrBelowZeroTimeOutAtOnce) {
  watchdog dog(60s);
  std::atomic<int> cancelled{0};  // relaxed: read after block_on
  weft::runtime rt(quiet_options(2));
  const auto t0 = clock_type::now();
  for (int which = 0; which < 11; ++which) {
    EXPECT_EQ(rt.block_on(wait_expired(which, &cancelled)), -1) << "case " << which;
  }
  EXPECT_EQ(cancelled.load(std::memory_order_relaxed), 11);
  EXPECT_LT(seconds_since(t0), 2.0 * kSlowdown);
}

// ---- runtime_options::time_slice and idle_spin

weft::task<long> checkpoint_loop(long n) {
  long i = 0;
  for (; i < n; ++i) co_await weft::checkpoint();
  co_return i;
}

// Huge values saturate: the slice never expires, an idle worker spins until
// there is work (or shutdown).  Before the fix, converting them to
// nanoseconds overflowed (UBSan: signed integer overflow in
// std::chrono::duration_cast at runtime start).
TEST(RuntimeOptionsSaturationTest, HugeTimeSliceAndIdleSpinSaturate) {
  watchdog dog(60s);
  for (int which = 0; which < 3; ++which) {
    weft::runtime_options o = with_workers(2);
    if (which != 1) o.time_slice = std::chrono::microseconds::max();
    if (which != 0) o.idle_spin = std::chrono::microseconds::max();
    weft::runtime rt(o);
    EXPECT_EQ(rt.time_slice(),
              which != 1 ? std::chrono::microseconds::max() : std::chrono::microseconds(2000));
    EXPECT_EQ(rt.block_on(checkpoint_loop(10'000)), 10'000);
    rt.shutdown();
  }
}

// A negative slice or idle spin is a mistake the caller wants to hear about:
// std::invalid_argument, before any thread starts.  Zero keeps its meaning
// (slice: the 2 ms default; idle spin: park at once).
TEST(RuntimeOptionsSaturationTest, NegativeTimeSliceOrIdleSpinThrowsInvalidArgument) {
  watchdog dog(60s);
  const frame_baseline frames;
  for (auto bad : {std::chrono::microseconds(-1), std::chrono::microseconds::min()}) {
    weft::runtime_options slice = with_workers(1);
    slice.time_slice = bad;
    EXPECT_THROW(weft::runtime rt(slice), std::invalid_argument);
    weft::runtime_options spin = with_workers(1);
    spin.idle_spin = bad;
    EXPECT_THROW(weft::runtime rt(spin), std::invalid_argument);
  }
  weft::runtime_options zero = with_workers(1);
  zero.time_slice = std::chrono::microseconds(0);
  zero.idle_spin = std::chrono::microseconds(0);
  weft::runtime rt(zero);
  EXPECT_EQ(rt.time_slice(), std::chrono::microseconds(2000));
  EXPECT_EQ(rt.block_on(checkpoint_loop(100)), 100);
}

// ---- the simulation's durations (weft/sim.hpp)

// Relaxed is not needed: a simulation runs on one thread.
struct sim_clock_log {
  std::vector<std::int64_t> seen;  // sim::now() after each sleep, ns since the epoch
};

weft::task<int> sleep_and_read_the_clock(sim_clock_log* log) {
  for (int i = 0; i < 6; ++i) {
    co_await weft::sleep_for(1ms);
    log->seen.push_back(weft::sim::now().time_since_epoch().count());
  }
  co_return 1;
}

// max_step_cost = nanoseconds::max(): every step may add up to 292 years of
// virtual time.  The virtual clock saturates at the end of steady_clock's
// range instead of wrapping around (before the fix it wrapped after two
// steps: sim::now() went negative and backwards).  horizon = max() with a
// sleep of "forever": the clock jumps to the end of its range at most.
TEST(SimulationSaturationTest, HugeStepCostSaturatesTheVirtualClock) {
  watchdog dog(60s);
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    sim_clock_log log;
    weft::runtime_options o = with_workers(2);
    o.simulation = weft::sim::options{};
    o.simulation->seed = seed;
    o.simulation->max_step_cost = std::chrono::nanoseconds::max();
    o.simulation->horizon = std::chrono::nanoseconds::max();
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(sleep_and_read_the_clock(&log)), 1);
    ASSERT_EQ(log.seen.size(), 6u);
    for (std::size_t i = 0; i < log.seen.size(); ++i) {
      EXPECT_GT(log.seen[i], 0) << "seed " << seed << ", sleep " << i;
      if (i > 0) {
        EXPECT_GE(log.seen[i], log.seen[i - 1]) << "seed " << seed << ", sleep " << i;
      }
    }
  }
}

// Negative durations in sim::options count as 0: no step costs time, and a
// horizon of 0 fires no timer beyond the start (a sleep is then a deadlock).
weft::task<int> one_short_sleep() {
  co_await weft::sleep_for(1ms);
  co_return 1;
}

TEST(SimulationSaturationTest, NegativeStepCostAndHorizonCountAsZero) {
  watchdog dog(60s);
  for (auto bad : {std::chrono::nanoseconds(-1), std::chrono::nanoseconds::min()}) {
    {
      weft::runtime_options o = with_workers(2);
      o.simulation = weft::sim::options{};
      o.simulation->max_step_cost = bad;
      weft::runtime rt(o);
      EXPECT_EQ(rt.block_on(one_short_sleep()), 1);
    }
    {
      weft::runtime_options o = with_workers(2);
      o.simulation = weft::sim::options{};
      o.simulation->horizon = bad;
      weft::runtime rt(o);
      EXPECT_THROW(rt.block_on(one_short_sleep()), weft::sim::deadlock_error);
    }
  }
}

weft::task<std::int64_t> sleep_for_ever_in_a_simulation() {
  co_await weft::sleep_for(std::chrono::nanoseconds::max());
  co_return weft::sim::now().time_since_epoch().count();
}

// A sleep of nanoseconds::max() ends at the end of the virtual clock's range
// when the horizon reaches that far (no wrap-around to a deadline in the
// past), and is a deadlock under a shorter horizon.
TEST(SimulationSaturationTest, ForeverSleepEndsAtTheEndOfTimeOrIsADeadlock) {
  watchdog dog(60s);
  {
    weft::runtime_options o = with_workers(1);
    o.simulation = weft::sim::options{};
    o.simulation->horizon = std::chrono::nanoseconds::max();
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(sleep_for_ever_in_a_simulation()),
              steady::time_point::max().time_since_epoch().count());
  }
  {
    weft::runtime_options o = with_workers(1);
    o.simulation = weft::sim::options{};
    o.simulation->horizon = std::chrono::nanoseconds(24h);
    weft::runtime rt(o);
    EXPECT_THROW(rt.block_on(sleep_for_ever_in_a_simulation()), weft::sim::deadlock_error);
  }
}

// ================================================================ break 11

// Relaxed, every field: counters and flags read after the task finished
// (shutdown() returned, or join()), or samples taken while it runs.
struct refusal_state {
  std::latch asleep{1};
  std::atomic<long> cancels_caught{0};      // every cancelled_error the task caught
  std::atomic<long> loops_after{0};         // loops after the shutdown delivery
  std::atomic<long> loops_while_waited{0};  // ... while shutdown() had not returned
  std::atomic<bool> shutdown_returned{false};
};

// Catches every cancellation and sleeps `nap` again, for `span` of wall time
// after its shutdown delivery; then returns how many loops it made in that
// time.  Before the fix a refused sleep threw at once: millions of loops.
weft::task<long> refuse_and_sleep(refusal_state* s, std::chrono::milliseconds nap,
                                  std::chrono::milliseconds span) {
  s->asleep.count_down();
  bool delivered = false;
  clock_type::time_point delivered_at{};
  for (;;) {
    try {
      co_await weft::sleep_for(nap);
    } catch (const cancelled_error& e) {
      s->cancels_caught.fetch_add(1, std::memory_order_relaxed);
      if (e.kind() == cancel_kind::shutdown && !delivered) {
        delivered = true;
        delivered_at = clock_type::now();
      }
    }
    if (!delivered) continue;
    const long n = s->loops_after.fetch_add(1, std::memory_order_relaxed) + 1;
    if (!s->shutdown_returned.load(std::memory_order_relaxed)) {
      s->loops_while_waited.fetch_add(1, std::memory_order_relaxed);
    }
    if (clock_type::now() - delivered_at >= span) co_return n;
  }
}

// The refusing task gets the shutdown once; its later sleeps really sleep
// (10 ms each, for 200 ms: about 20 loops, where spinning made millions), and
// shutdown() waits for it to end.
TEST(ShutdownRefusalTest, RefusingTaskThatSleepsAgainSleepsAndShutdownWaitsForIt) {
  watchdog dog(60s);
  const frame_baseline frames;
  refusal_state s;
  {
    weft::runtime rt(quiet_options(2));
    weft::join_handle<long> h = rt.spawn(refuse_and_sleep(&s, 10ms, 200ms));
    s.asleep.wait();
    const auto t0 = clock_type::now();
    rt.shutdown();
    s.shutdown_returned.store(true, std::memory_order_relaxed);
    const double took = seconds_since(t0);
    ASSERT_TRUE(h.done());
    EXPECT_FALSE(h.cancelled());
    const long loops = h.join();
    EXPECT_EQ(s.cancels_caught.load(std::memory_order_relaxed), 1)
        << "the shutdown was delivered once; later sleeps must not be refused";
    EXPECT_LT(loops, 100) << "the refusing task spun instead of sleeping";
    EXPECT_GE(loops, 2) << "the task did not go on sleeping during the shutdown";
    EXPECT_EQ(s.loops_while_waited.load(std::memory_order_relaxed), loops)
        << "shutdown() returned before the task ended";
    EXPECT_GE(took, 0.19) << "shutdown() did not wait for the refusing task";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Relaxed, every field: as refusal_state.
struct event_refusal_state {
  std::latch asleep{1};
  std::latch waiting_again{1};
  std::atomic<long> cancels_caught{0};
  std::atomic<long> waits_after{0};
  weft::event never;
  weft::event release;
};

// Catches the shutdown and waits on an event again, until the event is set.
weft::task<int> refuse_and_wait(event_refusal_state* s) {
  s->asleep.count_down();
  try {
    co_await s->never.wait();
  } catch (const cancelled_error& e) {
    s->cancels_caught.fetch_add(1, std::memory_order_relaxed);
  }
  s->waiting_again.count_down();
  for (;;) {
    try {
      s->waits_after.fetch_add(1, std::memory_order_relaxed);
      co_await s->release.wait();
      co_return 5;
    } catch (const cancelled_error&) {
      s->cancels_caught.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// As above with a list wait: after its shutdown delivery the task's event
// wait really waits (once: no refusal, no loop), and shutdown() waits until
// the event is set from outside.
TEST(ShutdownRefusalTest, RefusingTaskThatWaitsOnAnEventAgainWaitsAndShutdownWaitsForIt) {
  watchdog dog(60s);
  const frame_baseline frames;
  event_refusal_state s;
  {
    weft::runtime rt(quiet_options(2));
    weft::join_handle<int> h = rt.spawn(refuse_and_wait(&s));
    s.asleep.wait();
    std::atomic<bool> returned{false};  // relaxed: a sign of progress
    std::thread stopper([&] {
      rt.shutdown();
      returned.store(true, std::memory_order_relaxed);
    });
    s.waiting_again.wait();
    const double cpu = cpu_during_a_sleep_elsewhere(200ms);
    EXPECT_LT(cpu, kIdleCpuBound) << cpu << " s of CPU in 200 ms: something spins";
    EXPECT_EQ(s.cancels_caught.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(s.waits_after.load(std::memory_order_relaxed), 1) << "the wait was refused";
    EXPECT_FALSE(returned.load(std::memory_order_relaxed)) << "shutdown() did not wait";
    EXPECT_FALSE(h.done());
    s.release.set();
    stopper.join();
    EXPECT_EQ(h.join(), 5);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ---- the shutdown report

// Collects the reports the runtime hands its hook (any thread).
struct report_box {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<weft::shutdown_report> reports;  // guarded by mu

  std::function<void(const weft::shutdown_report&)> hook() {
    return [this](const weft::shutdown_report& r) {
      std::lock_guard lk(mu);
      reports.push_back(r);
      cv.notify_all();
    };
  }
  // Waits (bounded) until a report satisfies `pred`; returns a copy of it.
  template <class Pred>
  std::optional<weft::shutdown_report> wait_for_report(Pred pred, std::chrono::seconds bound) {
    std::unique_lock lk(mu);
    std::optional<weft::shutdown_report> found;
    cv.wait_for(lk, bound * kSlowdown, [&] {
      for (const auto& r : reports) {
        if (pred(r)) {
          found = r;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::size_t count() {
    std::lock_guard lk(mu);
    return reports.size();
  }
};

bool names(const weft::shutdown_report& r, std::uint_least32_t line,
           weft::shutdown_report::task_state state) {
  for (const auto& t : r.tasks) {
    if (t.state == state && t.spawned_at.line() == line &&
        std::string_view(t.spawned_at.file_name()) == __FILE__)
      return true;
  }
  return false;
}

// Relaxed, every field: flags the tasks poll, counters read after join.
struct held_shutdown {
  std::latch started{2};
  std::atomic<bool> release{false};
  std::atomic<long> refusals{0};
};

// Refuses the shutdown and sleeps 10 ms at a time until released.
weft::task<int> refusing_sleeper(held_shutdown* s) {
  s->started.count_down();
  while (!s->release.load(std::memory_order_relaxed)) {
    try {
      co_await weft::sleep_for(10ms);
    } catch (const cancelled_error&) {
      s->refusals.fetch_add(1, std::memory_order_relaxed);
    }
  }
  co_return 1;
}

// A loop without a cancellation point, until released.
weft::task<int> loop_without_checkpoint(held_shutdown* s) {
  s->started.count_down();
  long spins = 0;
  while (!s->release.load(std::memory_order_relaxed)) ++spins;
  co_return spins > 0 ? 2 : 2;
}

// With shutdown_report_after = 50 ms, a shutdown held by a task that refuses
// it (sleeping in a loop) and by a task in a loop without a checkpoint
// reports both, each with the line that spawned it, repeatedly but at most
// once per 50 ms; both are released once the report named them.
TEST(ShutdownReportTest, ReportNamesTheSpawnSitesOfARefusingSleeperAndALoopWithoutCheckpoint) {
  watchdog dog(60s);
  report_box box;
  held_shutdown s;
  weft::runtime_options o = quiet_options(2);
  o.shutdown_report_after = 50ms;
  o.on_shutdown_report = box.hook();
  weft::runtime rt(o);
  const std::uint_least32_t sleeper_line = __LINE__ + 1;
  weft::join_handle<int> sleeper = rt.spawn(refusing_sleeper(&s));
  const std::uint_least32_t loop_line = __LINE__ + 1;
  weft::join_handle<int> loop = rt.spawn(loop_without_checkpoint(&s));
  s.started.wait();

  std::thread stopper([&] { rt.shutdown(); });
  using state = weft::shutdown_report::task_state;
  auto report = box.wait_for_report(
      [&](const weft::shutdown_report& r) {
        return names(r, sleeper_line, state::sleeping) && names(r, loop_line, state::running);
      },
      20s);
  // Keep the shutdown waiting a few more rounds, to see the reports' pace.
  const std::size_t seen = box.count();
  box.wait_for_report([&](const weft::shutdown_report&) { return box.reports.size() >= seen + 3; },
                      20s);
  s.release.store(true, std::memory_order_relaxed);
  stopper.join();

  ASSERT_TRUE(report.has_value()) << "no report named both tasks";
  const std::string text = report->to_string();
  const std::string file = std::string(__FILE__).substr(std::string(__FILE__).rfind('/') + 1);
  EXPECT_NE(text.find(file + ":" + std::to_string(sleeper_line)), std::string::npos) << text;
  EXPECT_NE(text.find(file + ":" + std::to_string(loop_line)), std::string::npos) << text;
  EXPECT_NE(text.find("sleeping"), std::string::npos) << text;
  EXPECT_NE(text.find("running on worker"), std::string::npos) << text;
  EXPECT_GE(report->waited, 50ms);
  {
    std::lock_guard lk(box.mu);
    ASSERT_GE(box.reports.size(), 2u);
    for (std::size_t i = 1; i < box.reports.size(); ++i) {
      // 50 ms apart at least (the clock is read in whole milliseconds).
      EXPECT_GE(box.reports[i].waited - box.reports[i - 1].waited, 49ms) << "report " << i;
    }
  }
  EXPECT_EQ(sleeper.join(), 1);
  EXPECT_EQ(loop.join(), 2);
  EXPECT_EQ(s.refusals.load(std::memory_order_relaxed), 1);
}

// Relaxed, every field: as held_shutdown.
struct awaited_sleeper {
  std::latch started{1};
  std::atomic<bool> release{false};
  std::atomic<std::uint_least32_t> child_line{0};
};

weft::task<int> sleep_until_released(awaited_sleeper* s) {
  while (!s->release.load(std::memory_order_relaxed)) {
    try {
      co_await weft::sleep_for(10ms);
    } catch (const cancelled_error&) {
    }
  }
  co_return 3;
}

weft::task<int> parent_of_a_refusing_sleeper(awaited_sleeper* s) {
  s->child_line.store(__LINE__ + 1, std::memory_order_relaxed);
  weft::join_handle<int> child = weft::spawn(sleep_until_released(s));
  s->started.count_down();
  for (;;) {
    try {
      co_return co_await child;
    } catch (const cancelled_error&) {
      // the shutdown reached the parent: wait for the child all the same
    }
  }
}

// weft::spawn (from inside a task) records its line too, and a task awaiting
// a sleeping task is reported as awaiting it.
TEST(ShutdownReportTest, ReportNamesASpawnFromATaskAndTheTaskAwaitingIt) {
  watchdog dog(60s);
  report_box box;
  awaited_sleeper s;
  weft::runtime_options o = quiet_options(2);
  o.shutdown_report_after = 50ms;
  o.on_shutdown_report = box.hook();
  weft::runtime rt(o);
  const std::uint_least32_t parent_line = __LINE__ + 1;
  weft::join_handle<int> parent = rt.spawn(parent_of_a_refusing_sleeper(&s));
  s.started.wait();
  const std::uint_least32_t child_line = s.child_line.load(std::memory_order_relaxed);
  std::thread stopper([&] { rt.shutdown(); });
  using state = weft::shutdown_report::task_state;
  auto report = box.wait_for_report(
      [&](const weft::shutdown_report& r) {
        if (!names(r, child_line, state::sleeping)) return false;
        for (const auto& t : r.tasks) {
          if (t.state == state::awaiting && t.spawned_at.line() == parent_line &&
              t.awaits.line() == child_line)
            return true;
        }
        return false;
      },
      20s);
  s.release.store(true, std::memory_order_relaxed);
  stopper.join();
  ASSERT_TRUE(report.has_value())
      << "no report named the child sleeping and the parent awaiting it";
  EXPECT_EQ(parent.join(), 3);
}

// Relaxed, every field: as held_shutdown.
struct stuck_worker {
  std::latch looping{1};
  std::atomic<bool> release{false};
  std::atomic<std::uint_least32_t> child_line{0};
  std::atomic<int> bodies_run{0};
};

weft::task<int> count_body(stuck_worker* s) {
  s->bodies_run.fetch_add(1, std::memory_order_relaxed);
  co_return 0;
}

// Spawns a child onto its own worker's deque, then loops without a
// checkpoint: with one worker, the child stays queued behind it.
weft::task<int> spawn_then_loop(stuck_worker* s) {
  s->child_line.store(__LINE__ + 1, std::memory_order_relaxed);
  weft::join_handle<int> child = weft::spawn(count_body(s));
  s->looping.count_down();
  while (!s->release.load(std::memory_order_relaxed)) {
  }
  co_return 4;
}

// One worker, held by a loop without a checkpoint: a task queued on its
// deque and one queued from outside are reported as queued, with their
// spawn lines (once each), next to the running loop.  Released, they end
// cancelled by the shutdown without running their bodies.
TEST(ShutdownReportTest, TasksQueuedBehindALoopWithoutCheckpointAreReportedAsQueued) {
  watchdog dog(60s);
  report_box box;
  stuck_worker s;
  weft::runtime_options o = quiet_options(1);
  o.shutdown_report_after = 50ms;
  o.on_shutdown_report = box.hook();
  weft::runtime rt(o);
  const std::uint_least32_t loop_line = __LINE__ + 1;
  weft::join_handle<int> loop = rt.spawn(spawn_then_loop(&s));
  s.looping.wait();
  const std::uint_least32_t outside_line = __LINE__ + 1;
  weft::join_handle<int> outside = rt.spawn(count_body(&s));
  const std::uint_least32_t child_line = s.child_line.load(std::memory_order_relaxed);
  std::thread stopper([&] { rt.shutdown(); });
  using state = weft::shutdown_report::task_state;
  auto report = box.wait_for_report(
      [&](const weft::shutdown_report& r) {
        return names(r, loop_line, state::running) && names(r, child_line, state::queued) &&
               names(r, outside_line, state::queued);
      },
      20s);
  s.release.store(true, std::memory_order_relaxed);
  stopper.join();
  ASSERT_TRUE(report.has_value()) << "no report named the loop and both queued tasks";
  EXPECT_EQ(report->tasks.size(), 3u) << report->to_string();
  EXPECT_EQ(loop.join(), 4);
  EXPECT_TRUE(outside.cancelled());
  EXPECT_EQ(s.bodies_run.load(std::memory_order_relaxed), 0);
}

// Without a hook the report goes to stderr.
TEST(ShutdownReportTest, WithoutAHookTheReportGoesToStderr) {
  watchdog dog(60s);
  refusal_state s;
  weft::runtime_options o = quiet_options(1);
  o.shutdown_report_after = 20ms;
  ::testing::internal::CaptureStderr();
  std::string err;
  {
    weft::runtime rt(o);
    const std::uint_least32_t line = __LINE__ + 1;
    weft::join_handle<long> h = rt.spawn(refuse_and_sleep(&s, 10ms, 300ms * kSlowdown));
    s.asleep.wait();
    rt.shutdown();  // waits ~300 ms for the refusing task: several reports
    err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("weft: shutdown has waited"), std::string::npos) << err;
    EXPECT_NE(err.find("lifecycle_breaks_test.cpp:" + std::to_string(line)), std::string::npos)
        << err;
    EXPECT_GT(h.join(), 0);
  }
}

// 0 and milliseconds::max() never report; a negative bound is refused.
TEST(ShutdownReportTest, ZeroOrMaxNeverReportsAndNegativeThrows) {
  watchdog dog(60s);
  for (auto after : {std::chrono::milliseconds(0), std::chrono::milliseconds::max()}) {
    report_box box;
    refusal_state s;
    weft::runtime_options o = quiet_options(1);
    o.shutdown_report_after = after;
    o.on_shutdown_report = box.hook();
    weft::runtime rt(o);
    weft::join_handle<long> h = rt.spawn(refuse_and_sleep(&s, 10ms, 200ms));
    s.asleep.wait();
    rt.shutdown();
    EXPECT_GT(h.join(), 0);
    EXPECT_EQ(box.count(), 0u) << after.count();
  }
  for (auto bad : {std::chrono::milliseconds(-1), std::chrono::milliseconds::min()}) {
    weft::runtime_options o = quiet_options(1);
    o.shutdown_report_after = bad;
    EXPECT_THROW(weft::runtime rt(o), std::invalid_argument);
  }
}

// ================================================================ break 12

// Threads of this process, from /proc/self/task.
long thread_count() {
  long n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
  }
  return n;
}

// Disarms the fault injection however the test ends.
struct thread_start_fault {
  explicit thread_start_fault(long after) { weft::detail::testing::fail_thread_start_after(after); }
  ~thread_start_fault() { weft::detail::testing::fail_thread_start_after(-1); }
  thread_start_fault(const thread_start_fault&) = delete;
  thread_start_fault& operator=(const thread_start_fault&) = delete;
};

// The n-th thread the constructor starts fails (a std::system_error, as
// std::thread throws when the system refuses a thread): 4 workers and the
// timer thread, so n = 0..3 is a worker, n = 4 the timer thread.  The
// constructor throws that error, and by then every thread it started has been
// joined (the process has as many threads as before) and everything it
// allocated is freed (no frame counted, nothing for LeakSanitizer).  Before
// the fix the started workers (and for n = 4 all of them) kept running for
// good, and the runtime's memory leaked.
TEST(RuntimeStartFailureTest, AThreadThatFailsToStartJoinsTheStartedOnesAndThrows) {
  watchdog dog(60s);
  const frame_baseline frames;
  const long before = thread_count();
  ASSERT_GT(before, 0) << "no /proc/self/task";
  for (long n = 0; n <= 4; ++n) {
    {
      thread_start_fault fault(n);
      try {
        weft::runtime rt(with_workers(4));
        ADD_FAILURE() << "thread " << n << ": the constructor did not throw";
      } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::resource_unavailable_try_again) << "thread " << n;
      }
    }
    // A joined thread leaves /proc/self/task a moment after join() returns
    // (the kernel wakes the joiner before it releases the task): poll.
    EXPECT_TRUE(spin_until([&] { return thread_count() == before; }, 5'000ms))
        << "thread " << n << ": " << thread_count() - before << " thread(s) still running";
  }
  EXPECT_EQ(frames.now(), frames.start);
  // A runtime made afterwards works.
  weft::runtime rt(with_workers(4));
  EXPECT_EQ(rt.block_on(value_task(12)), 12);
}

// The same in the middle of a program: the error reaches the caller, who can
// go on (here: with fewer workers).
TEST(RuntimeStartFailureTest, TheCallerCanRetryAfterTheError) {
  watchdog dog(60s);
  const long before = thread_count();
  std::unique_ptr<weft::runtime> rt;
  {
    thread_start_fault fault(2);
    for (unsigned workers : {8u, 2u}) {
      try {
        rt = std::make_unique<weft::runtime>(with_workers(workers));
        break;
      } catch (const std::system_error&) {
      }
    }
  }
  ASSERT_NE(rt, nullptr);
  EXPECT_EQ(rt->workers(), 2u);
  EXPECT_EQ(rt->block_on(value_task(3)), 3);
  // Only the second runtime's threads are left: 2 workers and its timer.
  EXPECT_TRUE(spin_until([&] { return thread_count() == before + 3; }, 5'000ms))
      << thread_count() - before << " thread(s) more than before, want 3";
}

// workers above runtime_options::max_workers is a mistake, not a request for
// a million threads: std::invalid_argument, before any thread starts.  The
// bound itself is accepted (by a simulation here: no thread per worker).
TEST(RuntimeStartFailureTest, WorkerCountAboveTheBoundThrowsInvalidArgument) {
  watchdog dog(60s);
  const long before = thread_count();
  for (unsigned bad : {weft::runtime_options::max_workers + 1, 1'000'000u, ~0u}) {
    EXPECT_THROW(weft::runtime rt(with_workers(bad)), std::invalid_argument) << bad;
    weft::runtime_options sim = with_workers(bad);
    sim.simulation = weft::sim::options{};
    EXPECT_THROW(weft::runtime rt(sim), std::invalid_argument) << bad;
  }
  EXPECT_EQ(thread_count(), before);
  weft::runtime_options at_bound = with_workers(weft::runtime_options::max_workers);
  at_bound.simulation = weft::sim::options{};
  weft::runtime rt(at_bound);
  EXPECT_EQ(rt.workers(), weft::runtime_options::max_workers);
  EXPECT_EQ(rt.block_on(value_task(4)), 4);
}

}  // namespace
