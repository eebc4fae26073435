// SPDX-License-Identifier: MIT
// Black-box tests of the basics: block_on, spawn from inside and outside,
// exception propagation through every way of observing a task, the
// unhandled-exception hook, and this_task queries outside a task.
#include <sched.h>

#include <cstdlib>
#include <latch>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// ---------------------------------------------------------------- block_on

weft::task<int> add_three(int a, int b, int c) {
  int x = co_await value_task(a);
  int y = co_await value_task(b);
  co_return x + y + c;
}

TEST(BlockOnTest, ReturnsTheValue) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(rt.workers(), 2u);
    EXPECT_EQ(rt.block_on(value_task(42)), 42);
    EXPECT_EQ(rt.block_on(add_three(1, 2, 3)), 6);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Relaxed, here and in every test that reads the flag: they read it after
// block_on()/join() (which synchronise with the task's end) or poll it only
// as a sign of progress; it publishes nothing.
weft::task<void> set_flag(std::atomic<bool>* f) {
  f->store(true, std::memory_order_relaxed);
  co_return;
}

TEST(BlockOnTest, RunsAVoidTask) {
  watchdog wd(30s);
  std::atomic<bool> ran{false};
  weft::runtime rt(with_workers(1));
  rt.block_on(set_flag(&ran));
  EXPECT_TRUE(ran.load(std::memory_order_relaxed));
}

weft::task<std::string> make_string(std::string s) {
  co_await weft::yield();
  co_return s + "!";
}

TEST(BlockOnTest, ReturnsAMoveOnlyOrHeapValueIntact) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  std::string big(1000, 'x');
  EXPECT_EQ(rt.block_on(make_string(big)), big + "!");
}

TEST(BlockOnTest, DefaultWorkerCountIsAtLeastOne) {
  watchdog wd(30s);
  weft::runtime rt;
  EXPECT_GE(rt.workers(), 1u);
  EXPECT_EQ(rt.block_on(value_task(7)), 7);
}

// ---------------------------------------------------------------- spawn

weft::task<long> spawn_children_and_sum(int n) {
  std::vector<weft::join_handle<long>> hs;
  hs.reserve(n);
  for (int i = 0; i < n; ++i) hs.push_back(weft::spawn(long_value_task(i)));
  long sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

TEST(SpawnTest, FromInsideATask) {
  watchdog wd(30s);
  const int n = 1000;
  expect_result_leaving_no_frame(
      2, [] { return spawn_children_and_sum(n); }, long(n) * (n - 1) / 2);
}

TEST(SpawnTest, FromOutsideThreadsConcurrently) {
  watchdog wd(60s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    const int per_thread = static_cast<int>(scaled(20000, 2000));
    std::atomic<long> total{0};
    std::vector<std::jthread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, t] {
        std::vector<weft::join_handle<long>> hs;
        hs.reserve(per_thread);
        for (int i = 0; i < per_thread; ++i)
          hs.push_back(rt.spawn(long_value_task(t * 1000000L + i)));
        long sum = 0;
        for (auto& h : hs) sum += h.join();
        total.fetch_add(sum, std::memory_order_relaxed);  // read after the threads joined
      });
    }
    threads.clear();  // joins
    long expect = 0;
    for (int t = 0; t < 3; ++t)
      for (int i = 0; i < per_thread; ++i) expect += t * 1000000L + i;
    EXPECT_EQ(total.load(std::memory_order_relaxed), expect);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<long> fan_out(int depth, int width) {
  if (depth == 0) co_return 1;
  std::vector<weft::join_handle<long>> hs;
  for (int i = 0; i < width; ++i) hs.push_back(weft::spawn(fan_out(depth - 1, width)));
  long n = 1;
  for (auto& h : hs) n += co_await h;
  co_return n;
}

TEST(SpawnTest, ManyTasksInATree) {
  watchdog wd(60s);
  // 8^6 leaves: 299,593 tasks in all (8^5 = 37,449 under sanitizers).
  const int depth = kSanitizer ? 5 : 6;
  long expect = 0, level = 1;
  for (int d = 0; d <= depth; ++d, level *= 8) expect += level;
  expect_result_leaving_no_frame(2, [depth] { return fan_out(depth, 8); }, expect);
}

TEST(SpawnTest, SpawnOutsideAWorkerThrowsUsageError) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(1));  // a runtime exists, but this thread is not its worker
    EXPECT_THROW((void)weft::spawn(value_task(1)), weft::usage_error);
  }
  EXPECT_THROW((void)weft::spawn(value_task(1)), weft::usage_error);
  // The rejected task's frame was not leaked.
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(SpawnTest, SpawnedTaskStartsWithoutBeingJoined) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  std::atomic<bool> ran{false};
  auto h = rt.spawn(set_flag(&ran));
  EXPECT_TRUE(
      spin_until([&] { return ran.load(std::memory_order_relaxed); }));  // "starts promptly"
  EXPECT_TRUE(wait_done(h));
  h.join();
}

// ---------------------------------------------------------------- exceptions

struct test_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

weft::task<int> throws_now(std::string msg) {
  throw test_error(msg);
  co_return 0;
}

weft::task<int> throws_after_suspend(std::string msg) {
  co_await weft::yield();
  co_await weft::sleep_for(1ms);
  throw test_error(msg);
  co_return 0;
}

weft::task<std::string> await_task_and_catch() {
  try {
    co_await throws_after_suspend("from-task");
  } catch (const test_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not thrown";
}

TEST(ExceptionTest, PropagatesThroughCoAwaitOfATask) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(await_task_and_catch()), "caught from-task");
}

weft::task<std::string> await_handle_and_catch(bool suspend_first) {
  auto h = suspend_first ? weft::spawn(throws_after_suspend("from-handle"))
                         : weft::spawn(throws_now("from-handle"));
  try {
    co_await h;
  } catch (const test_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not thrown";
}

TEST(ExceptionTest, PropagatesThroughCoAwaitOfAHandle) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(await_handle_and_catch(false)), "caught from-handle");
  EXPECT_EQ(rt.block_on(await_handle_and_catch(true)), "caught from-handle");
}

TEST(ExceptionTest, PropagatesThroughJoin) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(2));
  auto h1 = rt.spawn(throws_now("at-first-resume"));
  auto h2 = rt.spawn(throws_after_suspend("after-suspend"));
  try {
    (void)h1.join();
    ADD_FAILURE() << "join did not throw";
  } catch (const test_error& e) {
    EXPECT_STREQ(e.what(), "at-first-resume");
  }
  try {
    (void)h2.join();
    ADD_FAILURE() << "join did not throw";
  } catch (const test_error& e) {
    EXPECT_STREQ(e.what(), "after-suspend");
  }
  EXPECT_TRUE(h1.done());
  EXPECT_FALSE(h1.cancelled());  // an exception is not a cancellation
  EXPECT_FALSE(h2.cancelled());
}

TEST(ExceptionTest, PropagatesThroughBlockOn) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(1));
  EXPECT_THROW(rt.block_on(throws_now("x")), test_error);
  EXPECT_THROW(rt.block_on(throws_after_suspend("y")), test_error);
}

TEST(ExceptionTest, WorkersSurviveAThrowingTask) {
  watchdog wd(30s);
  // Relaxed: a counter; the test polls it and publishes nothing through it.
  std::atomic<int> hook_calls{0};
  weft::runtime_options opts;
  opts.workers = 1;
  opts.unhandled_exception = [&](std::exception_ptr) {
    hook_calls.fetch_add(1, std::memory_order_relaxed);
  };
  weft::runtime rt(opts);
  for (int i = 0; i < 20; ++i) {
    EXPECT_THROW(rt.block_on(throws_now("a")), test_error);
    EXPECT_THROW(rt.block_on(throws_after_suspend("b")), test_error);
    {
      auto dropped = rt.spawn(throws_after_suspend("dropped"));
    }
    EXPECT_EQ(rt.block_on(value_task(i)), i);  // the single worker still runs tasks
  }
  EXPECT_TRUE(spin_until([&] { return hook_calls.load(std::memory_order_relaxed) == 20; }));
  EXPECT_EQ(rt.block_on(add_three(1, 1, 1)), 3);
}

// The hook sees an unobserved exception exactly once.  Parameter: whether the
// exception is thrown at the first resume or after a suspension.
class UnhandledHookTest : public ::testing::TestWithParam<bool> {};

TEST_P(UnhandledHookTest, UnobservedExceptionReachesTheHookExactlyOnce) {
  watchdog wd(30s);
  const bool after_suspend = GetParam();
  // Relaxed, both counters: polled as a sign of progress, then read after the
  // runtime was destroyed (its workers joined).
  std::atomic<int> calls{0};
  std::atomic<int> right_type{0};
  frame_baseline frames;
  {
    weft::runtime_options opts;
    opts.workers = 2;
    opts.unhandled_exception = [&](std::exception_ptr e) {
      calls.fetch_add(1, std::memory_order_relaxed);
      try {
        std::rethrow_exception(e);
      } catch (const test_error& t) {
        if (std::string(t.what()) == "unobserved")
          right_type.fetch_add(1, std::memory_order_relaxed);
      } catch (...) {
      }
    };
    weft::runtime rt(opts);
    {
      auto h = after_suspend ? rt.spawn(throws_after_suspend("unobserved"))
                             : rt.spawn(throws_now("unobserved"));
      // dropped here, maybe before, maybe after the task threw
    }
    EXPECT_TRUE(spin_until([&] { return calls.load(std::memory_order_relaxed) >= 1; }));
    // A later task still runs: the worker survived.
    EXPECT_EQ(rt.block_on(value_task(5)), 5);
  }
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(right_type.load(std::memory_order_relaxed), 1);
  EXPECT_EQ(frames.now(), frames.start);
}

INSTANTIATE_TEST_SUITE_P(ThrowPoint, UnhandledHookTest, ::testing::Values(false, true),
                         [](const auto& info) {
                           return info.param ? std::string("AfterSuspend")
                                             : std::string("AtFirstResume");
                         });

TEST(ExceptionTest, ObservedExceptionDoesNotReachTheHook) {
  watchdog wd(30s);
  std::atomic<int> calls{0};  // relaxed: read after the runtime was destroyed
  {
    weft::runtime_options opts;
    opts.workers = 2;
    opts.unhandled_exception = [&](std::exception_ptr) {
      calls.fetch_add(1, std::memory_order_relaxed);
    };
    weft::runtime rt(opts);
    auto h = rt.spawn(throws_after_suspend("seen"));
    EXPECT_THROW((void)h.join(), test_error);
    EXPECT_THROW(rt.block_on(throws_now("seen")), test_error);
    EXPECT_EQ(rt.block_on(await_handle_and_catch(true)), "caught from-handle");
  }
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 0);
}

weft::task<int> spawn_thrower_and_drop(std::atomic<int>* spawned) {
  {
    auto h = weft::spawn(throws_after_suspend("inner-dropped"));
  }
  spawned->fetch_add(1, std::memory_order_relaxed);  // a counter
  co_return 1;
}

TEST(ExceptionTest, DetachedChildExceptionReachesTheHookNotTheParent) {
  watchdog wd(30s);
  // Relaxed: a counter, polled, then read after the runtime was destroyed.
  std::atomic<int> calls{0};
  std::atomic<int> spawned{0};
  {
    weft::runtime_options opts;
    opts.workers = 2;
    opts.unhandled_exception = [&](std::exception_ptr) {
      calls.fetch_add(1, std::memory_order_relaxed);
    };
    weft::runtime rt(opts);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(rt.block_on(spawn_thrower_and_drop(&spawned)), 1);
    EXPECT_TRUE(spin_until([&] { return calls.load(std::memory_order_relaxed) == 10; }));
  }
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 10);
}

// With no hook set, an exception nobody observed is printed on stderr (the
// default hook), with its what().  The task publishes that it is past its last
// resume point before throwing, so the runtime's shutdown cannot turn it into
// a cancellation; the shutdown then waits for it, and the report happens when
// its frame goes (its handle was dropped).
weft::task<int> throws_after_flag(std::atomic<int>* past_last_await, std::string msg) {
  co_await weft::yield();
  // Release: pairs with the test's acquire poll (nothing else is published).
  past_last_await->fetch_add(1, std::memory_order_release);
  throw test_error(msg);
  co_return 0;
}

// The same without any resume point: once its body has started, no
// cancellation can reach it.  (A task that merely throws at its start may not
// have started when the runtime shuts down; it is then cancelled before its
// first run and never throws, which is the contract, not a lost report.)
weft::task<int> flags_then_throws(std::atomic<int>* started, std::string msg) {
  // Release: pairs with the test's acquire poll (nothing else is published).
  started->fetch_add(1, std::memory_order_release);
  throw test_error(msg);
  co_return 0;
}

TEST(ExceptionTest, DefaultHookPrintsAnUnobservedExceptionOnStderr) {
  watchdog wd(30s);
  std::atomic<int> past{0};
  ::testing::internal::CaptureStderr();
  {
    weft::runtime rt(with_workers(2));  // default options: no hook
    {
      auto dropped = rt.spawn(throws_after_flag(&past, "nobody awaited me"));
    }
    {
      auto dropped = rt.spawn(flags_then_throws(&past, "nor me"));
    }
    // Acquire: pairs with the tasks' release increments.
    EXPECT_TRUE(spin_until([&] { return past.load(std::memory_order_acquire) == 2; }));
  }  // ~runtime: both tasks have ended, their frames are gone
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("weft: exception in a task nobody awaited: nobody awaited me"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("weft: exception in a task nobody awaited: nor me"), std::string::npos) << err;
}

// ---------------------------------------------------------------- misuse

weft::task<std::string> await_twice(weft::join_handle<int>* h) {
  const int v = co_await *h;
  try {
    (void)co_await *h;
  } catch (const weft::usage_error&) {
    co_return "usage_error after " + std::to_string(v);
  }
  co_return "no error";
}

TEST(MisuseTest, TakingAResultTwiceIsAUsageError) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    auto a = rt.spawn(value_task(4));
    EXPECT_EQ(a.join(), 4);
    EXPECT_THROW((void)a.join(), weft::usage_error);
    auto b = rt.spawn(value_task(5));
    EXPECT_EQ(rt.block_on(await_twice(&b)), "usage_error after 5");
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(MisuseTest, SpawningAnEmptyTaskIsAUsageError) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(1));
  weft::task<int> t = value_task(1);
  weft::task<int> moved = std::move(t);
  EXPECT_FALSE(t.valid());
  EXPECT_THROW((void)rt.spawn(std::move(t)), weft::usage_error);
  EXPECT_THROW((void)rt.spawn(weft::task<int>{}), weft::usage_error);
  EXPECT_EQ(rt.block_on(std::move(moved)), 1);
}

TEST(MisuseTest, AnEmptyHandleAnswersEveryQueryAndCancelWithoutTouchingATask) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(1));
  weft::join_handle<int> empty;
  auto h = rt.spawn(value_task(2));
  weft::join_handle<int> taken = std::move(h);  // h is now moved-from
  for (weft::join_handle<int>* e : {&empty, &h}) {
    EXPECT_FALSE(e->valid());
    EXPECT_FALSE(e->cancel());
    EXPECT_FALSE(e->cancel("with a reason"));
    EXPECT_FALSE(e->cancel_as(weft::cancel_kind::timeout, ""));
    EXPECT_FALSE(e->cancel_as(weft::cancel_kind::group, "with a reason"));
    EXPECT_FALSE(e->done());
    EXPECT_FALSE(e->cancelled());
    EXPECT_FALSE(e->cancellation().has_value());
    EXPECT_EQ(e->cancelling(), 0u);
    EXPECT_EQ(e->uncancel(), 0u);
    EXPECT_THROW((void)e->join(), weft::usage_error);
  }
  EXPECT_EQ(taken.join(), 2);
}

TEST(MisuseTest, AnUnstartedTaskIsDestroyedWithoutRunning) {
  frame_baseline frames;
  std::atomic<bool> ran{false};
  {
    weft::task<void> t = set_flag(&ran);
  }
  EXPECT_FALSE(ran.load(std::memory_order_relaxed));
  EXPECT_EQ(frames.now(), frames.start);
}

// ---------------------------------------------------------------- options

TEST(RuntimeOptionsTest, ZeroWorkersMeansWeftWorkersThenTheAffinityMask) {
  watchdog wd(30s);
  // No runtime is alive here, so no other thread reads the environment.
  const char* old = std::getenv("WEFT_WORKERS");
  const std::string saved = old ? old : "";
  ::setenv("WEFT_WORKERS", "3", 1);
  {
    weft::runtime rt;
    EXPECT_EQ(rt.workers(), 3u);
    EXPECT_EQ(rt.block_on(value_task(3)), 3);
  }
  ::unsetenv("WEFT_WORKERS");
  {
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
    weft::runtime rt;
    EXPECT_EQ(rt.workers(), static_cast<unsigned>(CPU_COUNT(&set)));
  }
  {
    weft::runtime rt(with_workers(5));  // an explicit count wins
    EXPECT_EQ(rt.workers(), 5u);
  }
  if (old) ::setenv("WEFT_WORKERS", saved.c_str(), 1);
}

// "0: the CPUs this process may use": with the calling thread restricted to
// one CPU, a default runtime has one worker although the machine has more.
TEST(RuntimeOptionsTest, ZeroWorkersFollowsARestrictedAffinityMask) {
  watchdog wd(30s);
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
  if (CPU_COUNT(&all) < 2) GTEST_SKIP() << "needs at least 2 usable CPUs to restrict";
  int first = 0;
  while (!CPU_ISSET(first, &all)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  // No runtime is alive here, so no other thread reads the environment.
  const char* old = std::getenv("WEFT_WORKERS");
  const std::string saved = old ? old : "";
  ::unsetenv("WEFT_WORKERS");
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);  // this thread only
  unsigned workers = 0;
  int v = 0;
  {
    weft::runtime rt;  // its threads inherit the one-CPU mask
    workers = rt.workers();
    v = rt.block_on(value_task(9));
  }
  EXPECT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
  if (old) ::setenv("WEFT_WORKERS", saved.c_str(), 1);
  EXPECT_EQ(workers, 1u) << "the worker count ignored the affinity mask";
  EXPECT_EQ(v, 9);
}

// ---------------------------------------------------------------- this_task

TEST(ThisTaskTest, OutsideATaskQueriesAreFalseAndThrowNothing) {
  EXPECT_FALSE(weft::this_task::cancel_requested());
  EXPECT_NO_THROW(weft::this_task::throw_if_cancel_requested());
  weft::runtime rt(with_workers(1));
  EXPECT_FALSE(weft::this_task::cancel_requested());
  EXPECT_NO_THROW(weft::this_task::throw_if_cancel_requested());
}

}  // namespace
