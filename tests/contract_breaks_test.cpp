// SPDX-License-Identifier: MIT
// The cancellation contract at its edges: one test per break that independent
// campaigns found in composed constructs (docs/cancellation.md, "The
// contract"), each named by its scenario.  Every one of them failed before the
// change that closed it: a cancellation lost, a value dropped, a timeout
// reported by the wrong wait, a stack overflow.
//
// House rules (tests/test_support.hpp): a watchdog in every test, no wall-clock
// sleep as synchronisation (the weft::sleep_for calls below are the waits under
// test, and each is far longer than the test may take), coroutines are free
// functions taking their state by pointer, that state is declared before the
// runtime, counts are scaled down under sanitizers.
//
// Atomics shared between a test thread and its tasks: flags are stored with
// release and loaded with acquire (a thread that sees a flag sees what was
// written before it was set); counters are relaxed (they are read after a
// join or the runtime's destruction, which order them).
#include <atomic>
#include <latch>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using weft_test::watchdog;

// ---- a task group's owner cancelled while a child fails ----------------------

struct group_scene {
  weft::event child_waiting;  // the failing child is inside its wait
  std::atomic<bool> owner_caught_group_error{false};
  std::atomic<unsigned> cancelling_in_catch{0};
  std::atomic<bool> slept_through{false};
};

// Waits until the group cancels it, then fails instead of ending cancelled.
weft::task<void> fails_when_cancelled(group_scene* s) {
  weft::event never;
  try {
    s->child_waiting.set();
    co_await never.wait();
  } catch (const weft::cancelled_error&) {
    throw std::runtime_error("child failed while being cancelled");
  }
}

weft::task<void> group_owner(group_scene* s) {
  weft::task_group g;
  (void)g.spawn(fails_when_cancelled(s));
  co_await s->child_waiting.wait();
  try {
    co_await g.join();
  } catch (const weft::task_group_error&) {
    s->owner_caught_group_error.store(true, std::memory_order_relaxed);
    s->cancelling_in_catch.store(weft::this_task::cancelling(), std::memory_order_relaxed);
  }
  co_await weft::sleep_for(30s);  // the owner's cancellation must land here
  s->slept_through.store(true, std::memory_order_relaxed);
}

TEST(ContractBreaksTest, GroupOwnerCancelledWhileAChildFailsSeesTheCancelAtItsNextAwait) {
  watchdog dog(20s);
  for (int round = 0; round < weft_test::scaled(20, 5); ++round) {
    group_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    auto owner = rt.spawn(group_owner(&s));
    weft_test::spin_until([&] { return s.child_waiting.is_set(); }, 10s);
    ASSERT_TRUE(owner.cancel("stop the owner"));
    EXPECT_THROW(owner.join(), weft::cancelled_error) << "round " << round;
    EXPECT_TRUE(owner.cancelled());
    EXPECT_TRUE(s.owner_caught_group_error.load(std::memory_order_acquire))
        << "join() reports the child's failure";
    EXPECT_EQ(s.cancelling_in_catch.load(std::memory_order_acquire), 1u);
    EXPECT_FALSE(s.slept_through.load(std::memory_order_acquire))
        << "the owner's cancellation was lost in join()";
  }
}

weft::task<void> when_all_owner(group_scene* s) {
  std::vector<weft::task<void>> ts;
  ts.push_back(fails_when_cancelled(s));
  try {
    co_await weft::when_all(std::move(ts));
  } catch (const std::runtime_error&) {
    s->owner_caught_group_error.store(true, std::memory_order_relaxed);
  }
  co_await weft::sleep_for(30s);
  s->slept_through.store(true, std::memory_order_relaxed);
}

weft::task<int> blocks_then_fails(group_scene* s) {
  co_await fails_when_cancelled(s);
  co_return 0;
}

weft::task<int> never_finishes() {
  weft::event never;
  co_await never.wait();
  co_return 1;
}

weft::task<void> when_any_owner(group_scene* s) {
  try {
    // One child: with two, the other (cancelled too) could finish first and
    // win with its cancellation, which when_any then rightly rethrows.
    (void)co_await weft::when_any(blocks_then_fails(s));
  } catch (const std::runtime_error&) {
    s->owner_caught_group_error.store(true, std::memory_order_relaxed);
  }
  co_await weft::sleep_for(30s);
  s->slept_through.store(true, std::memory_order_relaxed);
}

TEST(ContractBreaksTest, WhenAllOrWhenAnyOwnerCancelledWhileAChildFailsSeesTheCancel) {
  watchdog dog(20s);
  for (int which = 0; which < 2; ++which) {
    group_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    auto owner = rt.spawn(which == 0 ? when_all_owner(&s) : when_any_owner(&s));
    weft_test::spin_until([&] { return s.child_waiting.is_set(); }, 10s);
    ASSERT_TRUE(owner.cancel("stop the owner"));
    EXPECT_THROW(owner.join(), weft::cancelled_error) << (which == 0 ? "when_all" : "when_any");
    EXPECT_TRUE(s.owner_caught_group_error.load(std::memory_order_acquire))
        << "the child's failure is reported";
    EXPECT_FALSE(s.slept_through.load(std::memory_order_acquire))
        << "the owner's cancellation was lost";
  }
}

// ---- an awaiter cancelled while the awaited task finishes elsewhere ----------

struct busy_scene {
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> after_wait{false};
  std::atomic<bool> reached_end{false};
  std::atomic<int> value{0};
};

// Runs on its own worker and finishes without a cancellation point.
weft::task<int> busy_until_released(busy_scene* s) {
  s->started.store(true, std::memory_order_release);
  while (!s->release.load(std::memory_order_acquire)) {
  }
  co_return 42;
}

weft::task<int> plain_awaiter(weft::join_handle<int>* h, busy_scene* s) {
  int v = co_await *h;
  s->after_wait.store(true, std::memory_order_relaxed);
  co_return v;
}

weft::task<void> wait_for_awaiter(weft::join_handle<int>* h, busy_scene* s) {
  int v = co_await weft::wait_for(*h, 100s);
  s->value.store(v, std::memory_order_relaxed);
  s->after_wait.store(true, std::memory_order_relaxed);
  co_await weft::sleep_for(30s);
  s->reached_end.store(true, std::memory_order_relaxed);
}

weft::task<int> awaits_handle_again(weft::join_handle<int>* h) { co_return co_await *h; }

// The awaiter registered itself as the joiner (white-box: the kJoiner flag).
bool has_joiner(weft::join_handle<int>& h) {
  return (weft::detail::access::core(h).state.load(std::memory_order_acquire) &
          weft::detail::task_core::kJoiner) != 0;
}

// The scene of these tests: `h` busy on one worker, then a task that awaits
// it from the other (a slow join, registered as h's joiner).  `make` spawns
// the awaiter; returns its handle once it waits.
template <class Make>
auto await_busy_task(weft::runtime& rt, busy_scene& s, weft::join_handle<int>& h, Make make) {
  h = rt.spawn(busy_until_released(&s));
  weft_test::spin_until([&] { return s.started.load(std::memory_order_acquire); }, 10s);
  auto t = make();
  weft_test::spin_until([&] { return has_joiner(h); }, 10s);
  return t;
}

TEST(ContractBreaksTest, AwaiterCancelledWhileTheAwaitedTaskFinishesWithoutACancellationPoint) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(100, 20); ++round) {
    busy_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    weft::join_handle<int> h;
    auto t = await_busy_task(rt, s, h, [&] { return rt.spawn(plain_awaiter(&h, &s)); });
    ASSERT_TRUE(t.cancel("awaiter cancelled"));
    s.release.store(true, std::memory_order_release);
    try {
      (void)t.join();
      ADD_FAILURE() << "round " << round << ": the awaiter's cancellation was lost";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), "awaiter cancelled");
    }
    EXPECT_FALSE(s.after_wait.load(std::memory_order_acquire));
    EXPECT_EQ(t.cancelling(), 1u);
    EXPECT_EQ(h.cancelling(), 1u) << "the request was forwarded to the awaited task";
    EXPECT_FALSE(h.cancelled());
    EXPECT_TRUE(h.completed_despite_cancel());
    EXPECT_FALSE(t.completed_despite_cancel());
    // The awaiter took nothing: awaiting the handle again gives the value.
    EXPECT_EQ(rt.block_on(awaits_handle_again(&h)), 42) << "the awaited task's value is gone";
  }
}

// CPython test_wait_for_issue86296, on threads: the task answers as the
// waiter is cancelled; wait_for returns the answer and the cancellation lands
// at the waiter's next await.
TEST(ContractBreaksTest, WaitForCancelledAsTheTaskAnswersReturnsTheValueThenDeliversTheCancel) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(100, 20); ++round) {
    busy_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    weft::join_handle<int> h;
    auto t = await_busy_task(rt, s, h, [&] { return rt.spawn(wait_for_awaiter(&h, &s)); });
    ASSERT_TRUE(t.cancel());
    s.release.store(true, std::memory_order_release);
    EXPECT_THROW(t.join(), weft::cancelled_error) << "round " << round;
    EXPECT_TRUE(s.after_wait.load(std::memory_order_acquire)) << "wait_for dropped the answer";
    EXPECT_EQ(s.value.load(std::memory_order_acquire), 42);
    EXPECT_FALSE(s.reached_end.load(std::memory_order_acquire)) << "the cancellation was lost";
  }
}

// ---- wait_for with a deadline that has already passed ------------------------

weft::task<int> counts_its_run(std::atomic<int>* ran) {
  ran->fetch_add(1, std::memory_order_relaxed);
  co_return 1;
}

struct expired_scene {
  std::atomic<int> ran{0};
  std::atomic<int> timeouts{0};
  std::atomic<int> values{0};
};

weft::task<void> expired_waits(expired_scene* s, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    try {
      switch (i % 3) {
        case 0:
          (void)co_await weft::wait_for(counts_its_run(&s->ran), 0ns);
          break;
        case 1:
          (void)co_await weft::wait_for(counts_its_run(&s->ran), -5ms);
          break;
        default:
          (void)co_await weft::wait_until(counts_its_run(&s->ran),
                                          std::chrono::steady_clock::now() - 1s);
      }
      s->values.fetch_add(1, std::memory_order_relaxed);
    } catch (const weft::timeout_error&) {
      s->timeouts.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

TEST(ContractBreaksTest, WaitForWithAnExpiredDeadlineNeverRunsTheTask) {
  watchdog dog(30s);
  const int rounds = static_cast<int>(weft_test::scaled(30000, 1000));
  expired_scene s;
  weft::runtime rt(weft_test::with_workers(2));
  rt.block_on(expired_waits(&s, rounds));
  EXPECT_EQ(s.ran.load(std::memory_order_acquire), 0) << "an expired deadline ran the task's body";
  EXPECT_EQ(s.values.load(std::memory_order_acquire), 0);
  EXPECT_EQ(s.timeouts.load(std::memory_order_acquire), rounds);
}

// ---- nested waits whose deadlines have both passed ---------------------------

struct nested_scene {
  std::atomic<bool> inner_timed_out{false};
  std::atomic<bool> inner_saw_cancel{false};
};

// The outer wait's deadline passes while this task runs; its child has long
// answered; then it waits for the child with a deadline of zero.
weft::task<int> middle_of_nested(weft::join_handle<int>* done_child, nested_scene* s) {
  while (!weft::this_task::cancel_requested()) {
  }
  try {
    co_return co_await weft::wait_for(*done_child, 0ns);
  } catch (const weft::timeout_error&) {
    s->inner_timed_out.store(true, std::memory_order_relaxed);
    co_return 7;
  }
}

weft::task<int> outer_of_nested(weft::join_handle<int>* done_child, nested_scene* s) {
  co_return co_await weft::wait_for(middle_of_nested(done_child, s), 5ms);
}

TEST(ContractBreaksTest, NestedWaitForWithBothDeadlinesPassedTimesOutTheOuterOnly) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(50, 10); ++round) {
    nested_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    auto child = rt.spawn(weft_test::value_task(42));
    ASSERT_TRUE(weft_test::wait_done(child, 10s));
    auto outer = rt.spawn(outer_of_nested(&child, &s));
    EXPECT_THROW((void)outer.join(), weft::timeout_error) << "round " << round;
    EXPECT_FALSE(s.inner_timed_out.load(std::memory_order_acquire))
        << "the outer's timeout was taken as the inner's";
  }
}

weft::task<void> sleeps_long() { co_await weft::sleep_for(30s); }

weft::task<void> middle_equal_deadline(std::chrono::steady_clock::time_point tp, nested_scene* s) {
  try {
    co_await weft::wait_until(sleeps_long(), tp);
  } catch (const weft::cancelled_error&) {
    s->inner_saw_cancel.store(true, std::memory_order_relaxed);
    throw;
  } catch (const weft::timeout_error&) {
    s->inner_timed_out.store(true, std::memory_order_relaxed);
    throw;
  }
}

weft::task<void> outer_equal_deadline(nested_scene* s) {
  const auto tp = std::chrono::steady_clock::now() + 10ms;
  co_await weft::wait_until(middle_equal_deadline(tp, s), tp);
}

// CPython test_nested_timeouts: both deadlines equal; only the outermost
// reports the timeout, the inner lets the cancellation through.
TEST(ContractBreaksTest, NestedWaitUntilWithEqualDeadlinesReportsTheTimeoutAtTheOuter) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(50, 10); ++round) {
    nested_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    auto outer = rt.spawn(outer_equal_deadline(&s));
    EXPECT_THROW(outer.join(), weft::timeout_error) << "round " << round;
    EXPECT_TRUE(s.inner_saw_cancel.load(std::memory_order_acquire)) << "round " << round;
    EXPECT_FALSE(s.inner_timed_out.load(std::memory_order_acquire)) << "round " << round;
  }
}

// ---- a cancel arriving after the awaited task answered -----------------------

struct answered_scene {
  std::atomic<int> returned{0};
  std::atomic<int> cancelled_later{0};
  std::atomic<int> lost{0};
  std::atomic<int> timed_out{0};
};

weft::task<void> waits_then_sleeps(weft::join_handle<int>* h, answered_scene* s) {
  int v = 0;
  try {
    v = co_await weft::wait_for(*h, 100s);
  } catch (const weft::cancelled_error&) {
    s->lost.fetch_add(1, std::memory_order_relaxed);  // the answer was dropped
    throw;
  } catch (const weft::timeout_error&) {
    s->timed_out.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  if (v == 42) s->returned.fetch_add(1, std::memory_order_relaxed);
  try {
    co_await weft::sleep_for(30s);
  } catch (const weft::cancelled_error&) {
    s->cancelled_later.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
}

// The cancel races the answer: whichever comes first, the value is returned
// or the cancellation is forwarded to the task (which returns its value
// anyway, having no cancellation point); no round loses either.
TEST(ContractBreaksTest, CancelArrivingAsTheAwaitedTaskAnswersNeverDropsTheValue) {
  watchdog dog(60s);
  const int rounds = static_cast<int>(weft_test::scaled(3000, 200));
  answered_scene s;
  weft::runtime rt(weft_test::with_workers(2));
  for (int round = 0; round < rounds; ++round) {
    busy_scene b;
    weft::join_handle<int> h;
    auto t = await_busy_task(rt, b, h, [&] { return rt.spawn(waits_then_sleeps(&h, &s)); });
    b.release.store(true, std::memory_order_release);
    (void)t.cancel();
    EXPECT_THROW(t.join(), weft::cancelled_error);
  }
  EXPECT_EQ(s.lost.load(std::memory_order_acquire), 0) << "wait_for threw and dropped the answer";
  EXPECT_EQ(s.timed_out.load(std::memory_order_acquire), 0);
  EXPECT_EQ(s.returned.load(std::memory_order_acquire), rounds);
  EXPECT_EQ(s.cancelled_later.load(std::memory_order_acquire), rounds);
}

// ---- a value built by co_return, then a local's destructor throws ------------

struct value_count {
  std::atomic<long> built{0};
  std::atomic<long> destroyed{0};
};

class counted {
 public:
  explicit counted(value_count* c) : c_(c) { c_->built.fetch_add(1, std::memory_order_relaxed); }
  counted(counted&& o) noexcept : c_(o.c_) { c_->built.fetch_add(1, std::memory_order_relaxed); }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;
  counted& operator=(counted&&) = delete;
  ~counted() { c_->destroyed.fetch_add(1, std::memory_order_relaxed); }

 private:
  value_count* c_;
};

struct throws_when_destroyed {
  ~throws_when_destroyed() noexcept(false) { throw std::runtime_error("local's destructor"); }
};

weft::task<counted> returns_then_a_local_throws(value_count* c) {
  throws_when_destroyed guard;
  co_return counted(c);
}

weft::task<void> awaits_the_throwing_return(value_count* c, std::atomic<int>* saw_error) {
  try {
    (void)co_await returns_then_a_local_throws(c);
  } catch (const std::runtime_error&) {
    saw_error->fetch_add(1, std::memory_order_relaxed);
  }
  auto h = weft::spawn(returns_then_a_local_throws(c));
  try {
    (void)co_await h;
  } catch (const std::runtime_error&) {
    saw_error->fetch_add(1, std::memory_order_relaxed);
  }
}

TEST(ContractBreaksTest, ValueBuiltByCoReturnIsDestroyedWhenALocalsDestructorThrows) {
  watchdog dog(20s);
  value_count c;
  std::atomic<int> saw_error{0};
  {
    weft::runtime rt(weft_test::with_workers(2));
    rt.block_on(awaits_the_throwing_return(&c, &saw_error));
  }
  EXPECT_EQ(saw_error.load(std::memory_order_acquire), 2)
      << "the destructor's exception is the outcome";
  EXPECT_GT(c.built.load(std::memory_order_acquire), 0);
  EXPECT_EQ(c.built.load(std::memory_order_acquire), c.destroyed.load(std::memory_order_acquire))
      << "a value built by co_return leaked";
}

// ---- cancelling the root of a very long await chain --------------------------

struct chain_scene {
  std::atomic<bool> bottom_reached{false};
};

weft::task<int> chain_link(long depth, chain_scene* s) {
  if (depth == 0) {
    s->bottom_reached.store(true, std::memory_order_release);
    co_await weft::sleep_for(300s);
    co_return 0;
  }
  auto next = weft::spawn(chain_link(depth - 1, s));
  co_return co_await next;
}

TEST(ContractBreaksTest, CancellingTheRootOfAMillionTaskAwaitChainDoesNotOverflowTheStack) {
  watchdog dog(100s);
  const long depth = weft_test::scaled(1'000'000, 100'000, 200'000);
  chain_scene s;
  weft::runtime rt(weft_test::with_workers(2));
  auto root = rt.spawn(chain_link(depth, &s));
  weft_test::spin_until([&] { return s.bottom_reached.load(std::memory_order_acquire); }, 60s);
  ASSERT_TRUE(root.cancel("cut the chain"));
  try {
    (void)root.join();
    ADD_FAILURE() << "the chain finished without the cancellation";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "cut the chain");
  }
}

}  // namespace

namespace {

// ---- when_all with a child that ends cancelled -------------------------------

weft::task<int> awaits_handle(weft::join_handle<int>* h) { co_return co_await *h; }

weft::task<int> sum_of_both(weft::join_handle<int>* a, weft::join_handle<int>* b) {
  auto [x, y] = co_await weft::when_all(awaits_handle(a), awaits_handle(b));
  co_return x + y;
}

weft::task<void> void_children(weft::join_handle<int>* a, weft::join_handle<int>* b) {
  std::vector<weft::task<void>> ts;
  ts.push_back([](weft::join_handle<int>* h) -> weft::task<void> { (void)co_await *h; }(a));
  ts.push_back([](weft::join_handle<int>* h) -> weft::task<void> { (void)co_await *h; }(b));
  co_await weft::when_all(std::move(ts));
}

// CPython test_one_cancellation (gather): a child that ends cancelled makes
// the whole gather raise CancelledError; weft's when_all read that child's
// empty result slot instead.
TEST(ContractBreaksTest, WhenAllWithAChildThatEndsCancelledRethrowsItsCancellation) {
  watchdog dog(20s);
  for (int form = 0; form < 2; ++form) {
    weft::runtime rt(weft_test::with_workers(2));
    auto a = rt.spawn(weft_test::value_task(1));
    auto b = rt.spawn(never_finishes());
    ASSERT_TRUE(b.cancel("b cancelled"));
    try {
      if (form == 0) {
        (void)rt.block_on(sum_of_both(&a, &b));
      } else {
        rt.block_on(void_children(&a, &b));
      }
      ADD_FAILURE() << "when_all returned although a child ended cancelled (form " << form << ")";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), "b cancelled");
    }
  }
}

}  // namespace

namespace {

// ---- a task that awaits its own handle ---------------------------------------

struct self_scene {
  weft::event handle_stored;
  weft::join_handle<int>* self = nullptr;
  std::atomic<bool> usage_error_seen{false};
};

weft::task<int> awaits_itself(self_scene* s) {
  co_await s->handle_stored.wait();
  try {
    co_return co_await *s->self;
  } catch (const weft::usage_error&) {
    s->usage_error_seen.store(true, std::memory_order_relaxed);
  }
  co_return 5;
}

// It would wait for itself forever, and a cancel() of it would be forwarded to
// itself without end.
TEST(ContractBreaksTest, ATaskAwaitingItsOwnHandleGetsAUsageError) {
  watchdog dog(20s);
  self_scene s;
  weft::runtime rt(weft_test::with_workers(2));
  weft::join_handle<int> h = rt.spawn(awaits_itself(&s));
  s.self = &h;
  s.handle_stored.set();
  EXPECT_EQ(h.join(), 5);
  EXPECT_TRUE(s.usage_error_seen.load(std::memory_order_acquire));
}

}  // namespace

namespace {

// A forwarded request that comes back finds the awaiter's count at zero
// (uncancel() withdrew it while the request was down the chain): it is
// dropped, and the awaiter gets the value.
TEST(ContractBreaksTest, AForwardedCancelWithdrawnByUncancelDoesNotComeBack) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(50, 10); ++round) {
    busy_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    weft::join_handle<int> h;
    auto t = await_busy_task(rt, s, h, [&] { return rt.spawn(plain_awaiter(&h, &s)); });
    ASSERT_TRUE(t.cancel("withdrawn"));
    EXPECT_EQ(t.uncancel(), 0u);
    s.release.store(true, std::memory_order_release);
    EXPECT_EQ(t.join(), 42) << "round " << round;
    EXPECT_TRUE(s.after_wait.load(std::memory_order_acquire));
    EXPECT_TRUE(h.completed_despite_cancel()) << "the awaited task never saw its request";
  }
}

}  // namespace

namespace {

// ---- when_all / when_any whose children never start ---------------------------

struct unstarted_scene {
  std::latch started{1};
  std::atomic<int> outcome{0};  // 1 values, 2 shutdown cancellation, 3 other
};

weft::task<int> answer_of(int v) { co_return v; }

// Runs in the cleanup of a task that caught its shutdown cancellation: every
// spawn is refused then, so the relays of when_all / when_any never run.
weft::task<void> combines_in_shutdown_cleanup(unstarted_scene* s, int which) {
  s->started.count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
  }
  try {
    if (which == 0) {
      std::vector<weft::task<int>> ts;
      ts.push_back(answer_of(41));
      ts.push_back(answer_of(1));
      auto v = co_await weft::when_all(std::move(ts));
      s->outcome.store(v.size() == 2 && v[0] + v[1] == 42 ? 1 : 3, std::memory_order_relaxed);
    } else if (which == 1) {
      auto [a, b] = co_await weft::when_all(answer_of(41), answer_of(1));
      s->outcome.store(a + b == 42 ? 1 : 3, std::memory_order_relaxed);
    } else {
      auto r = co_await weft::when_any(answer_of(41), answer_of(1));
      s->outcome.store(r.index < 2 ? 1 : 3, std::memory_order_relaxed);
    }
  } catch (const weft::cancelled_error& e) {
    s->outcome.store(e.kind() == weft::cancel_kind::shutdown ? 2 : 3, std::memory_order_relaxed);
  }
}

// Found by weft-stress's compose scenario: the relays came back cancelled
// and unstarted, and when_all / when_any returned their empty slots
// (uninitialised values).
TEST(ContractBreaksTest, WhenAllOrWhenAnyCalledDuringShutdownRethrowsTheShutdownCancellation) {
  watchdog dog(30s);
  for (int which = 0; which < 3; ++which) {
    unstarted_scene s;
    {
      weft::runtime rt(weft_test::with_workers(2));
      auto h = rt.spawn(combines_in_shutdown_cleanup(&s, which));
      s.started.wait();
      rt.shutdown();
    }
    EXPECT_EQ(s.outcome.load(std::memory_order_acquire), 2)
        << "form " << which << ": 1 = returned values that were never "
        << "computed, 3 = another outcome";
  }
}

}  // namespace

namespace {

// ---- a cancel forwarded two awaits down, caught and put back on the way up ---

weft::task<int> middle_waits_for(weft::join_handle<int>* h) {
  co_return co_await weft::wait_for(*h, 100s);  // answers as soon as it gets h's value
}

weft::task<void> outer_waits_for_middle(weft::join_handle<int>* h, busy_scene* s) {
  int v = co_await weft::wait_for(middle_waits_for(h), 100s);
  s->value.store(v, std::memory_order_release);
  s->after_wait.store(true, std::memory_order_release);
  co_await weft::sleep_for(30s);
  s->reached_end.store(true, std::memory_order_release);
}

// The outer task's cancel goes down outer -> middle -> busy task.  The busy
// task answers without taking it; it comes back to the middle, whose wait_for
// returns the answer and puts the cancellation back; the middle returns at
// once.  The request was the outer's: it must climb on to the outer (its
// wait_for returns the value, its next await throws) instead of staying on
// the middle, whose caller would then never see it.
TEST(ContractBreaksTest, ACancelForwardedTwoLevelsDownAndPutBackClimbsToItsTask) {
  watchdog dog(30s);
  for (int round = 0; round < weft_test::scaled(50, 10); ++round) {
    busy_scene s;
    weft::runtime rt(weft_test::with_workers(2));
    weft::join_handle<int> h;
    auto t = await_busy_task(rt, s, h, [&] { return rt.spawn(outer_waits_for_middle(&h, &s)); });
    ASSERT_TRUE(t.cancel("outer cancelled"));
    s.release.store(true, std::memory_order_release);
    try {
      t.join();
      ADD_FAILURE() << "round " << round << ": the outer task's cancellation was lost";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), "outer cancelled");
    }
    EXPECT_TRUE(s.after_wait.load(std::memory_order_acquire)) << "the answer was dropped";
    EXPECT_EQ(s.value.load(std::memory_order_acquire), 42);
    EXPECT_FALSE(s.reached_end.load(std::memory_order_acquire));
  }
}

}  // namespace
