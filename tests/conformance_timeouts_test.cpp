// SPDX-License-Identifier: MIT
// Conformance with CPython's asyncio: Lib/test/test_asyncio/test_timeouts.py,
// ported to weft.  weft has no timeout scope yet: `async with
// asyncio.timeout(d): await body()` is spelled `co_await weft::wait_for(body(),
// d)` (timeout_at: wait_until), the block's awaits running as their own task.
// Cases about the scope object itself (expired(), when(), reschedule(), repr,
// entering twice) are "not mapped" in docs/cancellation.md.
//
// Atomics shared between a test thread and its tasks: flags are stored with
// release and loaded with acquire (a thread that sees a flag sees what was
// written before it was set); counters are relaxed (they are read after a
// join or the runtime's destruction, which order them).
#include <atomic>
#include <chrono>
#include <exception>
#include <latch>
#include <stdexcept>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;
using weft_test::with_workers;
using steady = std::chrono::steady_clock;

namespace {

weft::task<void> sleep_for_task(std::chrono::nanoseconds d) { co_await weft::sleep_for(d); }

weft::task<void> yield_once() { co_await weft::yield(); }

// Runs `body` under wait_for / wait_until and reports what came out.
enum class outcome { value, timeout, cancelled, other };

template <class T>
weft::task<outcome> classify(weft::task<T> t) {
  try {
    co_await std::move(t);
  } catch (const weft::timeout_error&) {
    co_return outcome::timeout;
  } catch (const weft::cancelled_error&) {
    co_return outcome::cancelled;
  } catch (...) {
    co_return outcome::other;
  }
  co_return outcome::value;
}

weft::task<outcome> timeout_over_sleep(std::chrono::nanoseconds timeout,
                                       std::chrono::nanoseconds sleep) {
  co_return co_await classify(weft::wait_for(sleep_for_task(sleep), timeout));
}

TEST(ConformanceTimeouts, test_timeout_basic) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(timeout_over_sleep(10ms, 10s)), outcome::timeout);
  EXPECT_LT(steady::now() - t0, 5s);
}

weft::task<outcome> timeout_at_over_sleep(steady::time_point deadline) {
  co_return co_await classify(weft::wait_until(sleep_for_task(10s), deadline));
}

TEST(ConformanceTimeouts, test_timeout_at_basic) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const auto deadline = steady::now() + 10ms;
  EXPECT_EQ(rt.block_on(timeout_at_over_sleep(deadline)), outcome::timeout);
  EXPECT_GE(steady::now(), deadline);
}

// ---- test_nested_timeouts ----
// Two scopes with the same deadline: only the outermost raises TimeoutError;
// the inner one lets the CancelledError through.

weft::task<void> inner_scope(steady::time_point deadline, std::atomic<bool>* cancelled,
                             std::atomic<bool>* inner_timed_out) {
  try {
    co_await weft::wait_until(sleep_for_task(10s), deadline);
  } catch (const weft::cancelled_error&) {
    cancelled->store(true);
    throw;
  } catch (const weft::timeout_error&) {
    inner_timed_out->store(true);
    throw;
  }
}

weft::task<outcome> nested_same_deadline(std::atomic<bool>* cancelled,
                                         std::atomic<bool>* inner_timed_out) {
  const auto deadline = steady::now() + 10ms;
  co_return co_await classify(
      weft::wait_until(inner_scope(deadline, cancelled, inner_timed_out), deadline));
}

// Both deadlines pass: the inner lets the cancellation through, only the
// outer reports the timeout (break 4 of the contract).
TEST(ConformanceTimeouts, test_nested_timeouts) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const long rounds = weft_test::scaled(50, 10);
  for (long i = 0; i < rounds; ++i) {
    std::atomic<bool> cancelled{false}, inner_timed_out{false};
    EXPECT_EQ(rt.block_on(nested_same_deadline(&cancelled, &inner_timed_out)), outcome::timeout)
        << "round " << i;
    EXPECT_TRUE(cancelled.load(std::memory_order_acquire)) << "round " << i;
    EXPECT_FALSE(inner_timed_out.load(std::memory_order_acquire)) << "round " << i;
    if (::testing::Test::HasFailure()) break;
  }
}

// ---- test_waiter_cancelled ----

weft::task<void> sleep_noting_cancel(std::atomic<bool>* cancelled) {
  try {
    co_await weft::sleep_for(10s);
  } catch (const weft::cancelled_error&) {
    cancelled->store(true);
    throw;
  }
}

weft::task<outcome> waiter_cancelled(std::atomic<bool>* cancelled) {
  co_return co_await classify(weft::wait_for(sleep_noting_cancel(cancelled), 10ms));
}

TEST(ConformanceTimeouts, test_waiter_cancelled) {
  weft_test::watchdog dog(60s);
  std::atomic<bool> cancelled{false};
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(waiter_cancelled(&cancelled)), outcome::timeout);
  EXPECT_TRUE(cancelled.load(std::memory_order_acquire));
}

TEST(ConformanceTimeouts, test_timeout_not_called) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_over_sleep(10s, 10ms)), outcome::value);
}

TEST(ConformanceTimeouts, test_timeout_disabled) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_over_sleep(std::chrono::nanoseconds::max(), 10ms)), outcome::value);
}

weft::task<outcome> timeout_at_over_short_sleep(steady::time_point deadline) {
  co_return co_await classify(weft::wait_until(sleep_for_task(10ms), deadline));
}

TEST(ConformanceTimeouts, test_timeout_at_disabled) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_at_over_short_sleep(steady::time_point::max())), outcome::value);
}

// ---- zero and past deadlines ----

TEST(ConformanceTimeouts, test_timeout_zero) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(timeout_over_sleep(0s, 10s)), outcome::timeout);
  EXPECT_LT(steady::now() - t0, 5s);
}

weft::task<outcome> timeout_over_yield(std::chrono::nanoseconds timeout) {
  co_return co_await classify(weft::wait_for(yield_once(), timeout));
}

TEST(ConformanceTimeouts, test_timeout_zero_sleep_zero) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_over_yield(0s)), outcome::timeout);
}

TEST(ConformanceTimeouts, test_timeout_in_the_past_sleep_zero) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_over_yield(-11s)), outcome::timeout);
}

// ---- foreign exceptions ----

struct key_error : std::exception {};

weft::task<void> raise_key_error() {
  throw key_error{};
  co_return;
}

weft::task<bool> foreign_exception_passed() {
  try {
    co_await weft::wait_for(raise_key_error(), 10ms);
  } catch (const key_error&) {
    co_return true;
  }
  co_return false;
}

TEST(ConformanceTimeouts, test_foreign_exception_passed) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(foreign_exception_passed()));
}

struct zero_division : std::exception {};

weft::task<void> crash() {
  try {
    co_await weft::sleep_for(1s);
  } catch (...) {
    throw zero_division{};  // `finally: 1/0`
  }
  throw zero_division{};
}

weft::task<bool> foreign_exception_on_timeout() {
  try {
    co_await weft::wait_for(crash(), 10ms);
  } catch (const zero_division&) {
    co_return true;
  }
  co_return false;
}

TEST(ConformanceTimeouts, test_foreign_exception_on_timeout) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(foreign_exception_on_timeout()));
}

// ---- test_foreign_cancel_doesnt_timeout_if_not_expired ----
// The task is cancelled (not by the timeout) inside the scope: CancelledError,
// not TimeoutError.

weft::task<outcome> scope_then_cancelled(std::latch* inside) {
  inside->count_down();
  co_return co_await classify(weft::wait_for(sleep_for_task(10s), 10s));
}

TEST(ConformanceTimeouts, test_foreign_cancel_doesnt_timeout_if_not_expired) {
  weft_test::watchdog dog(60s);
  std::latch inside{1};
  weft::runtime rt(with_workers(2));
  weft::join_handle<outcome> h = rt.spawn(scope_then_cancelled(&inside));
  inside.wait();
  h.cancel();
  const auto t0 = steady::now();
  EXPECT_EQ(h.join(), outcome::cancelled);
  EXPECT_LT(steady::now() - t0, 5s);
}

// ---- test_outer_task_is_not_cancelled ----

weft::task<void> outer_catches_timeout(bool* timed_out) {
  try {
    co_await weft::wait_for(sleep_for_task(10s), 1ms);
  } catch (const weft::timeout_error&) {
    *timed_out = true;
  }
}

TEST(ConformanceTimeouts, test_outer_task_is_not_cancelled) {
  weft_test::watchdog dog(60s);
  bool timed_out = false;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> task = rt.spawn(outer_catches_timeout(&timed_out));
  task.join();
  EXPECT_TRUE(timed_out);
  EXPECT_FALSE(task.cancelled());
  EXPECT_TRUE(task.done());
  EXPECT_EQ(task.cancelling(), 0u);
}

// ---- test_nested_timeouts_concurrent ----
// Outer 2 ms, inner 100 ms; the body computes for 10 ms, then sleeps: the outer
// scope times out, the inner one (not expired) lets the cancellation through.

weft::task<void> crunch_then_sleep(std::chrono::milliseconds crunch) {
  weft_test::busy_gap(crunch);  // "pretend we crunch some numbers"
  co_await weft::sleep_for(1s);
}

weft::task<void> inner_scope_noting(std::chrono::milliseconds timeout,
                                    std::chrono::milliseconds crunch, std::atomic<int>* inner) {
  try {
    co_await weft::wait_for(crunch_then_sleep(crunch), timeout);
  } catch (const weft::timeout_error&) {
    inner->store(1);
    throw;
  } catch (const weft::cancelled_error&) {
    inner->store(2);
    throw;
  }
}

weft::task<outcome> nested_concurrent(std::atomic<int>* inner) {
  co_return co_await classify(weft::wait_for(inner_scope_noting(100ms, 10ms, inner), 2ms));
}

TEST(ConformanceTimeouts, test_nested_timeouts_concurrent) {
  weft_test::watchdog dog(60s);
  std::atomic<int> inner{0};
  // One worker, as asyncio's one loop: the waited task starts right after the
  // deadline task armed its timer.  With two, a thief that stole it and was
  // preempted for 2 ms (a sanitizer build on a busy machine) let the outer
  // deadline cancel it unstarted, and the inner scope never ran.
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.block_on(nested_concurrent(&inner)), outcome::timeout);
  EXPECT_EQ(inner.load(std::memory_order_acquire),
            2);  // the inner scope saw cancelled_error, not timeout_error
}

// ---- test_nested_timeouts_loop_busy ----
// Outer 100 ms, inner 10 ms; the body computes for 100 ms (150 ms here, so
// that the outer deadline has surely passed too when the body reaches its
// sleep), then sleeps.  The inner scope's TimeoutError is caught; the
// following long sleep must be interrupted by the outer scope.
//
// Break 4 of the contract: the outer scope's cancellation must not be
// consumed by the inner wait, else the 10 s sleep runs to its end and the
// outer wait_for returns normally.  (With a 100 ms crunch the broken runtime
// failed in about one run in three; 150 ms made it every run.)

weft::task<void> catch_inner_then_sleep(std::atomic<int>* inner) {
  try {
    co_await weft::wait_for(crunch_then_sleep(150ms), 10ms);
  } catch (const weft::timeout_error&) {
    inner->store(1);
  }
  co_await weft::sleep_for(10s);  // to be interrupted by the outer scope
}

weft::task<outcome> nested_loop_busy(std::atomic<int>* inner) {
  co_return co_await classify(weft::wait_for(catch_inner_then_sleep(inner), 100ms));
}

TEST(ConformanceTimeouts, test_nested_timeouts_loop_busy) {
  weft_test::watchdog dog(60s);
  std::atomic<int> inner{0};
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(nested_loop_busy(&inner)), outcome::timeout);
  EXPECT_LT(steady::now() - t0, 1s * weft_test::kSlowdown);
}

// ---- test_nested_timeout_in_finally ----

weft::task<void> cleanup_with_its_own_timeout(std::atomic<bool>* cleanup_timed_out) {
  std::exception_ptr pending;
  try {
    co_await weft::sleep_for(1s);
  } catch (...) {
    pending = std::current_exception();
  }
  // `finally:` (after the handler: C++ cannot co_await inside one)
  try {
    co_await weft::wait_for(sleep_for_task(10s), 10ms);
  } catch (const weft::timeout_error&) {
    cleanup_timed_out->store(true);
  }
  if (pending) std::rethrow_exception(pending);
}

weft::task<outcome> timeout_in_finally(std::atomic<bool>* cleanup_timed_out) {
  co_return co_await classify(
      weft::wait_for(cleanup_with_its_own_timeout(cleanup_timed_out), 10ms));
}

TEST(ConformanceTimeouts, test_nested_timeout_in_finally) {
  weft_test::watchdog dog(60s);
  std::atomic<bool> cleanup_timed_out{false};
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(timeout_in_finally(&cleanup_timed_out)), outcome::timeout);
  EXPECT_TRUE(cleanup_timed_out.load(std::memory_order_acquire));
}

// ---- test_timeout_after_cancellation / test_cancel_in_timeout_after_cancellation ----
// A task that caught a cancellation runs a cleanup under a timeout.

struct after_cancel_state {
  std::latch started{1};
  std::latch in_cleanup{1};
  outcome cleanup = outcome::other;
};

weft::task<void> cleanup_after_cancel(after_cancel_state* st, std::chrono::nanoseconds timeout,
                                      std::chrono::nanoseconds cleanup_sleep) {
  st->started.count_down();
  try {
    co_await weft::sleep_for(1h);  // work which will be cancelled
  } catch (const weft::cancelled_error&) {
  }
  st->in_cleanup.count_down();
  st->cleanup = co_await classify(weft::wait_for(sleep_for_task(cleanup_sleep), timeout));
}

TEST(ConformanceTimeouts, test_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  after_cancel_state st;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> h = rt.spawn(cleanup_after_cancel(&st, 0s, 1s));
  st.started.wait();
  h.cancel();
  h.join();
  EXPECT_EQ(st.cleanup, outcome::timeout);
}

TEST(ConformanceTimeouts, test_cancel_in_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  after_cancel_state st;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> h = rt.spawn(cleanup_after_cancel(&st, 1s, 2s));
  st.started.wait();
  h.cancel("first");
  st.in_cleanup.wait();
  h.cancel("second");  // asyncio: current_task().cancel() inside the cleanup scope
  const auto t0 = steady::now();
  h.join();
  EXPECT_EQ(st.cleanup, outcome::cancelled);
  EXPECT_LT(steady::now() - t0, 900ms * weft_test::kSlowdown);  // not the 1 s timeout
}

}  // namespace
