// SPDX-License-Identifier: MIT
// The examples of docs/cancellation.md, compiled and run.
//
// Every ```cpp block of docs/cancellation.md is copied verbatim from this file;
// DocsExamplesTest.EveryDocBlockIsCopiedFromThisFile checks that, so the doc
// and its tests cannot drift apart silently.  Edit an example here first, then
// paste it into the doc.
//
// House rules (tests/test_support.hpp): no wall-clock sleeps as
// synchronisation, a watchdog in every test that starts a runtime, coroutines
// are free functions that take their state by pointer, and that state is
// declared before the runtime so it outlives every task.
// clang-format off: docs/cancellation.md copies blocks of this file verbatim,
// and EveryDocBlockIsCopiedFromThisFile compares the text.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <latch>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------- create_task

weft::task<int> add(int a, int b) { co_return a + b; }

weft::task<int> add_in_parallel() {
  weft::join_handle<int> x = weft::spawn(add(1, 2));  // asyncio.create_task
  weft::join_handle<int> y = weft::spawn(add(3, 4));
  int a = co_await x;  // await x
  int b = co_await y;
  co_return a + b;
}

TEST(DocsExamplesTest, CreateTaskIsSpawn) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  weft::join_handle<int> h = rt.spawn(add(20, 22));  // from any thread
  EXPECT_EQ(h.join(), 42);                           // blocking wait, not on a worker
  EXPECT_EQ(rt.block_on(add_in_parallel()), 10);
}

// ---------------------------------------------------------------- asyncio.run

weft::task<std::string> greet(std::string who) { co_return "hello, " + who; }

weft::task<bool> block_on_inside_a_task(weft::runtime* rt) {
  try {
    (void)rt->block_on(greet("again"));  // would block this worker
  } catch (const weft::usage_error&) {
    co_return true;  // weft refuses instead of deadlocking
  }
  co_return false;
}

TEST(DocsExamplesTest, AsyncioRunIsBlockOn) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(greet("weft")), "hello, weft");
  EXPECT_TRUE(rt.block_on(block_on_inside_a_task(&rt)));
}  // ~runtime() does rt.shutdown()

// ---------------------------------------------------------------- Task.cancel(msg)

weft::task<std::string> heavy_process(std::latch* started) {
  started->count_down();
  try {
    co_await weft::sleep_for(5s);
  } catch (const weft::cancelled_error& e) {
    co_return "Canceled: " + std::string(e.reason());
  }
  co_return "Finished";
}

TEST(DocsExamplesTest, TaskCancelIsJoinHandleCancel) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  weft::runtime rt;
  weft::join_handle<std::string> h = rt.spawn(heavy_process(&started));
  started.wait();  // (the asyncio original sleeps 1 s here)
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(h.cancel("user pressed stop"));
  EXPECT_EQ(h.join(), "Canceled: user pressed stop");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // the 5 s sleep was cut short
  EXPECT_FALSE(h.cancelled());  // it caught the error and returned a value
  EXPECT_FALSE(h.cancel("again"));  // already finished: false, nothing changes
}

// ---------------------------------------------------------------- CancelledError

struct what_the_task_saw {
  std::string reason;
  weft::cancel_kind kind = weft::cancel_kind::timeout;
  unsigned line = 0;
  std::string what;
};

weft::task<void> record_cancel(std::latch* started, what_the_task_saw* saw) {
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error& e) {
    saw->reason = e.reason();
    saw->kind = e.kind();
    saw->line = e.where().line();  // where cancel() was called
    saw->what = e.what();
    throw;  // finish as cancelled
  }
}

TEST(DocsExamplesTest, CancelledErrorCarriesReasonKindAndWhere) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  what_the_task_saw saw;
  weft::runtime rt;
  weft::join_handle<void> h = rt.spawn(record_cancel(&started, &saw));
  started.wait();
  const unsigned cancel_line = __LINE__; h.cancel("enough");
  try {
    h.join();
    ADD_FAILURE() << "join() did not throw";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "enough");  // the awaiter sees the same request
  }
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(saw.reason, "enough");
  EXPECT_EQ(saw.kind, weft::cancel_kind::explicit_request);
  EXPECT_EQ(weft::to_string(saw.kind), "explicit");
  EXPECT_EQ(saw.line, cancel_line);
  EXPECT_EQ(saw.what, "cancelled: enough");
}

// ---------------------------------------------------------------- try/finally

struct cleanup_log {
  std::vector<std::string> lines;
};

struct log_on_exit {  // `finally`, the C++ way
  cleanup_log* log;
  const char* text;
  ~log_on_exit() { log->lines.push_back(text); }
};

weft::task<void> with_cleanup(std::latch* started, cleanup_log* log) {
  log_on_exit guard{log, "RAII guard"};
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (...) {  // except BaseException: clean up, then raise
    log->lines.push_back("catch block");
    throw;
  }
}

TEST(DocsExamplesTest, TryFinallyIsRaiiOrCatchAndRethrow) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  cleanup_log log;
  weft::runtime rt;
  weft::join_handle<void> h = rt.spawn(with_cleanup(&started, &log));
  started.wait();
  h.cancel("stop");
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_TRUE(h.cancelled());
  EXPECT_EQ(log.lines, (std::vector<std::string>{"catch block", "RAII guard"}));
}

// ---------------------------------------------------------------- refusing, uncancel()

weft::task<int> refuse_once(std::latch* started) {
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    weft::this_task::uncancel();  // asyncio: current_task().uncancel()
  }
  co_await weft::yield();  // delivery is one-shot: nothing is thrown here
  co_return 7;
}

TEST(DocsExamplesTest, RefusingACancelWithUncancel) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  weft::runtime rt;
  weft::join_handle<int> h = rt.spawn(refuse_once(&started));
  started.wait();
  EXPECT_TRUE(h.cancel("please stop"));
  EXPECT_EQ(h.join(), 7);
  EXPECT_TRUE(h.done());
  EXPECT_FALSE(h.cancelled());
  EXPECT_EQ(h.cancelling(), 0u);  // the task withdrew the request it refused
}

// ---------------------------------------------------------------- no resume point

weft::task<long> spin_without_awaits(std::latch* started, std::atomic<bool>* stop) {
  started->count_down();
  long n = 0;
  // Relaxed: a stop flag; it publishes nothing.
  while (!stop->load(std::memory_order_relaxed)) ++n;  // no co_await: no cancel is delivered here
  co_return n;
}

TEST(DocsExamplesTest, ALoopWithoutResumePointsCannotBeCancelled) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  std::atomic<bool> stop{false};
  weft::runtime rt;
  weft::join_handle<long> h = rt.spawn(spin_without_awaits(&started, &stop));
  started.wait();
  EXPECT_TRUE(h.cancel("too late"));  // accepted, but never delivered
  EXPECT_EQ(h.cancelling(), 1u);
  stop.store(true, std::memory_order_relaxed);
  EXPECT_GE(h.join(), 0);       // completed despite the cancel
  EXPECT_FALSE(h.cancelled());  // ... and the handle says so
  EXPECT_EQ(h.cancelling(), 1u);
}

TEST(DocsExamplesTest, CancellingCountsRequestsAndUncancelWithdrawsThem) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  std::atomic<bool> stop{false};
  weft::runtime rt;
  weft::join_handle<long> h = rt.spawn(spin_without_awaits(&started, &stop));
  started.wait();
  h.cancel("one");
  h.cancel("two");  // replaces the undelivered "one"
  EXPECT_EQ(h.cancelling(), 2u);
  EXPECT_EQ(h.uncancel(), 1u);
  EXPECT_EQ(h.uncancel(), 0u);  // at zero the undelivered request is dropped too
  stop.store(true, std::memory_order_relaxed);
  EXPECT_GE(h.join(), 0);
  EXPECT_FALSE(h.cancelled());
}

// ---------------------------------------------------------------- current_task()

weft::task<unsigned> poll_for_cancel(std::latch* started) {
  started->count_down();
  while (!weft::this_task::cancel_requested()) {  // a look; consumes nothing
    std::this_thread::yield();
  }
  const unsigned n = weft::this_task::cancelling();  // current_task().cancelling()
  try {
    weft::this_task::throw_if_cancel_requested();  // delivers it right here
  } catch (const weft::cancelled_error&) {
    co_return n;
  }
  co_return 0;
}

TEST(DocsExamplesTest, CurrentTaskCancellingIsThisTaskCancelling) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  weft::runtime rt;
  weft::join_handle<unsigned> h = rt.spawn(poll_for_cancel(&started));
  started.wait();
  h.cancel();
  EXPECT_EQ(h.join(), 1u);
  EXPECT_FALSE(h.cancelled());  // it caught the error and returned
}

// ---------------------------------------------------------------- asyncio.sleep(0)

// Relaxed, the flag everywhere: it publishes nothing, and the test reads it
// after block_on().
weft::task<void> wait_for_flag(std::atomic<bool>* flag) {
  while (!flag->load(std::memory_order_relaxed)) {
    co_await weft::yield();  // asyncio.sleep(0): let the others run
  }
}

weft::task<void> set_flag(std::atomic<bool>* flag) {
  flag->store(true, std::memory_order_relaxed);
  co_return;
}

weft::task<void> two_tasks(std::atomic<bool>* flag) {
  weft::join_handle<void> setter = weft::spawn(set_flag(flag));
  weft::join_handle<void> waiter = weft::spawn(wait_for_flag(flag));
  co_await waiter;  // without the yield() this would never finish on one worker
  co_await setter;
}

TEST(DocsExamplesTest, SleepZeroIsYield) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::atomic<bool> flag{false};
  weft::runtime_options one_worker;
  one_worker.workers = 1;
  weft::runtime rt(one_worker);
  rt.block_on(two_tasks(&flag));
  EXPECT_TRUE(flag.load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------- await task

weft::task<int> child_sleeps(std::latch* started, bool refuse, std::string* seen) {
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error& e) {
    *seen = e.reason();  // the parent's cancel reached the child
    if (refuse) co_return 5;
    throw;
  }
  co_return 1;
}

weft::task<int> parent_awaits(std::latch* started, bool refuse, std::string* seen) {
  weft::join_handle<int> child = weft::spawn(child_sleeps(started, refuse, seen));
  co_return co_await child;  // cancel(parent) is forwarded to `child`
}

TEST(DocsExamplesTest, CancellingAnAwaiterCancelsTheAwaitedTask) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  std::string seen;
  weft::runtime rt;
  weft::join_handle<int> parent = rt.spawn(parent_awaits(&started, false, &seen));
  started.wait();
  parent.cancel("stop both");
  EXPECT_THROW(parent.join(), weft::cancelled_error);
  EXPECT_TRUE(parent.cancelled());
  EXPECT_EQ(seen, "stop both");
}

TEST(DocsExamplesTest, TheAwaiterGetsTheOutcomeOfTheAwaitedTask) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  std::string seen;
  weft::runtime rt;
  weft::join_handle<int> parent = rt.spawn(parent_awaits(&started, true, &seen));
  started.wait();
  parent.cancel("stop both");
  EXPECT_EQ(parent.join(), 5);  // the child refused: its value comes through
  EXPECT_FALSE(parent.cancelled());
  EXPECT_EQ(seen, "stop both");
}

// ---------------------------------------------------------------- cancel, then await

weft::task<std::string> sleeper() {
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error&) {
    co_return "Canceled";
  }
  co_return "Finished";
}

weft::task<std::string> cancel_then_await() {
  weft::join_handle<std::string> h = weft::spawn(sleeper());
  co_await weft::sleep_for(10ms);  // the child is now asleep
  h.cancel();
  co_return co_await h;  // the child's own answer
}

TEST(DocsExamplesTest, CancelATaskThenAwaitIt) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime_options one_worker;
  one_worker.workers = 1;
  weft::runtime rt(one_worker);
  EXPECT_EQ(rt.block_on(cancel_then_await()), "Canceled");
}

// ---------------------------------------------------------------- before the first run

weft::task<void> set_true(bool* ran) {
  *ran = true;
  co_return;
}

weft::task<bool> cancel_before_start(bool* ran) {
  weft::join_handle<void> h = weft::spawn(set_true(ran));
  h.cancel("changed my mind");  // one worker, and it is busy with us
  try {
    co_await h;
  } catch (const weft::cancelled_error&) {
    co_return h.cancelled();
  }
  co_return false;
}

TEST(DocsExamplesTest, CancelledBeforeItStartsTheBodyNeverRuns) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  bool ran = false;
  weft::runtime_options one_worker;
  one_worker.workers = 1;
  weft::runtime rt(one_worker);
  EXPECT_TRUE(rt.block_on(cancel_before_start(&ran)));
  EXPECT_FALSE(ran);
}

// ---------------------------------------------------------------- CPU-bound loops

weft::task<void> crunch(std::latch* started) {
  started->count_down();
  for (unsigned long i = 0;; ++i) {
    if (i % 1024 == 0) {
      co_await weft::checkpoint();  // a few ns, unless the slice is spent or a cancel waits
    }
  }
}

TEST(DocsExamplesTest, CpuLoopWithCheckpointIsCancellable) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  weft::runtime rt;
  weft::join_handle<void> h = rt.spawn(crunch(&started));
  started.wait();
  const auto t0 = std::chrono::steady_clock::now();
  h.cancel("enough crunching");
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(h.cancelled());
}

weft::task<void> crunch_until(std::atomic<bool>* flag) {
  while (!flag->load(std::memory_order_relaxed)) {
    co_await weft::checkpoint();  // reschedules once the time slice is spent
  }
}

weft::task<void> crunchers(std::atomic<bool>* flag) {
  weft::join_handle<void> setter = weft::spawn(set_flag(flag));
  weft::join_handle<void> cruncher = weft::spawn(crunch_until(flag));
  co_await cruncher;  // finishes because checkpoint() lets `setter` run
  co_await setter;
}

TEST(DocsExamplesTest, CheckpointSharesTheWorkerAfterATimeSlice) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::atomic<bool> flag{false};
  weft::runtime_options one_worker;
  one_worker.workers = 1;
  one_worker.time_slice = std::chrono::milliseconds(1);
  weft::runtime rt(one_worker);
  rt.block_on(crunchers(&flag));
  EXPECT_TRUE(flag.load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------- shutdown

weft::task<std::string> until_shutdown(std::latch* started, std::string* cleanup) {
  started->count_down();
  try {
    co_await weft::sleep_for(1h);
  } catch (const weft::cancelled_error& e) {
    *cleanup = std::string(weft::to_string(e.kind())) + ": " + std::string(e.reason());
    throw;
  }
  co_return "slept";
}

TEST(DocsExamplesTest, ShutdownCancelsEveryTaskWithReasonShutdown) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1};
  std::string cleanup;
  weft::runtime rt;
  weft::join_handle<std::string> h = rt.spawn(until_shutdown(&started, &cleanup));
  started.wait();
  rt.shutdown();  // the destructor would do the same
  EXPECT_EQ(cleanup, "shutdown: shutdown");  // the task ran its cleanup
  EXPECT_TRUE(h.cancelled());
  weft::join_handle<std::string> late = rt.spawn(greet("late"));
  EXPECT_TRUE(late.cancelled());  // spawn after shutdown: cancelled, never runs
  EXPECT_THROW(late.join(), weft::cancelled_error);
}

// ---------------------------------------------------------------- asyncio.shield

weft::task<int> slow_answer(std::latch* started) {
  started->count_down();
  co_await weft::sleep_for(200ms);
  co_return 42;
}

weft::task<std::string> shielded_wait(std::latch* waiting, weft::join_handle<int>* h) {
  waiting->count_down();
  try {
    co_return std::to_string(co_await weft::shield(*h));
  } catch (const weft::cancelled_error& e) {
    co_return "shield cancelled: " + std::string(e.reason());
  }
}

TEST(DocsExamplesTest, ShieldKeepsTheAwaitedTaskRunning) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::latch started{1}, waiting{1};
  weft::runtime rt;
  weft::join_handle<int> inner = rt.spawn(slow_answer(&started));
  started.wait();
  weft::join_handle<std::string> outer = rt.spawn(shielded_wait(&waiting, &inner));
  waiting.wait();
  outer.cancel("outer only");
  EXPECT_EQ(outer.join(), "shield cancelled: outer only");
  EXPECT_EQ(inner.join(), 42);  // the shielded task ran on
  EXPECT_FALSE(inner.cancelled());
}

// ---------------------------------------------------------------- asyncio.wait_for

weft::task<std::string> slow_process(std::string* seen_kind) {
  try {
    co_await weft::sleep_for(3s);
  } catch (const weft::cancelled_error& e) {
    *seen_kind = weft::to_string(e.kind());  // "timeout"
    throw;  // let the timeout win
  }
  co_return "done";
}

weft::task<std::string> with_timeout(std::string* seen_kind) {
  try {
    co_return co_await weft::wait_for(slow_process(seen_kind), 50ms);
  } catch (const weft::timeout_error&) {
    co_return "timed out";
  }
}

TEST(DocsExamplesTest, AsyncioWaitForIsWeftWaitFor) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::string seen_kind;
  weft::runtime rt;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(rt.block_on(with_timeout(&seen_kind)), "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // not the 3 s of the sleep
  EXPECT_EQ(seen_kind, "timeout");
}

// ---------------------------------------------------------------- asyncio.Event

weft::task<std::string> wait_for_go(weft::event* go) {
  co_await go->wait();  // asyncio: await go.wait(); a cancellation point
  co_return "went";
}

TEST(DocsExamplesTest, AsyncioEventIsWeftEvent) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::event go;  // declared before the runtime: it outlives every waiter
  weft::runtime rt;
  weft::join_handle<std::string> h = rt.spawn(wait_for_go(&go));
  go.set();  // from any thread
  EXPECT_EQ(h.join(), "went");
  EXPECT_TRUE(go.is_set());
}

// ---------------------------------------------------------------- TaskGroup as `async with`: task_scope

weft::task<int> fetch_size(int i) {
  if (i == 3) throw std::runtime_error("fetch 3 failed");
  co_await weft::sleep_for(std::chrono::milliseconds(i));
  co_return 100 * i;
}

weft::task<std::string> fetch_all(std::vector<int>* sizes) {
  try {
    co_await weft::task_scope([&](weft::task_group& g) -> weft::task<void> {
      for (int i = 0; i < 5; ++i) {
        (void)g.spawn([](int k, std::vector<int>* out) -> weft::task<void> {
          out->push_back(co_await fetch_size(k));  // one worker below: no data race
        }(i, sizes));
      }
      co_await weft::sleep_for(std::chrono::hours(1));  // cancelled when fetch 3 fails
    });
  } catch (const weft::task_group_error& e) {
    co_return e.what();  // every child was finished (or cancelled) by now
  }
  co_return "no failure";
}

TEST(DocsExamplesTest, AsyncWithTaskGroupIsTaskScope) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::vector<int> sizes;
  weft::runtime_options o;
  o.workers = 1;
  weft::runtime rt(o);
  const std::string what = rt.block_on(fetch_all(&sizes));
  EXPECT_NE(what.find("fetch 3 failed"), std::string::npos) << what;
  EXPECT_LE(sizes.size(), 3u);  // 0, 1 and 2 may have finished first
}

// ---------------------------------------------------------------- current_task, names, done callbacks, result()

weft::task<void> worker_loop(std::vector<weft::task_handle>* registry, std::latch* in) {
  registry->push_back(weft::this_task::current());  // asyncio.current_task()
  in->count_down();
  co_await weft::sleep_for(std::chrono::hours(1));
}

TEST(DocsExamplesTest, CurrentTaskNamesCallbacksAndResult) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::vector<weft::task_handle> registry;  // declared before the runtime: outlives the tasks
  std::atomic<int> finished{0};
  std::latch in(1);
  weft::runtime rt;
  weft::join_handle<void> h = rt.spawn(worker_loop(&registry, &in), {.name = "loop 1"});
  h.add_done_callback([&finished] { finished.fetch_add(1, std::memory_order_release); });  // on the completing thread
  in.wait();
  EXPECT_EQ(registry[0].name(), "loop 1");
  registry[0].cancel("registry closed");  // cancel it through its task_handle
  EXPECT_TRUE(weft_test::wait_done(h));
  EXPECT_THROW(h.result(), weft::cancelled_error);  // read as often as you like
  EXPECT_THROW(h.result(), weft::cancelled_error);
  EXPECT_TRUE(weft_test::spin_until([&] { return finished.load(std::memory_order_acquire) == 1; }));
}

// ---------------------------------------------------------------- asyncio.wait, as_completed, gather(return_exceptions=True)

weft::task<int> answer_now(int v) { co_return v; }
weft::task<int> answer_after(weft::event* go, int v) {
  co_await go->wait();
  co_return v;
}

weft::task<std::string> first_of_two(std::vector<weft::join_handle<int>>* hs) {
  // asyncio: done, pending = await asyncio.wait(tasks, timeout=1, return_when=FIRST_COMPLETED)
  auto [done, pending] = co_await weft::wait(*hs, weft::return_when::first_completed, 1s);
  const int first = co_await *done.front();  // not taken by wait(): done, so no suspension
  co_return std::to_string(first) + " done, " + std::to_string(pending.size()) + " pending";
}

TEST(DocsExamplesTest, AsyncioWaitIsWeftWait) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::event go;
  std::vector<weft::join_handle<int>> hs;  // before the runtime: it outlives them
  weft::runtime rt;
  hs.push_back(rt.spawn(answer_after(&go, 1)));
  hs.push_back(rt.spawn(answer_now(2)));
  EXPECT_EQ(rt.block_on(first_of_two(&hs)), "2 done, 1 pending");
  EXPECT_EQ(hs[0].cancelling(), 0u);  // wait() cancels nothing, not even on its timeout
  go.set();
  EXPECT_EQ(hs[0].join(), 1);
}

weft::task<int> answer_in(std::chrono::milliseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

weft::task<std::vector<int>> in_completion_order() {
  std::vector<weft::join_handle<int>> hs;
  hs.push_back(weft::spawn(answer_in(30ms, 0)));
  hs.push_back(weft::spawn(answer_in(10ms, 1)));
  hs.push_back(weft::spawn(answer_in(20ms, 2)));
  std::vector<int> order;
  auto seq = weft::as_completed(hs);  // asyncio: for t in asyncio.as_completed(tasks):
  while (weft::join_handle<int>* h = co_await seq.next()) order.push_back(co_await *h);
  co_return order;
}

TEST(DocsExamplesTest, AsyncioAsCompletedIsWeftAsCompleted) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime_options o;
  o.simulation = weft::sim::options{};  // virtual time: the sleeps cost nothing
  weft::runtime rt(o);
  EXPECT_EQ(rt.block_on(in_completion_order()), (std::vector<int>{1, 2, 0}));
}

weft::task<int> fails() {
  throw std::runtime_error("boom");
  co_return 0;
}

weft::task<std::string> gather_everything() {
  std::vector<weft::join_handle<int>> hs;
  hs.push_back(weft::spawn(answer_now(1)));
  hs.push_back(weft::spawn(fails()));
  // asyncio: results = await asyncio.gather(*tasks, return_exceptions=True)
  std::vector<weft::outcome<int>> all = co_await weft::gather_outcomes(hs);
  std::string s = std::to_string(all[0].value());
  try {
    all[1].value();  // rethrows the task's exception; gather_outcomes threw nothing
  } catch (const std::runtime_error& e) {
    s += std::string(" and ") + e.what();
  }
  co_return s;
}

TEST(DocsExamplesTest, AsyncioGatherReturnExceptionsIsWeftGatherOutcomes) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(gather_everything()), "1 and boom");
}

// ---------------------------------------------------------------- asyncio.timeout

weft::task<std::string> two_steps(weft::timeout_scope* kept, std::string* cause) {
  try {
    co_return co_await weft::timeout(2s, [&](weft::timeout_scope& cm) -> weft::task<std::string> {
      *kept = cm;  // a copy of the handle, to read after the block
      co_await weft::sleep_for(1ms);  // step one, in time
      cm.reschedule(std::chrono::steady_clock::now() + 50ms);  // step two gets 50 ms
      co_await weft::sleep_for(3s);  // cut short: the block runs in this task
      co_return "done";
    });
  } catch (const weft::timeout_error& e) {
    *cause = weft::to_string(e.cause()->kind());  // chained from the cancellation
    co_return "timed out";
  }
}

TEST(DocsExamplesTest, AsyncioTimeoutIsWeftTimeout) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::timeout_scope cm;
  std::string cause;
  weft::runtime rt;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(rt.block_on(two_steps(&cm, &cause)), "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);  // neither 2 s nor 3 s
  EXPECT_TRUE(cm.expired());
  EXPECT_EQ(cause, "timeout");
}

weft::task<std::string> inner_times_out(std::string* inner_saw) {
  co_return co_await weft::timeout(10s, [&]() -> weft::task<std::string> {
    try {
      co_await weft::timeout(20ms, []() -> weft::task<void> { co_await weft::sleep_for(3s); });
    } catch (const weft::timeout_error&) {
      *inner_saw = "inner timeout";  // the inner scope's own deadline
    }
    co_return "outer went on";
  });
}

TEST(DocsExamplesTest, NestedTimeoutScopesEachReportTheirOwnDeadline) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::string inner_saw;
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(inner_times_out(&inner_saw)), "outer went on");
  EXPECT_EQ(inner_saw, "inner timeout");
}

// ---------------------------------------------------------------- asyncio.Future

// A C library reports completion through `void (*)(void* ctx, int result)`,
// called on a thread of its own (here: a std::thread standing in for it).
void c_library_start(void (*callback)(void*, int), void* ctx, std::vector<std::thread>* threads) {
  threads->emplace_back([=] { callback(ctx, 42); });
}

void on_done(void* ctx, int result) {
  // ctx is the future_setter released below: adopt() takes it back, once.
  weft::future_setter<int>::adopt(ctx).set_value(result);  // any thread
}

weft::task<int> read_async(std::vector<std::thread>* threads) {
  weft::future<int> done;  // asyncio: loop.create_future()
  c_library_start(&on_done, done.setter().release(), threads);
  co_return co_await done;  // a cancellation point
}

TEST(DocsExamplesTest, AsyncioFutureIsWeftFuture) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  std::vector<std::thread> threads;  // the library's threads, joined after the runtime
  {
    weft::runtime rt;
    EXPECT_EQ(rt.block_on(read_async(&threads)), 42);
  }
  for (auto& t : threads) t.join();
}

weft::task<std::string> wait_reply(weft::future<std::string>* reply) {
  try {
    co_return co_await *reply;
  } catch (const weft::cancelled_error& e) {
    co_return "cancelled: " + std::string(e.reason());  // the setter's cancel(reason)
  }
}

TEST(DocsExamplesTest, AFutureCancelledByItsSetterReachesEveryAwaiter) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::future<std::string> reply;  // declared before the runtime: it outlives every waiter
  weft::runtime rt;
  weft::join_handle<std::string> a = rt.spawn(wait_reply(&reply));
  weft::join_handle<std::string> b = rt.spawn(wait_reply(&reply));  // any number of awaiters
  std::thread peer([s = reply.setter()] { s.cancel("peer went away"); });
  peer.join();
  EXPECT_EQ(a.join(), "cancelled: peer went away");
  EXPECT_EQ(b.join(), "cancelled: peer went away");
  EXPECT_TRUE(reply.cancelled());
  EXPECT_EQ(reply.set_value("late"), weft::settle_result::already_settled);  // harmless
}

// ---------------------------------------------------------------- the doc holds these

// Every ```cpp block of docs/cancellation.md must appear verbatim in this file.
// ---------------------------------------------------------------- TaskGroup

weft::task<int> may_fail(int i) {
  if (i == 2) throw std::runtime_error("boom");
  co_await weft::sleep_for(1h);  // the siblings wait until the failure cancels them
  co_return i;
}

weft::task<std::string> run_group() {
  weft::task_group g;  // asyncio.TaskGroup
  for (int i = 0; i < 4; ++i) (void)g.spawn(may_fail(i));
  try {
    co_await g.join();  // when it returns or throws, every child has finished
  } catch (const weft::task_group_error& e) {
    co_return e.what();  // every child failure; siblings were cancelled (kind group)
  }
  co_return "no failure";
}

TEST(DocsExamplesTest, AsyncioTaskGroupIsWeftTaskGroup) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  const std::string what = rt.block_on(run_group());
  EXPECT_NE(what.find("boom"), std::string::npos) << what;
}

// ---------------------------------------------------------------- gather

weft::task<int> square(int x) { co_return x * x; }

weft::task<int> sum_of_squares() {
  auto [a, b, c] = co_await weft::when_all(square(1), square(2), square(3));  // asyncio.gather
  co_return a + b + c;
}

TEST(DocsExamplesTest, AsyncioGatherIsWeftWhenAll) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(sum_of_squares()), 14);
}

// ---------------------------------------------------------------- FIRST_COMPLETED

weft::task<std::string> answer_fast() { co_return "fast"; }
weft::task<std::string> answer_slow() {
  co_await weft::sleep_for(1h);
  co_return "slow";
}

weft::task<std::string> first_answer() {
  std::vector<weft::task<std::string>> racers;
  racers.push_back(answer_slow());
  racers.push_back(answer_fast());
  // The first to finish wins; the others are cancelled and awaited first.
  weft::when_any_result<std::string> first = co_await weft::when_any(std::move(racers));
  co_return std::to_string(first.index) + ":" + first.value;
}

TEST(DocsExamplesTest, AsyncioWaitFirstCompletedIsWeftWhenAny) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(first_answer()), "1:fast");
}

// ---------------------------------------------------------------- cancellation source

weft::task<void> serve_forever() { co_await weft::sleep_for(1h); }

TEST(DocsExamplesTest, ACancellationSourceCancelsEveryBoundTask) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::cancellation_source src;
  weft::runtime rt;
  std::vector<weft::join_handle<void>> tasks;
  std::vector<weft::cancellation_registration> bound;  // a binding lasts while it lives
  for (int i = 0; i < 3; ++i) {
    tasks.push_back(rt.spawn(serve_forever()));
    bound.push_back(src.token().bind(tasks.back()));
  }
  src.cancel("closing");  // one call cancels all three
  for (auto& t : tasks) {
    try {
      t.join();
      ADD_FAILURE() << "not cancelled";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), "closing");
    }
  }
}

// ---------------------------------------------------------------- Semaphore

weft::task<void> limited(weft::semaphore* sem, std::atomic<int>* inside, std::atomic<int>* most) {
  co_await sem->acquire();  // a cancellation point; a cancelled acquire takes no permit
  // Relaxed: the RMWs on `inside` are totally ordered anyway, and the
  // semaphore orders a leaver's decrement before the next entrant's increment.
  const int now = inside->fetch_add(1, std::memory_order_relaxed) + 1;
  int seen = most->load(std::memory_order_relaxed);
  while (now > seen && !most->compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
  co_await weft::yield();
  inside->fetch_sub(1, std::memory_order_relaxed);
  sem->release();
}

TEST(DocsExamplesTest, AsyncioSemaphoreIsWeftSemaphore) {
  weft_test::watchdog dog(std::chrono::seconds(60));
  weft::semaphore sem(2);  // declared before the runtime: it outlives every waiter
  std::atomic<int> inside{0}, most{0};
  weft::runtime rt;
  std::vector<weft::join_handle<void>> hs;
  for (int i = 0; i < 20; ++i) hs.push_back(rt.spawn(limited(&sem, &inside, &most)));
  for (auto& h : hs) h.join();
  EXPECT_LE(most.load(std::memory_order_relaxed), 2);  // after every join()
  EXPECT_EQ(sem.available(), 2);
}

TEST(DocsExamplesTest, EveryDocBlockIsCopiedFromThisFile) {
  namespace fs = std::filesystem;
  const fs::path here = fs::path(__FILE__);
  const fs::path doc = here.parent_path().parent_path() / "docs" / "cancellation.md";
  std::ifstream doc_in(doc), src_in(here);
  if (!doc_in || !src_in) GTEST_SKIP() << "sources not found next to " << here;
  std::stringstream doc_text, src_text;
  doc_text << doc_in.rdbuf();
  src_text << src_in.rdbuf();
  const std::string s = src_text.str();
  const std::optional<std::vector<std::string>> blocks = weft_test::cpp_blocks(doc_text.str());
  ASSERT_TRUE(blocks.has_value()) << "unterminated ```cpp block in " << doc;
  for (const std::string& block : *blocks) {
    EXPECT_NE(s.find(block), std::string::npos)
        << "this block of " << doc << " is not in " << here << ":\n" << block;
  }
  EXPECT_GE(blocks->size(), 10u) << "docs/cancellation.md lost its examples?";
}

}  // namespace
