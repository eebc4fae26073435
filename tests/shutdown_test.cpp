// SPDX-License-Identifier: MIT
// Black-box tests of shutdown() and the runtime's destructor: live tasks are
// cancelled with kind shutdown and run their cleanup, shutdown is bounded and
// idempotent, spawn after shutdown gives an already-cancelled handle, blocking
// calls from a worker are usage errors, and no frame leaks.
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "freezer.hpp"
#include "task_internals.hpp"
#include "test_support.hpp"

namespace {

using namespace weft_test;

// Relaxed, every counter and flag of this file's state structs: the test reads
// them after shutdown() (which joins the workers) or after join().
struct shutdown_state {
  std::latch started;
  raii_counter rc;
  std::atomic<int> saw_shutdown{0};
  std::atomic<int> saw_other_kind{0};
  std::atomic<int> saw_twice{0};
  explicit shutdown_state(int n) : started(n) {}
  void record(const cancelled_error& e) {
    if (e.kind() == cancel_kind::shutdown && e.reason() == "shutdown")
      saw_shutdown.fetch_add(1, std::memory_order_relaxed);
    else
      saw_other_kind.fetch_add(1, std::memory_order_relaxed);
  }
};

// What a live task does until shutdown cancels it: sleep an hour, yield
// forever, or pass checkpoints forever.
enum class live_kind { sleeps, yields, checkpoints };

weft::task<int> live_task(shutdown_state* s, live_kind k) {
  raii_probe g(s->rc);
  s->started.count_down();
  try {
    switch (k) {
      case live_kind::sleeps:
        co_await weft::sleep_for(std::chrono::hours(1));
        break;
      case live_kind::yields:
        for (;;) co_await weft::yield();
      case live_kind::checkpoints:
        for (;;) co_await weft::checkpoint();
    }
  } catch (const cancelled_error& e) {
    s->record(e);
    throw;
  }
  co_return 1;
}

weft::task<int> plain_sleeper(raii_counter* rc) {
  raii_probe g(*rc);
  co_await weft::sleep_for(std::chrono::hours(1));
  co_return 1;
}

weft::task<int> live_awaiter(shutdown_state* s) {
  raii_probe g(s->rc);
  auto inner = weft::spawn(plain_sleeper(&s->rc));
  s->started.count_down();
  try {
    co_return co_await inner;
  } catch (const cancelled_error& e) {
    s->record(e);
    throw;
  }
}

// Awaits a handle owned by the test (a top-level task that is itself live).
weft::task<int> awaits_other(shutdown_state* s, weft::join_handle<int>* other) {
  raii_probe g(s->rc);
  s->started.count_down();
  try {
    co_return co_await *other;
  } catch (const cancelled_error& e) {
    s->record(e);
    throw;
  }
}

TEST(ShutdownTest, LiveTasksAreCancelledWithKindShutdownAndRunTheirCleanup) {
  watchdog wd(60s);
  frame_baseline frames;
  const int per_kind = 8;
  const int n_tasks = 5 * per_kind;
  shutdown_state s(n_tasks);
  {
    std::vector<weft::join_handle<int>> hs;
    hs.reserve(n_tasks);
    weft::runtime rt(with_workers(2));
    for (int i = 0; i < per_kind; ++i) {
      hs.push_back(rt.spawn(live_task(&s, live_kind::sleeps)));
      hs.push_back(rt.spawn(live_task(&s, live_kind::yields)));
      hs.push_back(rt.spawn(live_task(&s, live_kind::checkpoints)));
      hs.push_back(rt.spawn(live_awaiter(&s)));
    }
    for (int i = 0; i < per_kind; ++i) hs.push_back(rt.spawn(awaits_other(&s, &hs[4 * i])));
    s.started.wait();
    const auto t0 = clock_type::now();
    rt.shutdown();
    const double took = seconds_since(t0);
    EXPECT_LT(took, 5.0) << "shutdown() took too long";
    for (std::size_t i = 0; i < hs.size(); ++i) {
      auto& h = hs[i];
      EXPECT_TRUE(h.done());
      EXPECT_TRUE(h.cancelled());
      // The sleepers hs[4k] were awaited by an awaits_other task, which took
      // their result: only their state is checked here.
      if (i < std::size_t(4 * per_kind) && i % 4 == 0) continue;
      const cancelled_error e = expect_cancelled([&] { (void)h.join(); });
      EXPECT_EQ(e.kind(), cancel_kind::shutdown);
      EXPECT_EQ(e.reason(), "shutdown");
    }
    EXPECT_EQ(s.saw_shutdown.load(std::memory_order_relaxed), n_tasks);
    EXPECT_EQ(s.saw_other_kind.load(std::memory_order_relaxed), 0);
    // Every RAII local (including the inner sleepers') ran its destructor.
    EXPECT_EQ(s.rc.constructed.load(std::memory_order_relaxed), n_tasks + per_kind);
    EXPECT_EQ(s.rc.destroyed.load(std::memory_order_relaxed),
              s.rc.constructed.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ShutdownTest, DestructorShutsDownLiveTasksWithinABound) {
  watchdog wd(60s);
  frame_baseline frames;
  shutdown_state s(6);
  {
    std::vector<weft::join_handle<int>> hs;  // outlive the runtime
    {
      weft::runtime rt(with_workers(2));
      for (int i = 0; i < 2; ++i) {
        hs.push_back(rt.spawn(live_task(&s, live_kind::sleeps)));
        hs.push_back(rt.spawn(live_task(&s, live_kind::yields)));
        hs.push_back(rt.spawn(live_awaiter(&s)));
      }
      {
        auto dropped = rt.spawn(plain_sleeper(&s.rc));
      }  // detached and live
      s.started.wait();
      wd.phase("runtime destructor");
    }
    for (auto& h : hs) {
      EXPECT_TRUE(h.done());
      EXPECT_TRUE(h.cancelled());
      EXPECT_THROW((void)h.join(), cancelled_error);
    }
    EXPECT_EQ(s.saw_shutdown.load(std::memory_order_relaxed), 6);
    EXPECT_EQ(s.rc.destroyed.load(std::memory_order_relaxed),
              s.rc.constructed.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(frames.now(), frames.start);
}

struct refuser_state {
  std::latch started{1};
  std::atomic<int> caught{0};
  std::atomic<bool> cleanup_threw{false};
  std::atomic<bool> child_ran{false};
  std::atomic<bool> child_cancelled_at_once{false};
  std::atomic<bool> child_kind_shutdown{false};
};

weft::task<int> mark_ran(std::atomic<bool>* ran) {
  ran->store(true, std::memory_order_relaxed);
  co_return 3;
}

weft::task<int> refuse_shutdown_and_clean_up(refuser_state* s) {
  s->started.count_down();
  try {
    co_await weft::sleep_for(std::chrono::hours(1));
  } catch (const cancelled_error& e) {
    if (e.kind() == cancel_kind::shutdown) s->caught.fetch_add(1, std::memory_order_relaxed);
  }
  // Asynchronous cleanup: further awaits do not throw (one delivery), and a
  // task spawned now comes back already cancelled.
  try {
    co_await weft::yield();
    co_await weft::checkpoint();
  } catch (const cancelled_error&) {
    s->cleanup_threw.store(true, std::memory_order_relaxed);
  }
  auto child = weft::spawn(mark_ran(&s->child_ran));
  s->child_cancelled_at_once.store(child.done() && child.cancelled(), std::memory_order_relaxed);
  try {
    (void)co_await child;
  } catch (const cancelled_error& e) {
    s->child_kind_shutdown.store(e.kind() == cancel_kind::shutdown, std::memory_order_relaxed);
  }
  co_return 77;
}

TEST(ShutdownTest, TaskMayCatchTheShutdownCancelAndFinishItsCleanup) {
  watchdog wd(60s);
  frame_baseline frames;
  refuser_state s;
  {
    weft::runtime rt(with_workers(2));
    auto h = rt.spawn(refuse_shutdown_and_clean_up(&s));
    s.started.wait();
    rt.shutdown();
    EXPECT_TRUE(h.done());
    EXPECT_FALSE(h.cancelled());
    EXPECT_EQ(h.join(), 77);
    EXPECT_EQ(s.caught.load(std::memory_order_relaxed), 1);
    EXPECT_FALSE(s.cleanup_threw.load(std::memory_order_relaxed))
        << "shutdown was delivered more than once";
    EXPECT_TRUE(s.child_cancelled_at_once.load(std::memory_order_relaxed));
    EXPECT_TRUE(s.child_kind_shutdown.load(std::memory_order_relaxed));
    EXPECT_FALSE(s.child_ran.load(std::memory_order_relaxed));
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ShutdownTest, SpawnAfterShutdownReturnsAnAlreadyCancelledHandle) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    std::atomic<bool> ran{false};
    weft::runtime rt(with_workers(2));
    rt.shutdown();
    auto h = rt.spawn(mark_ran(&ran));
    EXPECT_TRUE(h.done());
    EXPECT_TRUE(h.cancelled());
    EXPECT_FALSE(h.cancel("again"));
    const cancelled_error e = expect_cancelled([&] { (void)h.join(); });
    EXPECT_EQ(e.kind(), cancel_kind::shutdown);
    EXPECT_EQ(e.reason(), "shutdown");
    EXPECT_THROW(rt.block_on(mark_ran(&ran)), cancelled_error);
    {
      auto dropped = rt.spawn(mark_ran(&ran));
    }
    EXPECT_FALSE(ran.load(std::memory_order_relaxed)) << "a body ran after shutdown";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ShutdownTest, ShutdownIsIdempotentAndSafeFromSeveralThreads) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    shutdown_state s(2);
    weft::runtime rt(with_workers(2));
    auto a = rt.spawn(live_task(&s, live_kind::sleeps));
    auto b = rt.spawn(live_task(&s, live_kind::yields));
    s.started.wait();
    {
      std::jthread t1([&] { rt.shutdown(); });
      std::jthread t2([&] { rt.shutdown(); });
      rt.shutdown();
    }
    rt.shutdown();
    EXPECT_TRUE(a.cancelled());
    EXPECT_TRUE(b.cancelled());
    EXPECT_EQ(s.saw_shutdown.load(std::memory_order_relaxed), 2);
  }  // the destructor shuts down once more
  EXPECT_EQ(frames.now(), frames.start);
}

struct misuse_state {
  std::atomic<bool> block_on_threw{false};
  std::atomic<bool> join_threw{false};
  std::atomic<bool> shutdown_threw{false};
  std::atomic<bool> other_errors{false};
};

weft::task<int> misuse_from_worker(weft::runtime* rt, weft::join_handle<int>* other,
                                   misuse_state* s) {
  try {
    (void)rt->block_on(value_task(1));
  } catch (const weft::usage_error&) {
    s->block_on_threw.store(true, std::memory_order_relaxed);
  } catch (...) {
    s->other_errors.store(true, std::memory_order_relaxed);
  }
  try {
    (void)other->join();
  } catch (const weft::usage_error&) {
    s->join_threw.store(true, std::memory_order_relaxed);
  } catch (...) {
    s->other_errors.store(true, std::memory_order_relaxed);
  }
  try {
    rt->shutdown();
  } catch (const weft::usage_error&) {
    s->shutdown_threw.store(true, std::memory_order_relaxed);
  } catch (...) {
    s->other_errors.store(true, std::memory_order_relaxed);
  }
  co_return 5;
}

TEST(ShutdownTest, BlockingCallsFromAWorkerThrowUsageError) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    misuse_state s;
    raii_counter rc;
    weft::runtime rt(with_workers(2));
    auto other = rt.spawn(plain_sleeper(&rc));  // join() on it would block for an hour
    auto h = rt.spawn(misuse_from_worker(&rt, &other, &s));
    EXPECT_EQ(h.join(), 5);
    EXPECT_TRUE(s.block_on_threw.load(std::memory_order_relaxed));
    EXPECT_TRUE(s.join_threw.load(std::memory_order_relaxed));
    EXPECT_TRUE(s.shutdown_threw.load(std::memory_order_relaxed));
    EXPECT_FALSE(s.other_errors.load(std::memory_order_relaxed));
    // The runtime still works, and the other task is untouched.
    EXPECT_FALSE(other.done());
    EXPECT_EQ(rt.block_on(value_task(6)), 6);
    EXPECT_TRUE(other.cancel("done"));
    EXPECT_THROW((void)other.join(), cancelled_error);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(ShutdownTest, BlockOnAfterShutdownOnAnIdleRuntimeDoesNotHang) {
  watchdog wd(30s);
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.block_on(value_task(1)), 1);
  rt.shutdown();
  EXPECT_THROW(rt.block_on(value_task(2)), cancelled_error);
}

// A spawn from outside the workers that read `stopping == false` and reaches
// the injection queue after shutdown's drain has finished must not be queued
// where no worker looks again: never run, never done, join() blocked forever.
// The test holds the runtime's injection mutex, so that a spawn from another
// thread stops right there -- after its look at `stopping` -- freezes that
// thread while it waits (tests/freezer.hpp), lets go of the mutex, runs
// shutdown() to the end and thaws the spawner.  Deterministic: the frozen
// thread waits for a mutex the test holds, so it holds none and took no
// wake-up.

void spawn_one(weft::runtime* rt, weft::join_handle<int>* h, std::atomic<bool>* calling) {
  calling->store(true, std::memory_order_relaxed);  // a sign of progress; publishes nothing
  freezable_region region;
  *h = rt->spawn(weft_test::value_task(3));
}

// A thread waits for this (glibc) mutex: its futex word says "contended".
bool has_waiter(std::mutex& m) { return m.native_handle()->__data.__lock == 2; }

TEST(ShutdownTest, ASpawnFromOutsideRacingTheDrainIsCancelledNotLost) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  freezer fz;
  for (int round = 0; round < 10; ++round) {
    weft::join_handle<int> h;
    std::atomic<bool> calling{false};
    std::atomic<weft::detail::runtime_impl*> impl{nullptr};
    weft::runtime rt(weft_test::with_workers(2));
    rt.block_on(find_runtime(&impl));
    weft::detail::runtime_impl* ri = impl.load(std::memory_order_relaxed);
    // Nothing is queued, so the workers do not touch the injection mutex.
    std::unique_lock<std::mutex> injection(ri->inject_mutex);
    std::thread spawner(spawn_one, &rt, &h, &calling);
    await_true(
        [&] { return calling.load(std::memory_order_relaxed) && has_waiter(ri->inject_mutex); });
    // The spawner waits for the mutex (so it saw the runtime running) and
    // holds nothing: freeze it there.
    while (!fz.try_freeze(spawner.native_handle())) {
    }
    injection.unlock();
    // (The shutdown report counts the spawn in flight: keep stderr quiet.)
    ::testing::internal::CaptureStderr();
    rt.shutdown();  // drains and joins every worker
    (void)::testing::internal::GetCapturedStderr();
    fz.thaw();
    spawner.join();
    ASSERT_TRUE(h.valid());
    EXPECT_TRUE(h.done()) << "a task spawned while shutdown drained was never run nor cancelled";
    if (!h.done()) break;  // (its frame is leaked)
    EXPECT_TRUE(h.cancelled());
    EXPECT_THROW(h.join(), weft::cancelled_error);
  }
}

// The shutdown report counts every task that can never finish: the tasks
// spawned from outside the workers as well as those spawned from tasks,
// whichever worker they finish on.  Two cycles of two tasks each must be
// reported as 2 tasks.

struct await_cycle {
  weft::event ready;
  weft::join_handle<int> a, b;
};

weft::task<int> await_other(weft::event* ready, weft::join_handle<int>* other) {
  co_await ready->wait();
  co_return co_await *other;
}

weft::task<int> make_cycle_inside(await_cycle* c) {
  c->a = weft::spawn(await_other(&c->ready, &c->b));
  c->b = weft::spawn(await_other(&c->ready, &c->a));
  c->ready.set();
  co_return 0;
}

// The frames of an await cycle can never be destroyed (weft reports and
// leaks them, as documented): tell LeakSanitizer that this leak is intended.
void expect_cycle_leaked(const await_cycle& c) {
  expect_leaked(c.a);
  expect_leaked(c.b);
}

std::string shutdown_report(weft::runtime& rt) {
  ::testing::internal::CaptureStderr();
  rt.shutdown();
  return ::testing::internal::GetCapturedStderr();
}

TEST(ShutdownTest, ReportCountsTasksSpawnedFromOutsideAndFromTasks) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  const std::string expected = "weft: shutdown: 2 task(s) can never finish";
  {
    await_cycle c;  // both spawned with runtime::spawn
    weft::runtime rt(weft_test::with_workers(1));
    c.a = rt.spawn(await_other(&c.ready, &c.b));
    c.b = rt.spawn(await_other(&c.ready, &c.a));
    c.ready.set();
    await_true([&] { return has_joiner(c.a) && has_joiner(c.b); });
    const std::string report = shutdown_report(rt);
    EXPECT_NE(report.find(expected), std::string::npos) << "spawned from outside: " << report;
    expect_cycle_leaked(c);
  }  // the cycle's frames are leaked, as documented
  {
    await_cycle c;  // both spawned from inside a task that was spawned from outside
    weft::runtime rt(weft_test::with_workers(1));
    EXPECT_EQ(rt.block_on(make_cycle_inside(&c)), 0);
    // One worker: b runs first and takes a inline; a then waits on b.
    await_true([&] { return has_joiner(c.b); });
    const std::string report = shutdown_report(rt);
    EXPECT_NE(report.find(expected), std::string::npos) << "spawned from a task: " << report;
    expect_cycle_leaked(c);
  }
}

}  // namespace
