// SPDX-License-Identifier: MIT
// weft::blocking (weft/blocking.hpp): blocking calls on the runtime's bounded
// pool.  Workers keep running CPU tasks while calls block; the stop token is
// requested on cancel and at shutdown; on_cancel::wait waits for fn and then
// delivers, on_cancel::abandon delivers at once; values, move-only values,
// void and exceptions come back; a cancel racing completion ends in the value
// or the cancellation, per docs/cancellation.md's contract; the bound holds.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "weft/weft.hpp"

// The tests' own atomics: every write is a release and every read an
// acquire, each pairing with the other side's (the counters and flags a task
// or callback sets and the test thread reads after a join or a latch).
namespace {

using namespace weft_test;

// ---- the test: 2 workers, 100 calls of 10 ms, CPU tasks alongside

weft::task<void> one_blocking_call(std::atomic<int>* done) {
  co_await weft::blocking([] { std::this_thread::sleep_for(10ms); });  // the workload
  done->fetch_add(1, std::memory_order_relaxed);                       // read after the joins
}

weft::task<long> cpu_task(const std::atomic<int>* blocking_done, std::atomic<int>* seen_before) {
  long x = 0;
  for (long i = 0; i < 20'000; ++i) {
    x += i % 7;
    if (i % 1024 == 0) co_await weft::checkpoint();
  }
  // Relaxed: counters, read after the joins.
  if (blocking_done->load(std::memory_order_relaxed) < 100)
    seen_before->fetch_add(1, std::memory_order_relaxed);
  co_return x;
}

TEST(BlockingTest, TwoWorkersRunHundredTenMsCallsWithoutStarvingCpuTasks) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.workers = 2;
  // 100 calls x 10 ms on 2 threads: the blocking phase lasts at least 500 ms
  // however fast the machine is, while the 50 CPU tasks (a few hundred
  // microseconds each, a few milliseconds under a sanitizer) have nothing to
  // wait for but a worker.
  o.blocking_threads = 2;
  weft::runtime rt(o);
  std::atomic<int> blocking_done{0}, cpu_before{0};
  std::vector<weft::join_handle<void>> calls;
  for (int i = 0; i < 100; ++i) calls.push_back(rt.spawn(one_blocking_call(&blocking_done)));
  std::vector<weft::join_handle<long>> cpu;
  for (int i = 0; i < 50; ++i) cpu.push_back(rt.spawn(cpu_task(&blocking_done, &cpu_before)));
  for (auto& h : cpu) EXPECT_GT(h.join(), 0);
  // Invariant: the workers were never blocked by the calls -- every CPU task
  // finished while blocking calls were still in flight (if the calls ran on
  // the workers, the CPU tasks would wait for most of them).
  EXPECT_LT(blocking_done.load(std::memory_order_relaxed), 100);
  EXPECT_EQ(cpu_before.load(std::memory_order_relaxed), 50);
  for (auto& h : calls) h.join();
  EXPECT_EQ(blocking_done.load(std::memory_order_relaxed), 100);
}

TEST(BlockingTest, NeverMoreCallsRunAtOnceThanBlockingThreads) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.workers = 2;
  o.blocking_threads = 3;
  weft::runtime rt(o);
  std::atomic<int> now{0}, peak{0};
  auto body = [&]() -> weft::task<void> {
    co_await weft::blocking([&] {
      // Relaxed: a counter and its maximum; read after the joins.
      const int n = now.fetch_add(1, std::memory_order_relaxed) + 1;
      int p = peak.load(std::memory_order_relaxed);
      while (n > p && !peak.compare_exchange_weak(p, n, std::memory_order_relaxed)) {
      }
      std::this_thread::sleep_for(2ms);  // the workload: keeps the call busy
      now.fetch_sub(1, std::memory_order_relaxed);
    });
  };
  std::vector<weft::join_handle<void>> hs;
  for (int i = 0; i < 30; ++i) hs.push_back(rt.spawn(body()));
  for (auto& h : hs) h.join();
  // Relaxed: the joins order every update before these reads.
  EXPECT_LE(peak.load(std::memory_order_relaxed), 3);
  EXPECT_GE(peak.load(std::memory_order_relaxed), 1);
}

TEST(BlockingTest, TooManyBlockingThreadsIsRefusedByTheConstructor) {
  weft::runtime_options o;
  o.blocking_threads = weft::runtime_options::max_blocking_threads + 1;
  EXPECT_THROW(weft::runtime rt(o), std::invalid_argument);
}

// ---- values, exceptions

weft::task<std::string> read_config() {
  // The blocking call runs on the pool; the worker runs other tasks meanwhile.
  std::string text = co_await weft::blocking([] { return std::string("answer=42"); });
  co_return text;
}

TEST(BlockingTest, ValueComesBackThroughTheAwait) {
  watchdog dog(60s);
  weft::runtime rt;
  EXPECT_EQ(rt.block_on(read_config()), "answer=42");
}

TEST(BlockingTest, MoveOnlyAndVoidResultsComeBack) {
  watchdog dog(60s);
  weft::runtime rt;
  std::atomic<bool> ran{false};
  auto body = [&]() -> weft::task<int> {
    std::unique_ptr<int> p = co_await weft::blocking([] { return std::make_unique<int>(7); });
    co_await weft::blocking([&] { ran.store(true, std::memory_order_release); });
    co_return *p;
  };
  EXPECT_EQ(rt.block_on(body()), 7);
  EXPECT_TRUE(ran.load(std::memory_order_acquire));
}

TEST(BlockingTest, ExceptionOfFnPropagatesToTheAwaitingTask) {
  watchdog dog(60s);
  weft::runtime rt;
  auto body = []() -> weft::task<int> {
    co_return co_await weft::blocking([]() -> int { throw std::runtime_error("disk on fire"); });
  };
  try {
    rt.block_on(body());
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "disk on fire");
  }
}

// ---- cancellation

weft::task<std::string> wait_for_device(std::latch* started) {
  // fn takes a std::stop_token: it is requested when this task is cancelled.
  co_return co_await weft::blocking([started](std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    started->count_down();
    cv.wait(lk, st, [] { return false; });  // returns once stop is requested
    return std::string("stopped");
  });
}

TEST(BlockingTest, CancelRequestsTheStopTokenAndDeliversAfterFnReturns) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch started{1};
  weft::join_handle<std::string> h = rt.spawn(wait_for_device(&started));
  started.wait();
  h.cancel("user pressed stop");
  try {
    h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "user pressed stop");
  }
}

TEST(BlockingTest, WaitModeDeliversOnlyAfterFnReturned) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch started{1};
  std::atomic<bool> returned{false};
  auto body = [&]() -> weft::task<std::string> {
    try {
      co_await weft::blocking([&](std::stop_token st) {
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lk(m);
        started.count_down();
        cv.wait(lk, st, [] { return false; });
        returned.store(
            true,
            std::memory_order_release);  // pairs with the task's acquire load after its resume
      });
    } catch (const weft::cancelled_error&) {
      co_return returned.load(std::memory_order_acquire) ? "cancelled after fn returned"
                                                         : "cancelled while fn ran";
    }
    co_return "not cancelled";
  };
  weft::join_handle<std::string> h = rt.spawn(body());
  started.wait();
  h.cancel();
  EXPECT_EQ(h.join(), "cancelled after fn returned");
}

TEST(BlockingTest, AbandonDeliversAtOnceAndFnFinishesAlone) {
  watchdog dog(60s);
  auto gate = std::make_shared<std::latch>(1);
  auto finished = std::make_shared<std::latch>(1);
  std::latch started{1};
  {
    weft::runtime rt;
    auto body = [&]() -> weft::task<int> {
      // fn owns what it uses: the awaiting frame may be gone before it returns.
      // Named first: g++ 12 double-destroys a capturing lambda temporary in a
      // co_await's full-expression (docs/pitfalls.md); these captures own
      // shared state, so the temporary shape would free it early.
      auto fn = [gate, finished, s = &started] {
        s->count_down();
        gate->wait();  // ignores its stop token: only the test lets it go
        finished->count_down();
        return 1;
      };
      co_return co_await weft::blocking(std::move(fn), weft::on_cancel::abandon);
    };
    weft::join_handle<int> h = rt.spawn(body());
    started.wait();
    h.cancel("give up");
    // Delivered while fn is still blocked on the gate.
    EXPECT_THROW(h.join(), weft::cancelled_error);
    EXPECT_FALSE(finished->try_wait());
    gate->count_down();
    // The runtime's shutdown (its destructor) waits for the abandoned call.
  }
  EXPECT_TRUE(finished->try_wait());
}

TEST(BlockingTest, QueuedCallCancelledNeverRuns) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.blocking_threads = 1;
  weft::runtime rt(o);
  std::latch started{1}, gate{1};
  std::atomic<bool> second_ran{false};
  auto first = [&]() -> weft::task<void> {
    co_await weft::blocking([&] {
      started.count_down();
      gate.wait();
    });
  };
  auto second = [&]() -> weft::task<void> {
    co_await weft::blocking([&] { second_ran.store(true, std::memory_order_release); });
  };
  weft::join_handle<void> a = rt.spawn(first());
  started.wait();  // the one pool thread is busy: the next call queues
  weft::join_handle<void> b = rt.spawn(second());
  b.cancel("not needed");
  EXPECT_THROW(b.join(), weft::cancelled_error);
  gate.count_down();
  a.join();
  EXPECT_FALSE(second_ran.load(std::memory_order_acquire));
}

TEST(BlockingTest, PendingCancelBeforeTheAwaitMeansFnNeverRuns) {
  watchdog dog(60s);
  weft::runtime rt;
  std::atomic<bool> ran{false}, go{false};
  std::latch entered{1};
  auto body = [&]() -> weft::task<void> {
    entered.count_down();
    while (
        !go.load(std::memory_order_acquire)) {  // no cancellation point: the request stays pending
    }
    co_await weft::blocking([&] { ran.store(true, std::memory_order_release); });
  };
  weft::join_handle<void> h = rt.spawn(body());
  entered.wait();
  h.cancel();
  go.store(true, std::memory_order_release);
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_FALSE(ran.load(std::memory_order_acquire));
}

TEST(BlockingTest, ShutdownRequestsStopTokensAndWaitsForCallsInFlight) {
  watchdog dog(60s);
  constexpr int kCalls = 4;
  std::latch started{kCalls + 1};
  std::atomic<bool> abandoned_returned{false};
  std::vector<weft::join_handle<std::string>> waiting;
  weft::join_handle<int> abandoned;
  {
    weft::runtime rt;
    for (int i = 0; i < kCalls; ++i) waiting.push_back(rt.spawn(wait_for_device(&started)));
    auto body = [&]() -> weft::task<int> {
      co_return co_await weft::blocking(
          [&, s = &started](std::stop_token st) {
            std::mutex m;
            std::condition_variable_any cv;
            std::unique_lock lk(m);
            s->count_down();
            cv.wait(lk, st, [] { return false; });
            abandoned_returned.store(true, std::memory_order_release);
            return 0;
          },
          weft::on_cancel::abandon);
    };
    abandoned = rt.spawn(body());
    started.wait();
    rt.shutdown();
    // shutdown() returned: every call, the abandoned one too, has returned.
    EXPECT_TRUE(abandoned_returned.load(std::memory_order_acquire));
  }
  for (auto& h : waiting) {
    try {
      h.join();
      ADD_FAILURE() << "not cancelled";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.kind(), weft::cancel_kind::shutdown);
    }
  }
  EXPECT_THROW(abandoned.join(), weft::cancelled_error);
}

TEST(BlockingTest, CancelRacingCompletionLosesNothing) {
  watchdog dog(100s);
  weft::runtime_options o;
  o.workers = 2;
  weft::runtime rt(o);
  const long rounds = scaled(2000, 200, 400);
  long values = 0, cancels = 0;
  for (long r = 0; r < rounds; ++r) {
    std::atomic<bool> entered{false};
    auto body = [&]() -> weft::task<int> {
      entered.store(true, std::memory_order_release);
      co_return co_await weft::blocking([] { return 7; });
    };
    weft::join_handle<int> h = rt.spawn(body());
    while (!entered.load(
        std::memory_order_acquire)) {  // spin: a latch's wake-up would lose every race
    }
    jitter(r, 400);
    const bool accepted = h.cancel();
    try {
      EXPECT_EQ(h.join(), 7);
      ++values;
      // A request that found the task running after fn woke it had no
      // cancellation point left: the contract's case (c).
      if (accepted) {
        EXPECT_TRUE(h.completed_despite_cancel()) << "round " << r;
      }
    } catch (const weft::cancelled_error&) {
      ++cancels;
      EXPECT_TRUE(accepted);
    }
  }
  EXPECT_EQ(values + cancels, rounds);
  std::printf("values %ld, cancellations %ld\n", values, cancels);
}

TEST(BlockingTest, SimulationRuntimeRefusesWithUsageError) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.simulation = weft::sim::options{};
  weft::runtime rt(o);
  auto body = []() -> weft::task<int> { co_return co_await weft::blocking([] { return 1; }); };
  EXPECT_THROW(rt.block_on(body()), weft::usage_error);
}

}  // namespace
