// Misuse through the public API that an independent test campaign found to
// crash, hang or be accepted silently instead of failing cleanly; one section
// per break, each test named by its scenario:
//
//   * SemaphoreBadInputTest (break 7): negative counts and a release past
//     PTRDIFF_MAX are refused with an exception and leave the count unchanged.
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

}  // namespace
