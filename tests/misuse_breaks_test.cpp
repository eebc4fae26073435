// SPDX-License-Identifier: MIT
// Misuse through the public API that an independent test campaign found to
// crash, hang or be accepted silently instead of failing cleanly; one section
// per break, each test named by its scenario:
//
//   * SemaphoreBadInputTest (break 7): negative counts and a release past
//     PTRDIFF_MAX are refused with an exception and leave the count unchanged.
//   * AwaitEmptyTaskTest (break 10): co_await of a default-constructed or
//     moved-from task, or of a task that was already awaited, throws
//     usage_error in the awaiting task instead of resuming a null or finished
//     frame.
//   * ConcurrentJoinTest (break 13): several joiners of one handle (threads,
//     or a thread and a task): exactly one gets the outcome, the others get
//     usage_error, nobody hangs.
//   * HandleOutlivesRuntimeTest (break 9): a join_handle (and a
//     cancellation_source bound to it) declared before its runtime, used after
//     the runtime is gone.  Every member answers (done, the outcome, false from
//     cancel) or throws usage_error; none reads the destroyed runtime (ASan,
//     valgrind: no invalid read).
//
// House rules (tests/test_support.hpp): a watchdog in every test, no wall-clock
// sleeps as synchronisation, coroutines are free functions taking their state
// by pointer, that state is declared before the runtime.
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <latch>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;
using weft::detail::task_core;

template <class T>
std::uint32_t state_of(const weft::join_handle<T>& h) {
  // Acquire: as join_handle::done().
  return weft::detail::access::core(h).state.load(std::memory_order_acquire);
}

// ============================================================ break 7
// Semaphore counts.

TEST(SemaphoreBadInputTest, ANegativeInitialCountIsRefused) {
  watchdog dog(10s);
  EXPECT_THROW((void)weft::semaphore(-1), std::invalid_argument);
  EXPECT_THROW((void)weft::semaphore(std::numeric_limits<std::ptrdiff_t>::min()),
               std::invalid_argument);
  weft::semaphore zero(0);
  EXPECT_EQ(zero.available(), 0);
  weft::semaphore most(std::numeric_limits<std::ptrdiff_t>::max());
  EXPECT_EQ(most.available(), std::numeric_limits<std::ptrdiff_t>::max());
}

TEST(SemaphoreBadInputTest, ANegativeReleaseIsRefusedAndLeavesTheCount) {
  watchdog dog(10s);
  weft::semaphore sem(2);
  EXPECT_THROW(sem.release(-3), std::invalid_argument);
  EXPECT_EQ(sem.available(), 2);
  EXPECT_THROW(sem.release(std::numeric_limits<std::ptrdiff_t>::min()), std::invalid_argument);
  EXPECT_EQ(sem.available(), 2);
  sem.release(0);
  EXPECT_EQ(sem.available(), 2);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire());
}

TEST(SemaphoreBadInputTest, AReleasePastTheLargestCountIsRefusedAndLeavesTheCount) {
  watchdog dog(10s);
  constexpr std::ptrdiff_t kMax = std::numeric_limits<std::ptrdiff_t>::max();
  weft::semaphore sem(1);
  EXPECT_THROW(sem.release(kMax), std::overflow_error);
  EXPECT_EQ(sem.available(), 1);
  sem.release(kMax - 1);
  EXPECT_EQ(sem.available(), kMax);
  EXPECT_THROW(sem.release(), std::overflow_error);
  EXPECT_EQ(sem.available(), kMax);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_EQ(sem.available(), kMax - 1);
  sem.release();
  EXPECT_EQ(sem.available(), kMax);
}

weft::task<void> acquire_once(weft::semaphore* s, std::atomic<int>* got) {
  co_await s->acquire();
  got->fetch_add(1, std::memory_order_relaxed);  // relaxed: read after join()
}

TEST(SemaphoreBadInputTest, ARefusedReleaseWakesNobodyAndAValidOneStillDoes) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::semaphore sem(0);
    std::atomic<int> got{0};
    weft::runtime rt(with_workers(2));
    auto h = rt.spawn(acquire_once(&sem, &got));
    EXPECT_THROW(sem.release(-1), std::invalid_argument);
    EXPECT_EQ(sem.available(), 0);
    EXPECT_EQ(got.load(std::memory_order_relaxed), 0);
    sem.release(1);
    h.join();
    EXPECT_EQ(got.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(sem.available(), 0);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ============================================================ break 10
// co_await of an empty or already awaited task.

std::string await_misuse_result(weft::runtime& rt, weft::task<std::string> t) {
  return rt.block_on(std::move(t));
}

weft::task<std::string> awaits_default_int() {
  weft::task<int> t;
  try {
    (void)co_await t;
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  }
  co_return "no error";
}

weft::task<std::string> awaits_default_void_rvalue() {
  weft::task<void> t;
  try {
    co_await std::move(t);
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  }
  co_return "no error";
}

weft::task<std::string> awaits_moved_from() {
  weft::task<int> t = value_task(4);
  weft::task<int> u = std::move(t);
  std::string out;
  try {
    (void)co_await t;  // NOLINT(bugprone-use-after-move): the misuse under test
    out = "no error";
  } catch (const weft::usage_error&) {
    out = "usage_error";
  }
  out += "," + std::to_string(co_await u);
  co_return out;
}

weft::task<std::string> awaits_int_twice() {
  weft::task<int> t = value_task(5);
  std::string out = std::to_string(co_await t);
  try {
    (void)co_await t;
    out += ",no error";
  } catch (const weft::usage_error&) {
    out += ",usage_error";
  }
  try {
    (void)co_await std::move(t);
    out += ",no error";
  } catch (const weft::usage_error&) {
    out += ",usage_error";
  }
  co_return out;
}

weft::task<void> counts(int* n) {
  ++*n;
  co_return;
}

weft::task<std::string> awaits_void_twice() {
  int n = 0;
  weft::task<void> t = counts(&n);
  co_await t;
  std::string out = std::to_string(n);
  try {
    co_await t;
    out += ",no error";
  } catch (const weft::usage_error&) {
    out += ",usage_error";
  }
  co_return out + "," + std::to_string(n);
}

weft::task<int> throws_logic() {
  throw std::logic_error("first await");
  co_return 0;
}

weft::task<std::string> awaits_failed_task_twice() {
  weft::task<int> t = throws_logic();
  std::string out;
  try {
    (void)co_await t;
  } catch (const weft::usage_error&) {
    out = "usage_error";  // usage_error is a logic_error: test it first
  } catch (const std::logic_error& e) {
    out = e.what();
  }
  try {
    (void)co_await t;
    out += ",no error";
  } catch (const weft::usage_error&) {
    out += ",usage_error";
  } catch (const std::logic_error& e) {
    out += std::string(",") + e.what();
  }
  co_return out;
}

weft::task<std::string> spawns_awaited_task() {
  weft::task<int> t = value_task(6);
  std::string out = std::to_string(co_await t);
  try {
    auto h = weft::spawn(std::move(t));
    out += ",spawned:" + std::to_string(co_await h);
  } catch (const weft::usage_error&) {
    out += ",usage_error";
  }
  co_return out;
}

// Runs body(rt) on a runtime of two workers: the runtime must then still run
// a task, and no frame may outlive it.
template <class Body>
void expect_misuse_leaves_the_runtime_healthy(Body body) {
  run_leaving_no_frame(2, [&](weft::runtime& rt) {
    body(rt);
    EXPECT_EQ(rt.block_on(value_task(1)), 1) << "the runtime stays healthy";
  });
}

TEST(AwaitEmptyTaskTest, AwaitingADefaultConstructedTaskThrowsUsageError) {
  watchdog dog(60s);
  expect_misuse_leaves_the_runtime_healthy([](weft::runtime& rt) {
    EXPECT_EQ(await_misuse_result(rt, awaits_default_int()), "usage_error");
    EXPECT_EQ(await_misuse_result(rt, awaits_default_void_rvalue()), "usage_error");
  });
}

TEST(AwaitEmptyTaskTest, AwaitingAMovedFromTaskThrowsUsageErrorAndTheMovedToTaskStillRuns) {
  watchdog dog(60s);
  expect_misuse_leaves_the_runtime_healthy([](weft::runtime& rt) {
    EXPECT_EQ(await_misuse_result(rt, awaits_moved_from()), "usage_error,4");
  });
}

TEST(AwaitEmptyTaskTest, AwaitingTheSameTaskTwiceThrowsUsageErrorTheSecondTime) {
  watchdog dog(60s);
  expect_misuse_leaves_the_runtime_healthy([](weft::runtime& rt) {
    EXPECT_EQ(await_misuse_result(rt, awaits_int_twice()), "5,usage_error,usage_error");
    EXPECT_EQ(await_misuse_result(rt, awaits_void_twice()), "1,usage_error,1")
        << "the body ran once";
    EXPECT_EQ(await_misuse_result(rt, awaits_failed_task_twice()), "first await,usage_error")
        << "the exception is given once";
  });
}

TEST(AwaitEmptyTaskTest, SpawningATaskThatWasAlreadyAwaitedThrowsUsageError) {
  watchdog dog(60s);
  expect_misuse_leaves_the_runtime_healthy([](weft::runtime& rt) {
    EXPECT_EQ(await_misuse_result(rt, spawns_awaited_task()), "6,usage_error");
    weft::task<int> t;
    EXPECT_THROW((void)rt.spawn(std::move(t)), weft::usage_error) << "an empty task";
  });
}

// ============================================================ break 13
// Several joiners of one handle.

// What a handle's outcome looks like as text: "value:7", or
// "cancelled:<kind>:<reason>", or "usage_error".
std::string describe_join(weft::join_handle<int>& h) {
  try {
    return "value:" + std::to_string(h.join());
  } catch (const cancelled_error& e) {
    return "cancelled:" + std::string(weft::to_string(e.kind())) + ":" + std::string(e.reason());
  } catch (const weft::usage_error&) {
    return "usage_error";
  }
}

weft::task<int> value_after(weft::event* go, int v) {
  co_await go->wait();
  co_return v;
}

TEST(ConcurrentJoinTest, OfSeveralThreadsJoiningOneHandleOneGetsTheValueTheOthersUsageErrorAtOnce) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    constexpr int kThreads = 6;
    weft::event go;
    std::atomic<int> values{0};    // relaxed: read after the threads are joined
    std::atomic<int> refused{0};   // relaxed: as above
    std::atomic<int> returned{0};  // relaxed: read after refusals.wait() / the joins
    std::latch refusals(kThreads - 1);
    weft::runtime rt(with_workers(2));
    weft::join_handle<int> h = rt.spawn(value_after(&go, 42));
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&] {
        try {
          if (h.join() == 42) values.fetch_add(1, std::memory_order_relaxed);
          returned.fetch_add(1, std::memory_order_relaxed);
        } catch (const weft::usage_error&) {
          refused.fetch_add(1, std::memory_order_relaxed);
          returned.fetch_add(1, std::memory_order_relaxed);
          refusals.count_down();  // after the counts: refusals.wait() sees them
        }
      });
    }
    dog.phase("waiting for the refusals (before the event is set)");
    refusals.wait();
    EXPECT_EQ(returned.load(std::memory_order_relaxed), kThreads - 1)
        << "the one joiner left must still be waiting";
    EXPECT_FALSE(h.done());
    go.set();
    dog.phase("joining the threads");
    for (auto& t : threads) t.join();
    EXPECT_EQ(values.load(std::memory_order_relaxed), 1);
    EXPECT_EQ(refused.load(std::memory_order_relaxed), kThreads - 1);
    EXPECT_THROW((void)h.join(), weft::usage_error) << "join after join took the result";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ConcurrentJoinTest, RepeatedRoundsOfRacingJoinersNeverLoseTheWakeUp) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    const long rounds = scaled(300, 30);
    weft::runtime rt(with_workers(2));
    for (long r = 0; r < rounds; ++r) {
      weft::event go;
      weft::join_handle<int> h = rt.spawn(value_after(&go, static_cast<int>(r)));
      std::atomic<int> values{0};   // relaxed: read after the threads are joined
      std::atomic<int> refused{0};  // relaxed: as above
      std::latch at_gate(3);
      auto joiner = [&] {
        at_gate.arrive_and_wait();
        try {
          if (h.join() == static_cast<int>(r)) values.fetch_add(1, std::memory_order_relaxed);
        } catch (const weft::usage_error&) {
          refused.fetch_add(1, std::memory_order_relaxed);
        }
      };
      std::thread a(joiner), b(joiner);
      at_gate.arrive_and_wait();
      if (r % 2 == 0) go.set();  // sometimes the task finishes while they race
      while (refused.load(std::memory_order_relaxed) + values.load(std::memory_order_relaxed) < 1) {
        std::this_thread::yield();
      }
      go.set();
      a.join();
      b.join();
      ASSERT_EQ(values.load(std::memory_order_relaxed), 1) << "round " << r;
      ASSERT_EQ(refused.load(std::memory_order_relaxed), 1) << "round " << r;
    }
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<std::string> awaits_handle(weft::join_handle<int>* h) {
  try {
    co_return "value:" + std::to_string(co_await *h);
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  }
}

TEST(ConcurrentJoinTest, AThreadJoiningAHandleThatATaskAwaitsGetsUsageErrorAtOnce) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::event go;
    weft::runtime rt(with_workers(2));
    weft::join_handle<int> h = rt.spawn(value_after(&go, 9));
    auto awaiter = rt.spawn(awaits_handle(&h));
    dog.phase("waiting for the task to register as the joiner");
    ASSERT_TRUE(spin_until([&] { return (state_of(h) & task_core::kJoiner) != 0; }));
    dog.phase("joining from this thread while the task awaits");
    EXPECT_THROW((void)h.join(), weft::usage_error);
    EXPECT_FALSE(h.done());
    go.set();
    EXPECT_EQ(awaiter.join(), "value:9") << "the task that awaited first gets the value";
    EXPECT_THROW((void)h.join(), weft::usage_error);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ConcurrentJoinTest, ATaskAwaitingAHandleThatAThreadJoinsGetsUsageErrorAtOnce) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::event go;
    weft::runtime rt(with_workers(2));
    weft::join_handle<int> h = rt.spawn(value_after(&go, 11));
    std::string joined;
    std::thread joiner([&] { joined = describe_join(h); });
    dog.phase("waiting for the thread to register as the joiner");
    ASSERT_TRUE(spin_until([&] { return (state_of(h) & task_core::kThreadJoiner) != 0; }));
    dog.phase("awaiting from a task while the thread joins");
    EXPECT_EQ(rt.block_on(awaits_handle(&h)), "usage_error");
    EXPECT_FALSE(h.done());
    go.set();
    joiner.join();
    EXPECT_EQ(joined, "value:11") << "the thread that joined first gets the value";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// The owner spawns a child and awaits it at once: on one worker it takes the
// child back from its deque and runs it inline (no joiner is registered), and
// the child blocks on the event inside that inline run.
struct inline_owner {
  weft::event go;
  std::latch child_started{1};
  weft::join_handle<int> h;  // written by the owner before the child starts
};

weft::task<int> inline_child(inline_owner* s) {
  s->child_started.count_down();
  co_await s->go.wait();
  co_return 13;
}

weft::task<int> awaits_own_child_inline(inline_owner* s) {
  s->h = weft::spawn(inline_child(s));
  co_return co_await s->h;
}

TEST(ConcurrentJoinTest, AThreadJoiningAHandleWhoseOwnerRunsItInlineGetsUsageErrorNotAHang) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    inline_owner s;
    weft::runtime rt(with_workers(1));
    weft::join_handle<int> owner = rt.spawn(awaits_own_child_inline(&s));
    s.child_started.wait();
    std::string joined;
    std::thread joiner([&] { joined = describe_join(s.h); });
    dog.phase("waiting for the thread to claim the outcome");
    ASSERT_TRUE(spin_until([&] { return (state_of(s.h) & task_core::kThreadJoiner) != 0; }));
    s.go.set();
    dog.phase("joining the thread");
    joiner.join();
    EXPECT_EQ(joined, "usage_error") << "the owner's co_await took the outcome";
    EXPECT_EQ(owner.join(), 13);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// ============================================================ break 9
// A handle that outlives its runtime.

weft::task<std::string> describe_await(weft::join_handle<int>* h) {
  try {
    co_return "value:" + std::to_string(co_await *h);
  } catch (const cancelled_error& e) {
    co_return "cancelled:" + std::string(weft::to_string(e.kind())) + ":" + std::string(e.reason());
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  }
}

weft::task<std::string> describe_shield(weft::join_handle<int>* h) {
  try {
    co_return "value:" + std::to_string(co_await weft::shield(*h));
  } catch (const cancelled_error& e) {
    co_return "cancelled:" + std::string(weft::to_string(e.kind())) + ":" + std::string(e.reason());
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  }
}

weft::task<std::string> describe_wait_for(weft::join_handle<int>* h) {
  try {
    co_return "value:" + std::to_string(co_await weft::wait_for(*h, 10s));
  } catch (const cancelled_error& e) {
    co_return "cancelled:" + std::string(weft::to_string(e.kind())) + ":" + std::string(e.reason());
  } catch (const weft::usage_error&) {
    co_return "usage_error";
  } catch (const weft::timeout_error&) {
    co_return "timeout";
  }
}

// One scenario's handles: h[0] is joined from this thread, h[1] awaited, h[2]
// shielded and h[3] waited for (wait_for) by tasks of a second runtime.  Each
// has a cancellation_source bound to it while its runtime was alive.
struct outliving {
  static constexpr int kHandles = 4;
  weft::event never;  // never set: outlives every waiter
  std::atomic<int> body_runs{0};
  weft::join_handle<int> h[kHandles];
  weft::cancellation_source bound_before;
  std::vector<weft::cancellation_registration> regs;
};

weft::task<int> returns_seven(outliving* s) {
  s->body_runs.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after the runtime is gone
  co_return 7;
}

weft::task<int> waits_forever(outliving* s, std::latch* started) {
  s->body_runs.fetch_add(1, std::memory_order_relaxed);  // relaxed: as above
  started->count_down();
  co_await s->never.wait();  // shutdown interrupts it: cancelled_error
  co_return 1;
}

// Busy until the runtime stops (no suspension): holds the only worker so that
// tasks queued behind it never start.
weft::task<int> holds_the_worker(std::latch* started) {
  started->count_down();
  while (!weft::this_task::cancel_requested()) {
  }
  co_return 0;
}

// Every member of a handle whose runtime is gone, for a task that finished
// with `expected` (describe_join's text).
void check_every_member(weft::join_handle<int>& h, const std::string& expected,
                        const weft::cancellation_source& bound_before) {
  const bool by_shutdown = expected != "value:7";
  EXPECT_TRUE(h.valid());
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.cancelled(), by_shutdown);
  const std::optional<cancelled_error> c = h.cancellation();
  EXPECT_EQ(c.has_value(), by_shutdown);
  if (c) {
    EXPECT_EQ(c->kind(), cancel_kind::shutdown);
    EXPECT_EQ(c->reason(), "shutdown");
  }
  const unsigned count = h.cancelling();
  EXPECT_FALSE(h.cancel()) << "the task has finished";
  EXPECT_FALSE(h.cancel("after the runtime"));
  EXPECT_FALSE(h.cancel_as(cancel_kind::timeout, ""));
  EXPECT_FALSE(h.cancel_as(cancel_kind::group, "after the runtime"));
  EXPECT_EQ(h.cancelling(), count) << "a cancel() of a finished task changes nothing";
  EXPECT_EQ(h.uncancel(), count > 0 ? count - 1 : 0u);

  // The source bound while the runtime lived, cancelled now.
  weft::cancellation_source src = bound_before;
  EXPECT_TRUE(src.cancel("bound before, cancelled after"));
  // Bound now: to a live source, then cancelled; to a cancelled source (the
  // callback runs inside bind()).
  weft::cancellation_source late;
  std::atomic<int> callbacks{0};
  {
    weft::cancellation_registration r = late.token().bind(h);
    weft::cancellation_registration cb =
        late.token().on_cancel([&callbacks] { callbacks.fetch_add(1, std::memory_order_relaxed); });
    EXPECT_TRUE(r.active());
    EXPECT_TRUE(late.cancel("late"));
    weft::cancellation_registration again = late.token().bind(h);
    EXPECT_TRUE(again.active());
  }
  EXPECT_EQ(callbacks.load(std::memory_order_relaxed), 1);
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.cancelled(), by_shutdown);

  EXPECT_EQ(describe_join(h), expected);
  EXPECT_EQ(describe_join(h), "usage_error") << "the outcome is taken once";
}

// The handles of the other three ways of taking the outcome, from a second
// runtime that is alive.
void check_awaits_from_another_runtime(outliving& s, const std::string& expected) {
  weft::runtime other(with_workers(2));
  EXPECT_TRUE(s.h[1].done());
  EXPECT_EQ(other.block_on(describe_await(&s.h[1])), expected);
  EXPECT_EQ(other.block_on(describe_await(&s.h[1])), "usage_error") << "taken once";
  EXPECT_EQ(other.block_on(describe_shield(&s.h[2])), expected);
  EXPECT_EQ(other.block_on(describe_wait_for(&s.h[3])), expected);
  for (auto& h : s.h) EXPECT_FALSE(h.cancel("after everything"));
  EXPECT_EQ(other.block_on(weft_test::value_task(3)), 3) << "the second runtime stays healthy";
}

void bind_before(outliving& s) {
  for (auto& h : s.h) s.regs.push_back(s.bound_before.token().bind(h));
}

TEST(HandleOutlivesRuntimeTest, ATaskCancelledByShutdownAnswersEveryMemberAfterTheRuntimeIsGone) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    outliving s;  // declared before the runtime: outlives it
    {
      std::latch started(outliving::kHandles);
      weft::runtime rt(with_workers(2));
      for (auto& h : s.h) h = rt.spawn(waits_forever(&s, &started));
      bind_before(s);
      started.wait();
    }  // ~runtime: every task is cancelled ("shutdown") and finishes
    EXPECT_EQ(s.body_runs.load(std::memory_order_relaxed), outliving::kHandles);
    const std::string expected = "cancelled:shutdown:shutdown";
    check_every_member(s.h[0], expected, s.bound_before);
    check_awaits_from_another_runtime(s, expected);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(HandleOutlivesRuntimeTest, ATaskThatCompletedBeforeTheRuntimeDiedAnswersEveryMember) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    outliving s;
    {
      weft::runtime rt(with_workers(2));
      for (auto& h : s.h) h = rt.spawn(returns_seven(&s));
      bind_before(s);
      for (auto& h : s.h) ASSERT_TRUE(wait_done(h));
    }
    const std::string expected = "value:7";
    check_every_member(s.h[0], expected, s.bound_before);
    check_awaits_from_another_runtime(s, expected);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(HandleOutlivesRuntimeTest, ATaskThatNeverStartedAnswersEveryMember) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    outliving s;
    weft::join_handle<int> holder;
    {
      std::latch started(1);
      weft::runtime rt(with_workers(1));
      holder = rt.spawn(holds_the_worker(&started));
      started.wait();
      // Queued behind the busy task on the only worker: shutdown drains them
      // as cancelled before they start.
      for (auto& h : s.h) h = rt.spawn(returns_seven(&s));
      bind_before(s);
    }
    EXPECT_EQ(s.body_runs.load(std::memory_order_relaxed), 0) << "a body ran";
    const std::string expected = "cancelled:shutdown:shutdown";
    check_every_member(s.h[0], expected, s.bound_before);
    check_awaits_from_another_runtime(s, expected);
    EXPECT_EQ(describe_join(holder), "value:0");
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(HandleOutlivesRuntimeTest, ATaskSpawnedAfterShutdownAnswersEveryMember) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    outliving s;
    {
      weft::runtime rt(with_workers(2));
      rt.shutdown();
      for (auto& h : s.h) h = rt.spawn(returns_seven(&s));  // cancelled at once
      bind_before(s);
    }
    EXPECT_EQ(s.body_runs.load(std::memory_order_relaxed), 0);
    const std::string expected = "cancelled:shutdown:shutdown";
    check_every_member(s.h[0], expected, s.bound_before);
    check_awaits_from_another_runtime(s, expected);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Suspends on an awaitable that nobody ever resumes: shutdown cannot end it
// (it reports the task as one that "can never finish" and leaks its frame).
weft::task<int> stuck_forever(std::latch* started) {
  started->count_down();
  co_await std::suspend_always{};
  co_return 1;
}

TEST(HandleOutlivesRuntimeTest, ATaskThatCanNeverFinishMakesJoinThrowInsteadOfHanging) {
  watchdog dog(60s);
  weft::join_handle<int> h;
  {
    std::latch started(1);
    weft::runtime rt(with_workers(1));
    h = rt.spawn(stuck_forever(&started));
    started.wait();
    ::testing::internal::CaptureStderr();
    rt.shutdown();
    const std::string report = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(report.find("1 task(s) can never finish"), std::string::npos) << report;
    EXPECT_FALSE(h.done());
    EXPECT_THROW((void)h.join(), weft::usage_error) << "after shutdown, before the destructor";
  }
  EXPECT_FALSE(h.done());
  EXPECT_FALSE(h.cancelled());
  EXPECT_FALSE(h.cancellation().has_value());
  EXPECT_TRUE(h.cancel("after the runtime")) << "recorded; the task can never run to see it";
  EXPECT_EQ(h.cancelling(), 1u);
  EXPECT_EQ(h.uncancel(), 0u);
  {
    weft::cancellation_source src;
    weft::cancellation_registration r = src.token().bind(h);
    EXPECT_TRUE(src.cancel("source"));
    EXPECT_EQ(h.cancelling(), 1u);
  }
  EXPECT_THROW((void)h.join(), weft::usage_error);
  EXPECT_THROW((void)h.join(), weft::usage_error) << "still: no claim was left behind";
  expect_leaked(h);  // the documented leak of a stuck task
}

// A simulation runtime: the same members after it is gone.
TEST(HandleOutlivesRuntimeTest, AHandleOfADestroyedSimulationAnswersEveryMember) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    outliving s;
    {
      weft::runtime_options o;
      o.workers = 2;
      o.simulation = weft::sim::options{};
      weft::runtime rt(o);
      s.h[0] = rt.spawn(returns_seven(&s));
      s.regs.push_back(s.bound_before.token().bind(s.h[0]));
      s.h[1] = rt.spawn(returns_seven(&s));
      EXPECT_EQ(rt.block_on(value_task(1)), 1);
      weft::sim::run(rt, 1000);
    }
    check_every_member(s.h[0], s.h[0].cancelled() ? "cancelled:shutdown:shutdown" : "value:7",
                       s.bound_before);
    EXPECT_TRUE(s.h[1].done());
    EXPECT_FALSE(s.h[1].cancel());
  }
  EXPECT_EQ(frames.now(), frames.start);
}

}  // namespace
