// SPDX-License-Identifier: MIT
// Black-box tests of weft::task_group (asyncio.TaskGroup), when_all and
// when_any: join waits for every child, the first failure cancels the siblings
// and join throws task_group_error with every failure, cancelling the owner
// cancels the children and join rethrows after they all finished, children
// spawned after a failure start cancelled, a group destroyed with live children
// (on a worker and on a plain thread), no child outlives its group (counters),
// cancellation provenance through a nested await and a group.
#include <weft/task_group.hpp>

#include <latch>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// What the children of one test did.  Atomics: children run on any worker.
// Relaxed, nearly every access: the readers run after join() (or after the
// task that joined was itself joined), and join() synchronises with each
// child's end (group_state's mutex), so a child's counts happen-before them --
// unless join returned too early, which is what the `live` checks look for.
// The fields behind `seen` are written once by the CAS winner and read after
// the joins.  The exception: `finished` is incremented with release, for the
// test whose children outlive their group (destroyed on a worker) -- nothing
// joins them, so the test's acquire poll of `finished` is what orders their
// records before its reads.
struct probe {
  std::atomic<int> started{0};
  std::atomic<int> finished{0};  // last statement of a child (RAII, any outcome)
  std::atomic<int> live{0};      // started - finished
  std::atomic<int> cancelled{0};
  std::atomic<int> body_ran{0};
  std::atomic<int> wrong{0};  // a child saw something it should not have
  // What the first cancelled child saw (written once, guarded by the flag).
  std::atomic<bool> seen{false};
  std::string reason;
  cancel_kind kind = cancel_kind::shutdown;
  unsigned line = 0;
  void record(const cancelled_error& e) {
    cancelled.fetch_add(1, std::memory_order_relaxed);
    bool expected = false;
    if (seen.compare_exchange_strong(expected, true, std::memory_order_relaxed)) {
      reason = std::string(e.reason());
      kind = e.kind();
      line = e.where().line();
    }
  }
};

// Counts a child's life (started/finished/live) however it ends.
class life {
 public:
  explicit life(probe* p) : p_(p) {
    p_->started.fetch_add(1, std::memory_order_relaxed);
    p_->live.fetch_add(1, std::memory_order_relaxed);
  }
  life(const life&) = delete;
  life& operator=(const life&) = delete;
  ~life() {
    p_->live.fetch_sub(1, std::memory_order_relaxed);
    // Release: pairs with the acquire poll of a test that joins nothing.
    p_->finished.fetch_add(1, std::memory_order_release);
  }

 private:
  probe* p_;
};

weft::task<int> child_value(probe* p, int v) {
  life l(p);
  co_await weft::yield();
  co_return v;
}

// Sleeps "forever"; records the cancellation it gets, then does a cleanup
// that takes a little time (a sleep after the cancel: no request pending) and
// rethrows.
weft::task<int> child_sleeper(probe* p, std::latch* started) {
  life l(p);
  if (started != nullptr) started->count_down();
  std::exception_ptr cancel;
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error& e) {
    p->record(e);
    cancel = std::current_exception();
  }
  if (!cancel) {
    p->wrong.fetch_add(1, std::memory_order_relaxed);
    co_return 0;
  }
  // Cleanup that suspends (no request is pending any more): join must wait
  // for it.
  co_await weft::sleep_for(20ms);
  std::rethrow_exception(cancel);
}

weft::task<int> child_fail_after(probe* p, std::latch* wait_for, std::string what) {
  life l(p);
  if (wait_for != nullptr) wait_for->wait();  // blocking: only used once the others started
  throw std::runtime_error(what);
  co_return 0;
}

// ------------------------------------------------------------ join, values

weft::task<int> owner_sums(probe* p, int n, int* live_after_join) {
  weft::task_group g;
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(g.spawn(child_value(p, i)));
  co_await g.join();
  *live_after_join = p->live.load(std::memory_order_relaxed);
  int sum = 0;
  for (auto& h : hs) {
    EXPECT_TRUE(h.done());
    sum += co_await h;
  }
  co_return sum;
}

TEST(TaskGroupTest, JoinWaitsForEveryChildAndHandlesKeepTheirValues) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    probe p;
    int live_after = -1;
    weft::runtime rt(with_workers(2));
    const int n = 1000;
    EXPECT_EQ(rt.block_on(owner_sums(&p, n, &live_after)), n * (n - 1) / 2);
    EXPECT_EQ(live_after, 0) << "a child was still running when join() returned";
    EXPECT_EQ(p.started.load(std::memory_order_relaxed), n);
    EXPECT_EQ(p.finished.load(std::memory_order_relaxed), n);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Children spawn grandchildren into the same group while join() waits.
weft::task<void> spawning_child(weft::task_group* g, probe* p, int depth) {
  life l(p);
  co_await weft::yield();
  if (depth > 0) {
    (void)g->spawn(spawning_child(g, p, depth - 1));
    (void)g->spawn(spawning_child(g, p, depth - 1));
  }
}

weft::task<int> owner_of_a_tree(probe* p, int depth) {
  weft::task_group g;
  (void)g.spawn(spawning_child(&g, p, depth));
  co_await g.join();
  co_return p->live.load(std::memory_order_relaxed);
}

TEST(TaskGroupTest, JoinWaitsForChildrenSpawnedByChildren) {
  watchdog dog(std::chrono::seconds(60));
  const int depth = static_cast<int>(scaled(12, 9));
  for (int round = 0; round < 20; ++round) {
    probe p;
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(rt.block_on(owner_of_a_tree(&p, depth)), 0);
    EXPECT_EQ(p.finished.load(std::memory_order_relaxed), (1 << (depth + 1)) - 1);
  }
}

// Many rounds of random children: values, failures, cancels through the
// handle (before and after start), yields, sleeps.  After every join the live
// counter is 0, and every child's outcome is accounted for.
weft::task<int> random_child(probe* p, std::uint64_t seed) {
  life l(p);
  rng r(seed);
  p->body_ran.fetch_add(1, std::memory_order_relaxed);
  const int steps = static_cast<int>(r.below(4));
  for (int i = 0; i < steps; ++i) {
    if (r.below(2) == 0) {
      co_await weft::yield();
    } else {
      co_await weft::sleep_for(std::chrono::microseconds(r.below(200)));
    }
  }
  if (r.below(10) == 0) throw std::runtime_error("random failure");
  co_return 1;
}

struct stress_result {
  int live_after = -1;
  int failures_seen = 0;
  bool threw_group_error = false;
};

weft::task<void> random_owner(probe* p, std::uint64_t seed, int n, stress_result* out) {
  rng r(seed);
  weft::task_group g;
  std::vector<weft::join_handle<int>> keep;
  for (int i = 0; i < n; ++i) {
    auto h = g.spawn(random_child(p, r.next()));
    switch (r.below(4)) {
      case 0:
        h.cancel("before start");  // usually before it ran
        keep.push_back(std::move(h));
        break;
      case 1:
        h = weft::join_handle<int>();  // dropped: the group alone looks after it
        break;
      default:
        keep.push_back(std::move(h));
    }
    if (r.below(8) == 0) co_await weft::yield();
  }
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    out->threw_group_error = true;
    out->failures_seen = static_cast<int>(e.size());
  }
  out->live_after = p->live.load(std::memory_order_relaxed);
  for (auto& h : keep) {
    try {
      (void)co_await h;
    } catch (...) {
    }
  }
}

TEST(TaskGroupTest, RandomChildrenNeverOutliveJoin) {
  watchdog dog(std::chrono::seconds(90));
  frame_baseline frames;
  const int rounds = static_cast<int>(scaled(200, 20));
  {
    weft::runtime rt(with_workers(2));
    for (int round = 0; round < rounds; ++round) {
      probe p;
      stress_result res;
      rt.block_on(random_owner(&p, 1000 + round, 64, &res));
      ASSERT_EQ(res.live_after, 0) << "round " << round;
      ASSERT_EQ(p.started.load(std::memory_order_relaxed),
                p.finished.load(std::memory_order_relaxed));
      if (res.threw_group_error) {
        ASSERT_GE(res.failures_seen, 1);
      }
    }
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ failure

struct failure_out {
  bool group_error = false;
  std::size_t count = 0;
  std::string what;
  std::string first_message;
  int live_at_throw = -1;
  unsigned fail_line = 0;
};

weft::task<void> owner_with_one_failure(probe* p, int sleepers, failure_out* out) {
  weft::task_group g;
  std::latch started(sleepers);
  for (int i = 0; i < sleepers; ++i) (void)g.spawn(child_sleeper(p, &started));
  out->fail_line = __LINE__ + 1;
  (void)g.spawn(child_fail_after(p, &started, "boom"));
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    out->group_error = true;
    out->count = e.size();
    out->what = e.what();
    out->live_at_throw = p->live.load(std::memory_order_relaxed);
    try {
      std::rethrow_exception(e.exceptions().front());
    } catch (const std::runtime_error& re) {
      out->first_message = re.what();
    }
  }
}

TEST(TaskGroupTest, FirstFailureCancelsSiblingsAndJoinThrowsAfterTheyFinished) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  failure_out out;
  weft::runtime rt(with_workers(2));
  const auto t0 = clock_type::now();
  rt.block_on(owner_with_one_failure(&p, 8, &out));
  EXPECT_LT(seconds_since(t0), 10.0) << "siblings' 1 h sleeps were not cancelled";
  EXPECT_TRUE(out.group_error);
  EXPECT_EQ(out.count, 1u);
  EXPECT_EQ(out.first_message, "boom");
  EXPECT_NE(out.what.find("1 child"), std::string::npos) << out.what;
  EXPECT_NE(out.what.find("boom"), std::string::npos) << out.what;
  EXPECT_EQ(out.live_at_throw, 0) << "join threw before the siblings finished their cleanup";
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 8);
  EXPECT_EQ(p.wrong.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(p.kind, cancel_kind::group);
  EXPECT_EQ(p.reason, "sibling failed: boom");
  EXPECT_EQ(p.line, out.fail_line) << "the location is the failing child's spawn() call";
}

// A sibling whose cleanup throws something else: both failures are kept, in
// order.
weft::task<int> child_cleanup_throws(probe* p, std::latch* started) {
  life l(p);
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error&) {
    throw std::logic_error("cleanup failed");
  }
  co_return 0;
}

weft::task<std::vector<std::string>> owner_two_failures(probe* p) {
  weft::task_group g;
  std::latch started(1);
  (void)g.spawn(child_cleanup_throws(p, &started));
  (void)g.spawn(child_fail_after(p, &started, "first"));
  std::vector<std::string> msgs;
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    for (auto& ep : e.exceptions()) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& x) {
        msgs.emplace_back(x.what());
      }
    }
  }
  co_return msgs;
}

TEST(TaskGroupTest, EveryChildFailureIsCollectedInOrder) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  weft::runtime rt(with_workers(2));
  auto msgs = rt.block_on(owner_two_failures(&p));
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0], "first");
  EXPECT_EQ(msgs[1], "cleanup failed");
}

// A child spawned (by a still-running sibling) after the failure starts
// cancelled: its body never runs.
weft::task<int> late_child(probe* p) {
  p->body_ran.fetch_add(1, std::memory_order_relaxed);
  co_return 1;
}

struct late_out {
  bool late_cancelled = false;
  cancel_kind late_kind = cancel_kind::shutdown;
  std::string late_reason;
};

weft::task<int> child_spawns_after_cancel(weft::task_group* g, probe* p, std::latch* started,
                                          late_out* out) {
  life l(p);
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error&) {
  }
  auto h = g->spawn(late_child(p));
  try {
    (void)co_await h;
  } catch (const cancelled_error& e) {
    out->late_cancelled = true;
    out->late_kind = e.kind();
    out->late_reason = std::string(e.reason());
  }
  co_return 0;
}

weft::task<void> owner_late_spawn(probe* p, late_out* out) {
  weft::task_group g;
  std::latch started(1);
  (void)g.spawn(child_spawns_after_cancel(&g, p, &started, out));
  (void)g.spawn(child_fail_after(p, &started, "early failure"));
  try {
    co_await g.join();
  } catch (const weft::task_group_error&) {
  }
}

TEST(TaskGroupTest, ChildSpawnedAfterAFailureStartsCancelled) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  late_out out;
  weft::runtime rt(with_workers(2));
  rt.block_on(owner_late_spawn(&p, &out));
  EXPECT_TRUE(out.late_cancelled);
  EXPECT_EQ(out.late_kind, cancel_kind::group);
  EXPECT_EQ(out.late_reason, "sibling failed: early failure");
  EXPECT_EQ(p.body_ran.load(std::memory_order_relaxed), 0) << "the late child's body ran";
}

// A child cancelled through its own handle is not a failure.
weft::task<bool> owner_cancels_one(probe* p) {
  weft::task_group g;
  std::latch started(1);
  auto h = g.spawn(child_sleeper(p, &started));
  (void)g.spawn(child_value(p, 1));
  started.wait();
  h.cancel("just this one");
  bool ok = true;
  try {
    co_await g.join();
  } catch (...) {
    ok = false;
  }
  co_return ok&& h.cancelled();
}

TEST(TaskGroupTest, ChildCancelledThroughItsHandleIsNotAFailure) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(owner_cancels_one(&p)));
  EXPECT_EQ(p.reason, "just this one");
}

// One worker: the owner spawns and cancels through the handle before the
// child can start (the child never runs its relay); join still returns.
weft::task<int> owner_cancels_before_start(probe* p, bool drop_handle) {
  weft::task_group g;
  auto h = g.spawn(late_child(p));
  EXPECT_TRUE(h.cancel("before start"));
  if (drop_handle) h = weft::join_handle<int>();
  co_await g.join();
  co_return static_cast<int>(g.size());
}

TEST(TaskGroupTest, ChildCancelledBeforeItStartsIsReapedByJoin) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    probe p;
    weft::runtime rt(with_workers(1));
    EXPECT_EQ(rt.block_on(owner_cancels_before_start(&p, false)), 0);
    EXPECT_EQ(rt.block_on(owner_cancels_before_start(&p, true)), 0);
    EXPECT_EQ(p.body_ran.load(std::memory_order_relaxed), 0);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ owner cancelled

struct owner_out {
  int live_at_catch = -1;
  int finished_at_catch = -1;
};

weft::task<void> owner_joining(probe* p, int n, std::latch* started, owner_out* out) {
  weft::task_group g;
  for (int i = 0; i < n; ++i) (void)g.spawn(child_sleeper(p, started));
  try {
    co_await g.join();
  } catch (const cancelled_error&) {
    out->live_at_catch = p->live.load(std::memory_order_relaxed);
    out->finished_at_catch = p->finished.load(std::memory_order_relaxed);
    throw;
  }
}

TEST(TaskGroupTest, CancellingTheOwnerCancelsChildrenAndJoinRethrowsAfterAllFinished) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    const int n = 16;
    probe p;
    owner_out out;
    std::latch started(n);
    weft::runtime rt(with_workers(2));
    auto owner = rt.spawn(owner_joining(&p, n, &started, &out));
    started.wait();
    unsigned cancel_line = __LINE__ + 1;
    owner.cancel("stop the owner");
    try {
      owner.join();
      ADD_FAILURE() << "the owner did not see its cancellation";
    } catch (const cancelled_error& e) {
      EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
      EXPECT_EQ(e.reason(), "stop the owner");
      EXPECT_EQ(e.where().line(), cancel_line);
    }
    EXPECT_EQ(out.live_at_catch, 0) << "join rethrew while children still ran";
    EXPECT_EQ(out.finished_at_catch, n);
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), n);
    EXPECT_EQ(p.kind, cancel_kind::parent);
    EXPECT_EQ(p.reason, "stop the owner");
    EXPECT_EQ(p.line, cancel_line) << "children see the location of the owner's cancel()";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<bool> owner_cancels_group(probe* p, int n, unsigned* line) {
  weft::task_group g;
  std::latch started(n);
  for (int i = 0; i < n; ++i) (void)g.spawn(child_sleeper(p, &started));
  started.wait();
  *line = __LINE__ + 1;
  g.cancel("enough");
  co_await g.join();  // children cancelled are not failures: returns
  co_return true;
}

TEST(TaskGroupTest, GroupCancelCancelsChildrenButNotTheOwner) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  unsigned line = 0;
  weft::runtime rt(with_workers(2));
  EXPECT_TRUE(rt.block_on(owner_cancels_group(&p, 4, &line)));
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 4);
  EXPECT_EQ(p.kind, cancel_kind::explicit_request);
  EXPECT_EQ(p.reason, "enough");
  EXPECT_EQ(p.line, line);
}

// ------------------------------------------------------------ destroyed with live children

weft::task<int> owner_throws_past_group(probe* p, int n, std::latch* started,
                                        unsigned* group_line) {
  *group_line = __LINE__ + 1;
  weft::task_group g;
  for (int i = 0; i < n; ++i) (void)g.spawn(child_sleeper(p, started));
  started->wait();  // blocking, fine here: the children are running already
  throw std::runtime_error("owner failed");
  co_await g.join();  // never reached
  co_return 0;
}

TEST(TaskGroupTest, DestroyedOnAWorkerWithLiveChildren_OwnerSeesOnlyItsOwnException) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    const int n = 8;
    probe p;
    std::latch started(n);
    unsigned group_line = 0;
    weft::runtime rt(with_workers(2));
    auto owner = rt.spawn(owner_throws_past_group(&p, n, &started, &group_line));
    try {
      owner.join();
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "owner failed");
    }
    // The destructor did not wait (it ran on a worker): the children finish on
    // their own, cancelled.
    // Acquire: pairs with the children's release increments (nothing joined
    // them); their records are read below.
    EXPECT_TRUE(spin_until([&] { return p.finished.load(std::memory_order_acquire) == n; }));
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), n);
    EXPECT_EQ(p.kind, cancel_kind::parent);
    EXPECT_EQ(p.reason, "task_group destroyed");
    EXPECT_EQ(p.line, group_line) << "the location is where the group was constructed";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<void> spawn_into(weft::task_group* g, probe* p, int n, std::latch* started) {
  for (int i = 0; i < n; ++i) (void)g->spawn(child_sleeper(p, started));
  co_return;
}

TEST(TaskGroupTest, DestroyedOnAPlainThreadBlocksUntilEveryChildFinished) {
  watchdog dog(std::chrono::seconds(60));
  const int n = 8;
  probe p;
  std::latch started(n);
  weft::runtime rt(with_workers(2));
  int finished_after_destructor = -1;
  {
    weft::task_group g;
    rt.block_on(spawn_into(&g, &p, n, &started));
    started.wait();
    EXPECT_EQ(g.size(), static_cast<std::size_t>(n));
  }  // ~task_group on this (non-worker) thread: cancels, then waits
  finished_after_destructor = p.finished.load(std::memory_order_relaxed);
  EXPECT_EQ(finished_after_destructor, n) << "a child outlived its group";
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), n);
  EXPECT_EQ(p.kind, cancel_kind::parent);
  EXPECT_EQ(p.reason, "task_group destroyed");
}

// Not-yet-started children of a destroyed group never run their body.  One
// worker: the owner spawns and throws before any child can start.
weft::task<int> owner_spawns_then_throws(probe* p, int n) {
  weft::task_group g;
  for (int i = 0; i < n; ++i) (void)g.spawn(late_child(p));
  throw std::runtime_error("owner failed before its children started");
  co_await g.join();
  co_return 0;
}

TEST(TaskGroupTest, DestroyedGroupsUnstartedChildrenNeverRunTheirBody) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  probe p;
  {
    weft::runtime rt(with_workers(1));
    EXPECT_THROW(rt.block_on(owner_spawns_then_throws(&p, 50)), std::runtime_error);
  }  // the runtime's drain runs the 50 relays: each ends cancelled at once
  EXPECT_EQ(p.body_ran.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ exceptions reported once

// Relaxed: counters, polled or read after the runtime was destroyed.
struct hook_counter {
  std::atomic<int> calls{0};
  std::atomic<int> group_errors{0};
};

weft::runtime_options hooked(hook_counter* hc) {
  weft::runtime_options o = with_workers(2);
  o.unhandled_exception = [hc](std::exception_ptr e) {
    hc->calls.fetch_add(1, std::memory_order_relaxed);
    try {
      std::rethrow_exception(e);
    } catch (const weft::task_group_error&) {
      hc->group_errors.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
    }
  };
  return o;
}

weft::task<int> child_throws(std::string what) {
  throw std::runtime_error(what);
  co_return 0;
}

weft::task<int> owner_discards_failing_handle() {
  weft::task_group g;
  (void)g.spawn(child_throws("discarded"));
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    co_return static_cast<int>(e.size());
  }
  co_return 0;
}

weft::task<int> owner_keeps_failing_handle_unawaited() {
  weft::task_group g;
  auto h = g.spawn(child_throws("kept"));
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    co_return static_cast<int>(e.size());
  }
  co_return 0;
}

TEST(TaskGroupTest, FailureOfADiscardedHandleIsReportedByJoinOnly) {
  watchdog dog(std::chrono::seconds(60));
  hook_counter hc;
  {
    weft::runtime rt(hooked(&hc));
    EXPECT_EQ(rt.block_on(owner_discards_failing_handle()), 1);
  }
  EXPECT_EQ(hc.calls.load(std::memory_order_relaxed), 0)
      << "the runtime reported a failure the group already reported";
}

TEST(TaskGroupTest, FailureOfAKeptHandleDroppedUnawaitedIsAlsoReportedByTheRuntime) {
  watchdog dog(std::chrono::seconds(60));
  hook_counter hc;
  {
    weft::runtime rt(hooked(&hc));
    EXPECT_EQ(rt.block_on(owner_keeps_failing_handle_unawaited()), 1);
  }
  EXPECT_EQ(hc.calls.load(std::memory_order_relaxed), 1)
      << "documented: a kept handle is the owner's to await";
}

weft::task<void> owner_never_joins(probe* p) {
  weft::task_group g;
  (void)g.spawn(child_fail_after(p, nullptr, "nobody joined"));
  // Wait until the group has seen the child end, without join().
  while (g.size() > 0) co_await weft::yield();
  co_return;
}

TEST(TaskGroupTest, FailuresNobodyJoinedReachTheUnhandledHookAsOneGroupError) {
  watchdog dog(std::chrono::seconds(60));
  hook_counter hc;
  probe p;
  {
    weft::runtime rt(hooked(&hc));
    rt.block_on(owner_never_joins(&p));
    EXPECT_TRUE(spin_until([&] { return hc.calls.load(std::memory_order_relaxed) >= 1; }));
  }
  EXPECT_EQ(hc.calls.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(hc.group_errors.load(std::memory_order_relaxed), 1);
}

// ------------------------------------------------------------ misuse

weft::task<int> spawn_after_join() {
  weft::task_group g;
  co_await g.join();
  try {
    (void)g.spawn(weft_test::value_task(1));
  } catch (const weft::usage_error&) {
    co_return 1;
  }
  co_return 0;
}

weft::task<int> join_twice() {
  weft::task_group g;
  co_await g.join();
  try {
    co_await g.join();
  } catch (const weft::usage_error&) {
    co_return 1;
  }
  co_return 0;
}

TEST(TaskGroupTest, MisuseIsAUsageError) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(spawn_after_join()), 1);
  EXPECT_EQ(rt.block_on(join_twice()), 1);
  weft::task_group g;
  EXPECT_THROW((void)g.spawn(weft_test::value_task(1)), weft::usage_error);
}

// ------------------------------------------------------------ shutdown

TEST(TaskGroupTest, ShutdownWhileJoiningStillWaitsForEveryChild) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    const int n = 16;
    probe p;
    owner_out out;
    std::latch started(n);
    weft::runtime rt(with_workers(2));
    auto owner = rt.spawn(owner_joining(&p, n, &started, &out));
    started.wait();
    rt.shutdown();
    EXPECT_TRUE(owner.done());
    try {
      owner.join();
      ADD_FAILURE() << "no cancellation";
    } catch (const cancelled_error& e) {
      EXPECT_EQ(e.kind(), cancel_kind::shutdown);
    }
    EXPECT_EQ(out.live_at_catch, 0) << "join returned during shutdown while children still ran";
    EXPECT_EQ(p.finished.load(std::memory_order_relaxed), n);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ------------------------------------------------------------ provenance

weft::task<int> middle_layer(probe* p, int n, std::latch* started) {
  weft::task_group g;
  for (int i = 0; i < n; ++i) (void)g.spawn(child_sleeper(p, started));
  co_await g.join();
  co_return 1;
}

weft::task<int> outer_layer(probe* p, int n, std::latch* started) {
  co_return co_await middle_layer(p, n, started);  // a nested await (a call)
}

TEST(ProvenanceTest, CancelledErrorKeepsKindReasonAndLineThroughANestedAwaitAndAGroup) {
  watchdog dog(std::chrono::seconds(60));
  const int n = 4;
  probe p;
  std::latch started(n);
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(outer_layer(&p, n, &started));
  started.wait();
  unsigned line = __LINE__ + 1;
  h.cancel("provenance");
  try {
    (void)h.join();
    ADD_FAILURE() << "no cancellation";
  } catch (const cancelled_error& e) {
    EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
    EXPECT_EQ(e.reason(), "provenance");
    EXPECT_EQ(e.where().line(), line);
    EXPECT_NE(std::string(e.where().file_name()).find("task_group_test.cpp"), std::string::npos);
  }
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(p.kind, cancel_kind::parent);
  EXPECT_EQ(p.reason, "provenance");
  EXPECT_EQ(p.line, line);
}

// A timeout, through a nested await and a group: the task wait_for gave up on
// ends with kind timeout, reason "timeout" and the location of the wait_for
// call; the group's children (two levels down) see kind parent with the same
// reason and location.
struct timeout_provenance {
  unsigned line = 0;
  bool timed_out = false;
};

weft::task<void> wait_for_a_nested_group(probe* p, int n, weft::join_handle<int>* target,
                                         timeout_provenance* out) {
  *target = weft::spawn(outer_layer(p, n, nullptr));
  // Every child has started (the timeout must find them asleep, not unstarted).
  while (p->started.load(std::memory_order_relaxed) < n) co_await weft::yield();
  try {
    out->line = __LINE__ + 1;
    (void)co_await weft::wait_for(*target, 50ms);
  } catch (const weft::timeout_error&) {
    out->timed_out = true;
  }
}

TEST(ProvenanceTest, TimeoutKeepsKindReasonAndTheWaitForLineThroughANestedAwaitAndAGroup) {
  watchdog dog(std::chrono::seconds(60));
  frame_baseline frames;
  {
    const int n = 4;
    probe p;
    timeout_provenance out;
    weft::join_handle<int> target;
    weft::runtime rt(with_workers(2));
    rt.block_on(wait_for_a_nested_group(&p, n, &target, &out));
    EXPECT_TRUE(out.timed_out);
    ASSERT_TRUE(target.done());
    const std::optional<cancelled_error> why = target.cancellation();
    ASSERT_TRUE(why.has_value()) << "the task behind the wait_for did not end cancelled";
    EXPECT_EQ(why->kind(), cancel_kind::timeout);
    EXPECT_EQ(why->reason(), "timeout");
    EXPECT_EQ(why->where().line(), out.line) << "not the wait_for call's line";
    EXPECT_NE(std::string(why->where().file_name()).find("task_group_test.cpp"), std::string::npos);
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), n);
    EXPECT_EQ(p.kind, cancel_kind::parent);
    EXPECT_EQ(p.reason, "timeout");
    EXPECT_EQ(p.line, out.line) << "the children do not see the wait_for call's line";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// A sibling's failure, through a nested await: a child that awaits a task it
// spawned (not a group child) passes the group's cancellation down to it, which
// sees kind group, reason "sibling failed: <what>" and the failing child's
// spawn() line.  The awaiting child ends with that task's outcome (cancelled):
// not a failure, so join() reports the one real failure.
weft::task<int> child_awaits_its_own_task(probe* p, probe* grandchild) {
  life l(p);
  auto h = weft::spawn(child_sleeper(grandchild, nullptr));
  co_return co_await h;  // the group's cancel of this child is forwarded to `h`
}

weft::task<std::size_t> owner_failure_through_an_await(probe* p, probe* grandchild,
                                                       unsigned* fail_line) {
  weft::task_group g;
  (void)g.spawn(child_awaits_its_own_task(p, grandchild));
  while (grandchild->started.load(std::memory_order_relaxed) < 1) co_await weft::yield();
  *fail_line = __LINE__ + 1;
  (void)g.spawn(child_fail_after(p, nullptr, "boom"));
  try {
    co_await g.join();
  } catch (const weft::task_group_error& e) {
    co_return e.size();
  }
  co_return 0;
}

TEST(ProvenanceTest, SiblingFailureKeepsKindReasonAndLineThroughANestedAwait) {
  watchdog dog(std::chrono::seconds(60));
  probe p, grandchild;
  unsigned fail_line = 0;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(owner_failure_through_an_await(&p, &grandchild, &fail_line)), 1u);
  EXPECT_EQ(grandchild.cancelled.load(std::memory_order_relaxed), 1)
      << "the awaited task was not cancelled";
  EXPECT_EQ(grandchild.kind, cancel_kind::group);
  EXPECT_EQ(grandchild.reason, "sibling failed: boom");
  EXPECT_EQ(grandchild.line, fail_line) << "not the failing child's spawn() line";
  EXPECT_EQ(grandchild.finished.load(std::memory_order_relaxed), 1);
}

// ------------------------------------------------------------ when_all

weft::task<std::string> string_task(std::string s) {
  co_await weft::yield();
  co_return s;
}

// `ran`: relaxed, read after when_all() / block_on() returned.
weft::task<void> void_yield(std::atomic<int>* ran) {
  co_await weft::yield();
  ran->fetch_add(1, std::memory_order_relaxed);
}

weft::task<int> when_all_hetero(std::atomic<int>* ran) {
  auto r = co_await weft::when_all(weft_test::value_task(40), string_task("two"), void_yield(ran));
  static_assert(std::is_same_v<decltype(r), std::tuple<int, std::string, std::monostate>>);
  co_return std::get<0>(r) + static_cast<int>(std::get<1>(r).size()) - 1;
}

weft::task<long> when_all_vector(int n) {
  std::vector<weft::task<long>> ts;
  for (int i = 0; i < n; ++i) ts.push_back(weft_test::long_value_task(i));
  auto vs = co_await weft::when_all(std::move(ts));
  long check = 0;
  for (std::size_t i = 0; i < vs.size(); ++i) check += (vs[i] == static_cast<long>(i)) ? 1 : 0;
  co_return check;
}

weft::task<int> when_all_void_vector(std::atomic<int>* ran, int n) {
  std::vector<weft::task<void>> ts;
  for (int i = 0; i < n; ++i) ts.push_back(void_yield(ran));
  co_await weft::when_all(std::move(ts));
  co_return ran->load(std::memory_order_relaxed);
}

TEST(WhenAllTest, GivesEveryValueInOrder) {
  watchdog dog(std::chrono::seconds(60));
  std::atomic<int> ran{0};
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(when_all_hetero(&ran)), 42);
  EXPECT_EQ(ran.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(rt.block_on(when_all_vector(500)), 500);
  ran.store(0, std::memory_order_relaxed);  // between two block_on()s: no task runs
  EXPECT_EQ(rt.block_on(when_all_void_vector(&ran, 100)), 100);
}

weft::task<std::string> when_all_fails(probe* p, int* live_at_catch) {
  std::latch started(2);
  try {
    (void)co_await weft::when_all(child_sleeper(p, &started), child_sleeper(p, &started),
                                  child_fail_after(p, &started, "when_all failure"));
  } catch (const std::runtime_error& e) {  // the failure itself, not a task_group_error
    *live_at_catch = p->live.load(std::memory_order_relaxed);
    co_return e.what();
  }
  co_return "no failure";
}

TEST(WhenAllTest, FirstFailureCancelsTheRestWaitsAndRethrowsIt) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  int live = -1;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(when_all_fails(&p, &live)), "when_all failure");
  EXPECT_EQ(live, 0);
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(p.kind, cancel_kind::group);
}

weft::task<int> when_all_waits(probe* p, std::latch* started) {
  auto r = co_await weft::when_all(child_sleeper(p, started), child_sleeper(p, started));
  co_return std::get<0>(r);
}

TEST(WhenAllTest, CancellingTheAwaiterCancelsEveryTaskAndRethrows) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  std::latch started(2);
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(when_all_waits(&p, &started));
  started.wait();
  h.cancel("stop when_all");
  try {
    (void)h.join();
    ADD_FAILURE();
  } catch (const cancelled_error& e) {
    EXPECT_EQ(e.reason(), "stop when_all");
  }
  EXPECT_EQ(p.finished.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(p.kind, cancel_kind::parent);
}

// The vector forms fail fast too (the void one is compiled in the runtime):
// the first failure cancels the others, they finish, and the failure itself
// is rethrown.
weft::task<void> void_sleeper(probe* p, std::latch* started) {
  (void)co_await child_sleeper(p, started);
}

weft::task<void> void_failure(probe* p, std::latch* started, std::string what) {
  (void)co_await child_fail_after(p, started, std::move(what));
}

weft::task<std::string> when_all_vector_fails(probe* p, bool void_tasks, int* live_at_catch) {
  std::latch started(2);
  try {
    if (void_tasks) {
      std::vector<weft::task<void>> ts;
      ts.push_back(void_sleeper(p, &started));
      ts.push_back(void_failure(p, &started, "void vector failure"));
      ts.push_back(void_sleeper(p, &started));
      co_await weft::when_all(std::move(ts));
    } else {
      std::vector<weft::task<int>> ts;
      ts.push_back(child_sleeper(p, &started));
      ts.push_back(child_fail_after(p, &started, "vector failure"));
      ts.push_back(child_sleeper(p, &started));
      (void)co_await weft::when_all(std::move(ts));
    }
  } catch (const std::runtime_error& e) {  // the failure itself, not a task_group_error
    *live_at_catch = p->live.load(std::memory_order_relaxed);
    co_return e.what();
  }
  co_return "no failure";
}

TEST(WhenAllTest, VectorFormsFailFastToo) {
  watchdog dog(std::chrono::seconds(60));
  weft::runtime rt(with_workers(2));
  for (bool void_tasks : {false, true}) {
    probe p;
    int live = -1;
    EXPECT_EQ(rt.block_on(when_all_vector_fails(&p, void_tasks, &live)),
              void_tasks ? "void vector failure" : "vector failure");
    EXPECT_EQ(live, 0) << "rethrown before the others finished";
    EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 2);
    EXPECT_EQ(p.kind, cancel_kind::group);
  }
}

// ------------------------------------------------------------ when_any

weft::task<int> quick(int v, std::latch* wait_for) {
  if (wait_for != nullptr) wait_for->wait();
  co_return v;
}

struct any_out {
  std::size_t index = 99;
  int value = 0;
  int live_at_return = -1;
};

weft::task<void> when_any_hetero(probe* p, any_out* out) {
  std::latch started(2);
  auto r = co_await weft::when_any(child_sleeper(p, &started), quick(7, &started),
                                   child_sleeper(p, &started));
  out->live_at_return = p->live.load(std::memory_order_relaxed);
  out->index = r.index;
  out->value = std::get<1>(r.value);
  EXPECT_EQ(r.value.index(), r.index);
}

TEST(WhenAnyTest, FirstToFinishWinsTheOthersAreCancelledAndAwaited) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  any_out out;
  weft::runtime rt(with_workers(2));
  rt.block_on(when_any_hetero(&p, &out));
  EXPECT_EQ(out.index, 1u);
  EXPECT_EQ(out.value, 7);
  EXPECT_EQ(out.live_at_return, 0) << "when_any returned before the losers finished";
  EXPECT_EQ(p.cancelled.load(std::memory_order_relaxed), 2);
  EXPECT_EQ(p.kind, cancel_kind::group);
  EXPECT_EQ(p.reason, "when_any: task 1 finished first");
}

weft::task<std::size_t> when_any_vector(probe* p, int n) {
  std::latch started(n - 1);
  std::vector<weft::task<int>> ts;
  for (int i = 0; i < n - 1; ++i) ts.push_back(child_sleeper(p, &started));
  ts.push_back(quick(5, &started));
  auto r = co_await weft::when_any(std::move(ts));
  EXPECT_EQ(r.value, 5);
  co_return r.index;
}

weft::task<std::string> when_any_first_fails(probe* p) {
  std::latch started(1);
  try {
    (void)co_await weft::when_any(child_sleeper(p, &started),
                                  child_fail_after(p, &started, "fast failure"));
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no failure";
}

weft::task<int> when_any_empty() {
  try {
    (void)co_await weft::when_any(std::vector<weft::task<int>>{});
  } catch (const weft::usage_error&) {
    co_return 1;
  }
  co_return 0;
}

TEST(WhenAnyTest, VectorFormFailureAndEmptyInput) {
  watchdog dog(std::chrono::seconds(60));
  probe p;
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(when_any_vector(&p, 6)), 5u);
  EXPECT_EQ(p.finished.load(std::memory_order_relaxed), 5);
  probe q;
  EXPECT_EQ(rt.block_on(when_any_first_fails(&q)), "fast failure");
  EXPECT_EQ(q.finished.load(std::memory_order_relaxed), 2)
      << "the rest were awaited before the failure was rethrown";
  EXPECT_EQ(rt.block_on(when_any_empty()), 1);
}

}  // namespace
