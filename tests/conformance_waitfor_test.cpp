// SPDX-License-Identifier: MIT
// Conformance with CPython's asyncio: Lib/test/test_asyncio/test_waitfor.py,
// ported to weft::wait_for / wait_until.  See conformance_tasks_test.cpp for the
// conventions, and docs/cancellation.md for the table of every case.
//
// Atomics shared between a test thread and its tasks: flags are stored with
// release and loaded with acquire (a thread that sees a flag sees what was
// written before it was set); counters are relaxed (they are read after a
// join or the runtime's destruction, which order them).
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;
using weft_test::with_workers;

namespace {

constexpr auto kEpsilon = 100us;  // asyncio's _EPSILON: a timeout > 0 with almost no effect

// SlowTask: runs for 0.2 s of wall time, ignoring every cancel request.
struct slow_task {
  static constexpr auto kTaskTimeout = 200ms;
  std::atomic<bool> exited{false};
};

// `running` (may be null) is counted down when the task runs.
weft::task<void> slow_run(slow_task* st, std::latch* running = nullptr) {
  if (running != nullptr) running->count_down();
  const auto exit_at = std::chrono::steady_clock::now() + slow_task::kTaskTimeout;
  for (;;) {
    const auto to_sleep = exit_at - std::chrono::steady_clock::now();
    if (to_sleep <= 0ns) break;
    try {
      co_await weft::sleep_for(to_sleep);
    } catch (const weft::cancelled_error&) {
    }
  }
  st->exited.store(true, std::memory_order_release);
}

// asyncio awaits the inner coroutine inside the wait_for task's first step, so
// it runs before the test's cancel(); here it is a task of its own, and the
// latch says it runs (else the cancel could find it unstarted and end it).
weft::task<void> wait_for_slow(slow_task* st, std::chrono::nanoseconds d, std::latch* started) {
  co_await weft::wait_for(slow_run(st, started), d);
}

TEST(ConformanceWaitFor, test_asyncio_wait_for_cancelled) {
  weft_test::watchdog dog(60s);
  slow_task t;
  std::latch started{1};
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> waitfortask =
      rt.spawn(wait_for_slow(&t, slow_task::kTaskTimeout * 2, &started));
  started.wait();
  waitfortask.cancel();
  try {
    waitfortask.join();  // asyncio: await asyncio.wait({waitfortask})
  } catch (const weft::cancelled_error&) {
  }
  EXPECT_TRUE(
      t.exited.load(std::memory_order_acquire));  // wait_for waited for the task it cancelled
}

weft::task<void> wait_for_slow_catching_timeout(slow_task* st) {
  try {
    co_await weft::wait_for(slow_run(st), slow_task::kTaskTimeout / 2);
  } catch (const weft::timeout_error&) {
  }
}

TEST(ConformanceWaitFor, test_asyncio_wait_for_timeout) {
  weft_test::watchdog dog(60s);
  slow_task t;
  weft::runtime rt(with_workers(2));
  rt.block_on(wait_for_slow_catching_timeout(&t));
  EXPECT_TRUE(t.exited.load(std::memory_order_acquire));
}

// ---- zero and negative timeouts ----

weft::task<std::string> done_value() { co_return "done"; }

weft::task<std::string> wait_for_done_with_zero(weft::join_handle<std::string>* fut) {
  co_return co_await weft::wait_for(*fut, 0s);
}

TEST(ConformanceWaitFor, test_wait_for_timeout_less_then_0_or_0_future_done) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  weft::join_handle<std::string> fut = rt.spawn(done_value());
  ASSERT_TRUE(weft_test::wait_done(fut));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(rt.block_on(wait_for_done_with_zero(&fut)), "done");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms * weft_test::kSlowdown);
  EXPECT_TRUE(fut.done());
}

weft::task<void> mark_started(std::atomic<bool>* started) {
  started->store(true);
  co_return;
}

weft::task<bool> wait_for_coroutine_with_zero(std::atomic<bool>* started) {
  try {
    co_await weft::wait_for(mark_started(started), 0s);
  } catch (const weft::timeout_error&) {
    co_return true;
  }
  co_return false;
}

// Break 3 of the contract: an expired deadline must never start the task (a
// thief could start a spawned task before the expiry check; the broken
// runtime did so in about one run in ten of 300 rounds; the loop makes it
// likely).
TEST(ConformanceWaitFor, test_wait_for_timeout_less_then_0_or_0_coroutine_do_not_started) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const long rounds = weft_test::scaled(3000, 100);
  for (long i = 0; i < rounds; ++i) {
    std::atomic<bool> foo_started{false};
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(rt.block_on(wait_for_coroutine_with_zero(&foo_started))) << "round " << i;
    EXPECT_FALSE(foo_started.load(std::memory_order_acquire)) << "round " << i;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms * weft_test::kSlowdown);
  }
}

struct foo_state {
  std::atomic<bool> running{false};
  std::latch started{1};
};

weft::task<std::string> foo_sleeps(foo_state* st) {
  st->running.store(true, std::memory_order_release);
  st->started.count_down();
  try {
    co_await weft::sleep_for(10s);
  } catch (...) {
    st->running.store(false, std::memory_order_release);
    throw;
  }
  st->running.store(false, std::memory_order_release);
  co_return "done";
}

weft::task<bool> wait_for_handle_times_out(weft::join_handle<std::string>* fut,
                                           std::chrono::nanoseconds d) {
  try {
    (void)co_await weft::wait_for(*fut, d);
  } catch (const weft::timeout_error&) {
    co_return true;
  }
  co_return false;
}

TEST(ConformanceWaitFor, test_wait_for_timeout_less_then_0_or_0) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  for (const auto timeout : {0s, -1s}) {
    SCOPED_TRACE(timeout.count());
    foo_state st;
    weft::join_handle<std::string> fut = rt.spawn(foo_sleeps(&st));
    st.started.wait();
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(rt.block_on(wait_for_handle_times_out(&fut, timeout)));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 100ms * weft_test::kSlowdown);
    EXPECT_TRUE(fut.done());
    EXPECT_TRUE(fut.cancelled());  // cancelled by the timeout
    EXPECT_FALSE(st.running.load(std::memory_order_acquire));
  }
}

TEST(ConformanceWaitFor, test_wait_for) {
  weft_test::watchdog dog(60s);
  foo_state st;
  weft::runtime rt(with_workers(2));
  weft::join_handle<std::string> fut = rt.spawn(foo_sleeps(&st));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(rt.block_on(wait_for_handle_times_out(&fut, 100ms)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms * weft_test::kSlowdown);
  EXPECT_TRUE(fut.done());
  EXPECT_TRUE(fut.cancelled());
  ASSERT_TRUE(fut.cancellation().has_value());
  EXPECT_EQ(fut.cancellation()->kind(), weft::cancel_kind::timeout);
  EXPECT_FALSE(st.running.load(std::memory_order_acquire));
}

weft::task<std::string> wait_for_without_timeout() {
  co_return co_await weft::wait_for(done_value(), std::chrono::nanoseconds::max());
}

TEST(ConformanceWaitFor, test_wait_for_blocking) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(wait_for_without_timeout()), "done");
}

// asyncio sets a future's result after 0.1 s and waits for it with 0.2 s; a
// task that answers after 0.1 s plays the future.
weft::task<std::string> ok_after(std::chrono::milliseconds d) {
  co_await weft::sleep_for(d);
  co_return "ok";
}

weft::task<std::string> wait_for_ok() { co_return co_await weft::wait_for(ok_after(100ms), 200ms); }

TEST(ConformanceWaitFor, test_wait_for_race_condition) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(wait_for_ok()), "ok");
}

weft::task<int> inner_expects_cancel(bool* saw_cancel) {
  try {
    co_await weft::sleep_for(1s);
  } catch (const weft::cancelled_error&) {
    *saw_cancel = true;
  }
  co_return 1;
}

weft::task<int> wait_for_inner_expecting_cancel(bool* saw_cancel) {
  co_return co_await weft::wait_for(inner_expects_cancel(saw_cancel), 10ms);
}

TEST(ConformanceWaitFor, test_wait_for_cancellation_race_condition) {
  weft_test::watchdog dog(60s);
  bool saw_cancel = false;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(wait_for_inner_expecting_cancel(&saw_cancel)), 1);
  EXPECT_TRUE(saw_cancel);
}

// ---- wait_for waits for the cancelled task's cleanup ----

weft::task<void> inner_slow_cleanup(std::atomic<bool>* task_done, weft::event* asleep) {
  std::exception_ptr cancelled;
  try {
    asleep->set();
    co_await weft::sleep_for(10s);
  } catch (const weft::cancelled_error&) {
    cancelled = std::current_exception();
  }
  // asyncio: `await asyncio.sleep(EPSILON); raise` in the except block, and
  // `task_done = True` in finally (C++ cannot co_await in a handler, so the
  // cleanup follows it).
  co_await weft::sleep_for(kEpsilon);
  task_done->store(true);
  if (cancelled) std::rethrow_exception(cancelled);
}

weft::task<bool> wait_for_inner_cleanup(std::atomic<bool>* task_done, bool zero,
                                        bool* done_when_timed_out) {
  // As in asyncio's test, the task is in its sleep when the wait begins: a
  // 100 us deadline could otherwise pass before it starts (it then never
  // runs, and has no cleanup to wait for).
  weft::event asleep;
  weft::join_handle<void> inner_task = weft::spawn(inner_slow_cleanup(task_done, &asleep));
  co_await asleep.wait();
  try {
    co_await weft::wait_for(inner_task, zero ? 0ns : std::chrono::nanoseconds(kEpsilon));
  } catch (const weft::timeout_error&) {
    *done_when_timed_out = task_done->load();
    co_return true;
  }
  co_return false;
}

TEST(ConformanceWaitFor, test_wait_for_waits_for_task_cancellation) {
  weft_test::watchdog dog(60s);
  std::atomic<bool> task_done{false};
  bool done_when_timed_out = false;
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(wait_for_inner_cleanup(&task_done, false, &done_when_timed_out)));
  EXPECT_TRUE(done_when_timed_out);
}

TEST(ConformanceWaitFor, test_wait_for_waits_for_task_cancellation_w_timeout_0) {
  weft_test::watchdog dog(60s);
  std::atomic<bool> task_done{false};
  bool done_when_timed_out = false;
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(wait_for_inner_cleanup(&task_done, true, &done_when_timed_out)));
  EXPECT_TRUE(done_when_timed_out);
}

struct foo_exception : std::exception {};

// asyncio runs the new task's first step before wait_for's timeout can fire
// (ready callbacks run in order), so the task is inside its sleep when it is
// cancelled.  Here a worker might not start it within kEpsilon (a slow build,
// a busy machine): it would then be cancelled unstarted and never raise.  The
// task says when it runs; wait_for begins after that.
weft::task<void> raise_in_cleanup(weft::event* running) {
  running->set();
  try {
    co_await weft::sleep_for(200ms);
  } catch (...) {
    throw foo_exception{};  // `finally: raise FooException`
  }
  throw foo_exception{};
}

weft::task<void> wait_for_raise_in_cleanup() {
  weft::event running;  // outlives the task: wait_for waits for it to end
  weft::join_handle<void> inner_task = weft::spawn(raise_in_cleanup(&running));
  co_await running.wait();
  co_await weft::wait_for(inner_task, kEpsilon);
}

TEST(ConformanceWaitFor, test_wait_for_reraises_exception_during_cancellation) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_THROW(rt.block_on(wait_for_raise_in_cleanup()), foo_exception);
}

// ---- test_wait_for_self_cancellation ----
// The task running wait_for is cancelled before it starts: awaiting it raises
// CancelledError, and the inner task, never touched, still gives 42.

weft::task<int> inner_holds_up() {
  for (int i = 0; i < 3; ++i) {
    try {
      co_await weft::sleep_for(100ms);
      break;
    } catch (const weft::cancelled_error&) {
    }
  }
  co_return 42;
}

weft::task<int> wait_for_inner(weft::join_handle<int>* inner) {
  co_return co_await weft::wait_for(*inner, 100ms);
}

weft::task<std::string> self_cancellation() {
  weft::join_handle<int> inner_task = weft::spawn(inner_holds_up());
  weft::join_handle<int> task = weft::spawn(wait_for_inner(&inner_task));
  task.cancel();  // one worker: `task` has not started
  std::string log;
  try {
    (void)co_await task;
    log += "wait task not cancelled;";
  } catch (const weft::cancelled_error&) {
  }
  if (co_await inner_task != 42) log += "inner did not give 42;";
  co_return log;
}

TEST(ConformanceWaitFor, test_wait_for_self_cancellation) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.block_on(self_cancellation()), "");
}

// ---- test_cancel_blocking_wait_for / test_cancel_wait_for ----
// Cancelling the waiter also cancels the awaited task (Python issue #23219).

weft::task<void> blocking_coroutine(weft::event* never) { co_await never->wait(); }

weft::task<void> wait_for_blocking(weft::join_handle<void>* task, std::chrono::nanoseconds d,
                                   std::latch* waiting) {
  waiting->count_down();
  co_await weft::wait_for(*task, d);
}

void cancel_wait_for(std::chrono::nanoseconds timeout) {
  weft::event never;
  std::latch waiting{1};
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> task = rt.spawn(blocking_coroutine(&never));
  weft::join_handle<void> wait = rt.spawn(wait_for_blocking(&task, timeout, &waiting));
  waiting.wait();
  wait.cancel();
  EXPECT_THROW(wait.join(), weft::cancelled_error);
  ASSERT_TRUE(weft_test::wait_done(task));
  EXPECT_TRUE(task.cancelled());
}

TEST(ConformanceWaitFor, test_cancel_blocking_wait_for) {
  weft_test::watchdog dog(60s);
  cancel_wait_for(std::chrono::nanoseconds::max());
}

TEST(ConformanceWaitFor, test_cancel_wait_for) {
  weft_test::watchdog dog(60s);
  cancel_wait_for(60s);
}

// ---- test_wait_for_cancel_suppressed ----

weft::task<int> return_42() {
  try {
    co_await weft::sleep_for(10s);
  } catch (const weft::cancelled_error&) {
    co_return 42;
  }
  co_return 0;
}

weft::task<int> wait_for_return_42() { co_return co_await weft::wait_for(return_42(), 100ms); }

TEST(ConformanceWaitFor, test_wait_for_cancel_suppressed) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(wait_for_return_42()), 42);
}

// ---- test_wait_for_issue86296 ----
// The waiter is cancelled while wait_for(inner()) runs and inner() returns at
// once: whatever the interleaving, the cancel is not lost -- wait_for either
// throws cancelled_error or returns and the request is delivered at the next
// cancellation point.  reached_end must stay false each time.  A race: many
// rounds, with the cancel landing at varying moments.

// asyncio's inner() returns at once; here it runs a few microseconds without a
// cancellation point (varied per round), so that the cancel can land while it
// runs on the other worker as well as before or after it.
weft::task<void> returns_soon(std::chrono::nanoseconds busy) {
  weft_test::busy_gap(busy);
  co_return;
}

struct issue86296_state {
  std::latch started{1};
  std::atomic<bool> reached_end{false};
  std::chrono::nanoseconds inner_busy{0};
};

weft::task<void> wait_for_coro(issue86296_state* st) {
  st->started.count_down();
  co_await weft::wait_for(returns_soon(st->inner_busy), 100s);
  co_await weft::sleep_for(2s);  // asyncio: sleep(1); only a cancel ends it early
  st->reached_end.store(true, std::memory_order_release);
}

// Breaks 2 and 5 of the contract: an awaiter cancelled while the awaited task
// runs elsewhere and completes without reaching a cancellation point must
// still see the cancellation (wait_for returns the value, the next await
// throws), and a cancel arriving just after the answer must not be dropped.
TEST(ConformanceWaitFor, test_wait_for_issue86296) {
  weft_test::watchdog dog(110s);
  weft::runtime rt(with_workers(2));
  weft_test::rng r(86296);
  const long rounds = weft_test::scaled(400, 40);
  for (long i = 0; i < rounds; ++i) {
    issue86296_state st;
    st.inner_busy = std::chrono::nanoseconds(r.below(30'000));
    weft::join_handle<void> task = rt.spawn(wait_for_coro(&st));
    st.started.wait();
    weft_test::busy_gap(std::chrono::nanoseconds(r.below(60'000)));
    ASSERT_TRUE(task.cancel()) << "round " << i;  // it cannot finish before 2 s
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(task.join(), weft::cancelled_error) << "round " << i;
    EXPECT_FALSE(st.reached_end.load(std::memory_order_acquire)) << "round " << i;
    if (std::chrono::steady_clock::now() - t0 > 1s) {
      ADD_FAILURE() << "round " << i << ": the cancel was lost (the 2 s sleep ran out)";
      break;
    }
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
