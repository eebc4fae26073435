// SPDX-License-Identifier: MIT
// CPython's Lib/test/test_asyncio/test_taskgroups.py, the cases that need the
// body to be part of the group (`async with TaskGroup()`), ported to
// weft::task_scope.  Each test is named after the CPython test whose scenario
// it ports (our code; only the scenarios come from CPython).  The plain
// task_group ports are in conformance_taskgroups_test.cpp.
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>

#include "conformance_support.hpp"
#include "weft/testing.hpp"

// The tests' own atomics: every write is a release and every read an
// acquire, each pairing with the other side's (the counters and flags a task
// or callback sets and the test thread reads after a join or a latch).
namespace {

using namespace std::chrono_literals;
using weft_conformance::expect_group_error;
using weft_test::with_workers;

struct zero_division : std::runtime_error {
  zero_division() : std::runtime_error("division by zero") {}
};
struct value_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct my_exc : std::runtime_error {
  my_exc() : std::runtime_error("MyExc") {}
};

weft::task<void> crash_after(std::chrono::milliseconds d) {
  co_await weft::sleep_for(d);
  throw zero_division();
}
weft::task<void> value_error_after(std::chrono::milliseconds d) {
  co_await weft::sleep_for(d);
  throw value_error("ValueError");
}

template <class E>
bool all_of_type(const weft::task_group_error& e) {
  for (const auto& x : e.exceptions()) {
    try {
      std::rethrow_exception(x);
    } catch (const E&) {
    } catch (...) {
      return false;
    }
  }
  return !e.exceptions().empty();
}

struct counters {
  std::atomic<int> num{0};
  std::atomic<bool> t2_cancel{false};
  std::atomic<bool> runner_cancel{false};
};

weft::task<void> notes_cancel(counters* c, std::chrono::milliseconds d) {
  try {
    co_await weft::sleep_for(d);
  } catch (const weft::cancelled_error&) {
    c->t2_cancel.store(true, std::memory_order_release);
    throw;
  }
  c->num.fetch_add(1, std::memory_order_release);
}

// ---- test_cancel_children_on_child_error ----
// The failing child cancels its siblings and the body (runner_cancel).

weft::task<void> cancel_children_runner(counters* c) {
  co_await weft::task_scope([c](weft::task_group& g) -> weft::task<void> {
    for (int i = 0; i < 3; ++i) (void)g.spawn(crash_after(10ms));
    (void)g.spawn(notes_cancel(c, 5s));
    try {
      co_await weft::sleep_for(10s);
    } catch (const weft::cancelled_error& e) {
      c->runner_cancel.store(true, std::memory_order_release);
      EXPECT_EQ(e.kind(), weft::cancel_kind::group);
      throw;
    }
  });
  c->num.fetch_add(10, std::memory_order_release);
}

TEST(ConformanceTaskScope, test_cancel_children_on_child_error) {
  weft_test::watchdog dog(60s);
  counters c;
  weft::runtime rt(with_workers(2));
  const weft::task_group_error e =
      expect_group_error([&] { rt.block_on(cancel_children_runner(&c)); });
  EXPECT_TRUE(all_of_type<zero_division>(e));
  EXPECT_EQ(c.num.load(std::memory_order_acquire), 0);
  EXPECT_TRUE(c.t2_cancel.load(std::memory_order_acquire));
  EXPECT_TRUE(c.runner_cancel.load(std::memory_order_acquire));
}

// ---- test_taskgroup_07 / test_cancellation_in_body / test_taskgroup_17 ----
// Cancelling the owner cancels the body and every child; the cancellation
// (with its reason) gets out; every child was awaited.

weft::task<void> counts_cancel(counters* c, std::latch* started) {
  started->count_down();
  try {
    co_await weft::sleep_for(5s);
  } catch (const weft::cancelled_error&) {
    c->num.fetch_add(1, std::memory_order_release);
    throw;
  }
}

weft::task<void> five_and_sleep(counters* c, std::latch* started) {
  co_await weft::task_scope([c, started](weft::task_group& g) -> weft::task<void> {
    for (int i = 0; i < 5; ++i) (void)g.spawn(counts_cancel(c, started));
    try {
      co_await weft::sleep_for(10s);
    } catch (const weft::cancelled_error&) {
      c->num.fetch_add(10, std::memory_order_release);
      throw;
    }
  });
}

TEST(ConformanceTaskScope, test_taskgroup_07) {
  weft_test::watchdog dog(60s);
  counters c;
  std::latch started(5);
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> r = rt.spawn(five_and_sleep(&c, &started));
  started.wait();
  EXPECT_FALSE(r.done());
  r.cancel("test");
  const weft::cancelled_error e = weft_test::expect_cancelled([&] { r.join(); });
  EXPECT_EQ(e.reason(), "test");  // test_cancellation_in_body: the args survive
  EXPECT_EQ(c.num.load(std::memory_order_acquire),
            15);  // every child and the body saw it before the scope ended
}

// The owner is cancelled while its scope's body sleeps; the body counts the
// cancellation and rethrows it, or (test_taskgroup_18) throws MyExc instead.
// Returns the join's outcome and the count.
struct body_reaction {
  std::exception_ptr outcome;
  int num = 0;
};

body_reaction cancel_a_sleeping_body(bool raise_my_exc) {
  std::atomic<int> num{0};
  std::latch in(1);
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> r =
      rt.spawn([](std::atomic<int>* n, std::latch* l, bool mine) -> weft::task<void> {
        co_await weft::task_scope([n, l, mine](weft::task_group&) -> weft::task<void> {
          l->count_down();
          try {
            co_await weft::sleep_for(10s);
          } catch (const weft::cancelled_error&) {
            n->fetch_add(10, std::memory_order_release);
            if (mine) throw my_exc();
            throw;
          }
        });
      }(&num, &in, raise_my_exc));
  in.wait();
  r.cancel();
  body_reaction out;
  try {
    r.join();
  } catch (...) {
    out.outcome = std::current_exception();
  }
  out.num = num.load(std::memory_order_acquire);  // after the join: pairs with the body's add
  return out;
}

TEST(ConformanceTaskScope, test_taskgroup_17) {
  weft_test::watchdog dog(60s);
  const body_reaction r = cancel_a_sleeping_body(false);
  ASSERT_TRUE(r.outcome) << "the join returned";
  EXPECT_THROW(std::rethrow_exception(r.outcome), weft::cancelled_error);
  EXPECT_EQ(r.num, 10);
}

// ---- test_taskgroup_18 ----
// The body turns the cancellation into MyExc: it joins the group's errors.

TEST(ConformanceTaskScope, test_taskgroup_18) {
  weft_test::watchdog dog(60s);
  const body_reaction r = cancel_a_sleeping_body(true);
  ASSERT_TRUE(r.outcome) << "the join returned";
  const weft::task_group_error e = expect_group_error([&] { std::rethrow_exception(r.outcome); });
  EXPECT_TRUE(all_of_type<my_exc>(e));
  EXPECT_EQ(r.num, 10);
}

// ---- test_taskgroup_09 / test_taskgroup_10 ----
// The body fails (after a sleep, or at once): the children are cancelled and
// awaited, and the body's exception is in the group's error.

weft::task<int> sleeps_then(std::chrono::milliseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

weft::task<void> body_fails(bool sleep_first, weft::join_handle<int>* t1,
                            weft::join_handle<int>* t2) {
  co_await weft::task_scope([=](weft::task_group& g) -> weft::task<void> {
    *t1 = g.spawn(sleeps_then(1s, 42));
    *t2 = g.spawn(sleeps_then(2s, 11));
    if (sleep_first) co_await weft::sleep_for(10ms);
    throw zero_division();
  });
}

TEST(ConformanceTaskScope, test_taskgroup_09) {
  weft_test::watchdog dog(60s);
  weft::join_handle<int> t1, t2;
  weft::runtime rt(with_workers(2));
  const weft::task_group_error e =
      expect_group_error([&] { rt.block_on(body_fails(true, &t1, &t2)); });
  EXPECT_TRUE(all_of_type<zero_division>(e));
  EXPECT_EQ(e.size(), 1u);
  EXPECT_TRUE(t1.cancelled());  // done: the scope awaited them
  EXPECT_TRUE(t2.cancelled());
  EXPECT_EQ(t1.cancellation()->kind(), weft::cancel_kind::parent);
}

TEST(ConformanceTaskScope, test_taskgroup_10) {
  weft_test::watchdog dog(60s);
  weft::join_handle<int> t1, t2;
  weft::runtime rt(with_workers(2));
  const weft::task_group_error e =
      expect_group_error([&] { rt.block_on(body_fails(false, &t1, &t2)); });
  EXPECT_TRUE(all_of_type<zero_division>(e));
  EXPECT_TRUE(t1.cancelled());
  EXPECT_TRUE(t2.cancelled());
}

// ---- test_taskgroup_11 / test_taskgroup_12 ----
// Nested scopes; the owner is cancelled from outside while the inner
// children fail: the cancellation gets out.

weft::task<void> nested_cancel(bool outer_child, std::latch* in) {
  co_await weft::task_scope([=](weft::task_group& g1) -> weft::task<void> {
    if (outer_child) (void)g1.spawn(sleeps_then(10s, 0));
    co_await weft::task_scope([=](weft::task_group& g2) -> weft::task<void> {
      for (int i = 0; i < 5; ++i) (void)g2.spawn(crash_after(10s));
      in->count_down();
      co_await weft::sleep_for(10s);
    });
  });
}

// The inner children fail only after the cancel (asyncio's 0.1 s sleeps race
// the cancel there; here the order is fixed): the cancellation gets out of
// both scopes with its reason, and nothing is left running.
void expect_nested_cancel_gets_out(bool outer_child) {
  weft_test::watchdog dog(60s);
  std::latch in(1);
  weft::runtime rt(with_workers(2));
  weft::join_handle<void> r = rt.spawn(nested_cancel(outer_child, &in));
  in.wait();
  r.cancel("from outside");
  const weft::cancelled_error e = weft_test::expect_cancelled([&] { r.join(); });
  EXPECT_EQ(e.reason(), "from outside");
  EXPECT_EQ(r.cancelling(), 1u);
}

TEST(ConformanceTaskScope, test_taskgroup_11) { expect_nested_cancel_gets_out(false); }
TEST(ConformanceTaskScope, test_taskgroup_12) { expect_nested_cancel_gets_out(true); }

// ---- test_taskgroup_13 / test_taskgroup_14 ----
// Errors nest: an inner scope's task_group_error is one of the outer's.

weft::task<void> nested_errors(std::chrono::milliseconds outer, std::chrono::milliseconds inner) {
  co_await weft::task_scope([=](weft::task_group& g1) -> weft::task<void> {
    (void)g1.spawn(value_error_after(outer));
    co_await weft::task_scope([=](weft::task_group& g2) -> weft::task<void> {
      (void)g2.spawn(value_error_after(inner));
      co_return;
    });
  });
}

TEST(ConformanceTaskScope, test_taskgroup_13) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  // The outer child fails first: it cancels the body, inside the inner scope,
  // whose child is cancelled; only the outer ValueError is left.
  const weft::task_group_error e =
      expect_group_error([&] { rt.block_on(nested_errors(10ms, 10s)); });
  EXPECT_TRUE(all_of_type<value_error>(e));
  EXPECT_EQ(e.size(), 1u);
}

TEST(ConformanceTaskScope, test_taskgroup_14) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  // The inner child fails first: the inner scope's error leaves its body into
  // the outer scope, which cancels its own child: one error, nested.
  const weft::task_group_error e =
      expect_group_error([&] { rt.block_on(nested_errors(10s, 10ms)); });
  ASSERT_EQ(e.size(), 1u);
  ASSERT_TRUE(all_of_type<weft::task_group_error>(e));
  try {
    std::rethrow_exception(e.exceptions()[0]);
  } catch (const weft::task_group_error& inner) {
    EXPECT_TRUE(all_of_type<value_error>(inner));
  }
}

// ---- test_taskgroup_19 ----
// The body, cancelled by the failing child, raises MyExc in its cleanup:
// both errors are reported.

weft::task<void> nested_raises_in_finally() {
  try {
    co_await weft::sleep_for(10s);
  } catch (...) {
    throw my_exc();
  }
}

TEST(ConformanceTaskScope, test_taskgroup_19) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const weft::task_group_error e = expect_group_error([&] {
    rt.block_on(weft::task_scope([](weft::task_group& g) -> weft::task<void> {
      (void)g.spawn(crash_after(10ms));
      co_await nested_raises_in_finally();
    }));
  });
  ASSERT_EQ(e.size(), 2u);
  EXPECT_THROW(std::rethrow_exception(e.exceptions()[0]), zero_division);  // the child's first
  EXPECT_THROW(std::rethrow_exception(e.exceptions()[1]), my_exc);         // then the body's
}

// ---- test_nested_groups_both_cancelled ----
// Both scopes' children fail at once: the inner scope's error is caught in the
// outer body, where cancelling() still counts the outer scope's request (1);
// after the outer scope, 0.

// asyncio runs both children before the body resumes; here the body waits
// (without a cancellation point) until both have finished, counted by done
// callbacks, which run after a child's failure reached its group.
weft::task<void> fail_now(int which) {  // a coroutine (co_return): throws when it runs
  if (which == 0) throw zero_division();
  if (which == 1) throw value_error("ValueError");
  co_return;
}

TEST(ConformanceTaskScope, test_nested_groups_both_cancelled) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  unsigned between = 99, after = 99;
  bool inner_caught = false;
  std::atomic<int> failed{0};
  const weft::task_group_error e = expect_group_error([&] {
    rt.block_on(
        [](unsigned* b, unsigned* a, bool* caught, std::atomic<int>* f) -> weft::task<void> {
          try {
            co_await weft::task_scope([=](weft::task_group& outer) -> weft::task<void> {
              try {
                co_await weft::task_scope([&](weft::task_group& inner) -> weft::task<void> {
                  inner.spawn(fail_now(0)).add_done_callback([f] { f->fetch_add(1); });
                  outer.spawn(fail_now(1)).add_done_callback([f] { f->fetch_add(1); });
                  while (f->load() < 2) std::this_thread::yield();  // no cancellation point
                  co_await weft::sleep_for(10s);
                });
              } catch (const weft::task_group_error& ie) {
                *caught = all_of_type<zero_division>(ie);
              }
              *b = weft::this_task::cancelling();
            });
          } catch (...) {
            *a = weft::this_task::cancelling();
            throw;
          }
        }(&between, &after, &inner_caught, &failed));
  });
  EXPECT_TRUE(all_of_type<value_error>(e));
  EXPECT_TRUE(inner_caught);
  EXPECT_EQ(between, 1u);
  EXPECT_EQ(after, 0u);
}

// ---- test_cancelling_level_preserved ----
// A failure the scope handled leaves cancelling() where it was.

TEST(ConformanceTaskScope, test_cancelling_level_preserved) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const unsigned level = rt.block_on([]() -> weft::task<unsigned> {
    try {
      co_await weft::task_scope([](weft::task_group& g) -> weft::task<void> {
        (void)g.spawn(crash_after(0ms));
        co_await weft::sleep_for(10s);
      });
    } catch (const weft::task_group_error&) {
    }
    co_return weft::this_task::cancelling();
  }());
  EXPECT_EQ(level, 0u);
}

// ---- test_taskgroup_task_name ----

TEST(ConformanceTaskScope, test_taskgroup_task_name) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  const std::string name =
      rt.block_on(weft::task_scope([](weft::task_group& g) -> weft::task<std::string> {
        weft::join_handle<void> t =
            g.spawn([]() -> weft::task<void> { co_await weft::yield(); }(), {.name = "yolo"});
        co_return t.name();
      }));
  EXPECT_EQ(name, "yolo");
}

// ---- scope results, values and misuse (no CPython counterpart) ----

TEST(TaskScopeTest, TheBodysValueIsReturnedAfterEveryChildFinished) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  std::atomic<int> done{0};
  const int v = rt.block_on(weft::task_scope([&](weft::task_group& g) -> weft::task<int> {
    for (int i = 0; i < 4; ++i) {
      (void)g.spawn([](std::atomic<int>* d) -> weft::task<void> {
        co_await weft::sleep_for(5ms);
        d->fetch_add(1);
      }(&done));
    }
    co_return 7;
  }));
  EXPECT_EQ(v, 7);
  EXPECT_EQ(done.load(std::memory_order_acquire), 4);
}

// A timeout scope over a task scope: the deadline cancels the body; the
// task scope cancels and awaits every child and lets the cancellation out
// (it is not the group's own); the timeout scope turns it into timeout_error.
// A child that fails in its cleanup makes it a task_group_error instead.
weft::task<std::string> scope_under_timeout(bool child_fails_in_cleanup, std::atomic<int>* live) {
  try {
    co_await weft::timeout(20ms, [&]() -> weft::task<void> {
      co_await weft::task_scope([&](weft::task_group& g) -> weft::task<void> {
        for (int i = 0; i < 3; ++i) {
          (void)g.spawn([](std::atomic<int>* n, bool fail) -> weft::task<void> {
            n->fetch_add(1);
            bool cancelled = false;
            try {
              co_await weft::sleep_for(10s);
            } catch (const weft::cancelled_error&) {
              cancelled = true;
            }
            n->fetch_sub(1);
            if (cancelled && fail) throw zero_division();
          }(live, child_fails_in_cleanup && i == 1));
        }
        co_await weft::sleep_for(10s);
      });
    });
  } catch (const weft::timeout_error& e) {
    co_return std::string("timeout, cause ") + std::string(weft::to_string(e.cause()->kind()));
  } catch (const weft::task_group_error& e) {
    co_return "group error: " + std::to_string(e.size());
  }
  co_return "returned";
}

TEST(TaskScopeTest, ATimeoutOverAScopeCancelsTheBodyAndAwaitsEveryChild) {
  weft_test::watchdog dog(60s);
  std::atomic<int> live{0};
  weft::runtime_options o;
  o.simulation = weft::sim::options{};  // virtual time: the 10 s sleeps cost nothing
  weft::runtime rt(o);
  EXPECT_EQ(rt.block_on(scope_under_timeout(false, &live)), "timeout, cause timeout");
  EXPECT_EQ(live.load(std::memory_order_acquire), 0);
  EXPECT_EQ(rt.block_on(scope_under_timeout(true, &live)), "group error: 1");
  EXPECT_EQ(live.load(std::memory_order_acquire), 0);
}

TEST(TaskScopeTest, OutsideATaskIsAUsageError) {
  weft::task<void> t = weft::task_scope([](weft::task_group&) -> weft::task<void> { co_return; });
  weft::runtime rt(with_workers(1));
  // block_on runs it as a task: fine.  A scope whose body never spawns is fine too.
  rt.block_on(std::move(t));
}

// The scoped form under the simulation, cancelled at every resume point:
// no child outlives the scope, the scope ends by exactly one of (value,
// group error, cancellation), and cancelling() is back at its level.
TEST(TaskScopeSimTest, EveryResumePointKeepsTheScopeContract) {
  weft_test::watchdog dog(300s);
  int live = 0;
  int outcome_kinds = 0;
  unsigned level = 99;
  weft::testing::options o;
  o.name = "TaskScopeSim.Contract";
  o.log = nullptr;
  o.seeds = 100;
  o.pct_seeds = 100;
  o.cancel_seeds = 4;
  o.after_each = [&] { weft::testing::check(live == 0, "a child outlived its scope"); };
  const auto child = [&live](int k) -> weft::task<void> {
    ++live;
    struct dec {
      int* n;
      ~dec() { --*n; }
    } d{&live};
    co_await weft::yield();
    if (k == 2) throw std::runtime_error("child 2 failed");
    co_await weft::sleep_for(1ms);
  };
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        live = 0;
        outcome_kinds = 0;
        try {
          co_await weft::task_scope([&](weft::task_group& g) -> weft::task<void> {
            for (int k = 0; k < 4; ++k) (void)g.spawn(child(k));
            co_await weft::sleep_for(5ms);
          });
          ++outcome_kinds;
        } catch (const weft::task_group_error&) {
          ++outcome_kinds;
        } catch (const weft::cancelled_error&) {
          ++outcome_kinds;
        }
        weft::testing::check(live == 0, "a child is still running after the scope");
        weft::testing::check(outcome_kinds == 1, "the scope ended twice or not at all");
        level = weft::this_task::cancelling();
        (void)level;
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, 100u + 20u) << r.to_string();  // every seed and some cancel points ran
}

}  // namespace
