// SPDX-License-Identifier: MIT
// weft::future<T> (weft/future.hpp): settled from plain threads and C-style
// callbacks, awaited by one or many tasks on threaded, driven and simulation
// runtimes; the race between a setter and the awaiter's cancellation; the
// lifetimes of the future, its setters and its awaiters; misuse.
//
// Atomics shared between a test thread and its tasks: flags are stored with
// release and loaded with acquire; counters are relaxed (read after a join).
#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "weft/future.hpp"
#include "weft/testing.hpp"

using namespace std::chrono_literals;
using weft::settle_result;
using weft_test::with_workers;

namespace {

// How many tasks are linked on `f`'s waiter list now (white box: the tests
// that must see an awaiter suspended before they settle the future).
template <class T>
std::size_t linked_waiters(const weft::future<T>& f) {
  weft::detail::future_state<T>* s = weft::detail::access::state(f);
  weft::detail::wait_list* l = s->waiters();
  std::size_t n = 0;
  l->lock();
  for (weft::detail::list_wait* w = l->head; w != nullptr; w = w->next) ++n;
  l->unlock();
  return n;
}

weft::task<int> await_it(weft::future<int>* f) { co_return co_await *f; }

// ---------------------------------------------------------------- a C library

// A fake C library: starts an operation and reports its result through a
// `void (*)(void* ctx, int result)` callback, called on a thread of its own.
struct fake_c_library {
  std::mutex mu;  // start() is called from tasks on several workers
  std::vector<std::thread> threads;
  void start(void (*callback)(void* ctx, int result), void* ctx, int result) {
    std::lock_guard lk(mu);
    threads.emplace_back([=] { callback(ctx, result); });
  }
  ~fake_c_library() {
    for (auto& t : threads) t.join();
  }
};

std::atomic<int> g_callback_reports{0};  // settle_results seen as delivered or stored

// The callback: ctx is a future_setter<int> turned into a pointer by
// release(); adopt() takes it back, exactly once.
void on_read_done(void* ctx, int result) {
  const settle_result r = weft::future_setter<int>::adopt(ctx).set_value(result);
  // Relaxed: a counter read after the library's threads were joined.
  if (r != settle_result::already_settled)
    g_callback_reports.fetch_add(1, std::memory_order_relaxed);
}

weft::task<int> read_through_c_library(fake_c_library* lib, int answer) {
  weft::future<int> done;
  lib->start(&on_read_done, done.setter().release(), answer);
  co_return co_await done;
}

TEST(FutureTest, ACStyleCallbackOnAPlainThreadSettlesTheAwaitedFuture) {
  weft_test::watchdog dog(60s);
  g_callback_reports.store(0, std::memory_order_relaxed);
  {
    fake_c_library lib;  // declared before the runtime: its threads outlive the tasks' waits
    weft::runtime rt(with_workers(2));
    std::vector<weft::join_handle<int>> hs;
    for (int i = 0; i < 20; ++i) hs.push_back(rt.spawn(read_through_c_library(&lib, i)));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(hs[static_cast<std::size_t>(i)].join(), i);
  }
  EXPECT_EQ(g_callback_reports.load(std::memory_order_relaxed), 20);
}

// ---------------------------------------------------------------- awaiting

TEST(FutureTest, SetFromAPlainThreadWakesTheSuspendedTaskAndReportsDelivered) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(await_it(&f));
  weft_test::await_true([&] { return linked_waiters(f) == 1; });
  settle_result r = settle_result::already_settled;
  std::thread setter([&, s = f.setter()] { r = s.set_value(42); });
  setter.join();
  EXPECT_EQ(r, settle_result::delivered);
  EXPECT_EQ(h.join(), 42);
}

TEST(FutureTest, EveryTaskAwaitingOneFutureGetsTheValue) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  weft::runtime rt(with_workers(2));
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < 8; ++i) hs.push_back(rt.spawn(await_it(&f)));
  weft_test::await_true([&] { return linked_waiters(f) == 8; });
  EXPECT_EQ(f.set_value(7), settle_result::delivered);
  for (auto& h : hs) EXPECT_EQ(h.join(), 7);
  EXPECT_EQ(f.result(), 7);  // still readable, as often as wanted
  EXPECT_EQ(f.result(), 7);
  EXPECT_EQ(rt.block_on(await_it(&f)), 7);  // a late awaiter too
}

TEST(FutureTest, SettingWithNobodyWaitingStoresTheOutcomeForLaterAwaits) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  EXPECT_EQ(f.set_value(5), settle_result::stored);
  weft::runtime rt(with_workers(1));
  EXPECT_EQ(rt.block_on(await_it(&f)), 5);
}

weft::task<std::string> await_string(weft::future<std::string>* f) { co_return co_await *f; }

TEST(FutureTest, AnExceptionReachesEveryAwaiter) {
  weft_test::watchdog dog(60s);
  weft::future<std::string> f;
  weft::runtime rt(with_workers(2));
  auto a = rt.spawn(await_string(&f));
  auto b = rt.spawn(await_string(&f));
  f.set_exception(std::make_exception_ptr(std::runtime_error("boom")));
  EXPECT_THROW(a.join(), std::runtime_error);
  EXPECT_THROW(b.join(), std::runtime_error);
  ASSERT_NE(f.exception(), nullptr);
  EXPECT_THROW((void)f.result(), std::runtime_error);
}

TEST(FutureTest, CancelByTheSetterThrowsCancelledErrorWithItsReasonAndSite) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  weft::runtime rt(with_workers(1));
  auto h = rt.spawn(await_it(&f));
  const auto s = f.setter();
  std::optional<std::source_location> site;
  std::thread t([&] {
    site = std::source_location::current();
    s.cancel("operation aborted");  // must stay on the line after `site`
  });
  t.join();
  weft::cancelled_error e = weft_test::expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.reason(), "operation aborted");
  EXPECT_EQ(e.kind(), weft::cancel_kind::explicit_request);
  ASSERT_TRUE(site.has_value());
  EXPECT_EQ(e.where().line(), site->line() + 1);
  EXPECT_STREQ(e.where().file_name(), site->file_name());
  EXPECT_TRUE(f.cancelled());
  ASSERT_TRUE(f.cancellation().has_value());
  EXPECT_EQ(f.cancellation()->reason(), "operation aborted");
  EXPECT_TRUE(h.cancelled());  // the task ended by the cancelled_error it did not catch
}

weft::task<std::string> consume(weft::future<std::string> f) { co_return co_await std::move(f); }

TEST(FutureTest, AnRvalueAwaitOfACopyableValueLeavesItToTheOtherAwaiters) {
  weft_test::watchdog dog(60s);
  weft::future<std::string> f;
  const auto s = f.setter();
  weft::runtime rt(with_workers(2));
  auto a = rt.spawn(await_string(&f));
  weft_test::await_true([&] { return linked_waiters(f) == 1; });
  auto b = rt.spawn(consume(std::move(f)));  // copies: `a` reads the same value
  const std::string long_text(100, 'x');     // not in the small-string buffer
  (void)s.set_value(long_text);
  EXPECT_EQ(a.join(), long_text);
  EXPECT_EQ(b.join(), long_text);
}

weft::task<std::unique_ptr<int>> take_it(weft::future<std::unique_ptr<int>> f) {
  co_return co_await std::move(f);
}

TEST(FutureTest, AMoveOnlyValueIsMovedOutOnceAndTheFutureIsEmptyAfter) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(1));
  weft::future<std::unique_ptr<int>> f;
  auto s = f.setter();
  auto h = rt.spawn(take_it(std::move(f)));
  EXPECT_FALSE(f.valid());  // NOLINT(bugprone-use-after-move): what the test checks
  EXPECT_NE(s.set_value(std::make_unique<int>(9)), settle_result::already_settled);
  EXPECT_EQ(*h.join(), 9);

  weft::future<std::unique_ptr<int>> g;
  (void)g.set_value(std::make_unique<int>(3));
  std::unique_ptr<int> p = std::move(g).result();
  EXPECT_EQ(*p, 3);
  EXPECT_THROW((void)std::move(g).result(), weft::usage_error);  // NOLINT(bugprone-use-after-move)
}

weft::task<void> await_void(weft::future<void>* f) { co_await *f; }

TEST(FutureTest, AFutureOfVoidCarriesCompletionOnly) {
  weft_test::watchdog dog(60s);
  weft::future<void> f;
  weft::runtime rt(with_workers(1));
  auto h = rt.spawn(await_void(&f));
  std::thread t([s = f.setter()] { (void)s.set_value(); });
  t.join();
  h.join();
  EXPECT_TRUE(f.done());
  f.result();
}

TEST(FutureTest, GetBlocksAThreadUntilSettledAndIsRefusedOnAWorker) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  std::thread t([s = f.setter()] { (void)s.set_value(11); });
  EXPECT_EQ(f.get(), 11);
  t.join();
  weft::runtime rt(with_workers(1));
  auto on_worker = [](weft::future<int>* fut) -> weft::task<int> { co_return fut->get(); };
  EXPECT_THROW(rt.block_on(on_worker(&f)), weft::usage_error);
}

// ---------------------------------------------------------------- cancellation

weft::task<int> await_or_minus_one(weft::future<int>* f, std::atomic<bool>* cancelled) {
  try {
    co_return co_await *f;
  } catch (const weft::cancelled_error&) {
    cancelled->store(true, std::memory_order_release);  // pairs with the test's acquire
    throw;
  }
}

TEST(FutureTest, CancellingTheAwaiterUnregistersItAndALaterSetterReportsStored) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  std::atomic<bool> cancelled{false};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(await_or_minus_one(&f, &cancelled));
  weft_test::await_true([&] { return linked_waiters(f) == 1; });
  EXPECT_TRUE(h.cancel("no longer needed"));
  weft::cancelled_error e = weft_test::expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.reason(), "no longer needed");
  EXPECT_TRUE(cancelled.load(std::memory_order_acquire));
  EXPECT_EQ(linked_waiters(f), 0u);
  EXPECT_FALSE(f.done());  // the future itself is not cancelled (asyncio would cancel it)
  std::thread t([&, s = f.setter()] { EXPECT_EQ(s.set_value(1), settle_result::stored); });
  t.join();
  EXPECT_EQ(f.result(), 1);
}

// The race the future exists for: a plain thread settles the future while the
// awaiting task is being cancelled.  Exactly one side wins, every round: the
// awaiter gets the value, or it is cancelled and the setter reports that
// nobody took the value.
enum class await_end { value, cancelled };

weft::task<await_end> await_and_classify(std::shared_ptr<weft::future<int>> f, int want) {
  try {
    const int v = co_await *f;
    if (v != want) throw std::logic_error("wrong value");
    co_return await_end::value;
  } catch (const weft::cancelled_error&) {
    co_return await_end::cancelled;
  }
}

TEST(FutureTest, RaceSetterOnAPlainThreadAgainstTheAwaitersCancellation) {
  weft_test::watchdog dog(100s);
  const long rounds = weft_test::scaled(3000, 500);
  weft::runtime rt(with_workers(2));
  long got_value = 0, cancelled = 0, delivered = 0;
  for (long round = 0; round < rounds; ++round) {
    auto f = std::make_shared<weft::future<int>>();
    auto setter = f->setter();
    const int want = static_cast<int>(round);
    auto h = rt.spawn(await_and_classify(f, want));
    std::latch go(2);
    settle_result r = settle_result::already_settled;
    std::thread t([&] {
      go.arrive_and_wait();
      weft_test::jitter(round, 64);
      r = setter.set_value(want);
    });
    go.arrive_and_wait();
    weft_test::jitter(round * 7, 64);
    h.cancel("race");
    t.join();
    std::optional<await_end> end;
    try {
      end = h.join();
    } catch (const weft::cancelled_error&) {
      end = await_end::cancelled;  // cancelled before it started: never awaited
    }
    ASSERT_NE(r, settle_result::already_settled) << "round " << round;
    if (*end == await_end::value) {
      ++got_value;
    } else {
      ++cancelled;
      ASSERT_NE(r, settle_result::delivered)
          << "round " << round << ": the setter says a waiter took the value, but it was cancelled";
    }
    if (r == settle_result::delivered) {
      ++delivered;
      ASSERT_EQ(*end, await_end::value) << "round " << round;
    }
  }
  EXPECT_EQ(got_value + cancelled, rounds);
  RecordProperty("got_value", std::to_string(got_value));
  RecordProperty("cancelled", std::to_string(cancelled));
  RecordProperty("delivered", std::to_string(delivered));
}

// ---------------------------------------------------------------- lifetimes

TEST(FutureTest, TheFutureDestroyedWhileATaskAwaitsItLeavesTheAwaitToItsSetter) {
  weft_test::watchdog dog(60s);
  auto f = std::make_unique<weft::future<int>>();
  auto s = f->setter();
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(await_it(f.get()));
  weft_test::await_true([&] { return linked_waiters(*f) == 1; });
  f.reset();  // the awaiting task holds the shared state
  std::thread t([&] { EXPECT_EQ(s.set_value(8), settle_result::delivered); });
  t.join();
  EXPECT_EQ(h.join(), 8);
}

TEST(FutureTest, TheLastSettlerGoneWhileATaskAwaitsBreaksTheFutureWithUsageError) {
  weft_test::watchdog dog(60s);
  auto f = std::make_unique<weft::future<int>>();
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(await_it(f.get()));
  weft_test::await_true([&] { return linked_waiters(*f) == 1; });
  f.reset();  // no setter exists: nobody can settle it any more
  try {
    h.join();
    ADD_FAILURE() << "the await of a broken future returned";
  } catch (const weft::usage_error& e) {
    EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos) << e.what();
  }
}

TEST(FutureTest, ASetterOutlivingTheFutureSettlesHarmlessly) {
  weft::future_setter<int> s;
  {
    weft::future<int> f;
    s = f.setter();
  }
  EXPECT_FALSE(s.done());
  EXPECT_EQ(s.set_value(1), settle_result::stored);  // nobody will read it: freed with s
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.cancel(), settle_result::already_settled);
}

TEST(FutureTest, ShutdownCancelsATaskAwaitingAFuture) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  weft::join_handle<int> h;
  {
    weft::runtime rt(with_workers(2));
    h = rt.spawn(await_it(&f));
    weft_test::await_true([&] { return linked_waiters(f) == 1; });
  }
  weft::cancelled_error e = weft_test::expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.kind(), weft::cancel_kind::shutdown);
  EXPECT_EQ(linked_waiters(f), 0u);
  EXPECT_EQ(f.set_value(1), settle_result::stored);
}

// ---------------------------------------------------------------- misuse

TEST(FutureTest, SettingTwiceWithAValueOrAnExceptionIsAUsageError) {
  weft::future<int> f;
  EXPECT_EQ(f.set_value(1), settle_result::stored);
  EXPECT_THROW((void)f.set_value(2), weft::usage_error);
  EXPECT_THROW((void)f.setter().set_exception(std::make_exception_ptr(std::runtime_error("x"))),
               weft::usage_error);
  EXPECT_EQ(f.cancel("late"), settle_result::already_settled);  // asyncio: cancel() is False
  EXPECT_EQ(f.result(), 1);
}

TEST(FutureTest, SettingACancelledFutureReportsAlreadySettled) {
  weft::future<int> f;
  EXPECT_EQ(f.cancel(), settle_result::stored);
  EXPECT_EQ(f.set_value(2), settle_result::already_settled);
  EXPECT_EQ(f.set_exception(std::make_exception_ptr(std::runtime_error("x"))),
            settle_result::already_settled);
  EXPECT_TRUE(f.cancelled());
}

TEST(FutureTest, AnEmptyFutureOrSetterIsAUsageErrorEverywhere) {
  weft::future<int> f;
  weft::future<int> g = std::move(f);
  // NOLINTBEGIN(bugprone-use-after-move): the moved-from future is the test
  EXPECT_FALSE(f.valid());
  EXPECT_THROW((void)f.done(), weft::usage_error);
  EXPECT_THROW((void)f.result(), weft::usage_error);
  EXPECT_THROW((void)f.set_value(1), weft::usage_error);
  EXPECT_THROW((void)f.setter(), weft::usage_error);
  weft::runtime rt(with_workers(1));
  EXPECT_THROW(rt.block_on(await_it(&f)), weft::usage_error);
  // NOLINTEND(bugprone-use-after-move)
  weft::future_setter<int> s;
  EXPECT_THROW((void)s.set_value(1), weft::usage_error);
  EXPECT_THROW((void)f.set_exception(nullptr), weft::usage_error);
  EXPECT_THROW((void)g.set_exception(nullptr), weft::usage_error);  // a null exception_ptr
  EXPECT_THROW((void)g.result(), weft::usage_error);                // pending
  EXPECT_THROW((void)g.exception(), weft::usage_error);             // pending
}

// ---------------------------------------------------------------- driven runtime

TEST(FutureTest, ADrivenRuntimesTaskIsWokenByASetterOnAPlainThread) {
  weft_test::watchdog dog(60s);
  weft::future<int> f;
  weft::runtime_options o;
  o.driven = true;
  weft::runtime rt(o);
  auto h = rt.spawn(await_it(&f));
  rt.run_ready();  // the task starts and suspends in the await
  ASSERT_EQ(linked_waiters(f), 1u);
  std::thread t([s = f.setter()] { EXPECT_EQ(s.set_value(4), settle_result::delivered); });
  while (!h.done()) {
    pollfd p{rt.wakeup_fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    rt.run_ready();
  }
  t.join();
  EXPECT_EQ(h.join(), 4);
}

// ---------------------------------------------------------------- simulation

// What one simulated run saw; the simulation runs on this thread, so plain
// fields are enough.
struct sim_record {
  int awaited = 0;  // 0: never ended its await, 1: got the value, 2: cancelled
  std::optional<settle_result> set;
};

weft::task<void> sim_awaiter(std::shared_ptr<weft::future<int>> f, sim_record* rec) {
  try {
    const int v = co_await *f;
    weft::testing::check(v == 7, "the awaiter got a wrong value");
    rec->awaited = 1;
  } catch (const weft::cancelled_error&) {
    rec->awaited = 2;
    throw;
  }
}

weft::task<void> sim_setter(weft::future_setter<int> s, sim_record* rec) {
  co_await weft::yield();
  rec->set = s.set_value(7);
}

weft::task<void> sim_canceller(weft::join_handle<void>* victim) {
  co_await weft::yield();
  victim->cancel("sim");
}

// after_each: the one-of rule, whatever was cancelled where.
void check_one_of(const sim_record& rec) {
  if (rec.set == settle_result::delivered) {
    weft::testing::check(rec.awaited == 1, "delivered, but the awaiter did not get the value");
  }
  if (rec.awaited == 2) {
    weft::testing::check(rec.set != settle_result::delivered,
                         "the awaiter was cancelled, but the setter says it took the value");
  }
}

// explore()'s options for the simulation tests below: random and PCT
// schedules, then a cancellation at every resume point of 20 seeds.
weft::testing::options sim_options(const char* name) {
  weft::testing::options o;
  o.name = name;
  o.seeds = 50;
  o.pct_seeds = 50;
  o.cancel_seeds = 20;
  o.failed = [] { return ::testing::Test::HasFailure(); };
  return o;
}

TEST(FutureTest, SimulationAwaitSetAndCancelAtEveryResumePoint) {
  weft_test::watchdog dog(110s);
  sim_record rec;
  weft::testing::options o =
      sim_options("FutureTest.SimulationAwaitSetAndCancelAtEveryResumePoint");
  o.after_each = [&] {
    check_one_of(rec);
    rec = {};
  };
  weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        rec = {};
        auto f = std::make_shared<weft::future<int>>();
        weft::join_handle<void> a = weft::spawn(sim_awaiter(f, &rec));
        weft::join_handle<void> s = weft::spawn(sim_setter(f->setter(), &rec));
        weft::join_handle<void> c = weft::spawn(sim_canceller(&a));
        co_await c;
        co_await s;
        try {
          co_await a;
        } catch (const weft::cancelled_error&) {
          // the canceller's cancel, or an injected one
        }
        weft::testing::check(rec.awaited != 0 || a.cancelled(),
                             "the awaiter neither ended nor was cancelled");
        weft::testing::check(rec.set.has_value() && *rec.set != settle_result::already_settled,
                             "the setter did not settle the future");
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, 100u) << r.to_string();  // the schedules, then the cancel points
}

weft::task<void> sim_future_canceller(weft::future_setter<int> s) {
  co_await weft::yield();
  (void)s.cancel("stop");
}

weft::task<void> sim_reader(std::shared_ptr<weft::future<int>> f, int* outcome) {
  try {
    *outcome = co_await *f;
  } catch (const weft::cancelled_error& e) {
    *outcome = e.reason() == "stop" ? -1 : -2;
    throw;
  }
}

TEST(FutureTest, SimulationTwoAwaitersAgainstASetterAndACancelOfTheFuture) {
  weft_test::watchdog dog(110s);
  int first = 0, second = 0;
  std::shared_ptr<weft::future<int>> kept;
  weft::testing::options o =
      sim_options("FutureTest.SimulationTwoAwaitersAgainstASetterAndACancelOfTheFuture");
  o.after_each = [&] {
    // The future was settled at most once: by the value or by its cancel(),
    // never both; a reader saw only the one that won.  (A run cancelled
    // early may end before either setter ran.)
    if (kept) {
      const bool settled = kept->done();
      const bool by_value = settled && !kept->cancelled();
      for (int got : {first, second}) {
        if (got > 0) weft::testing::check(by_value && got == 7, "a reader got a value that lost");
        if (got == -1)
          weft::testing::check(settled && !by_value, "a reader saw a cancel that lost");
      }
    }
    kept.reset();
    first = second = 0;
  };
  weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        first = second = 0;
        kept = std::make_shared<weft::future<int>>();
        auto a = weft::spawn(sim_reader(kept, &first));
        auto b = weft::spawn(sim_reader(kept, &second));
        auto s = weft::spawn([](weft::future_setter<int> st) -> weft::task<void> {
          co_await weft::yield();
          (void)st.set_value(7);
        }(kept->setter()));
        auto c = weft::spawn(sim_future_canceller(kept->setter()));
        co_await s;
        co_await c;
        for (auto* h : {&a, &b}) {
          try {
            co_await *h;
          } catch (const weft::cancelled_error&) {
          }
        }
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_GT(r.runs, 100u) << r.to_string();  // the schedules, then the cancel points
}

weft::task<void> sim_awaits_forever(weft::future<int>* f) { (void)co_await *f; }

TEST(FutureDeathTest, SettingFromAnotherThreadAFutureASimulatedTaskAwaitsAborts) {
  if (weft_test::kTsan) GTEST_SKIP() << "death tests fork a multi-threaded process; not under TSan";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::future<int> f;
        weft::runtime_options o;
        o.simulation = weft::sim::options{};
        weft::runtime rt(o);
        auto h = rt.spawn(sim_awaits_forever(&f));
        weft::sim::run(rt, 1000);  // drives until the task waits
        std::thread t([s = f.setter()] { (void)s.set_value(1); });
        t.join();
      },
      "another thread");
}

}  // namespace
