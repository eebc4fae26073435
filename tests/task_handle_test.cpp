// SPDX-License-Identifier: MIT
// The current task (this_task::current, this_task::cancel, task_handle),
// task names (spawn_options), done callbacks, and outcomes read more than
// once (join_handle::result / exception).
#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "weft/testing.hpp"

// The tests' own atomics: every write is a release and every read an
// acquire, each pairing with the other side's (the counters and flags a task
// or callback sets and the test thread reads after a join or a latch).
namespace {

using namespace std::chrono_literals;
using weft_test::watchdog;

weft::task<void> sleep_forever() { co_await weft::sleep_for(std::chrono::hours(24 * 365)); }

weft::runtime_options two_workers() {
  weft::runtime_options o;
  o.workers = 2;
  return o;
}

// ---------------------------------------------------------------- current task

weft::task<bool> compares_itself(weft::task_handle* seen) {
  *seen = weft::this_task::current();
  co_return seen->valid() && !seen->done();
}

TEST(CurrentTaskTest, CurrentIsTheRunningTaskAndOutlivesIt) {
  watchdog wd(60s);
  weft::task_handle seen;
  weft::runtime rt(two_workers());
  weft::join_handle<bool> h = rt.spawn(compares_itself(&seen), {.name = "me"});
  EXPECT_TRUE(h.join());
  ASSERT_TRUE(seen.valid());
  EXPECT_TRUE(seen == h.ref());
  EXPECT_TRUE(seen.done());
  EXPECT_FALSE(seen.cancelled());
  EXPECT_EQ(seen.name(), "me");
  EXPECT_FALSE(seen.cancel("too late"));             // finished: nothing changes
  EXPECT_FALSE(weft::this_task::current().valid());  // not in a task
  EXPECT_FALSE(weft::this_task::cancel("not in a task"));
  EXPECT_EQ(weft::this_task::name(), "");
}

weft::task<int> cancels_itself(std::atomic<int>* after) {
  EXPECT_TRUE(weft::this_task::cancel("by myself"));
  EXPECT_EQ(weft::this_task::cancelling(), 1u);
  after->store(1, std::memory_order_relaxed);  // runs on: delivery waits for a cancellation point
  co_await weft::yield();
  after->store(2, std::memory_order_relaxed);  // never: yield() delivers it
  co_return 0;
}

TEST(CurrentTaskTest, ATaskCancelsItselfAtItsNextCancellationPoint) {
  watchdog wd(60s);
  std::atomic<int> after{0};
  weft::runtime rt(two_workers());
  weft::join_handle<int> h = rt.spawn(cancels_itself(&after));
  try {
    (void)h.join();
    ADD_FAILURE() << "no cancelled_error";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "by myself");
    EXPECT_EQ(e.kind(), weft::cancel_kind::explicit_request);
  }
  EXPECT_EQ(after.load(std::memory_order_acquire), 1);
  EXPECT_TRUE(h.cancelled());
}

// A task registers itself with a registry; another task cancels it from there.
struct registry {
  std::mutex mu;
  std::vector<weft::task_handle> tasks;
};

weft::task<void> registered_sleeper(registry* r, std::latch* in) {
  {
    std::lock_guard lk(r->mu);
    r->tasks.push_back(weft::this_task::current());
  }
  in->count_down();
  co_await weft::sleep_for(1h);
}

TEST(CurrentTaskTest, AHandleRegisteredElsewhereCancelsTheTaskFromAnotherThread) {
  watchdog wd(60s);
  registry r;
  std::latch in(4);
  weft::runtime rt(two_workers());
  std::vector<weft::join_handle<void>> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(rt.spawn(registered_sleeper(&r, &in)));
  in.wait();
  std::thread canceller([&] {
    std::lock_guard lk(r.mu);
    for (auto& t : r.tasks) EXPECT_TRUE(t.cancel("registry says stop"));
  });
  canceller.join();
  for (auto& h : hs) {
    EXPECT_THROW(h.join(), weft::cancelled_error);
    EXPECT_TRUE(h.cancelled());
  }
  std::lock_guard lk(r.mu);
  for (auto& t : r.tasks) {
    EXPECT_TRUE(t.done());
    EXPECT_TRUE(t.cancelled());
    ASSERT_TRUE(t.cancellation().has_value());
    EXPECT_EQ(t.cancellation()->reason(), "registry says stop");
  }
}

// Copies of a task_handle made and dropped on other threads while the task is
// joined inline by its owner (the inline join ends a task with a plain store
// unless something registered on it: the handle's first reference does).
weft::task<int> short_child(std::vector<weft::task_handle>* out) {
  out->push_back(weft::this_task::current());
  co_return 7;
}

weft::task<int> owner_joins_inline(int rounds, std::atomic<bool>* stop,
                                   std::atomic<weft::task_handle*>* shared) {
  int sum = 0;
  for (int i = 0; i < rounds; ++i) {
    std::vector<weft::task_handle> refs;
    refs.reserve(1);
    weft::join_handle<int> h = weft::spawn(short_child(&refs));
    sum += co_await h;  // usually inline: the child is still at the bottom of our deque
    shared->store(&refs[0], std::memory_order_release);  // pairs with the copier's acquire
    while (shared->load(std::memory_order_acquire) != nullptr && !stop->load()) {
      co_await weft::yield();
    }
  }
  stop->store(true);
  co_return sum;
}

TEST(CurrentTaskTest, HandlesCopiedOnAnotherThreadDuringInlineJoinsKeepTheFrameAlive) {
  watchdog wd(120s);
  const int rounds = static_cast<int>(weft_test::scaled(2000, 200));
  std::atomic<bool> stop{false};
  std::atomic<weft::task_handle*> shared{nullptr};
  weft::runtime rt(two_workers());
  std::thread copier([&] {
    while (!stop.load(std::memory_order_acquire)) {
      if (weft::task_handle* t = shared.load(std::memory_order_acquire)) {
        for (int k = 0; k < 8; ++k) {
          weft::task_handle copy = *t;  // add_ref racing nothing: the owner waits
          EXPECT_TRUE(copy.done());
        }
        shared.store(nullptr, std::memory_order_release);  // pairs with the owner's acquire
      }
    }
  });
  EXPECT_EQ(rt.block_on(owner_joins_inline(rounds, &stop, &shared)), 7 * rounds);
  stop.store(true, std::memory_order_release);
  copier.join();
}

// ---------------------------------------------------------------- names

weft::task<std::string> my_name() { co_return weft::this_task::name(); }

weft::task<void> spawns_named(std::vector<std::string>* out) {
  auto a = weft::spawn(my_name(), {.name = "child a"});
  auto b = weft::spawn(my_name());
  out->push_back(a.name());
  out->push_back(co_await a);
  out->push_back(b.name());
  out->push_back(co_await b);
}

TEST(TaskNameTest, SpawnOptionsNameTheTaskForItselfAndItsHandles) {
  watchdog wd(60s);
  std::vector<std::string> out;
  weft::runtime rt(two_workers());
  weft::join_handle<void> h = rt.spawn(spawns_named(&out), {.name = "parent"});
  EXPECT_EQ(h.name(), "parent");
  h.join();
  EXPECT_EQ(h.name(), "parent");  // also after the outcome was taken
  EXPECT_EQ(out, (std::vector<std::string>{"child a", "child a", "", ""}));
  weft::join_handle<void> empty;
  EXPECT_EQ(empty.name(), "");
}

weft::task<void> throws_named() {
  co_await weft::yield();
  throw std::runtime_error("nobody listens");
}

TEST(TaskNameTest, TheUnhandledExceptionReportNamesTheTaskAndItsSpawnSite) {
  watchdog wd(60s);
  ::testing::internal::CaptureStderr();
  {
    weft::runtime rt(two_workers());
    weft::join_handle<void> h = rt.spawn(throws_named(), {.name = "lonely"});
    EXPECT_TRUE(weft_test::wait_done(h));
  }  // the handle goes first, unobserved: reported
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("weft: exception in a task nobody awaited: nobody listens (task \"lonely\", "
                     "spawned at "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("task_handle_test.cpp:"), std::string::npos) << err;
}

weft::task<void> outlives_shutdown(std::latch* in, weft::event* release) {
  in->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
  }
  co_await release->wait();  // waits during shutdown: the report names it
}

weft::task<void> spawns_and_awaits(std::latch* in, weft::event* release) {
  weft::join_handle<void> h = weft::spawn(outlives_shutdown(in, release), {.name = "stubborn"});
  co_await h;  // one worker: runs it inline, so this task awaits it from the start
}

TEST(TaskNameTest, TheShutdownReportNamesBlockedAndAwaitingTasks) {
  watchdog wd(120s);
  std::latch in(1);
  weft::event release;
  std::vector<std::string> reports;
  std::mutex mu;
  weft::runtime_options o;
  o.workers = 1;
  o.shutdown_report_after = 50ms;
  o.on_shutdown_report = [&](const weft::shutdown_report& r) {
    {
      std::lock_guard lk(mu);
      reports.push_back(r.to_string());
    }
    release.set();  // one report is enough: let the task end
  };
  weft::join_handle<void> patient;
  {
    weft::runtime rt(o);
    patient = rt.spawn(spawns_and_awaits(&in, &release), {.name = "patient"});
    in.wait();
    rt.shutdown();
  }
  std::lock_guard lk(mu);
  ASSERT_FALSE(reports.empty());
  EXPECT_NE(reports[0].find("task \"stubborn\" spawned at "), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("task \"patient\" spawned at "), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("awaiting the task \"stubborn\" spawned at "), std::string::npos)
      << reports[0];
}

// ---------------------------------------------------------------- done callbacks

TEST(DoneCallbackTest, CallbacksRunOnceInOrderAfterTheOutcomeIsWritten) {
  watchdog wd(60s);
  std::latch go(1);
  std::mutex mu;
  std::vector<std::string> calls;
  weft::runtime rt(two_workers());
  weft::join_handle<int> h = rt.spawn([](std::latch* g) -> weft::task<int> {
    co_await weft::blocking([g] { g->wait(); });
    co_return 5;
  }(&go));
  weft::task_handle t = h.ref();
  for (const char* name : {"first", "second", "third"}) {
    h.add_done_callback([&, name, t] {
      EXPECT_TRUE(t.done());  // the outcome is written before callbacks run
      std::lock_guard lk(mu);
      calls.emplace_back(name);
    });
  }
  go.count_down();
  EXPECT_EQ(h.join(), 5);
  {
    std::lock_guard lk(mu);
    EXPECT_EQ(calls, (std::vector<std::string>{"first", "second", "third"}));
  }
  // Added after the end: runs at once, here.
  const std::thread::id here = std::this_thread::get_id();
  bool ran = false;
  h.add_done_callback([&] { ran = std::this_thread::get_id() == here; });
  EXPECT_TRUE(ran);
}

TEST(DoneCallbackTest, CallbacksRunForCancelledAndUnstartedTasksAndThrowingOnesAreReported) {
  watchdog wd(60s);
  std::atomic<int> ran{0};
  std::vector<std::exception_ptr> hooked;
  std::mutex mu;
  weft::runtime_options o = two_workers();
  o.unhandled_exception = [&](std::exception_ptr e) {
    std::lock_guard lk(mu);
    hooked.push_back(e);
  };
  {
    weft::runtime rt(o);
    weft::join_handle<void> h = rt.spawn(sleep_forever());
    h.add_done_callback([&] { ran.fetch_add(1, std::memory_order_release); });
    h.add_done_callback([] { throw std::logic_error("callback broke"); });
    h.add_done_callback([&] {
      ran.fetch_add(10, std::memory_order_release);
    });  // still runs after the throwing one
    h.cancel("stop");
    EXPECT_THROW(h.join(), weft::cancelled_error);
  }
  EXPECT_EQ(ran.load(std::memory_order_acquire), 11);
  std::lock_guard lk(mu);
  ASSERT_EQ(hooked.size(), 1u);
  EXPECT_EQ(weft::describe(hooked[0]), "callback broke");
}

// The registration races the completion: every callback runs exactly once.
// An await or join() that finds the task done may continue while the
// completing thread still runs them (as in asyncio, where they are queued),
// so the count is awaited with a bound, then checked for no extra run.
weft::task<int> adds_callbacks_and_awaits(std::atomic<int>* ran) {
  weft::join_handle<int> h = weft::spawn([]() -> weft::task<int> { co_return 1; }());
  for (int k = 0; k < 3; ++k)
    h.add_done_callback([ran] { ran->fetch_add(1, std::memory_order_release); });
  co_return co_await h;
}

TEST(DoneCallbackTest, CallbacksAddedWhileTheTaskFinishesRunExactlyOnce) {
  watchdog wd(120s);
  const int rounds = static_cast<int>(weft_test::scaled(3000, 300));
  weft::runtime rt(two_workers());
  for (int i = 0; i < rounds; ++i) {
    std::atomic<int> ran{0};
    ASSERT_EQ(rt.block_on(adds_callbacks_and_awaits(&ran)), 1) << "round " << i;
    ASSERT_TRUE(weft_test::spin_until([&] { return ran.load(std::memory_order_acquire) == 3; }))
        << "round " << i;
    std::atomic<int> joined{0};
    weft::join_handle<int> h = rt.spawn([]() -> weft::task<int> { co_return 1; }());
    for (int k = 0; k < 3; ++k)
      h.add_done_callback([&joined] { joined.fetch_add(1, std::memory_order_release); });
    EXPECT_EQ(h.join(), 1);
    ASSERT_TRUE(weft_test::spin_until([&] { return joined.load(std::memory_order_acquire) == 3; }))
        << "round " << i;
    h = {};  // drop it: the callbacks are done with `joined`
    EXPECT_EQ(joined.load(std::memory_order_acquire), 3);
  }
}

// ---------------------------------------------------------------- result()

weft::task<std::string> word() { co_return "again"; }
weft::task<int> fails_with(std::string what) {
  co_await weft::yield();
  throw std::invalid_argument(what);
}

TEST(ResultTest, AFinishedOutcomeIsReadManyTimesThenStillTakenOnce) {
  watchdog wd(60s);
  weft::runtime rt(two_workers());
  weft::join_handle<void> running = rt.spawn(sleep_forever());
  EXPECT_THROW(running.result(), weft::usage_error);  // not finished
  EXPECT_THROW((void)running.exception(), weft::usage_error);
  running.cancel();
  weft::join_handle<std::string> h = rt.spawn(word());
  ASSERT_TRUE(weft_test::wait_done(h));
  EXPECT_EQ(h.result(), "again");
  EXPECT_EQ(h.result(), "again");
  EXPECT_EQ(h.exception(), nullptr);
  EXPECT_EQ(h.join(), "again");                       // the one take
  EXPECT_THROW((void)h.result(), weft::usage_error);  // taken
  EXPECT_THROW(h.join(), weft::usage_error);

  weft::join_handle<int> f = rt.spawn(fails_with("bad"));
  ASSERT_TRUE(weft_test::wait_done(f));
  for (int i = 0; i < 3; ++i) EXPECT_THROW((void)f.result(), std::invalid_argument);
  ASSERT_NE(f.exception(), nullptr);
  EXPECT_EQ(weft::describe(f.exception()), "bad");
  EXPECT_THROW((void)f.join(), std::invalid_argument);

  weft::join_handle<void> c = rt.spawn(sleep_forever());
  c.cancel("stop it");
  ASSERT_TRUE(weft_test::wait_done(c));
  for (int i = 0; i < 2; ++i) {
    try {
      c.result();
      ADD_FAILURE() << "no cancelled_error";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), "stop it");
    }
  }
  EXPECT_THROW((void)c.exception(), weft::cancelled_error);  // asyncio: CancelledError
  weft::join_handle<void> empty;
  EXPECT_THROW(empty.result(), weft::usage_error);
}

TEST(ResultTest, AnExceptionReadByResultIsNotReportedAsUnhandled) {
  watchdog wd(60s);
  std::mutex mu;
  std::vector<std::string> hooked;
  weft::runtime_options o = two_workers();
  o.unhandled_exception = [&](std::exception_ptr e) {
    std::lock_guard lk(mu);
    hooked.push_back(weft::describe(e));
  };
  weft::runtime rt(o);
  {
    weft::join_handle<int> read = rt.spawn(fails_with("seen"));
    weft::join_handle<int> unread = rt.spawn(fails_with("unseen"));
    ASSERT_TRUE(weft_test::wait_done(read));
    ASSERT_TRUE(weft_test::wait_done(unread));
    EXPECT_NE(read.exception(), nullptr);
  }  // both dropped without taking their outcome
  std::lock_guard lk(mu);
  EXPECT_EQ(hooked, std::vector<std::string>{"unseen"});
}

weft::task<int> reads_then_awaits(weft::join_handle<int>* h) {
  while (!h->done()) co_await weft::yield();
  const int a = h->result();
  const int b = h->result();
  const int c = co_await *h;
  co_return a + b + c;
}

TEST(ResultTest, ATaskReadsAHandlesResultThenAwaitsIt) {
  watchdog wd(60s);
  weft::runtime rt(two_workers());
  weft::join_handle<int> h = rt.spawn([]() -> weft::task<int> { co_return 4; }());
  EXPECT_EQ(rt.block_on(reads_then_awaits(&h)), 12);
}

// ---------------------------------------------------------------- simulation

// this_task::cancel, callbacks and result() at every resume point: each run
// must see every callback exactly once and a consistent outcome.
TEST(TaskHandleSimTest, SelfCancelCallbacksAndResultHoldAtEveryResumePoint) {
  watchdog wd(300s);
  int callbacks = 0;
  int tasks = 0;
  weft::testing::options o;
  o.name = "TaskHandleSim.SelfCancel";
  o.log = nullptr;
  o.seeds = 50;
  o.pct_seeds = 50;
  o.cancel_seeds = 3;
  o.after_each = [&] {
    weft::testing::check(callbacks == tasks, "a done callback was lost or ran twice");
  };
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        callbacks = 0;
        tasks = 0;
        std::vector<weft::join_handle<int>> hs;
        for (int i = 0; i < 3; ++i) {
          hs.push_back(weft::spawn([](int k) -> weft::task<int> {
            co_await weft::yield();
            if (k == 1) weft::this_task::cancel("self");
            co_await weft::yield();
            co_return k;
          }(i)));
          ++tasks;
          hs.back().add_done_callback([&callbacks] { ++callbacks; });
        }
        weft::testing::check(weft::this_task::current().valid(), "no current task in the body");
        for (auto& h : hs) {
          if (h.done()) {  // read the outcome without taking it, then take it
            try {
              (void)h.result();
              (void)h.result();
            } catch (const weft::cancelled_error&) {
            }
          }
          try {
            (void)co_await h;
          } catch (const weft::cancelled_error&) {
          }
          weft::testing::check(h.done(), "awaited but not done");
        }
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, 100u + 20u) << r.to_string();  // every seed and some cancel points ran
}

}  // namespace
