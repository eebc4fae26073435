// SPDX-License-Identifier: MIT
// weft/tbb.hpp: a oneTBB algorithm run from a weft task, off the workers; a
// weft cancellation cancels its task_group_context, so a cancelled
// parallel_for stops early.  Built only when oneTBB is found
// (tests/CMakeLists.txt).
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <latch>
#include <thread>

#include "test_support.hpp"
#include "weft/tbb.hpp"
#include "weft/weft.hpp"

namespace {

using namespace weft_test;

weft::task<long> sum_of_squares(long n) {
  // parallel_reduce on oneTBB's threads; this task's worker runs other tasks.
  long sum = co_await weft::tbb::run([n](tbb::task_group_context& ctx) {
    return tbb::parallel_reduce(
        tbb::blocked_range<long>(0, n), 0L,
        [](const tbb::blocked_range<long>& r, long acc) {
          for (long i = r.begin(); i != r.end(); ++i) acc += i * i;
          return acc;
        },
        std::plus<>(), ctx);
  });
  co_return sum;
}

TEST(TbbBridgeTest, ParallelReduceReturnsItsValueThroughTheAwait) {
  watchdog dog(60s);
  weft::runtime rt;
  long expect = 0;
  for (long i = 0; i < 1000; ++i) expect += i * i;
  EXPECT_EQ(rt.block_on(sum_of_squares(1000)), expect);
}

TEST(TbbBridgeTest, ArenaWithMaxConcurrencyRunsTheAlgorithm) {
  watchdog dog(60s);
  weft::runtime rt;
  tbb::task_arena arena(2);  // oneTBB uses at most 2 threads for this work
  auto body = [&]() -> weft::task<long> {
    co_return co_await weft::tbb::run(arena, [](tbb::task_group_context& ctx) {
      std::atomic<long> n{0};
      tbb::parallel_for(
          tbb::blocked_range<long>(0, 10'000),
          [&](const tbb::blocked_range<long>& r) {
            n.fetch_add(static_cast<long>(r.size()), std::memory_order_relaxed);
          },
          ctx);
      return n.load();
    });
  };
  EXPECT_EQ(rt.block_on(body()), 10'000);
}

TEST(TbbBridgeTest, CancelledParallelForStopsEarly) {
  watchdog dog(60s);
  constexpr long kTotal = 1'000'000;
  constexpr long kCancelAt = 1000;
  weft::runtime rt;
  std::atomic<long> done{0};
  std::latch reached{1};
  auto body = [&]() -> weft::task<void> {
    co_await weft::tbb::run([&](tbb::task_group_context& ctx) {
      tbb::parallel_for(
          tbb::blocked_range<long>(0, kTotal, 1),
          [&](const tbb::blocked_range<long>& r) {
            for (long i = r.begin(); i != r.end(); ++i) {
              // Relaxed: a count, read after the join.
              const long n = done.fetch_add(1, std::memory_order_relaxed) + 1;
              if (n == kCancelAt) reached.count_down();
              if (n < kCancelAt) continue;
              // From here each body waits for the cancellation itself (not a
              // sleep): only the bodies already running can add iterations.
              const auto give_up = std::chrono::steady_clock::now() + 30s;
              while (!ctx.is_group_execution_cancelled() &&
                     std::chrono::steady_clock::now() < give_up) {
                std::this_thread::yield();
              }
            }
          },
          tbb::simple_partitioner(), ctx);
    });
  };
  weft::join_handle<void> h = rt.spawn(body());
  reached.wait();
  h.cancel("enough");
  try {
    h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "enough");
  }
  // At the cancel, kCancelAt iterations had run and every running body was
  // waiting for it: only a few more (one per oneTBB thread) can follow.
  EXPECT_LT(done.load(), kCancelAt + 1000);
  EXPECT_GE(done.load(), kCancelAt);
}

}  // namespace
