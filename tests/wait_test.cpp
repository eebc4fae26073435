// SPDX-License-Identifier: MIT
// weft::wait, as_completed and gather_outcomes (weft/wait.hpp): the waiting
// takes no outcome and cancels nothing (not on the waiter's cancellation, not
// on a timeout), the gathering does take them and forwards the gatherer's
// cancellation; races of completions on other workers against the waiter's
// cancellation and timeout; every resume point of the waiter cancelled under
// the simulation; misuse.
//
// Atomics shared between the test thread and tasks: counters are relaxed
// (read after a join or the runtime's end, which order them).
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <weft/testing.hpp>

#include "test_support.hpp"

using namespace weft_test;

namespace {

using handles = std::vector<weft::join_handle<int>>;

weft::task<int> after_event(weft::event* e, int v) {
  co_await e->wait();
  co_return v;
}

weft::task<int> fail_after_event(weft::event* e) {
  co_await e->wait();
  throw std::runtime_error("boom");
}

weft::task<int> forever() {
  co_await weft::sleep_for(std::chrono::hours(1));
  co_return -1;
}

// Records how a child ended when a cancellation reached it.
struct child_log {
  std::atomic<int> cancelled{0};
  std::atomic<int> cancelled_as_parent{0};
};

weft::task<int> logged_after_event(weft::event* e, int v, child_log* log) {
  try {
    co_await e->wait();
  } catch (const weft::cancelled_error& err) {
    log->cancelled.fetch_add(1, std::memory_order_relaxed);
    if (err.kind() == cancel_kind::parent)
      log->cancelled_as_parent.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  co_return v;
}

std::vector<int> values_of(std::vector<weft::join_handle<int>*> hs) {
  std::vector<int> v;
  for (auto* h : hs) v.push_back(h->join());
  return v;
}

// ---- wait ----

weft::task<weft::wait_result<int>> wait_on(handles* hs, weft::return_when when) {
  co_return co_await weft::wait(*hs, when);
}

weft::task<weft::wait_result<int>> wait_on_for(handles* hs, weft::return_when when,
                                               std::chrono::milliseconds d) {
  co_return co_await weft::wait(*hs, when, d);
}

TEST(WaitTest, AllCompletedReportsEveryHandleDoneAndTakesNoOutcome) {
  watchdog dog(60s);
  weft::event go;
  handles hs;
  weft::runtime rt(with_workers(2));
  for (int i = 0; i < 4; ++i) hs.push_back(rt.spawn(after_event(&go, i)));
  weft::join_handle<weft::wait_result<int>> w =
      rt.spawn(wait_on(&hs, weft::return_when::all_completed));
  go.set();
  weft::wait_result<int> r = w.join();
  ASSERT_EQ(r.done.size(), 4u);
  EXPECT_TRUE(r.pending.empty());
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(r.done[static_cast<std::size_t>(i)], &hs[static_cast<std::size_t>(i)]);
  EXPECT_EQ(values_of(r.done), (std::vector<int>{0, 1, 2, 3}));  // still there to take
}

TEST(WaitTest, FirstCompletedReturnsWithTheFinishedOnesAndLeavesTheRestRunning) {
  watchdog dog(60s);
  weft::event slow_go, fast_go;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&slow_go, 1)));
  hs.push_back(rt.spawn(after_event(&fast_go, 2)));
  weft::join_handle<weft::wait_result<int>> w =
      rt.spawn(wait_on(&hs, weft::return_when::first_completed));
  fast_go.set();
  weft::wait_result<int> r = w.join();
  ASSERT_EQ(r.done.size(), 1u);
  EXPECT_EQ(r.done[0], &hs[1]);
  ASSERT_EQ(r.pending.size(), 1u);
  EXPECT_EQ(r.pending[0], &hs[0]);
  EXPECT_FALSE(hs[0].done());
  EXPECT_EQ(hs[0].cancelling(), 0u);  // not cancelled
  slow_go.set();
  EXPECT_EQ(hs[0].join(), 1);
  EXPECT_EQ(hs[1].join(), 2);
}

TEST(WaitTest, FirstExceptionWaitsPastCancellationsAndStopsAtAFailure) {
  watchdog dog(60s);
  weft::event fail_go, never;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&never, 0)));
  hs.push_back(rt.spawn(after_event(&never, 1)));
  hs.push_back(rt.spawn(fail_after_event(&fail_go)));
  hs[1].cancel("not a failure");  // a cancellation is no exception for FIRST_EXCEPTION
  ASSERT_TRUE(wait_done(hs[1]));
  weft::join_handle<weft::wait_result<int>> w =
      rt.spawn(wait_on(&hs, weft::return_when::first_exception));
  fail_go.set();
  weft::wait_result<int> r = w.join();
  ASSERT_EQ(r.done.size(), 2u);
  EXPECT_EQ(r.done[0], &hs[1]);
  EXPECT_EQ(r.done[1], &hs[2]);
  EXPECT_EQ(r.pending, (std::vector<weft::join_handle<int>*>{&hs[0]}));
  EXPECT_THROW(hs[2].join(), std::runtime_error);
  EXPECT_THROW(hs[1].join(), cancelled_error);
  never.set();
  EXPECT_EQ(hs[0].join(), 0);
}

TEST(WaitTest, ATimeoutCancelsNothingAndGivesTheDoneAndPendingSets) {
  watchdog dog(60s);
  weft::event never;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(value_task(7)));
  hs.push_back(rt.spawn(after_event(&never, 8)));
  ASSERT_TRUE(wait_done(hs[0]));
  weft::join_handle<weft::wait_result<int>> w =
      rt.spawn(wait_on_for(&hs, weft::return_when::all_completed, 20ms));
  weft::wait_result<int> r = w.join();  // no exception: the timeout is an answer
  EXPECT_EQ(r.done, (std::vector<weft::join_handle<int>*>{&hs[0]}));
  EXPECT_EQ(r.pending, (std::vector<weft::join_handle<int>*>{&hs[1]}));
  EXPECT_FALSE(hs[1].done());
  EXPECT_EQ(hs[1].cancelling(), 0u);
  never.set();
  EXPECT_EQ(hs[1].join(), 8);
  EXPECT_EQ(hs[0].join(), 7);
}

TEST(WaitTest, AZeroTimeoutReturnsAtOnce) {
  watchdog dog(60s);
  weft::event never;
  handles hs;
  weft::runtime rt(with_workers(1));
  hs.push_back(rt.spawn(after_event(&never, 1)));
  weft::wait_result<int> r = rt.block_on(wait_on_for(&hs, weft::return_when::first_completed, 0ms));
  EXPECT_TRUE(r.done.empty());
  EXPECT_EQ(r.pending.size(), 1u);
  never.set();
  EXPECT_EQ(hs[0].join(), 1);
}

weft::task<int> wait_then_count(handles* hs, std::latch* waiting, std::atomic<int>* after) {
  waiting->count_down();
  (void)co_await weft::wait(*hs);
  after->fetch_add(1, std::memory_order_relaxed);
  co_return 0;
}

TEST(WaitTest, CancellingTheWaiterEndsOnlyTheWait) {
  watchdog dog(60s);
  weft::event go;
  child_log log;
  std::latch waiting{1};
  std::atomic<int> after{0};
  handles hs;
  weft::runtime rt(with_workers(2));
  for (int i = 0; i < 3; ++i) hs.push_back(rt.spawn(logged_after_event(&go, i, &log)));
  weft::join_handle<int> w = rt.spawn(wait_then_count(&hs, &waiting, &after));
  waiting.wait();
  EXPECT_TRUE(w.cancel("stop waiting"));
  const cancelled_error e = expect_cancelled([&] { w.join(); });
  EXPECT_EQ(e.reason(), "stop waiting");
  EXPECT_EQ(after.load(std::memory_order_relaxed), 0);
  for (auto& h : hs) {
    EXPECT_FALSE(h.done());
    EXPECT_EQ(h.cancelling(), 0u);
  }
  go.set();  // the children finish after the waiter left: nothing of it is touched
  for (int i = 0; i < 3; ++i) EXPECT_EQ(hs[static_cast<std::size_t>(i)].join(), i);
  EXPECT_EQ(log.cancelled.load(std::memory_order_relaxed), 0);
}

weft::task<std::vector<int>> drain_by_pending(handles* hs) {
  std::vector<weft::join_handle<int>*> pending;
  for (auto& h : *hs) pending.push_back(&h);
  std::vector<int> got;
  while (!pending.empty()) {
    weft::wait_result<int> r = co_await weft::wait(pending, weft::return_when::first_completed);
    for (weft::join_handle<int>* h : r.done) got.push_back(co_await *h);
    pending = std::move(r.pending);
  }
  co_return got;
}

TEST(WaitTest, ThePendingOfOneWaitIsTheRangeOfTheNext) {
  watchdog dog(60s);
  handles hs;
  weft::runtime rt(with_workers(2));
  for (int i = 0; i < 5; ++i) hs.push_back(rt.spawn(value_task(i)));
  std::vector<int> got = rt.block_on(drain_by_pending(&hs));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
}

// ---- as_completed ----

weft::task<std::vector<int>> collect_in_order(handles* hs, std::latch* made) {
  auto seq = weft::as_completed(*hs);
  made->count_down();
  std::vector<int> order;
  while (weft::join_handle<int>* h = co_await seq.next()) order.push_back(co_await *h);
  co_return order;
}

TEST(AsCompletedTest, GivesTheHandlesInTheOrderTheirTasksFinish) {
  watchdog dog(60s);
  std::array<weft::event, 3> go;
  std::latch made{1};
  handles hs;
  weft::runtime rt(with_workers(2));
  for (int i = 0; i < 3; ++i)
    hs.push_back(rt.spawn(after_event(&go[static_cast<std::size_t>(i)], i)));
  weft::join_handle<std::vector<int>> c = rt.spawn(collect_in_order(&hs, &made));
  made.wait();  // the sequence watches them all now
  for (int i : {2, 0, 1}) {
    go[static_cast<std::size_t>(i)].set();
    ASSERT_TRUE(wait_done(hs[static_cast<std::size_t>(i)]));
  }
  EXPECT_EQ(c.join(), (std::vector<int>{2, 0, 1}));
}

weft::task<std::vector<int>> collect_until_timeout(handles* hs, bool* timed_out) {
  auto seq = weft::as_completed(*hs, 30ms);
  std::vector<int> order;
  try {
    while (weft::join_handle<int>* h = co_await seq.next()) order.push_back(co_await *h);
  } catch (const weft::timeout_error&) {
    *timed_out = true;
  }
  co_return order;
}

TEST(AsCompletedTest, ATimeoutThrowsTimeoutErrorAndCancelsNothing) {
  watchdog dog(60s);
  weft::event never;
  bool timed_out = false;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(value_task(5)));
  hs.push_back(rt.spawn(after_event(&never, 6)));
  EXPECT_EQ(rt.block_on(collect_until_timeout(&hs, &timed_out)), (std::vector<int>{5}));
  EXPECT_TRUE(timed_out);
  EXPECT_FALSE(hs[1].done());
  EXPECT_EQ(hs[1].cancelling(), 0u);
  never.set();
  EXPECT_EQ(hs[1].join(), 6);
}

weft::task<int> next_of(weft::as_completed_sequence<int>* seq, std::latch* waiting) {
  waiting->count_down();
  weft::join_handle<int>* h = co_await seq->next();
  co_return h == nullptr ? -1 : 1;
}

TEST(AsCompletedTest, CancellingTheConsumerCancelsNothingAndTheSequenceGoesOn) {
  watchdog dog(60s);
  weft::event go;
  std::latch waiting{1};
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&go, 3)));
  auto seq = weft::as_completed(hs);
  weft::join_handle<int> c = rt.spawn(next_of(&seq, &waiting));
  waiting.wait();
  c.cancel("enough");
  EXPECT_EQ(expect_cancelled([&] { c.join(); }).reason(), "enough");
  EXPECT_EQ(hs[0].cancelling(), 0u);
  go.set();
  std::latch again{1};
  EXPECT_EQ(rt.block_on(next_of(&seq, &again)), 1);  // the same sequence, later
  EXPECT_EQ(seq.remaining(), 0u);
  EXPECT_EQ(hs[0].join(), 3);
}

// ---- gather_outcomes ----

weft::task<std::vector<weft::outcome<int>>> gather_all(handles* hs) {
  co_return co_await weft::gather_outcomes(*hs);
}

TEST(GatherOutcomesTest, GivesEveryOutcomeInOrderAndThrowsNone) {
  watchdog dog(60s);
  weft::event go, never;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&go, 1)));
  hs.push_back(rt.spawn(fail_after_event(&go)));
  hs.push_back(rt.spawn(after_event(&never, 3)));
  hs[2].cancel("cancelled child");
  weft::join_handle<std::vector<weft::outcome<int>>> g = rt.spawn(gather_all(&hs));
  go.set();
  std::vector<weft::outcome<int>> v = g.join();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_TRUE(v[0].has_value());
  EXPECT_EQ(v[0].value(), 1);
  EXPECT_TRUE(v[1].has_exception());
  EXPECT_FALSE(v[1].cancelled());
  EXPECT_THROW(v[1].value(), std::runtime_error);
  EXPECT_TRUE(v[2].cancelled());  // asyncio returns the CancelledError object
  try {
    std::rethrow_exception(v[2].exception());
  } catch (const cancelled_error& e) {
    EXPECT_EQ(e.reason(), "cancelled child");
  }
  // The outcomes were taken.
  EXPECT_THROW(hs[0].join(), weft::usage_error);
}

weft::task<std::string> no_string() {
  throw std::logic_error("no string");
  co_return "";
}

weft::task<std::tuple<weft::outcome<int>, weft::outcome<void>, weft::outcome<std::string>>>
gather_mixed() {
  weft::join_handle<int> a = weft::spawn(value_task(4));
  weft::join_handle<void> b = weft::spawn(void_task());
  weft::join_handle<std::string> c = weft::spawn(no_string());
  co_return co_await weft::gather_outcomes(a, b, c);
}

TEST(GatherOutcomesTest, HandlesOfDifferentTypesGiveATuple) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  auto [a, b, c] = rt.block_on(gather_mixed());
  EXPECT_EQ(a.value(), 4);
  EXPECT_TRUE(b.has_value());
  b.value();
  EXPECT_THROW(c.value(), std::logic_error);
}

weft::task<int> gather_then_count(handles* hs, std::latch* waiting, std::atomic<int>* after) {
  waiting->count_down();
  (void)co_await weft::gather_outcomes(*hs);
  after->fetch_add(1, std::memory_order_relaxed);
  co_return 0;
}

TEST(GatherOutcomesTest, CancellingTheGathererCancelsTheChildrenWaitsForThemAndRethrows) {
  watchdog dog(60s);
  weft::event never;
  child_log log;
  std::latch waiting{1};
  std::atomic<int> after{0};
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(value_task(1)));
  for (int i = 0; i < 3; ++i) hs.push_back(rt.spawn(logged_after_event(&never, i, &log)));
  ASSERT_TRUE(wait_done(hs[0]));
  weft::join_handle<int> g = rt.spawn(gather_then_count(&hs, &waiting, &after));
  waiting.wait();
  g.cancel("gather cancelled");
  const cancelled_error e = expect_cancelled([&] { g.join(); });
  EXPECT_EQ(e.reason(), "gather cancelled");
  EXPECT_EQ(after.load(std::memory_order_relaxed), 0);
  // Every child had finished before the gatherer threw; none of the outcomes
  // was taken.
  for (auto& h : hs) EXPECT_TRUE(h.done());
  EXPECT_EQ(log.cancelled.load(std::memory_order_relaxed), 3);
  EXPECT_EQ(log.cancelled_as_parent.load(std::memory_order_relaxed), 3);
  EXPECT_EQ(hs[0].join(), 1);
  for (std::size_t i = 1; i < hs.size(); ++i) {
    const cancelled_error c = expect_cancelled([&] { hs[i].join(); });
    EXPECT_EQ(c.reason(), "gather cancelled");
    EXPECT_EQ(c.kind(), cancel_kind::parent);
  }
}

TEST(GatherOutcomesTest, AnEmptyRangeGivesAnEmptyVector) {
  watchdog dog(60s);
  handles hs;
  weft::runtime rt(with_workers(1));
  EXPECT_TRUE(rt.block_on(gather_all(&hs)).empty());
}

// ---- misuse ----

weft::task<void> wait_void(std::vector<weft::join_handle<int>>* hs) {
  (void)co_await weft::wait(*hs);
}

TEST(WaitMisuseTest, AnEmptyRangeAnEmptyHandleAndATakenOutcomeAreUsageErrors) {
  watchdog dog(60s);
  handles none;
  handles with_empty(1);
  handles joined;
  weft::runtime rt(with_workers(1));
  auto msg = [](const weft::usage_error& e) { return std::string(e.what()); };

  auto e1 = expect_throws<weft::usage_error>([&] { rt.block_on(wait_void(&none)); });
  ASSERT_TRUE(e1);
  EXPECT_NE(msg(*e1).find("weft::wait: no handles"), std::string::npos) << msg(*e1);

  auto e2 = expect_throws<weft::usage_error>([&] { (void)weft::wait(with_empty); });
  ASSERT_TRUE(e2);
  EXPECT_NE(msg(*e2).find("an empty join_handle"), std::string::npos) << msg(*e2);
  EXPECT_THROW((void)weft::as_completed(with_empty), weft::usage_error);
  EXPECT_THROW((void)weft::gather_outcomes(with_empty), weft::usage_error);
  std::vector<weft::join_handle<int>*> null_pointer{nullptr};
  EXPECT_THROW((void)weft::wait(null_pointer), weft::usage_error);

  joined.push_back(rt.spawn(value_task(1)));
  EXPECT_EQ(joined[0].join(), 1);
  auto e3 = expect_throws<weft::usage_error>([&] { (void)weft::as_completed(joined); });
  ASSERT_TRUE(e3);
  EXPECT_NE(msg(*e3).find("weft::as_completed: the outcome of this join_handle was already taken"),
            std::string::npos)
      << msg(*e3);
  EXPECT_THROW((void)weft::wait(joined), weft::usage_error);
  EXPECT_THROW((void)weft::gather_outcomes(joined), weft::usage_error);
  EXPECT_THROW((void)weft::gather_outcomes(joined[0]), weft::usage_error);

  auto bad = static_cast<weft::return_when>(7);
  handles one;
  one.push_back(rt.spawn(value_task(2)));
  EXPECT_THROW(rt.block_on(wait_on(&one, bad)), weft::usage_error);
  EXPECT_EQ(one[0].join(), 2);
}

TEST(AsCompletedTest, AnEmptyRangeGivesNothing) {
  watchdog dog(60s);
  handles none;
  std::latch made{1};
  weft::runtime rt(with_workers(1));
  EXPECT_TRUE(rt.block_on(collect_in_order(&none, &made)).empty());
}

// ---- shutdown ----

TEST(WaitTest, ShutdownEndsAWaitWithItsCancellationAndLeavesNoFrame) {
  watchdog dog(60s);
  const frame_baseline frames;
  {
    handles hs;
    weft::join_handle<weft::wait_result<int>> w;
    {
      weft::runtime rt(with_workers(2));
      hs.push_back(rt.spawn(forever()));
      hs.push_back(rt.spawn(forever()));
      w = rt.spawn(wait_on(&hs, weft::return_when::all_completed));
    }
    // The children ended by the shutdown; the waiter ended either by its own
    // "shutdown" or, if the children finished first, with both done.
    try {
      weft::wait_result<int> r = w.join();
      EXPECT_EQ(r.done.size(), 2u);
    } catch (const cancelled_error& e) {
      EXPECT_EQ(e.kind(), cancel_kind::shutdown);
    }
    for (auto& h : hs) EXPECT_TRUE(h.cancelled());
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ---- races ----

weft::task<int> finish_soon(std::atomic<int>* go, int v) {
  // Relaxed: a flag that only moves the child's finish across the waiter's
  // cancellation; nothing is published with it.
  while (go->load(std::memory_order_relaxed) == 0) co_await weft::yield();
  co_return v;
}

weft::task<int> wait_in_round(handles* hs, int mode, std::latch* waiting) {
  waiting->count_down();
  switch (mode) {
    case 0:
      (void)co_await weft::wait(*hs, weft::return_when::all_completed);
      break;
    case 1:
      (void)co_await weft::wait(*hs, weft::return_when::all_completed, 50us);
      break;
    case 2: {
      auto seq = weft::as_completed(*hs);
      while (co_await seq.next() != nullptr) {
      }
      break;
    }
    default:
      (void)co_await weft::gather_outcomes(*hs);
      break;
  }
  co_return 0;
}

// Children finish on other workers while the waiter is being cancelled or
// times out: the wait must unhook from every child whichever comes first, so
// that a child finishing after the waiter (and its frame) is gone touches
// nothing of it (ASan/TSan builds check that).  Each round also checks the
// construct's promise: wait and as_completed cancel no child; gather cancels
// only what was still running, and returns after all finished.
TEST(WaitRaceTest, CompletionsRaceTheWaitersCancellationAndTimeout) {
  watchdog dog(100s);
  const long rounds = scaled(1500, 120, 300);
  std::atomic<int> go{0};
  weft::runtime rt(with_workers(4));
  for (long round = 0; round < rounds; ++round) {
    const int mode = static_cast<int>(round % 4);
    go.store(0, std::memory_order_relaxed);
    handles hs;
    for (int i = 0; i < 4; ++i) hs.push_back(rt.spawn(finish_soon(&go, i)));
    std::latch waiting{1};
    weft::join_handle<int> w = rt.spawn(wait_in_round(&hs, mode, &waiting));
    waiting.wait();
    jitter(round, 64);
    if (round % 3 != 2) w.cancel("race");
    jitter(round * 7, 64);
    go.store(1, std::memory_order_relaxed);
    try {
      w.join();
    } catch (const cancelled_error&) {
      if (mode == 3) {
        for (auto& h : hs) EXPECT_TRUE(h.done()) << "gather returned before a child finished";
      }
    }
    for (int i = 0; i < 4; ++i) {
      weft::join_handle<int>& h = hs[static_cast<std::size_t>(i)];
      if (mode != 3) {
        EXPECT_EQ(h.cancelling(), 0u);
        EXPECT_EQ(h.join(), i);
      } else {
        EXPECT_TRUE(h.done());
      }
    }
    if (::testing::Test::HasFailure()) break;
  }
}

// ---- the simulation: the waiter cancelled at each of its resume points ----

weft::task<int> sim_child(int i, int* cancelled_other) {
  try {
    co_await weft::sleep_for(std::chrono::microseconds(10 * (3 - i)));
    co_await weft::yield();
  } catch (const weft::cancelled_error& e) {
    if (e.kind() != cancel_kind::shutdown && e.kind() != cancel_kind::parent) ++*cancelled_other;
    throw;
  }
  co_return i;
}

// The body waits, iterates and gathers over three children.  `cancel_target`
// 1: the body (the waiter) is cancelled at each of its resume points in turn;
// no child may see a cancellation meant for it (wait and as_completed cancel
// nothing; gather passes it on as kind parent, and returns only after every
// child finished).  `cancel_target` 0: any task, children included, is
// cancelled at each resume point: nothing may deadlock, leak or crash.
weft::task<void> wait_sim_body(int* cancelled_other, int* cancelled_outside_gather) {
  handles hs;
  for (int i = 0; i < 3; ++i) hs.push_back(weft::spawn(sim_child(i, cancelled_other)));
  weft::wait_result<int> first = co_await weft::wait(hs, weft::return_when::first_completed, 5us);
  weft::testing::check(first.done.size() + first.pending.size() == 3, "lost a handle");
  auto seq = weft::as_completed(hs);
  int seen = 0;
  while (co_await seq.next() != nullptr) ++seen;
  weft::testing::check(seen == 3, "as_completed skipped a handle");
  for (auto& h : hs) {
    if (h.cancelled() && h.cancellation()->kind() == cancel_kind::parent)
      ++*cancelled_outside_gather;
  }
  try {
    std::vector<weft::outcome<int>> all = co_await weft::gather_outcomes(hs);
    weft::testing::check(all.size() == 3, "gather lost an outcome");
  } catch (const weft::cancelled_error&) {
    for (auto& h : hs) weft::testing::check(h.done(), "gather left a child running");
    throw;
  }
}

TEST(WaitSimTest, EveryResumePointOfTheWaiterCancelledLeavesEveryChildAlone) {
  watchdog dog(110s);
  int cancelled_other = 0;
  int cancelled_outside_gather = 0;
  weft::testing::options o;
  o.name = "WaitSimTest.Waiter";
  o.log = nullptr;
  o.seeds = scaled(50, 10);
  o.pct_seeds = scaled(50, 10);
  o.cancel_seeds = scaled(20, 4);
  o.cancel_target = 1;  // the body: the waiter
  o.after_each = [&] {
    weft::testing::check(cancelled_other == 0, "a child got a cancellation meant for the waiter");
    weft::testing::check(cancelled_outside_gather == 0, "wait or as_completed cancelled a child");
  };
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        cancelled_other = 0;
        cancelled_outside_gather = 0;
        co_await wait_sim_body(&cancelled_other, &cancelled_outside_gather);
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, static_cast<std::uint64_t>(o.seeds + o.pct_seeds + o.cancel_seeds));
}

TEST(WaitSimTest, EveryResumePointOfAnyTaskCancelledNeitherDeadlocksNorLeaks) {
  watchdog dog(110s);
  int ignored = 0;
  int ignored_too = 0;
  weft::testing::options o;
  o.name = "WaitSimTest.AnyTask";
  o.log = nullptr;
  o.seeds = 0;
  o.pct_seeds = 0;
  o.cancel_seeds = scaled(10, 2);
  const frame_baseline frames;
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> { co_await wait_sim_body(&ignored, &ignored_too); }, o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, 10u);
  EXPECT_EQ(frames.now(), frames.start);
}

}  // namespace
