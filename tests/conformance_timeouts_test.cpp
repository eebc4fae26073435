// SPDX-License-Identifier: MIT
// Conformance with CPython's asyncio: Lib/test/test_asyncio/test_timeouts.py,
// ported to weft twice.  Suite ConformanceTimeouts spells `async with
// asyncio.timeout(d): await body()` as `co_await weft::wait_for(body(), d)`
// (timeout_at: wait_until), the block's awaits running as their own task:
// these were written before weft had timeout scopes, and guard wait_for's
// nested-timeout rules (break 4 of the contract).  Suite
// ConformanceTimeoutScopes spells it as asyncio does, a scope over a block
// run in the calling task, `co_await weft::timeout(d, [&](weft::timeout_scope&
// cm) -> weft::task<T> { ... })`, and also ports the cases about the scope
// object (expired(), when(), reschedule(), misuse) and the exception chain.
// Cases that stay "not mapped" are listed in docs/cancellation.md.
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

// `outer` catches its own timeout: the task ends normally, uncancelled.
void outer_task_is_not_cancelled(weft::task<void> (*outer)(bool*)) {
  bool timed_out = false;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> task = rt.spawn(outer(&timed_out));
  task.join();
  EXPECT_TRUE(timed_out);
  EXPECT_FALSE(task.cancelled());
  EXPECT_TRUE(task.done());
  EXPECT_EQ(task.cancelling(), 0u);
}

TEST(ConformanceTimeouts, test_outer_task_is_not_cancelled) {
  weft_test::watchdog dog(60s);
  outer_task_is_not_cancelled(outer_catches_timeout);
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

// `scoped`: the cleanup's timeout is a scope (ConformanceTimeoutScopes), else
// wait_for of a task running it (ConformanceTimeouts).
weft::task<void> cleanup_after_cancel(after_cancel_state* st, std::chrono::nanoseconds timeout,
                                      std::chrono::nanoseconds cleanup_sleep, bool scoped) {
  st->started.count_down();
  try {
    co_await weft::sleep_for(1h);  // work which will be cancelled
  } catch (const weft::cancelled_error&) {
  }
  st->in_cleanup.count_down();
  if (scoped) {
    st->cleanup = co_await classify(weft::timeout(
        timeout, [=]() -> weft::task<void> { co_await weft::sleep_for(cleanup_sleep); }));
  } else {
    st->cleanup = co_await classify(weft::wait_for(sleep_for_task(cleanup_sleep), timeout));
  }
}

void timeout_after_cancellation(bool scoped) {
  after_cancel_state st;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> h = rt.spawn(cleanup_after_cancel(&st, 0s, 1s, scoped));
  st.started.wait();
  h.cancel();
  h.join();
  EXPECT_EQ(st.cleanup, outcome::timeout);
}

void cancel_in_timeout_after_cancellation(bool scoped) {
  after_cancel_state st;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> h = rt.spawn(cleanup_after_cancel(&st, 1s, 2s, scoped));
  st.started.wait();
  h.cancel("first");
  st.in_cleanup.wait();
  h.cancel("second");  // asyncio: current_task().cancel() inside the cleanup scope
  const auto t0 = steady::now();
  h.join();
  EXPECT_EQ(st.cleanup, outcome::cancelled);
  EXPECT_LT(steady::now() - t0, 900ms * weft_test::kSlowdown);  // not the 1 s timeout
}

TEST(ConformanceTimeouts, test_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  timeout_after_cancellation(false);
}

TEST(ConformanceTimeouts, test_cancel_in_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  cancel_in_timeout_after_cancellation(false);
}

// ================================================================ timeout scopes

// What came out of a scope, and what its scope said afterwards.
struct scope_seen {
  outcome out = outcome::other;
  const weft::cancelled_error* cause_ptr = nullptr;  // only compared with null
  bool cause_is_timeout = false;                     // cause()->kind() == timeout
  weft::timeout_scope cm;
};

template <class T>
weft::task<outcome> classify_scope(weft::task<T> t, scope_seen* seen) {
  try {
    co_await std::move(t);
  } catch (const weft::timeout_error& e) {
    seen->cause_ptr = e.cause();
    seen->cause_is_timeout =
        e.cause() != nullptr && e.cause()->kind() == weft::cancel_kind::timeout;
    co_return outcome::timeout;
  } catch (const weft::cancelled_error&) {
    co_return outcome::cancelled;
  } catch (...) {
    co_return outcome::other;
  }
  co_return outcome::value;
}

// `async with asyncio.timeout(timeout) as cm: await asyncio.sleep(sleep)`
weft::task<outcome> scope_over_sleep(std::chrono::nanoseconds timeout,
                                     std::chrono::nanoseconds sleep, scope_seen* seen) {
  co_return co_await classify_scope(weft::timeout(timeout,
                                                  [=](weft::timeout_scope& cm) -> weft::task<void> {
                                                    seen->cm = cm;
                                                    co_await weft::sleep_for(sleep);
                                                  }),
                                    seen);
}

TEST(ConformanceTimeoutScopes, test_timeout_basic) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(10ms, 10s, &seen)), outcome::timeout);
  EXPECT_TRUE(seen.cm.expired());
}

weft::task<outcome> scope_at_over_sleep(steady::time_point deadline, scope_seen* seen) {
  co_return co_await classify_scope(
      weft::timeout_at(deadline,
                       [=](weft::timeout_scope& cm) -> weft::task<void> {
                         seen->cm = cm;
                         co_await weft::sleep_for(10s);
                       }),
      seen);
}

TEST(ConformanceTimeoutScopes, test_timeout_at_basic) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  const auto deadline = steady::now() + 10ms;
  EXPECT_EQ(rt.block_on(scope_at_over_sleep(deadline, &seen)), outcome::timeout);
  EXPECT_TRUE(seen.cm.expired());
  EXPECT_EQ(seen.cm.when(), deadline);
}

// Two scopes with one deadline: only the outermost raises TimeoutError.
struct nested_scopes {
  bool cancelled = false;
  weft::timeout_scope cm1, cm2;
};

weft::task<outcome> nested_same_deadline_scopes(nested_scopes* n) {
  const auto deadline = steady::now() + 10ms;
  scope_seen seen;
  co_return co_await classify_scope(
      weft::timeout_at(deadline,
                       [=](weft::timeout_scope& cm1) -> weft::task<void> {
                         n->cm1 = cm1;
                         try {
                           co_await weft::timeout_at(
                               deadline, [=](weft::timeout_scope& cm2) -> weft::task<void> {
                                 n->cm2 = cm2;
                                 co_await weft::sleep_for(10s);
                               });
                         } catch (const weft::cancelled_error&) {
                           n->cancelled = true;
                           throw;
                         }
                       }),
      &seen);
}

TEST(ConformanceTimeoutScopes, test_nested_timeouts) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const long rounds = weft_test::scaled(50, 10);
  for (long i = 0; i < rounds; ++i) {
    nested_scopes n;
    EXPECT_EQ(rt.block_on(nested_same_deadline_scopes(&n)), outcome::timeout) << "round " << i;
    EXPECT_TRUE(n.cancelled) << "round " << i;
    EXPECT_TRUE(n.cm1.expired()) << "round " << i;
    EXPECT_TRUE(n.cm2.expired()) << "round " << i;
    if (::testing::Test::HasFailure()) break;
  }
}

weft::task<outcome> scope_waiter_cancelled(bool* cancelled) {
  scope_seen seen;
  co_return co_await classify_scope(weft::timeout(10ms,
                                                  [=]() -> weft::task<void> {
                                                    try {
                                                      co_await weft::sleep_for(10s);
                                                    } catch (const weft::cancelled_error&) {
                                                      *cancelled = true;
                                                      throw;
                                                    }
                                                  }),
                                    &seen);
}

TEST(ConformanceTimeoutScopes, test_waiter_cancelled) {
  weft_test::watchdog dog(60s);
  bool cancelled = false;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_waiter_cancelled(&cancelled)), outcome::timeout);
  EXPECT_TRUE(cancelled);
}

TEST(ConformanceTimeoutScopes, test_timeout_not_called) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(10s, 10ms, &seen)), outcome::value);
  const auto t1 = steady::now();
  EXPECT_FALSE(seen.cm.expired());
  ASSERT_TRUE(seen.cm.when().has_value());
  EXPECT_GT(*seen.cm.when(), t1);
}

TEST(ConformanceTimeoutScopes, test_timeout_disabled) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(std::chrono::nanoseconds::max(), 10ms, &seen)),
            outcome::value);
  EXPECT_FALSE(seen.cm.expired());
  EXPECT_FALSE(seen.cm.when().has_value());  // None
}

weft::task<outcome> scope_at_max(scope_seen* seen) {
  co_return co_await classify_scope(
      weft::timeout_at(steady::time_point::max(),
                       [=](weft::timeout_scope& cm) -> weft::task<void> {
                         seen->cm = cm;
                         co_await weft::sleep_for(10ms);
                       }),
      seen);
}

TEST(ConformanceTimeoutScopes, test_timeout_at_disabled) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_at_max(&seen)), outcome::value);
  EXPECT_FALSE(seen.cm.expired());
  EXPECT_FALSE(seen.cm.when().has_value());
}

TEST(ConformanceTimeoutScopes, test_timeout_zero) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(scope_over_sleep(0s, 10s, &seen)), outcome::timeout);
  const auto t1 = steady::now();
  EXPECT_TRUE(seen.cm.expired());
  ASSERT_TRUE(seen.cm.when().has_value());
  EXPECT_LE(t0, *seen.cm.when());
  EXPECT_LE(*seen.cm.when(), t1);
}

weft::task<outcome> scope_over_yield(std::chrono::nanoseconds timeout, scope_seen* seen) {
  co_return co_await classify_scope(weft::timeout(timeout,
                                                  [=](weft::timeout_scope& cm) -> weft::task<void> {
                                                    seen->cm = cm;
                                                    co_await weft::yield();
                                                  }),
                                    seen);
}

TEST(ConformanceTimeoutScopes, test_timeout_zero_sleep_zero) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(scope_over_yield(0s, &seen)), outcome::timeout);
  const auto t1 = steady::now();
  EXPECT_TRUE(seen.cm.expired());
  ASSERT_TRUE(seen.cm.when().has_value());
  EXPECT_LE(t0, *seen.cm.when());
  EXPECT_LE(*seen.cm.when(), t1);
}

TEST(ConformanceTimeoutScopes, test_timeout_in_the_past_sleep_zero) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(scope_over_yield(-11s, &seen)), outcome::timeout);
  EXPECT_TRUE(seen.cm.expired());
  ASSERT_TRUE(seen.cm.when().has_value());
  EXPECT_LE(*seen.cm.when(), t0);
}

weft::task<outcome> scope_raises_key_error(scope_seen* seen) {
  co_return co_await classify_scope(weft::timeout(10ms,
                                                  [=](weft::timeout_scope& cm) -> weft::task<void> {
                                                    seen->cm = cm;
                                                    co_await raise_key_error();
                                                  }),
                                    seen);
}

TEST(ConformanceTimeoutScopes, test_foreign_exception_passed) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_raises_key_error(&seen)), outcome::other);  // the key_error
  EXPECT_FALSE(seen.cm.expired());
}

// `try: 1/0 finally: await asyncio.sleep(1)` under a 10 ms scope: the
// TimeoutError's cause is the CancelledError.  (Its __context__, the
// ZeroDivisionError, has no C++ counterpart: C++ chains only explicitly.)
weft::task<outcome> scope_exception_context(scope_seen* seen) {
  co_return co_await classify_scope(weft::timeout(10ms,
                                                  []() -> weft::task<void> {
                                                    std::exception_ptr pending;
                                                    try {
                                                      throw zero_division{};
                                                    } catch (...) {
                                                      pending = std::current_exception();
                                                    }
                                                    co_await weft::sleep_for(1s);  // `finally:`
                                                    std::rethrow_exception(pending);
                                                  }),
                                    seen);
}

TEST(ConformanceTimeoutScopes, test_timeout_exception_context) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_exception_context(&seen)), outcome::timeout);
  EXPECT_TRUE(seen.cause_is_timeout);
}

weft::task<bool> scope_foreign_exception_on_timeout() {
  try {
    co_await weft::timeout(10ms, []() -> weft::task<void> { co_await crash(); });
  } catch (const zero_division&) {
    co_return true;
  }
  co_return false;
}

TEST(ConformanceTimeoutScopes, test_foreign_exception_on_timeout) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(scope_foreign_exception_on_timeout()));
}

// `try: try: raise ValueError finally: await sleep(1) finally: try: raise
// KeyError finally: 1/0`: the ZeroDivisionError leaves the scope.
weft::task<bool> scope_foreign_exception_on_timeout_2() {
  try {
    co_await weft::timeout(10ms, []() -> weft::task<void> {
      try {
        co_await weft::sleep_for(1s);  // the inner `finally:` after `raise ValueError`
      } catch (...) {
      }
      throw zero_division{};  // the outer `finally:`: KeyError, then 1/0
    });
  } catch (const zero_division&) {
    co_return true;
  }
  co_return false;
}

TEST(ConformanceTimeoutScopes, test_foreign_exception_on_timeout_2) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(scope_foreign_exception_on_timeout_2()));
}

// The task is cancelled (not by the timeout) inside the scope.
weft::task<outcome> scope_then_cancelled_from_outside(std::latch* inside, scope_seen* seen) {
  co_return co_await classify_scope(weft::timeout(10s,
                                                  [=](weft::timeout_scope& cm) -> weft::task<void> {
                                                    seen->cm = cm;
                                                    inside->count_down();
                                                    co_await weft::sleep_for(10s);
                                                  }),
                                    seen);
}

TEST(ConformanceTimeoutScopes, test_foreign_cancel_doesnt_timeout_if_not_expired) {
  weft_test::watchdog dog(60s);
  std::latch inside{1};
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  weft::join_handle<outcome> h = rt.spawn(scope_then_cancelled_from_outside(&inside, &seen));
  inside.wait();
  h.cancel();  // asyncio: current_task().cancel() inside the scope
  EXPECT_EQ(h.join(), outcome::cancelled);
  EXPECT_FALSE(seen.cm.expired());
}

weft::task<void> outer_catches_scope_timeout(bool* timed_out) {
  try {
    co_await weft::timeout(1ms, []() -> weft::task<void> { co_await weft::sleep_for(10s); });
  } catch (const weft::timeout_error&) {
    *timed_out = true;
  }
}

TEST(ConformanceTimeoutScopes, test_outer_task_is_not_cancelled) {
  weft_test::watchdog dog(60s);
  outer_task_is_not_cancelled(outer_catches_scope_timeout);
}

// Outer 2 ms, inner 100 ms; the block computes for 10 ms, then sleeps.  One
// worker, as asyncio's one loop.
weft::task<outcome> scopes_concurrent(std::atomic<int>* inner) {
  scope_seen seen;
  co_return co_await classify_scope(
      weft::timeout(2ms,
                    [=]() -> weft::task<void> {
                      try {
                        co_await weft::timeout(100ms, []() -> weft::task<void> {
                          weft_test::busy_gap(10ms);  // "pretend we crunch some numbers"
                          co_await weft::sleep_for(1s);
                        });
                      } catch (const weft::timeout_error&) {
                        inner->store(1);
                        throw;
                      } catch (const weft::cancelled_error&) {
                        inner->store(2);
                        throw;
                      }
                    }),
      &seen);
}

TEST(ConformanceTimeoutScopes, test_nested_timeouts_concurrent) {
  weft_test::watchdog dog(60s);
  std::atomic<int> inner{0};
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.block_on(scopes_concurrent(&inner)), outcome::timeout);
  EXPECT_EQ(inner.load(std::memory_order_acquire), 2);  // cancelled_error went through the inner
}

// Outer 100 ms, inner 10 ms; the block computes for 150 ms, so both
// deadlines have passed when it reaches its sleep: the inner lets the
// cancellation through (a request besides its own was counted), the outer
// reports it, and the 10 s sleep never runs.
weft::task<outcome> scopes_loop_busy() {
  scope_seen seen;
  co_return co_await classify_scope(weft::timeout(100ms,
                                                  []() -> weft::task<void> {
                                                    try {
                                                      co_await weft::timeout(
                                                          10ms, []() -> weft::task<void> {
                                                            weft_test::busy_gap(150ms);
                                                            co_await weft::sleep_for(1s);
                                                          });
                                                    } catch (const weft::timeout_error&) {
                                                    }
                                                    co_await weft::sleep_for(10s);
                                                  }),
                                    &seen);
}

TEST(ConformanceTimeoutScopes, test_nested_timeouts_loop_busy) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(scopes_loop_busy()), outcome::timeout);
  EXPECT_LT(steady::now() - t0, 1s * weft_test::kSlowdown);
}

// The cleanup after the outer scope's cancellation runs its own scope, which
// reports its own timeout; the outer then reports its own.  Both chained.
struct in_finally {
  bool cleanup_timed_out = false;
  bool cleanup_cause = false;
};

weft::task<outcome> scope_timeout_in_finally(in_finally* f, scope_seen* seen) {
  co_return co_await classify_scope(
      weft::timeout(10ms,
                    [=]() -> weft::task<void> {
                      std::exception_ptr pending;
                      try {
                        co_await weft::sleep_for(1s);
                      } catch (...) {
                        pending = std::current_exception();
                      }
                      try {  // `finally:`
                        co_await weft::timeout(
                            10ms, []() -> weft::task<void> { co_await weft::sleep_for(10s); });
                      } catch (const weft::timeout_error& e) {
                        f->cleanup_timed_out = true;
                        f->cleanup_cause = e.cause() != nullptr;
                      }
                      if (pending) std::rethrow_exception(pending);
                    }),
      seen);
}

TEST(ConformanceTimeoutScopes, test_nested_timeout_in_finally) {
  weft_test::watchdog dog(60s);
  in_finally f;
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_timeout_in_finally(&f, &seen)), outcome::timeout);
  EXPECT_TRUE(seen.cause_is_timeout);
  EXPECT_TRUE(f.cleanup_timed_out);
  EXPECT_TRUE(f.cleanup_cause);
}

TEST(ConformanceTimeoutScopes, test_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  timeout_after_cancellation(true);
}

TEST(ConformanceTimeoutScopes, test_cancel_in_timeout_after_cancellation) {
  weft_test::watchdog dog(60s);
  cancel_in_timeout_after_cancellation(true);
}

// The scope handed out of the task (asyncio: a future set to cm), moved by
// another thread, then the task cancelled from outside.
struct reschedule_state {
  std::latch entered{1};
  weft::timeout_scope cm;
};

weft::task<void> scope_to_reschedule(reschedule_state* st, steady::time_point deadline1) {
  co_await weft::timeout_at(deadline1, [=](weft::timeout_scope& cm) -> weft::task<void> {
    st->cm = cm;
    st->entered.count_down();
    co_await weft::sleep_for(50s);
  });
}

TEST(ConformanceTimeoutScopes, test_reschedule) {
  weft_test::watchdog dog(60s);
  reschedule_state st;
  const auto deadline1 = steady::now() + 10s;
  const auto deadline2 = deadline1 + 20s;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> task = rt.spawn(scope_to_reschedule(&st, deadline1));
  st.entered.wait();
  EXPECT_EQ(st.cm.when(), deadline1);
  st.cm.reschedule(deadline2);
  EXPECT_EQ(st.cm.when(), deadline2);
  st.cm.reschedule(std::nullopt);
  EXPECT_FALSE(st.cm.when().has_value());
  task.cancel();
  EXPECT_THROW(task.join(), weft::cancelled_error);
  EXPECT_FALSE(st.cm.expired());
}

TEST(ConformanceTimeoutScopes, test_timeout_exception_cause) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(0s, 1s, &seen)), outcome::timeout);
  EXPECT_NE(seen.cause_ptr, nullptr);
  EXPECT_TRUE(seen.cause_is_timeout);  // __cause__ is the CancelledError
}

// Misuse: reschedule() of a scope that is not running.
std::string reschedule_error(weft::timeout_scope cm) {
  try {
    cm.reschedule(steady::now() + 20ms);
  } catch (const weft::usage_error& e) {
    return e.what();
  }
  return "no usage_error";
}

TEST(ConformanceTimeoutScopes, test_timeout_finished) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(10s, 0s, &seen)), outcome::value);
  EXPECT_NE(reschedule_error(seen.cm).find("finished"), std::string::npos);
}

TEST(ConformanceTimeoutScopes, test_timeout_expired) {
  weft_test::watchdog dog(60s);
  scope_seen seen;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(scope_over_sleep(10ms, 1s, &seen)), outcome::timeout);
  EXPECT_NE(reschedule_error(seen.cm).find("expired"), std::string::npos);
}

weft::task<std::string> scope_expiring() {
  std::string what;
  co_await weft::timeout(10ms, [&](weft::timeout_scope& cm) -> weft::task<void> {
    try {
      co_await weft::sleep_for(1s);
    } catch (const weft::cancelled_error&) {
    }
    what = reschedule_error(cm);
  });
  co_return what;
}

TEST(ConformanceTimeoutScopes, test_timeout_expiring) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_NE(rt.block_on(scope_expiring()).find("expiring"), std::string::npos);
}

TEST(ConformanceTimeoutScopes, test_timeout_not_entered) {
  weft_test::watchdog dog(60s);
  weft::timeout_scope cm;  // asyncio.timeout(0.01) never entered
  EXPECT_NE(reschedule_error(cm).find("has not been entered"), std::string::npos);
}

}  // namespace
