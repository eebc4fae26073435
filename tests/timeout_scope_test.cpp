// SPDX-License-Identifier: MIT
// Black-box tests of the timeout scopes, weft::timeout / timeout_at
// (asyncio.timeout / timeout_at): the block runs in the calling task; its
// own deadline becomes timeout_error chained from the cancellation; nested
// scopes (inner expires, outer expires, both, an outside cancel while the
// inner expires) where only the scope whose deadline made the request
// reports it; reschedule to the future, the past and never, also from
// another thread; misuse (reschedule after the end, while expiring, never
// entered); the deadline racing the block's end (many rounds on a threaded
// runtime, and the simulation's cancel-at-every-resume-point); a driven
// runtime.
//
// Atomics shared between the test thread and tasks: relaxed where the test
// reads them after a join or block_on (which orders them), acquire/release
// where a thread polls them.
#include <atomic>
#include <chrono>
#include <exception>
#include <latch>
#include <optional>
#include <stdexcept>
#include <string>

#include <weft/testing.hpp>

#include "test_support.hpp"

namespace {

using namespace weft_test;
using steady = std::chrono::steady_clock;

enum class outcome { value, timeout, cancelled, other };

const char* name(outcome o) {
  switch (o) {
    case outcome::value:
      return "value";
    case outcome::timeout:
      return "timeout";
    case outcome::cancelled:
      return "cancelled";
    case outcome::other:
      return "other";
  }
  return "?";
}

// What one scope's caller saw, and what it read afterwards.
struct seen {
  outcome out = outcome::other;
  std::optional<weft::cancelled_error> cause;   // timeout_error::cause()
  bool nested_is_cancel = false;                // rethrow_if_nested gave a cancelled_error
  std::optional<weft::cancelled_error> cancel;  // the cancelled_error that came out
  bool expired = false;
  unsigned cancelling_after = 99;  // this_task::cancelling() right after the scope
  bool pending_after = true;       // this_task::cancel_requested() right after
};

// Runs a scope-returning task and classifies what came out.
template <class T>
weft::task<seen> observe(weft::task<T> t) {
  seen s;
  try {
    co_await std::move(t);
    s.out = outcome::value;
  } catch (const weft::timeout_error& e) {
    s.out = outcome::timeout;
    if (e.cause() != nullptr) s.cause = *e.cause();
    try {
      std::rethrow_if_nested(e);
    } catch (const weft::cancelled_error&) {
      s.nested_is_cancel = true;
    } catch (...) {
    }
  } catch (const weft::cancelled_error& e) {
    s.out = outcome::cancelled;
    s.cancel = e;
  } catch (...) {
    s.out = outcome::other;
  }
  s.cancelling_after = weft::this_task::cancelling();
  s.pending_after = weft::this_task::cancel_requested();
  co_return s;
}

// ---------------------------------------------------------------- basics

weft::task<int> finishes_in_time(weft::timeout_scope* out) {
  co_return co_await weft::timeout(10s, [&](weft::timeout_scope& cm) -> weft::task<int> {
    *out = cm;
    co_await weft::sleep_for(1ms);
    co_return 7;
  });
}

TEST(TimeoutScopeTest, BlockThatFinishesInTimeGivesItsValueAndLeavesNothingPending) {
  watchdog dog(60s);
  weft::timeout_scope cm;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(finishes_in_time(&cm)), 7);
  EXPECT_FALSE(cm.expired());
  ASSERT_TRUE(cm.when().has_value());
  EXPECT_GE(*cm.when(), t0 + 10s);
}

// The block runs in the calling task: same stop token, and a cancel of the
// caller's handle reaches the block directly.
weft::task<bool> block_runs_in_caller() {
  const std::stop_token outside = co_await weft::this_task::stop_token();
  bool same = false;
  co_await weft::timeout(10s, [&]() -> weft::task<void> {
    const std::stop_token inside = co_await weft::this_task::stop_token();
    same = inside == outside;
  });
  co_return same;
}

TEST(TimeoutScopeTest, BlockRunsInTheCallingTaskNotASpawnedOne) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(block_runs_in_caller()));
}

struct block_probe {
  std::optional<weft::cancelled_error> in_block;  // what the block's catch saw
  weft::timeout_scope cm;
};

weft::task<seen> sleeps_past_deadline(block_probe* p) {
  co_return co_await observe(weft::timeout(20ms, [p](weft::timeout_scope& cm) -> weft::task<void> {
    p->cm = cm;
    try {
      co_await weft::sleep_for(10s);
    } catch (const weft::cancelled_error& e) {
      p->in_block = e;
      throw;
    }
  }));
}

TEST(TimeoutScopeTest, DeadlineCancelsTheBlockAndThrowsTimeoutErrorChainedFromItsCancellation) {
  watchdog dog(60s);
  block_probe p;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  const seen s = rt.block_on(sleeps_past_deadline(&p));
  EXPECT_LT(steady::now() - t0, 5s);
  ASSERT_EQ(s.out, outcome::timeout) << name(s.out);
  ASSERT_TRUE(p.in_block.has_value());
  EXPECT_EQ(p.in_block->kind(), weft::cancel_kind::timeout);
  EXPECT_EQ(p.in_block->reason(), "timeout");
  // The cause is that very cancellation, and names the scope's call site.
  ASSERT_TRUE(s.cause.has_value());
  EXPECT_EQ(s.cause->kind(), weft::cancel_kind::timeout);
  EXPECT_EQ(s.cause->reason(), "timeout");
  EXPECT_EQ(s.cause->where().line(), p.in_block->where().line());
  EXPECT_NE(std::string(s.cause->where().file_name()).find("timeout_scope_test.cpp"),
            std::string::npos);
  EXPECT_TRUE(s.nested_is_cancel);  // std::rethrow_if_nested walks the same chain
  EXPECT_TRUE(p.cm.expired());
  EXPECT_EQ(s.cancelling_after, 0u);  // the scope withdrew its request
  EXPECT_FALSE(s.pending_after);
}

weft::task<seen> never_deadlines(weft::timeout_scope* a, weft::timeout_scope* b) {
  co_await weft::timeout(std::chrono::hours::max(),
                         [&](weft::timeout_scope& cm) -> weft::task<void> {
                           *a = cm;
                           co_await weft::sleep_for(1ms);
                         });
  co_return co_await observe(
      weft::timeout_at(steady::time_point::max(), [&](weft::timeout_scope& cm) -> weft::task<void> {
        *b = cm;
        co_await weft::sleep_for(1ms);
      }));
}

TEST(TimeoutScopeTest, MaxDurationAndMaxTimePointNeverExpire) {
  watchdog dog(60s);
  weft::timeout_scope a, b;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(never_deadlines(&a, &b)).out, outcome::value);
  EXPECT_FALSE(a.when().has_value());
  EXPECT_FALSE(b.when().has_value());
  EXPECT_FALSE(a.expired());
  EXPECT_FALSE(b.expired());
}

weft::task<seen> zero_over_yield(std::chrono::nanoseconds d, weft::timeout_scope* cm) {
  co_return co_await observe(weft::timeout(d, [cm](weft::timeout_scope& s) -> weft::task<void> {
    *cm = s;
    co_await weft::yield();
  }));
}

weft::task<seen> zero_without_cancellation_point(weft::timeout_scope* cm) {
  seen s = co_await observe(weft::timeout(0s, [cm](weft::timeout_scope& sc) -> weft::task<int> {
    *cm = sc;
    co_return 1;
  }));
  co_await weft::yield();  // throws if the scope's request were left behind
  co_return s;
}

TEST(TimeoutScopeTest, ZeroOrPastDeadlineExpiresAtTheBlocksFirstCancellationPoint) {
  watchdog dog(60s);
  weft::timeout_scope z, past, none;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  const seen s0 = rt.block_on(zero_over_yield(0s, &z));
  const auto t1 = steady::now();
  EXPECT_EQ(s0.out, outcome::timeout) << name(s0.out);
  EXPECT_TRUE(z.expired());
  ASSERT_TRUE(z.when().has_value());
  EXPECT_LE(t0, *z.when());
  EXPECT_LE(*z.when(), t1);
  const seen s1 = rt.block_on(zero_over_yield(-11s, &past));
  EXPECT_EQ(s1.out, outcome::timeout) << name(s1.out);
  ASSERT_TRUE(past.when().has_value());
  EXPECT_LE(*past.when(), steady::now() - 10s);
  // No cancellation point in the block: it ends normally, the request is
  // withdrawn with the scope.
  const seen s2 = rt.block_on(zero_without_cancellation_point(&none));
  EXPECT_EQ(s2.out, outcome::value) << name(s2.out);
  EXPECT_TRUE(none.expired());
  EXPECT_EQ(s2.cancelling_after, 0u);
  EXPECT_FALSE(s2.pending_after);
}

struct key_error : std::exception {};

weft::task<seen> foreign_exception(weft::timeout_scope* cm) {
  co_return co_await observe(weft::timeout(10s, [cm](weft::timeout_scope& s) -> weft::task<void> {
    *cm = s;
    co_await weft::yield();
    throw key_error{};
  }));
}

TEST(TimeoutScopeTest, ForeignExceptionPassesUnchanged) {
  watchdog dog(60s);
  weft::timeout_scope cm;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(foreign_exception(&cm)).out, outcome::other);
  EXPECT_FALSE(cm.expired());
}

// A pending request at entry is delivered there: the block never runs, and it
// is never taken for the scope's timeout.
weft::task<seen> entered_with_pending(std::atomic<bool>* body_ran, std::latch* started,
                                      std::latch* go) {
  started->count_down();
  go->wait();  // the test cancels us meanwhile (this blocks a worker for a moment)
  co_return co_await observe(weft::timeout(0s, [body_ran]() -> weft::task<void> {
    body_ran->store(true, std::memory_order_relaxed);
    co_return;
  }));
}

TEST(TimeoutScopeTest, EnteringDeliversAnOutsideRequestAlreadyPendingNotAsATimeout) {
  watchdog dog(60s);
  std::atomic<bool> body_ran{false};
  std::latch started{1}, go{1};
  weft::runtime rt(with_workers(2));
  weft::join_handle<seen> h = rt.spawn(entered_with_pending(&body_ran, &started, &go));
  started.wait();
  h.cancel("outside");
  go.count_down();
  const seen s = h.join();
  EXPECT_EQ(s.out, outcome::cancelled) << name(s.out);
  ASSERT_TRUE(s.cancel.has_value());
  EXPECT_EQ(s.cancel->reason(), "outside");
  EXPECT_FALSE(body_ran.load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------- nested scopes

struct nest {
  seen inner;
  weft::timeout_scope inner_cm, outer_cm;
};

weft::task<seen> nested(nest* n, std::chrono::nanoseconds outer_d, std::chrono::nanoseconds inner_d,
                        std::chrono::nanoseconds sleep) {
  co_return co_await observe(
      weft::timeout(outer_d, [=](weft::timeout_scope& outer) -> weft::task<void> {
        n->outer_cm = outer;
        n->inner = co_await observe(
            weft::timeout(inner_d, [=](weft::timeout_scope& inner) -> weft::task<void> {
              n->inner_cm = inner;
              co_await weft::sleep_for(sleep);
            }));
        if (n->inner.out == outcome::cancelled) throw *n->inner.cancel;  // let it through
        co_await weft::sleep_for(sleep);
      }));
}

TEST(TimeoutScopeTest, NestedInnerExpiresOnlyTheInnerReportsTheTimeout) {
  watchdog dog(60s);
  nest n;
  weft::runtime rt(with_workers(2));
  const seen outer = rt.block_on(nested(&n, 10s, 10ms, 20ms));
  EXPECT_EQ(n.inner.out, outcome::timeout) << name(n.inner.out);
  EXPECT_EQ(n.inner.cancelling_after, 0u);
  EXPECT_EQ(outer.out, outcome::value) << name(outer.out);
  EXPECT_TRUE(n.inner_cm.expired());
  EXPECT_FALSE(n.outer_cm.expired());
}

TEST(TimeoutScopeTest, NestedOuterExpiresTheInnerLetsItsCancellationThrough) {
  watchdog dog(60s);
  nest n;
  weft::runtime rt(with_workers(2));
  const seen outer = rt.block_on(nested(&n, 10ms, 10s, 10s));
  EXPECT_EQ(n.inner.out, outcome::cancelled) << name(n.inner.out);
  EXPECT_EQ(outer.out, outcome::timeout) << name(outer.out);
  EXPECT_FALSE(n.inner_cm.expired());
  EXPECT_TRUE(n.outer_cm.expired());
  EXPECT_EQ(outer.cancelling_after, 0u);
}

// Both deadlines pass before the block reaches a cancellation point (it
// spins until both fired): whichever fired first, the inner lets the
// cancellation through and only the outer reports the timeout.
weft::task<seen> both_expire(nest* n) {
  co_return co_await observe(
      weft::timeout(5ms, [n](weft::timeout_scope& outer) -> weft::task<void> {
        n->outer_cm = outer;
        n->inner = co_await observe(
            weft::timeout(5ms, [n](weft::timeout_scope& inner) -> weft::task<void> {
              n->inner_cm = inner;
              await_true([&] { return inner.expired() && n->outer_cm.expired(); });
              co_await weft::yield();
            }));
        if (n->inner.out == outcome::cancelled) throw *n->inner.cancel;
      }));
}

TEST(TimeoutScopeTest, NestedBothExpireOnlyTheOuterReportsTheTimeout) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const long rounds = scaled(30, 5);
  for (long i = 0; i < rounds; ++i) {
    nest n;
    const seen outer = rt.block_on(both_expire(&n));
    EXPECT_EQ(n.inner.out, outcome::cancelled) << "round " << i << ": " << name(n.inner.out);
    EXPECT_EQ(outer.out, outcome::timeout) << "round " << i << ": " << name(outer.out);
    EXPECT_TRUE(n.inner_cm.expired());
    EXPECT_TRUE(n.outer_cm.expired());
    EXPECT_EQ(outer.cancelling_after, 0u);
    EXPECT_FALSE(outer.pending_after);
    if (::testing::Test::HasFailure()) break;
  }
}

// An outside cancel arrives while the inner deadline fires: both are counted
// before the block's next cancellation point; neither scope may turn that
// into a timeout (the inner: a request besides its own; the outer: not
// expired).  The task ends cancelled.
struct outside_probe {
  nest n;
  std::latch inner_fired{1};
};

weft::task<void> inner_expires_while_cancelled(outside_probe* p) {
  co_await weft::timeout(10s, [p](weft::timeout_scope& outer) -> weft::task<void> {
    p->n.outer_cm = outer;
    p->n.inner =
        co_await observe(weft::timeout(5ms, [p](weft::timeout_scope& inner) -> weft::task<void> {
          p->n.inner_cm = inner;
          await_true([&] { return inner.expired(); });
          p->inner_fired.count_down();
          await_true([] { return weft::this_task::cancelling() == 2; });  // the outside cancel
          co_await weft::yield();
        }));
    if (p->n.inner.out == outcome::cancelled) throw *p->n.inner.cancel;
  });
}

TEST(TimeoutScopeTest, NestedOutsideCancelWhileTheInnerExpiresGoesThroughAsCancellation) {
  watchdog dog(60s);
  outside_probe p;
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> h = rt.spawn(inner_expires_while_cancelled(&p));
  p.inner_fired.wait();
  h.cancel("from outside");
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_EQ(p.n.inner.out, outcome::cancelled) << name(p.n.inner.out);
  EXPECT_TRUE(p.n.inner_cm.expired());
  EXPECT_FALSE(p.n.outer_cm.expired());
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(h.cancelling(), 1u);  // the outside request stays counted
}

// A scope inside wait_for's task, wait_for inside a scope: the outer deadline
// reports, the inner one lets it through.
weft::task<void> scope_sleeping(std::atomic<int>* inner) {
  try {
    co_await weft::timeout(10s, []() -> weft::task<void> { co_await weft::sleep_for(10s); });
  } catch (const weft::timeout_error&) {
    inner->store(1, std::memory_order_relaxed);
    throw;
  } catch (const weft::cancelled_error&) {
    inner->store(2, std::memory_order_relaxed);
    throw;
  }
}

weft::task<seen> wait_for_over_scope(std::atomic<int>* inner) {
  co_return co_await observe(weft::wait_for(scope_sleeping(inner), 10ms));
}

weft::task<seen> scope_over_wait_for(std::atomic<int>* inner) {
  co_return co_await observe(weft::timeout(10ms, [inner]() -> weft::task<void> {
    co_await weft::wait_for(scope_sleeping(inner), 10s);
  }));
}

TEST(TimeoutScopeTest, ScopeAndWaitForNestEitherWayTheOuterDeadlineReports) {
  watchdog dog(60s);
  std::atomic<int> inner{0};
  weft::runtime rt(with_workers(2));
  const seen a = rt.block_on(wait_for_over_scope(&inner));
  EXPECT_EQ(a.out, outcome::timeout) << name(a.out);
  EXPECT_EQ(inner.load(std::memory_order_relaxed), 2);  // the scope let it through
  ASSERT_TRUE(a.cause.has_value());                     // wait_for's timeout is chained too
  EXPECT_EQ(a.cause->kind(), weft::cancel_kind::timeout);
  inner.store(0, std::memory_order_relaxed);
  const seen b = rt.block_on(scope_over_wait_for(&inner));
  EXPECT_EQ(b.out, outcome::timeout) << name(b.out);
  EXPECT_EQ(inner.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(b.cancelling_after, 0u);
}

// ---------------------------------------------------------------- reschedule

weft::task<seen> reschedule_in_block(int mode, weft::timeout_scope* out) {
  co_return co_await observe(
      weft::timeout(mode == 0 ? 5ms : 10s, [=](weft::timeout_scope& cm) -> weft::task<int> {
        *out = cm;
        if (mode == 0) cm.reschedule(steady::now() + 10s);  // to the future
        if (mode == 1) cm.reschedule(steady::now() - 1s);   // to the past: at once
        if (mode == 2) cm.reschedule(std::nullopt);         // never
        if (mode == 3) cm.reschedule(steady::time_point::max());
        co_await weft::sleep_for(mode == 1 ? 10s : 30ms);
        co_return 1;
      }));
}

TEST(TimeoutScopeTest, RescheduleToTheFutureTheScopeDoesNotExpireAtTheOldDeadline) {
  watchdog dog(60s);
  weft::timeout_scope cm;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  EXPECT_EQ(rt.block_on(reschedule_in_block(0, &cm)).out, outcome::value);
  EXPECT_FALSE(cm.expired());
  ASSERT_TRUE(cm.when().has_value());
  EXPECT_GE(*cm.when(), t0 + 10s);
}

TEST(TimeoutScopeTest, RescheduleToThePastExpiresAtTheNextCancellationPoint) {
  watchdog dog(60s);
  weft::timeout_scope cm;
  weft::runtime rt(with_workers(2));
  const auto t0 = steady::now();
  const seen s = rt.block_on(reschedule_in_block(1, &cm));
  EXPECT_EQ(s.out, outcome::timeout) << name(s.out);
  EXPECT_LT(steady::now() - t0, 5s);
  EXPECT_TRUE(cm.expired());
  EXPECT_EQ(s.cancelling_after, 0u);
}

TEST(TimeoutScopeTest, RescheduleToNeverDisarmsTheDeadline) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  for (int mode : {2, 3}) {
    weft::timeout_scope cm;
    EXPECT_EQ(rt.block_on(reschedule_in_block(mode, &cm)).out, outcome::value) << mode;
    EXPECT_FALSE(cm.expired()) << mode;
    EXPECT_FALSE(cm.when().has_value()) << mode;
  }
}

// From another thread, while the block sleeps: to the past cancels it now.
struct remote {
  std::latch entered{1};
  weft::timeout_scope cm;
};

weft::task<seen> sleeps_in_scope(remote* r) {
  co_return co_await observe(weft::timeout(1h, [r](weft::timeout_scope& cm) -> weft::task<void> {
    r->cm = cm;
    r->entered.count_down();
    co_await weft::sleep_for(1h);
  }));
}

TEST(TimeoutScopeTest, RescheduleFromAnotherThreadWakesTheBlock) {
  watchdog dog(60s);
  remote r;
  weft::runtime rt(with_workers(2));
  weft::join_handle<seen> h = rt.spawn(sleeps_in_scope(&r));
  r.entered.wait();
  r.cm.reschedule(steady::now() + 10ms);  // a new deadline task, spawned from this thread
  const seen s = h.join();
  EXPECT_EQ(s.out, outcome::timeout) << name(s.out);
  EXPECT_TRUE(r.cm.expired());
}

// ---------------------------------------------------------------- misuse

weft::task<std::string> reschedule_while_expiring() {
  std::string what;
  co_await weft::timeout(0s, [&](weft::timeout_scope& cm) -> weft::task<void> {
    try {
      co_await weft::yield();
    } catch (const weft::cancelled_error&) {
    }
    try {
      cm.reschedule(steady::now() + 1s);
    } catch (const weft::usage_error& e) {
      what = e.what();
    }
  });
  co_return what;
}

weft::task<weft::timeout_scope> scope_that_ends(std::chrono::nanoseconds d) {
  weft::timeout_scope kept;
  try {
    co_await weft::timeout(d, [&](weft::timeout_scope& cm) -> weft::task<void> {
      kept = cm;
      co_await weft::sleep_for(d == 0s ? 1s : 0s);
    });
  } catch (const weft::timeout_error&) {
  }
  co_return kept;
}

TEST(TimeoutScopeTest, RescheduleOutsideTheRunningBlockIsAUsageErrorNamingWhy) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const auto message = [](weft::timeout_scope cm) {
    try {
      cm.reschedule(steady::now() + 1s);
    } catch (const weft::usage_error& e) {
      return std::string(e.what());
    }
    return std::string("no usage_error");
  };
  EXPECT_NE(message(weft::timeout_scope()).find("not been entered"), std::string::npos);
  const weft::timeout_scope finished = rt.block_on(scope_that_ends(10s));
  EXPECT_NE(message(finished).find("finished"), std::string::npos) << message(finished);
  const weft::timeout_scope expired = rt.block_on(scope_that_ends(0s));
  EXPECT_TRUE(expired.expired());
  EXPECT_NE(message(expired).find("expired"), std::string::npos) << message(expired);
  const std::string expiring = rt.block_on(reschedule_while_expiring());
  EXPECT_NE(expiring.find("expiring"), std::string::npos) << expiring;
}

// ---------------------------------------------------------------- the race with the block's end

// The deadline is about as long as the block: it fires before, during or
// just after the block's end.  Whatever happened, the outcome is the value or
// timeout_error (never a cancelled_error), and nothing of the scope is left
// on the task: cancelling() is 0, no request pending, the next cancellation
// point is quiet.
weft::task<seen> racing_block(long round) {
  const auto d = std::chrono::microseconds(50 + (round % 7) * 20);
  seen s = co_await observe(weft::timeout(d, [round]() -> weft::task<int> {
    jitter(round, 200);
    if (round % 3 == 0) co_await weft::yield();
    if (round % 3 == 1) co_await weft::sleep_for(std::chrono::microseconds(60 + round % 50));
    busy_gap(std::chrono::microseconds(round % 90));
    co_return 1;
  }));
  co_await weft::yield();  // a late request of the scope would be delivered here
  co_return s;
}

TEST(TimeoutScopeTest, DeadlineRacingTheBlocksEndLeavesNoCancellationBehind) {
  watchdog dog(100s);
  weft::runtime rt(with_workers(2));
  const long rounds = scaled(3000, 300);
  long timeouts = 0, values = 0;
  for (long i = 0; i < rounds; ++i) {
    seen s;
    try {
      s = rt.block_on(racing_block(i));
    } catch (const weft::cancelled_error& e) {
      FAIL() << "round " << i << ": a request of the scope landed after it: " << e.what();
    }
    if (s.out == outcome::timeout) ++timeouts;
    if (s.out == outcome::value) ++values;
    ASSERT_TRUE(s.out == outcome::value || s.out == outcome::timeout)
        << "round " << i << ": " << name(s.out);
    ASSERT_EQ(s.cancelling_after, 0u) << "round " << i;
    ASSERT_FALSE(s.pending_after) << "round " << i;
  }
  // Both sides of the race were taken (the rounds span it).
  EXPECT_GT(timeouts, 0);
  EXPECT_GT(values, 0);
}

// ---------------------------------------------------------------- simulation

// The virtual-time version of the nested cases: an outer scope (3 ms) and an
// inner one (2 ms) over sleeps and yields, run by explore() with a
// cancellation injected at every resume point.  Whatever the schedule and
// wherever the cancellation lands, the invariants hold:
//   * a timeout_error never hides a counted cancellation: right after a
//     scope turned the block's end into timeout_error, the task's
//     cancelling() is 0 (an injected request would still count);
//   * without an injection the outcome is the one virtual time dictates
//     (the inner expires first, the outer reports);
//   * after both scopes nothing of theirs is left: cancelling() is at most
//     1 (an injected request) and a further yield delivers only that one.
struct sim_record {
  seen outer;
  seen inner;
  bool late_timeout = false;  // a request of kind timeout arrived after the scopes
};

weft::task<void> sim_nested(sim_record* rec) {
  rec->outer = co_await observe(weft::timeout(3ms, [rec]() -> weft::task<void> {
    rec->inner = co_await observe(weft::timeout(2ms, []() -> weft::task<void> {
      co_await weft::yield();
      co_await weft::sleep_for(1ms);
      co_await weft::yield();
      co_await weft::sleep_for(5ms);
    }));
    if (rec->inner.out == outcome::cancelled) throw *rec->inner.cancel;
    co_await weft::sleep_for(5ms);
  }));
  try {
    co_await weft::yield();
  } catch (const weft::cancelled_error& e) {
    if (e.kind() == weft::cancel_kind::timeout) rec->late_timeout = true;
  }
}

void check_sim_record(const sim_record& r, bool injected) {
  using weft::testing::check;
  check(!r.late_timeout, "a scope's request was delivered after the scope ended");
  if (r.inner.out == outcome::timeout)
    check(r.inner.cancelling_after == 0, "the inner timeout_error hid a counted cancellation");
  if (r.outer.out == outcome::timeout)
    check(r.outer.cancelling_after == 0, "the outer timeout_error hid a counted cancellation");
  check(r.outer.cancelling_after <= 1, "a scope left its request counted");
  if (r.outer.out == outcome::timeout) {
    check(r.outer.cause.has_value() && r.outer.cause->kind() == weft::cancel_kind::timeout,
          "timeout_error without its timeout cause");
  }
  if (!injected) {
    check(r.inner.out == outcome::timeout, "the inner scope should have timed out");
    check(r.outer.out == outcome::timeout, "the outer scope should have timed out");
    check(r.outer.cancelling_after == 0 && !r.outer.pending_after, "a request was left behind");
  }
}

weft::testing::options sim_options(const char* name) {
  weft::testing::options o;
  o.name = name;
  o.seeds = 20;
  o.pct_seeds = 20;
  o.cancel_seeds = 2;
  o.workers = 2;
  o.write_trace = false;
  o.failed = [] { return ::testing::Test::HasFailure(); };
  return o;
}

TEST(TimeoutScopeSimTest, NestedScopesUnderACancellationAtEveryResumePointOfTheirTask) {
  watchdog dog(110s);
  sim_record rec;
  auto o = sim_options("TimeoutScopeSimTest.Target");
  o.cancel_target = 1;  // the body's task: the one running the scopes
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        rec = {};
        co_await sim_nested(&rec);
        check_sim_record(rec, weft::testing::current_run()->cancel_at != 0);
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, o.seeds + o.pct_seeds + 2 * o.cancel_seeds);  // the cancel points ran too
}

TEST(TimeoutScopeSimTest, NestedScopesUnderACancellationAtEveryResumePointOfAnyTask) {
  watchdog dog(110s);
  sim_record rec;
  auto o = sim_options("TimeoutScopeSimTest.Any");
  o.seeds = 0;
  o.pct_seeds = 0;
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        rec = {};
        co_await sim_nested(&rec);
        // An injection that hit a deadline task drops that deadline: the
        // scope does not expire, which is no failure.
        const bool injected = weft::testing::current_run()->cancel_at != 0;
        if (!injected) check_sim_record(rec, false);
        if (injected) {
          weft::testing::check(!rec.late_timeout, "a scope's request landed after it ended");
          if (rec.outer.out == outcome::timeout)
            weft::testing::check(rec.outer.cancelling_after == 0,
                                 "the outer timeout_error hid a counted cancellation");
        }
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, o.seeds + o.pct_seeds + 2 * o.cancel_seeds);  // the cancel points ran too
}

// A scope that ends long before its deadline leaves no timer: the
// simulation, run until nothing can run and no timer is armed, does not jump
// to the hour-long deadline.
weft::task<int> short_block_long_deadline() {
  co_return co_await weft::timeout(1h, []() -> weft::task<int> {
    co_await weft::yield();
    co_return 5;
  });
}

TEST(TimeoutScopeSimTest, ScopeEndingEarlyLeavesNoTimerArmed) {
  watchdog dog(60s);
  weft::runtime_options ro;
  ro.workers = 2;
  ro.simulation = weft::sim::options{};
  weft::runtime rt(ro);
  EXPECT_EQ(rt.block_on(short_block_long_deadline()), 5);
  weft::sim::run(rt, 100000);
  EXPECT_LT(weft::sim::stats(rt).virtual_ns,
            static_cast<std::uint64_t>(std::chrono::nanoseconds(1s).count()));
}

// ---------------------------------------------------------------- a driven runtime

weft::task<seen> driven_scope() {
  co_return co_await observe(
      weft::timeout(10ms, []() -> weft::task<void> { co_await weft::sleep_for(10s); }));
}

TEST(TimeoutScopeTest, DrivenRuntimeTimesTheBlockOut) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.driven = true;
  weft::runtime rt(o);
  const seen s = rt.block_on(driven_scope());
  EXPECT_EQ(s.out, outcome::timeout) << name(s.out);
  EXPECT_EQ(s.cancelling_after, 0u);
}

}  // namespace
