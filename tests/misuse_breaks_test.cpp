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

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_TEST_LSAN 1
#endif
#endif
#if defined(WEFT_TEST_LSAN)
#include <sanitizer/lsan_interface.h>
#endif

#include "test_support.hpp"

namespace {

using namespace weft_test;
using namespace std::chrono_literals;
using weft::cancel_kind;
using weft::cancelled_error;
using weft::detail::task_core;

template <class T>
std::uint32_t state_of(const weft::join_handle<T>& h) {
  // Acquire: as join_handle::done().
  return h.handle().promise().own_core().state.load(std::memory_order_acquire);
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

TEST(AwaitEmptyTaskTest, AwaitingADefaultConstructedTaskThrowsUsageError) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(await_misuse_result(rt, awaits_default_int()), "usage_error");
    EXPECT_EQ(await_misuse_result(rt, awaits_default_void_rvalue()), "usage_error");
    EXPECT_EQ(rt.block_on(value_task(1)), 1) << "the runtime stays healthy";
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(AwaitEmptyTaskTest, AwaitingAMovedFromTaskThrowsUsageErrorAndTheMovedToTaskStillRuns) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(await_misuse_result(rt, awaits_moved_from()), "usage_error,4");
    EXPECT_EQ(rt.block_on(value_task(1)), 1);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(AwaitEmptyTaskTest, AwaitingTheSameTaskTwiceThrowsUsageErrorTheSecondTime) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(await_misuse_result(rt, awaits_int_twice()), "5,usage_error,usage_error");
    EXPECT_EQ(await_misuse_result(rt, awaits_void_twice()), "1,usage_error,1")
        << "the body ran once";
    EXPECT_EQ(await_misuse_result(rt, awaits_failed_task_twice()), "first await,usage_error")
        << "the exception is given once";
    EXPECT_EQ(rt.block_on(value_task(1)), 1);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(AwaitEmptyTaskTest, SpawningATaskThatWasAlreadyAwaitedThrowsUsageError) {
  watchdog dog(60s);
  frame_baseline frames;
  {
    weft::runtime rt(with_workers(2));
    EXPECT_EQ(await_misuse_result(rt, spawns_awaited_task()), "6,usage_error");
    weft::task<int> t;
    EXPECT_THROW((void)rt.spawn(std::move(t)), weft::usage_error) << "an empty task";
    EXPECT_EQ(rt.block_on(value_task(1)), 1);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

}  // namespace
