// SPDX-License-Identifier: MIT
// Black-box tests of cancellation, asyncio-style: delivery at await points,
// waking sleepers at once, one-shot delivery and refusal, cancelling()/
// uncancel() counts, cancel before the first run and after completion, the
// race between cancel() and the task's suspension, and propagation down the
// await chain.
#include <pthread.h>
#include <cstdio>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "freezer.hpp"
#include "task_internals.hpp"
#include "test_support.hpp"

namespace {

using namespace weft_test;

// What a task saw of a cancellation.  Written by the task before it finishes,
// read by the test after join() (which orders the two): relaxed is enough for
// `times`, as for every flag and counter in this file that the test reads
// after join() / block_on() or polls only as a sign of progress.
struct seen_cancel {
  std::atomic<int> times{0};
  std::string reason;
  cancel_kind kind = cancel_kind::timeout;
  void record(const cancelled_error& e) {
    reason = std::string(e.reason());
    kind = e.kind();
    times.fetch_add(1, std::memory_order_relaxed);
  }
};

// ------------------------------------------------------------ sleeping tasks

weft::task<int> sleep_then_return(std::latch* started, std::chrono::nanoseconds d,
                                  seen_cancel* seen) {
  started->count_down();
  try {
    co_await weft::sleep_for(d);
  } catch (const cancelled_error& e) {
    seen->record(e);
    throw;
  }
  co_return 1;
}

TEST(CancelTest, SleepingTaskWakesAtOnceOnCancel) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    std::latch started{1};
    seen_cancel seen;
    weft::runtime rt(with_workers(2));
    auto h = rt.spawn(sleep_then_return(&started, 5s, &seen));
    started.wait();
    const auto t0 = clock_type::now();
    EXPECT_TRUE(h.cancel("why"));
    auto e = expect_cancelled([&] { (void)h.join(); });
    const double waited = seconds_since(t0);
    EXPECT_LT(waited, 2.0) << "the 5 s sleep was not interrupted by cancel()";
    EXPECT_EQ(e.reason(), "why");
    EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
    EXPECT_TRUE(h.done());
    EXPECT_TRUE(h.cancelled());
    EXPECT_EQ(h.cancelling(), 1u);
    EXPECT_EQ(seen.times.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(seen.reason, "why");
    EXPECT_EQ(seen.kind, cancel_kind::explicit_request);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<std::string> await_and_report(weft::join_handle<int>* h) {
  try {
    (void)co_await *h;
  } catch (const cancelled_error& e) {
    co_return std::string("cancelled:") + std::string(e.reason()) + ":" +
        std::string(weft::to_string(e.kind()));
  }
  co_return "value";
}

TEST(CancelTest, AwaitingACancelledHandleThrowsCancelledError) {
  watchdog wd(30s);
  std::latch started{1};
  seen_cancel seen;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(sleep_then_return(&started, 5s, &seen));
  started.wait();
  auto watcher = rt.spawn(await_and_report(&h));
  const auto t0 = clock_type::now();
  EXPECT_TRUE(h.cancel("why"));
  EXPECT_EQ(watcher.join(), std::string("cancelled:why:") +
                                std::string(weft::to_string(cancel_kind::explicit_request)));
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_TRUE(h.cancelled());
}

// ------------------------------------------------------- catch and clean up

weft::task<std::string> catch_cleanup_return(std::latch* started, raii_counter* rc,
                                             seen_cancel* seen) {
  raii_probe outer_guard(*rc);
  started->count_down();
  try {
    raii_probe inner_guard(*rc);
    co_await weft::sleep_for(5s);
  } catch (const cancelled_error& e) {
    seen->record(e);
  }
  co_return "Canceled";
}

TEST(CancelTest, TaskCatchesCancelCleansUpAndReturnsAValue) {
  watchdog wd(30s);
  std::latch started{1};
  raii_counter rc;
  seen_cancel seen;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(catch_cleanup_return(&started, &rc, &seen));
  started.wait();
  const auto t0 = clock_type::now();
  EXPECT_TRUE(h.cancel("stop"));
  EXPECT_EQ(h.join(), "Canceled");
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_FALSE(h.cancelled());
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_EQ(seen.times.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(seen.reason, "stop");
  EXPECT_EQ(rc.constructed.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(rc.destroyed.load(std::memory_order_relaxed), 2);
}

// ------------------------------------------------------------- refusal

struct refusal_state {
  std::latch first_wait{1};
  std::latch second_phase{1};
  std::atomic<int> caught{0};
  std::atomic<bool> yield_threw{false};
  unsigned cancelling_inside_after_first = 99;
  std::string reasons;
};

weft::task<int> refuse_twice(refusal_state* s) {
  s->first_wait.count_down();
  try {
    co_await weft::sleep_for(5s);
  } catch (const cancelled_error& e) {
    s->caught.fetch_add(1, std::memory_order_relaxed);
    s->reasons += std::string(e.reason()) + ";";
  }
  s->cancelling_inside_after_first = weft::this_task::cancelling();
  // One-shot: the request was delivered; the next awaits do not throw again.
  try {
    co_await weft::yield();
    co_await weft::checkpoint();
    co_await weft::sleep_for(0ns);
  } catch (const cancelled_error&) {
    s->yield_threw.store(true, std::memory_order_relaxed);
  }
  s->second_phase.count_down();
  try {
    co_await weft::sleep_for(5s);
  } catch (const cancelled_error& e) {
    s->caught.fetch_add(1, std::memory_order_relaxed);
    s->reasons += std::string(e.reason()) + ";";
  }
  co_return 5;
}

TEST(CancelTest, RefusedCancelIsDeliveredOnceAndASecondCancelDeliversAgain) {
  watchdog wd(30s);
  refusal_state s;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(refuse_twice(&s));
  s.first_wait.wait();
  const auto t0 = clock_type::now();
  EXPECT_TRUE(h.cancel("one"));
  s.second_phase.wait();
  EXPECT_FALSE(h.done());
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_TRUE(h.cancel("two"));
  EXPECT_EQ(h.cancelling(), 2u);
  EXPECT_EQ(h.join(), 5);
  EXPECT_LT(seconds_since(t0), 2.0) << "a 5 s sleep was not interrupted";
  EXPECT_EQ(s.caught.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(s.reasons, "one;two;");
  EXPECT_FALSE(s.yield_threw.load(std::memory_order_relaxed))
      << "a delivered request was delivered again";
  EXPECT_EQ(s.cancelling_inside_after_first, 1u);
  EXPECT_FALSE(h.cancelled());
  EXPECT_EQ(h.cancelling(), 2u);
  EXPECT_EQ(h.uncancel(), 1u);
  EXPECT_EQ(h.uncancel(), 0u);
}

// uncancel() of the only request before it is delivered drops it (asyncio:
// when the count reaches zero the pending request is withdrawn).
weft::task<int> spin_until_flag_then_yield(std::latch* running, std::atomic<bool>* go,
                                           std::atomic<bool>* threw) {
  running->count_down();
  while (!go->load(std::memory_order_acquire)) std::this_thread::yield();
  try {
    co_await weft::yield();
    co_await weft::sleep_for(1ms);
  } catch (const cancelled_error&) {
    threw->store(true, std::memory_order_relaxed);
  }
  co_return 8;
}

TEST(CancelTest, UncancelToZeroWithdrawsAnUndeliveredRequest) {
  watchdog wd(30s);
  std::latch running{1};
  std::atomic<bool> go{false}, threw{false};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(spin_until_flag_then_yield(&running, &go, &threw));
  running.wait();
  EXPECT_TRUE(h.cancel("withdrawn"));
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_EQ(h.uncancel(), 0u);
  go.store(true, std::memory_order_release);
  EXPECT_EQ(h.join(), 8);
  EXPECT_FALSE(threw.load(std::memory_order_relaxed));
  EXPECT_FALSE(h.cancelled());
}

// ------------------------------------------------------ before the first run

weft::task<void> block_worker(std::latch* started, std::latch* release) {
  started->count_down();
  release->wait();  // deliberately blocks this worker thread
  co_return;
}

weft::task<int> mark_ran(std::atomic<bool>* ran) {
  ran->store(true, std::memory_order_relaxed);
  co_return 3;
}

TEST(CancelTest, CancelBeforeFirstRunSkipsTheBody) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    std::latch blocker_started{1}, release{1};
    std::atomic<bool> ran{false};
    weft::runtime rt(with_workers(1));
    auto blocker = rt.spawn(block_worker(&blocker_started, &release));
    blocker_started.wait();  // the only worker is now stuck inside `blocker`
    auto h = rt.spawn(mark_ran(&ran));
    EXPECT_FALSE(h.done());
    EXPECT_TRUE(h.cancel("early"));
    release.count_down();
    auto e = expect_cancelled([&] { (void)h.join(); });
    EXPECT_EQ(e.reason(), "early");
    EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
    EXPECT_FALSE(ran.load(std::memory_order_relaxed))
        << "the body of a task cancelled before it started ran";
    EXPECT_TRUE(h.cancelled());
    EXPECT_EQ(h.cancelling(), 1u);
    blocker.join();
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<std::string> spawn_cancel_await_child(std::atomic<bool>* ran) {
  auto h = weft::spawn(mark_ran(ran));
  bool ok = h.cancel("child-early");
  try {
    (void)co_await h;
  } catch (const cancelled_error& e) {
    co_return std::string(ok ? "ok:" : "late:") + std::string(e.reason());
  }
  co_return "value";
}

TEST(CancelTest, ChildCancelledBeforeItRunsNeverRunsItsBody) {
  watchdog wd(30s);
  std::atomic<bool> ran{false};
  weft::runtime rt(with_workers(1));  // one worker: the child cannot start before the cancel
  EXPECT_EQ(rt.block_on(spawn_cancel_await_child(&ran)), "ok:child-early");
  EXPECT_FALSE(ran.load(std::memory_order_relaxed));
}

// --------------------------------------------------------- after completion

TEST(CancelTest, CancelAfterCompletionReturnsFalseAndKeepsTheValue) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(value_task(42));
  ASSERT_TRUE(wait_done(h));
  EXPECT_FALSE(h.cancel("late"));
  EXPECT_FALSE(h.cancel("later"));
  EXPECT_EQ(h.cancelling(), 0u);
  EXPECT_FALSE(h.cancelled());
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.join(), 42);
}

TEST(CancelTest, CancelTwiceIsHarmless) {
  watchdog wd(30s);
  std::latch started{1};
  seen_cancel seen;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(sleep_then_return(&started, 5s, &seen));
  started.wait();
  EXPECT_TRUE(h.cancel("first"));
  const bool second = h.cancel("second");  // may race with the task finishing
  auto e = expect_cancelled([&] { (void)h.join(); });
  EXPECT_TRUE(e.reason() == "first" || e.reason() == "second") << e.reason();
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(h.cancelling(), second ? 2u : 1u);
  EXPECT_EQ(seen.times.load(std::memory_order_relaxed), 1) << "delivered more than once";
  EXPECT_FALSE(h.cancel("third"));  // finished now
}

weft::task<int> spin_then_return_without_await(std::latch* running, std::atomic<bool>* go,
                                               std::atomic<bool>* saw_request) {
  running->count_down();
  while (!go->load(std::memory_order_acquire)) std::this_thread::yield();
  saw_request->store(weft::this_task::cancel_requested(), std::memory_order_relaxed);
  co_return 9;  // no resume point after the request: completes despite it
}

TEST(CancelTest, TaskReturningWithoutAnotherResumePointCompletesDespiteTheCancel) {
  watchdog wd(30s);
  std::latch running{1};
  std::atomic<bool> go{false}, saw{false};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(spin_then_return_without_await(&running, &go, &saw));
  running.wait();
  EXPECT_TRUE(h.cancel("too late"));
  go.store(true, std::memory_order_release);
  EXPECT_EQ(h.join(), 9);
  EXPECT_FALSE(h.cancelled());
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_TRUE(saw.load(std::memory_order_relaxed))
      << "cancel_requested() did not see the pending request";
}

weft::task<void> detached_work(std::latch* done, raii_counter* rc) {
  raii_probe g(*rc);
  co_await weft::yield();
  co_await weft::sleep_for(1ms);
  co_await weft::checkpoint();
  done->count_down();
}

TEST(CancelTest, DroppingTheHandleDetachesTheTask) {
  watchdog wd(30s);
  frame_baseline frames;
  raii_counter rc;
  {
    std::latch done{2};
    weft::runtime rt(with_workers(2));
    {
      auto h = rt.spawn(detached_work(&done, &rc));
    }
    {
      auto h = rt.spawn(detached_work(&done, &rc));
    }
    done.wait();  // both ran to completion without anybody holding a handle
  }
  EXPECT_EQ(rc.constructed.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(rc.destroyed.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------ cancel() racing the suspension

weft::task<double> spin_then_sleep_10s(std::latch* running, std::atomic<bool>* go,
                                       seen_cancel* seen) {
  running->count_down();
  while (!go->load(std::memory_order_acquire)) std::this_thread::yield();
  const auto t0 = clock_type::now();
  try {
    co_await weft::sleep_for(10s);
  } catch (const cancelled_error& e) {
    seen->record(e);
    co_return seconds_since(t0);
  }
  co_return 1e9;
}

TEST(CancelTest, RequestWhileRunningIsDeliveredAtTheNextAwaitWhichDoesNotBlock) {
  watchdog wd(30s);
  std::latch running{1};
  std::atomic<bool> go{false};
  seen_cancel seen;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(spin_then_sleep_10s(&running, &go, &seen));
  running.wait();
  EXPECT_TRUE(h.cancel("while running"));
  go.store(true, std::memory_order_release);
  const double slept = h.join();
  EXPECT_LT(slept, 2.0) << "the await after a pending request blocked";
  EXPECT_EQ(seen.times.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(seen.reason, "while running");
}

// The same race without the handshake: cancel() lands at a random moment
// around the task's first suspension, thousands of times.  A lost request
// would leave a task asleep for 10 s (or forever in the loops).
enum class race_body { sleep, yield_loop, checkpoint_loop, await_handle };

weft::task<int> sleep_10s() {
  co_await weft::sleep_for(10s);
  co_return 1;
}

weft::task<int> racing_body(race_body b) {
  switch (b) {
    case race_body::sleep:
      co_await weft::sleep_for(10s);
      break;
    case race_body::yield_loop:
      for (;;) co_await weft::yield();
    case race_body::checkpoint_loop:
      for (;;) co_await weft::checkpoint();
    case race_body::await_handle: {
      auto h = weft::spawn(sleep_10s());
      co_return co_await h;
    }
  }
  co_return 0;
}

class CancelRaceTest : public ::testing::TestWithParam<race_body> {};

TEST_P(CancelRaceTest, CancelRacingTheSuspensionIsNeverLost) {
  watchdog wd(120s, 10s);
  const int n = static_cast<int>(scaled(3000, 300));
  rng r(1234 + static_cast<int>(GetParam()));
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    double worst = 0;
    for (int i = 0; i < n; ++i) {
      wd.kick();
      auto h = rt.spawn(racing_body(GetParam()));
      busy_gap(std::chrono::nanoseconds(r.below(20'000)));
      const auto t0 = clock_type::now();
      EXPECT_TRUE(h.cancel("race"));
      auto e = expect_cancelled([&] { (void)h.join(); });
      worst = std::max(worst, seconds_since(t0));
      EXPECT_TRUE(h.cancelled());
      if (::testing::Test::HasFailure()) break;
    }
    EXPECT_LT(worst, 2.0) << "a cancel took this long to be delivered";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

INSTANTIATE_TEST_SUITE_P(Bodies, CancelRaceTest,
                         ::testing::Values(race_body::sleep, race_body::yield_loop,
                                           race_body::checkpoint_loop, race_body::await_handle),
                         [](const auto& info) {
                           switch (info.param) {
                             case race_body::sleep:
                               return std::string("Sleep");
                             case race_body::yield_loop:
                               return std::string("YieldLoop");
                             case race_body::checkpoint_loop:
                               return std::string("CheckpointLoop");
                             case race_body::await_handle:
                               return std::string("AwaitHandle");
                           }
                           return std::string("Unknown");
                         });

// ------------------------------------------------- down the await chain

struct chain_state {
  bool inner_refuses = false;
  std::latch outer_waiting{1};  // counted down by a task that can only run once outer is suspended
  seen_cancel inner_seen;
  seen_cancel outer_seen;
  std::atomic<bool> inner_sleeping{false};
  std::atomic<bool> inner_finished{false};
};

weft::task<int> chain_inner(chain_state* s) {
  // Relaxed: a progress flag outer polls; it publishes nothing.  Set just
  // before the sleep (nothing suspends in between).
  s->inner_sleeping.store(true, std::memory_order_relaxed);
  try {
    co_await weft::sleep_for(5s);
  } catch (const cancelled_error& e) {
    s->inner_seen.record(e);
    s->inner_finished.store(true, std::memory_order_relaxed);
    if (s->inner_refuses) co_return 11;
    throw;
  }
  s->inner_finished.store(true, std::memory_order_relaxed);
  co_return 1;
}

weft::task<void> notify(std::latch* l) {
  l->count_down();
  co_return;
}

// With one worker: `notify` is queued before outer suspends and can only run
// after outer (and inner) have suspended, so the test's cancel() finds outer
// suspended on inner's handle and inner asleep.  `inline_join`: outer awaits inner before inner
// started (the joiner runs it inline); otherwise inner is started first and
// outer waits for it through the slow path.
weft::task<int> chain_outer(chain_state* s, bool inline_join) {
  weft::join_handle<int> inner;
  if (inline_join) {
    {
      auto n = weft::spawn(notify(&s->outer_waiting));
    }
    inner = weft::spawn(chain_inner(s));
  } else {
    inner = weft::spawn(chain_inner(s));
    while (!s->inner_sleeping.load(std::memory_order_relaxed))
      co_await weft::yield();  // inner runs up to its sleep
    {
      auto n = weft::spawn(notify(&s->outer_waiting));
    }
  }
  try {
    co_return co_await inner;
  } catch (const cancelled_error& e) {
    s->outer_seen.record(e);
    throw;
  }
}

class CancelChainTest : public ::testing::TestWithParam<bool> {};

TEST_P(CancelChainTest, CancellingTheAwaiterCancelsTheAwaitedTask) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    chain_state s;
    weft::runtime rt(with_workers(1));
    auto outer = rt.spawn(chain_outer(&s, GetParam()));
    s.outer_waiting.wait();
    const auto t0 = clock_type::now();
    EXPECT_TRUE(outer.cancel("why"));
    auto e = expect_cancelled([&] { (void)outer.join(); });
    EXPECT_LT(seconds_since(t0), 2.0) << "inner's 5 s sleep was not interrupted";
    EXPECT_EQ(e.reason(), "why");
    EXPECT_TRUE(outer.cancelled());
    EXPECT_EQ(s.inner_seen.times.load(std::memory_order_relaxed), 1)
        << "the awaited task was not cancelled";
    EXPECT_EQ(s.inner_seen.reason, "why");
    EXPECT_TRUE(s.inner_seen.kind == cancel_kind::explicit_request ||
                s.inner_seen.kind == cancel_kind::parent)
        << weft::to_string(s.inner_seen.kind);
    EXPECT_EQ(s.outer_seen.times.load(std::memory_order_relaxed),
              1);  // outer's await rethrew inner's outcome
    EXPECT_TRUE(s.inner_finished.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST_P(CancelChainTest, AwaitedTaskThatRefusesGivesItsValueToTheAwaiter) {
  watchdog wd(30s);
  chain_state s;
  s.inner_refuses = true;
  weft::runtime rt(with_workers(1));
  auto outer = rt.spawn(chain_outer(&s, GetParam()));
  s.outer_waiting.wait();
  const auto t0 = clock_type::now();
  EXPECT_TRUE(outer.cancel("why"));
  EXPECT_EQ(outer.join(), 11);
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_FALSE(outer.cancelled());
  EXPECT_EQ(s.inner_seen.times.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(s.outer_seen.times.load(std::memory_order_relaxed), 0);
}

INSTANTIATE_TEST_SUITE_P(JoinPath, CancelChainTest, ::testing::Values(true, false),
                         [](const auto& info) {
                           return info.param ? std::string("InlineJoin") : std::string("SlowJoin");
                         });

// ------------------------------------------------------ this_task queries

struct poll_state {
  std::latch running{1};
  std::atomic<bool> false_before{false};
  std::atomic<bool> still_pending_after_query{false};
  std::atomic<bool> threw{false};
  std::atomic<bool> clear_after_throw{false};
  std::atomic<bool> yield_threw{false};
  std::string reason;
};

weft::task<int> poll_cancel_requested(poll_state* s) {
  s->false_before.store(!weft::this_task::cancel_requested(), std::memory_order_relaxed);
  weft::this_task::throw_if_cancel_requested();  // nothing pending: no throw
  s->running.count_down();
  while (!weft::this_task::cancel_requested()) std::this_thread::yield();
  // consumed nothing:
  s->still_pending_after_query.store(weft::this_task::cancel_requested(),
                                     std::memory_order_relaxed);
  try {
    weft::this_task::throw_if_cancel_requested();
  } catch (const cancelled_error& e) {
    s->threw.store(true, std::memory_order_relaxed);
    s->reason = std::string(e.reason());
  }
  s->clear_after_throw.store(!weft::this_task::cancel_requested(), std::memory_order_relaxed);
  try {
    co_await weft::yield();  // already delivered: does not throw
  } catch (const cancelled_error&) {
    s->yield_threw.store(true, std::memory_order_relaxed);
  }
  co_return 3;
}

// cancel() stores a request with a plain store and counts it with a load and a
// store, relying on the hook lock (every store into `pending` and every update
// of cancelling()'s count is made under it).  Here four threads cancel one
// task while it keeps taking requests at yield() and at sleeps -- a sleep
// entered with a request pending refuses and parks the request back on the
// task (park_request), one entered without is woken by the next cancel --
// and, in the child it awaits inline, takes requests that landed on it as
// forwarded ones.  A count update made outside the lock would lose increments
// (cancelling() below the number of accepted cancels); a request stored
// outside it would be lost or freed twice (the sanitizer builds see both).
// `in_loop` is set once the innermost task is in its loop (cancels sent before
// that would cancel the task before it starts, or its parent at the
// co_await).  The innermost task writes how many cancels it caught to
// `caught` before it returns (read after join()).
weft::task<void> take_requests_forever(const std::atomic<bool>* stop, std::atomic<bool>* in_loop,
                                       long* caught, int depth) {
  if (depth > 0) {
    try {
      co_await take_requests_forever(stop, in_loop, caught, depth - 1);
    } catch (const cancelled_error&) {
      // A request that landed on this task after the child's last
      // cancellation point is delivered here, when the child returns.
    }
    co_return;
  }
  long n = 0;
  // Release: pairs with the test's acquire load; nothing else is published.
  in_loop->store(true, std::memory_order_release);
  // Relaxed: a stop sign; the final cancel() after it wakes a sleeping loop.
  for (unsigned i = 0; !stop->load(std::memory_order_relaxed); ++i) {
    try {
      if (i % 2 == 0) {
        co_await weft::yield();
      } else {
        co_await weft::sleep_for(std::chrono::hours(1));
      }
    } catch (const cancelled_error&) {
      ++n;
    }
  }
  *caught = n;
}

TEST(CancelCountTest, EveryAcceptedCancelIsCountedWhenFourThreadsCancelATaskThatKeepsTakingThem) {
  watchdog wd(120s);
  const int per_thread = static_cast<int>(scaled(100000, 5000));
  for (int depth : {0, 1, 0, 1}) {
    std::atomic<bool> stop{false};
    std::atomic<bool> in_loop{false};
    long caught = -1;
    weft::runtime rt(with_workers(2));
    auto h = rt.spawn(take_requests_forever(&stop, &in_loop, &caught, depth));
    // Acquire: pairs with the task's release store (bounded by the watchdog).
    while (!in_loop.load(std::memory_order_acquire)) std::this_thread::yield();
    std::atomic<long> accepted{0};
    std::latch go(4);
    std::vector<std::thread> cancellers;
    for (int t = 0; t < 4; ++t) {
      cancellers.emplace_back([&] {
        go.arrive_and_wait();
        long mine = 0;
        for (int i = 0; i < per_thread; ++i) mine += h.cancel() ? 1 : 0;
        // Relaxed: read after join() of this thread.
        accepted.fetch_add(mine, std::memory_order_relaxed);
      });
    }
    for (auto& c : cancellers) c.join();
    // Relaxed: the task polls it; the cancel() below wakes a sleeping loop
    // (a loop at yield() may see the flag first and finish: then it says false).
    stop.store(true, std::memory_order_relaxed);
    const long last = h.cancel() ? 1 : 0;
    EXPECT_EQ(accepted.load(std::memory_order_relaxed), 4L * per_thread)
        << "the task runs until `stop`: every cancel before it is accepted";
    const long all = accepted.load(std::memory_order_relaxed) + last;
    EXPECT_EQ(static_cast<long>(h.cancelling()), all) << "depth " << depth;
    h.join();
    EXPECT_GE(caught, 1) << "depth " << depth;
    EXPECT_LE(caught, all) << "depth " << depth;
  }
}

TEST(ThisTaskTest, CancelRequestedAndThrowIfCancelRequestedInsideATask) {
  watchdog wd(30s);
  poll_state s;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(poll_cancel_requested(&s));
  s.running.wait();
  EXPECT_TRUE(h.cancel("polled"));
  EXPECT_EQ(h.join(), 3);
  EXPECT_TRUE(s.false_before.load(std::memory_order_relaxed));
  EXPECT_TRUE(s.still_pending_after_query.load(std::memory_order_relaxed));
  EXPECT_TRUE(s.threw.load(std::memory_order_relaxed));
  EXPECT_EQ(s.reason, "polled");
  EXPECT_TRUE(s.clear_after_throw.load(std::memory_order_relaxed));
  EXPECT_FALSE(s.yield_threw.load(std::memory_order_relaxed));
  EXPECT_FALSE(h.cancelled());
}

// uncancel() decrements the count and withdraws the pending request in one
// step under the hook lock: done in two, a cancel() in between would be
// withdrawn with it while cancelling() said 1.  Here the task cancels itself
// and refuses (uncancel) in a loop, and is frozen inside
// this_task::uncancel() (tests/freezer.hpp); the test cancels it from outside
// and thaws it.  Whatever the interleaving, one request must then be counted
// and delivered.  Each round is one chance for the freeze to land in the
// window (a two-step uncancel fails within a few dozen rounds; the test
// allows 500).

struct uncancel_race {
  std::atomic<weft::join_handle<int>*> self{nullptr};
  pthread_t worker{};
  std::atomic<bool> have_worker{false};
  std::atomic<int> round{0};      // test -> task: play round n
  std::atomic<bool> stop{false};  // test -> task: leave the loop after this uncancel
  std::atomic<int> check{0};      // test -> task: its cancel of round n returned
  std::atomic<int> finished{0};   // task -> test: round n over
  std::atomic<unsigned> count_after{0};
  std::atomic<bool> delivered{false};
  std::atomic<bool> finish{false};
};

weft::task<int> cancel_self_and_refuse(uncancel_race* s) {
  s->worker = pthread_self();
  s->have_worker.store(true, std::memory_order_release);
  weft::join_handle<int>* self = nullptr;
  while ((self = s->self.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();
  for (int r = 1;; ++r) {
    while (s->round.load(std::memory_order_acquire) < r) {
      if (s->finish.load(std::memory_order_acquire)) co_return 0;
      std::this_thread::yield();
    }
    // No resume point in this loop: the requests stay pending, never delivered.
    while (!s->stop.load(std::memory_order_acquire)) {
      self->cancel("self");
      freezable_region region;
      weft::this_task::uncancel();
    }
    // The test's cancel() may still be on its way (it waited for our lock).
    while (s->check.load(std::memory_order_acquire) < r) std::this_thread::yield();
    // Relaxed, this and `delivered`: published by the release store of
    // `finished` below.
    s->count_after.store(weft::this_task::cancelling(), std::memory_order_relaxed);
    bool delivered = false;
    try {
      weft::this_task::throw_if_cancel_requested();
    } catch (const weft::cancelled_error&) {
      delivered = true;
    }
    s->delivered.store(delivered, std::memory_order_relaxed);
    weft::this_task::uncancel();  // back to zero for the next round
    s->finished.store(r, std::memory_order_release);
  }
}

TEST(CancelRaceTest, UncancelRacingACancelFromOutsideKeepsTheNewRequest) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  uncancel_race s;
  freezer fz;
  weft::runtime rt(weft_test::with_workers(1));
  weft::join_handle<int> h = rt.spawn(cancel_self_and_refuse(&s));
  s.self.store(&h, std::memory_order_release);
  await_true([&] { return s.have_worker.load(std::memory_order_acquire); });
  task_core& core = core_of(h);
  const int rounds = static_cast<int>(scaled(500, 300, 300));
  int inside_lock = 0, frozen_rounds = 0;
  for (int r = 1; r <= rounds; ++r) {
    s.stop.store(false, std::memory_order_relaxed);  // published by the release of `round`
    s.round.store(r, std::memory_order_release);
    bool frozen = false;
    for (int k = 0; k < 100'000 && !frozen; ++k) frozen = fz.try_freeze(s.worker);
    if (!frozen) {
      s.stop.store(true, std::memory_order_release);
      s.check.store(r, std::memory_order_release);
      await_true([&] { return s.finished.load(std::memory_order_acquire) == r; });
      continue;
    }
    ++frozen_rounds;
    std::thread late_canceller;
    if (core.hook_lock.load(std::memory_order_acquire) == 0) {
      h.cancel("from outside");  // the frozen uncancel holds no lock: cancel now
    } else {
      // Frozen inside uncancel's critical section: this cancel waits
      // for it, as it would without the freeze.
      ++inside_lock;
      late_canceller = std::thread([&h] { h.cancel("from outside"); });
    }
    s.stop.store(true, std::memory_order_release);
    fz.thaw();
    if (late_canceller.joinable()) late_canceller.join();
    s.check.store(r, std::memory_order_release);
    await_true([&] { return s.finished.load(std::memory_order_acquire) == r; });
    EXPECT_EQ(s.count_after.load(std::memory_order_relaxed), 1u) << "round " << r;
    EXPECT_TRUE(s.delivered.load(std::memory_order_relaxed))
        << "round " << r << ": cancelling() is " << s.count_after.load(std::memory_order_relaxed)
        << " but the request was withdrawn by uncancel()";
    if (::testing::Test::HasFailure()) break;
  }
  s.finish.store(true, std::memory_order_release);
  EXPECT_EQ(h.join(), 0);
  std::printf("[ info ] uncancel() frozen in %d of %d rounds, %d of them inside the hook lock\n",
              frozen_rounds, rounds, inside_lock);
}

// cancel() of a task that waits on task T1 forwards the request to T1.  When
// T1 has finished meanwhile, the request must not just be made pending on
// the waiter: the waiter may by then have moved on to await T2, and nobody
// would forward it -- T2 would run on uncancelled and the waiter stay
// blocked.  The canceller is frozen (tests/freezer.hpp) between reading
// "waits on T1" and re-reading the waiter's hook while the waiter moves from
// T1 to T2; without the re-read every freeze in that window fails.

// Blocks its worker thread (without spinning) until the gate opens.  Relaxed,
// every access to a gate: it publishes nothing (what the test then checks is
// ordered by weft's own joins and the tasks' states).
weft::task<void> hold_worker(std::atomic<int>* gate) {
  gate->store(1, std::memory_order_relaxed);  // running
  gate->wait(1, std::memory_order_relaxed);
  co_return;
}

void open_gate(std::atomic<int>& gate) {
  gate.store(2, std::memory_order_relaxed);
  gate.notify_all();
}

weft::task<int> wait_on_event(weft::event* e) {
  co_await e->wait();
  co_return 2;
}

weft::task<void> await_one_then_another(weft::join_handle<int>* t1, weft::join_handle<int>* t2) {
  try {
    (void)co_await *t1;
  } catch (const weft::cancelled_error&) {
  }
  (void)co_await *t2;
}

// Relaxed, `stop` and `calls`: a stop flag and a sign of progress; the
// canceller thread is joined before anything else is read.
struct forward_race {
  weft::join_handle<void>* waiter = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<long> calls{0};
};

void cancel_in_a_loop(forward_race* f) {
  while (!f->stop.load(std::memory_order_relaxed)) {
    {
      freezable_region region;
      f->waiter->cancel();
    }
    f->calls.fetch_add(1, std::memory_order_relaxed);
  }
}

TEST(CancelChainTest, ACancelReachesTheTaskTheWaiterMovedOnToAfterTheFirstFinished) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  freezer fz;
  // The waiter runs on `a`; T1 and T2 on `b`.  T1 finishes by
  // complete_unstarted, which queues the waiter on `a` (blocked) instead of
  // resuming it: the waiter's hook still says "T1" after T1 is done.
  weft::runtime a(weft_test::with_workers(1));
  weft::runtime b(weft_test::with_workers(1));
  const int attempts = static_cast<int>(scaled(3, 2));
  // Effort bounds over all attempts (not synchronisation): signals, and time.
  const long budget = scaled(200'000, 20'000);
  const auto give_up = weft_test::clock_type::now() + 20s * kSlowdown;
  int armed = 0;
  long tries = 0;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    auto e2 = std::make_unique<weft::event>();
    std::atomic<int> gate_a{0}, gate_b{0};
    weft::join_handle<void> block_b = b.spawn(hold_worker(&gate_b));
    await_true([&] { return gate_b.load(std::memory_order_relaxed) == 1; });
    weft::join_handle<int> t1 = b.spawn(weft_test::value_task(1));  // queued behind block_b
    weft::join_handle<int> t2 = b.spawn(wait_on_event(e2.get()));
    weft::join_handle<void> waiter = a.spawn(await_one_then_another(&t1, &t2));
    await_true([&] { return has_joiner(t1); });
    weft::join_handle<void> block_a = a.spawn(hold_worker(&gate_a));
    await_true([&] { return gate_a.load(std::memory_order_relaxed) == 1; });
    EXPECT_TRUE(t1.cancel("before it starts"));
    open_gate(gate_b);  // t1 completes unstarted; the waiter is queued on blocked `a`
    await_true([&] { return t1.done(); });

    forward_race f;
    f.waiter = &waiter;
    std::thread canceller(cancel_in_a_loop, &f);
    await_true([&] { return f.calls.load(std::memory_order_relaxed) > 0; });
    // Freeze the canceller after it took its temporary reference on T1 and
    // let go of the waiter's hook lock.
    bool in_window = false;
    while (!in_window && tries < budget && weft_test::clock_type::now() < give_up) {
      ++tries;
      if (!fz.try_freeze(canceller.native_handle())) continue;
      if (refs_of(core_of(t1)) == 2 &&
          core_of(waiter).hook_lock.load(std::memory_order_acquire) == 0) {
        in_window = true;
        break;
      }
      fz.thaw();
    }
    if (in_window) {
      ++armed;
      open_gate(gate_a);  // the waiter runs: T1's outcome, then it awaits T2
      await_true([&] { return has_joiner(t2); });
      f.stop.store(true, std::memory_order_relaxed);
      fz.thaw();
      canceller.join();
      EXPECT_EQ(t2.cancelling(), 1u)
          << "attempt " << attempt << ": the cancel stayed on the waiter instead of reaching T2";
    } else {
      f.stop.store(true, std::memory_order_relaxed);
      canceller.join();
      open_gate(gate_a);
    }
    e2->set();
    try {
      waiter.join();  // it took t2's outcome
    } catch (const weft::cancelled_error&) {
    }
    EXPECT_TRUE(t2.done());
    block_a.join();
    block_b.join();
    if (::testing::Test::HasFailure()) break;
  }
  std::printf(
      "[ info ] the canceller was frozen in the window in %d of %d attempts (%ld signals)\n", armed,
      attempts, tries);
}

}  // namespace
