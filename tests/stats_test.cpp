// SPDX-License-Identifier: MIT
// Black-box tests of runtime::stats(): exact counts once a runtime is quiet
// (spawned, completed, cancelled by kind, failed), the cancellation-latency
// histograms (one sample per cancelled task, request -> delivered ->
// finished), steals, parks, busy time and the longest run, per worker summing
// to the total, on a threaded, a simulated and a driven runtime.
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// Every figure of the workers plus outside equals the total.
void expect_sums_match(const weft::runtime_stats& st) {
  weft::worker_stats sum = st.outside;
  for (const auto& w : st.workers) sum += w;
  EXPECT_EQ(sum.spawned, st.total.spawned);
  EXPECT_EQ(sum.completed, st.total.completed);
  EXPECT_EQ(sum.cancelled, st.total.cancelled);
  EXPECT_EQ(sum.cancelled_by, st.total.cancelled_by);
  EXPECT_EQ(sum.failed, st.total.failed);
  EXPECT_EQ(sum.steals, st.total.steals);
  EXPECT_EQ(sum.steal_attempts, st.total.steal_attempts);
  EXPECT_EQ(sum.injected, st.total.injected);
  EXPECT_EQ(sum.parks, st.total.parks);
  EXPECT_EQ(sum.wakeups, st.total.wakeups);
  EXPECT_EQ(sum.longest_run, st.total.longest_run);
  std::uint64_t by_kind = 0;
  for (auto n : st.total.cancelled_by) by_kind += n;
  EXPECT_EQ(by_kind, st.total.cancelled);
}

weft::task<int> leaf(int v) { co_return v; }

// Spawns make(0) .. make(n - 1), then awaits each; the sum of their values.
weft::task<long> fan_out(int n, weft::task<int> (*make)(int) = leaf) {
  std::vector<weft::join_handle<int>> hs;
  hs.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) hs.push_back(weft::spawn(make(i)));
  long sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

// ------------------------------------------------------------ task counts

TEST(StatsTest, EverySpawnedTaskIsCountedCompletedOnceTheRuntimeIsQuiet) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  constexpr int kChildren = 1000;
  EXPECT_EQ(rt.block_on(fan_out(kChildren)), long{kChildren} * (kChildren - 1) / 2);
  const weft::runtime_stats st = rt.stats();
  // The root from this thread (outside), its children from a worker.
  EXPECT_EQ(st.outside.spawned, 1u);
  EXPECT_EQ(st.total.spawned, std::uint64_t{kChildren} + 1);
  EXPECT_EQ(st.total.completed, st.total.spawned);
  EXPECT_EQ(st.total.cancelled, 0u);
  EXPECT_EQ(st.total.failed, 0u);
  EXPECT_GE(st.total.injected, 1u);  // the root, spawned from outside
  ASSERT_EQ(st.workers.size(), 2u);
  expect_sums_match(st);
  EXPECT_EQ(st.cancel_to_delivery.count(), 0u);
  EXPECT_EQ(st.cancel_to_finish.count(), 0u);
}

weft::task<int> fails() {
  throw std::runtime_error("boom");
  co_return 0;
}

TEST(StatsTest, TaskEndingWithAnExceptionCountsAsFailed) {
  watchdog dog(30s);
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(fails());
  EXPECT_THROW((void)h.join(), std::runtime_error);
  const auto st = rt.stats();
  EXPECT_EQ(st.total.failed, 1u);
  EXPECT_EQ(st.total.completed, 1u);
  EXPECT_EQ(st.total.cancelled, 0u);
}

// ------------------------------------------------------------ cancellation

weft::task<int> sleep_long(std::latch* started) {
  started->count_down();
  co_await weft::sleep_for(1h);
  co_return 1;
}

// `n` tasks asleep in sleep_for(1h) (each has counted `started` down).
std::vector<weft::join_handle<int>> spawn_sleepers(weft::runtime& rt, int n, std::latch* started) {
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(rt.spawn(sleep_long(started)));
  started->wait();
  return hs;
}

TEST(StatsTest, ExplicitCancelsOfSleepingTasksGiveOneLatencySampleEach) {
  watchdog dog(60s);
  constexpr int kTasks = 20;
  std::latch started{kTasks};
  weft::runtime rt(with_workers(2));
  auto hs = spawn_sleepers(rt, kTasks, &started);
  for (auto& h : hs) EXPECT_TRUE(h.cancel());
  for (auto& h : hs)
    EXPECT_EQ(expect_cancelled([&] { (void)h.join(); }).kind(), cancel_kind::explicit_request);
  const auto st = rt.stats();
  EXPECT_EQ(st.total.cancelled, std::uint64_t{kTasks});
  EXPECT_EQ(st.total.cancelled_of(cancel_kind::explicit_request), std::uint64_t{kTasks});
  EXPECT_EQ(st.total.completed, std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_delivery.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.delivery_to_finish.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_finish.count(), std::uint64_t{kTasks});
  // Generous bounds: the sleeps were ended by the cancels, not by their hour.
  EXPECT_LT(st.cancel_to_finish.max(), 30s);
  EXPECT_GE(st.cancel_to_finish.max(), st.delivery_to_finish.p50());
  expect_sums_match(st);
}

// Runs without a resume point until `release` is set: holds its worker (so
// that tasks spawned meanwhile stay queued), and stays in one resume.
weft::task<int> spin_until_released(std::latch* running, std::atomic<bool>* release) {
  running->count_down();
  while (!release->load(std::memory_order_acquire)) std::this_thread::yield();
  co_return 0;
}

TEST(StatsTest, TasksCancelledBeforeTheyStartAreSampledAtTheirCompletion) {
  watchdog dog(60s);
  std::latch holding{1};
  std::atomic<bool> release{false};
  constexpr int kTasks = 10;
  std::latch never{kTasks + 1};  // the bodies never run
  weft::runtime rt(with_workers(1));
  auto holder = rt.spawn(spin_until_released(&holding, &release));
  holding.wait();
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < kTasks; ++i) hs.push_back(rt.spawn(sleep_long(&never)));
  for (auto& h : hs) EXPECT_TRUE(h.cancel());
  release.store(true, std::memory_order_release);
  EXPECT_EQ(holder.join(), 0);
  for (auto& h : hs) (void)expect_cancelled([&] { (void)h.join(); });
  const auto st = rt.stats();
  EXPECT_EQ(st.total.cancelled_of(cancel_kind::explicit_request), std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_delivery.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.delivery_to_finish.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_finish.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.total.completed, std::uint64_t{kTasks} + 1);
  expect_sums_match(st);
}

weft::task<int> times_out(std::latch* started) {
  started->count_down();
  std::latch inner{1};
  try {
    co_return co_await weft::wait_for(sleep_long(&inner), 1ms);
  } catch (const weft::timeout_error&) {
    co_return -1;
  }
}

TEST(StatsTest, WaitForDeadlineCountsTheAwaitedTaskAsCancelledByTimeout) {
  watchdog dog(60s);
  std::latch started{1};
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(times_out(&started)), -1);
  const auto st = rt.stats();
  // The awaited task; wait_for's own deadline task may end otherwise.
  EXPECT_EQ(st.total.cancelled_of(cancel_kind::timeout), 1u);
  EXPECT_EQ(st.total.completed, st.total.spawned);
  // One sample per cancelled task.
  EXPECT_EQ(st.cancel_to_delivery.count(), st.total.cancelled);
  EXPECT_EQ(st.cancel_to_finish.count(), st.total.cancelled);
  expect_sums_match(st);
}

TEST(StatsTest, ShutdownCancellationsAreCountedByKindAndSampled) {
  watchdog dog(60s);
  constexpr int kTasks = 8;
  std::latch started{kTasks};
  weft::runtime rt(with_workers(2));
  auto hs = spawn_sleepers(rt, kTasks, &started);
  rt.shutdown();
  for (auto& h : hs) EXPECT_TRUE(h.cancelled());
  const auto st = rt.stats();
  EXPECT_EQ(st.total.cancelled_of(cancel_kind::shutdown), std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_delivery.count(), std::uint64_t{kTasks});
  EXPECT_EQ(st.cancel_to_finish.count(), std::uint64_t{kTasks});
  expect_sums_match(st);
}

// ------------------------------------------------------------ scheduling

// A leaf that computes for a while (about 10 us), so that a fan-out of them
// lasts long enough for the other worker to wake and steal.
weft::task<int> busy_leaf(int v) {
  std::uint64_t x = static_cast<std::uint64_t>(v) + 1;
  for (int i = 0; i < 20'000; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  co_return static_cast<int>(x & 1);
}

TEST(StatsTest, FanOutOnTwoWorkersIsStolen) {
  watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  // A round may run entirely on one worker if the other does not wake in
  // time; the watchdog bounds the rounds.
  for (int round = 0; rt.stats().total.steals == 0; ++round) {
    ASSERT_LT(round, 1'000) << "no steal in 1000 fan-outs";
    (void)rt.block_on(fan_out(200, busy_leaf));
  }
  const auto st = rt.stats();
  EXPECT_GT(st.total.steals, 0u);
  EXPECT_GE(st.total.steal_attempts, st.total.steals);
  expect_sums_match(st);
}

TEST(StatsTest, IdleWorkersAreCountedParkedAndWoken) {
  watchdog dog(60s);
  weft::runtime_options o = with_workers(2);
  o.idle_spin = std::chrono::microseconds(0);
  weft::runtime rt(std::move(o));
  EXPECT_EQ(rt.block_on(leaf(3)), 3);
  ASSERT_TRUE(spin_until([&] { return rt.stats().total.parks >= 2; }, 20'000ms));
  // A spawn from outside wakes a parked worker.
  EXPECT_EQ(rt.block_on(leaf(4)), 4);
  const auto st = rt.stats();
  EXPECT_GE(st.outside.wakeups, 1u);
  EXPECT_GT(st.total.busy, 0ns);
  expect_sums_match(st);
}

TEST(StatsTest, LongestRunSeesATaskThatRunsWithoutAResumePoint) {
  watchdog dog(60s);
  std::latch running{1};
  std::atomic<bool> release{false};
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(spin_until_released(&running, &release));
  running.wait();
  // The timer thread samples the running worker each tick (500 us here).
  const bool seen = spin_until([&] { return rt.stats().total.longest_run >= 20ms; }, 20'000ms);
  release.store(true, std::memory_order_release);
  EXPECT_TRUE(seen) << rt.stats().to_string();
  EXPECT_EQ(h.join(), 0);
}

// ------------------------------------------------------------ other runtimes

weft::task<int> sim_cancelled_child() {
  for (;;) co_await weft::checkpoint();
}

weft::task<long> sim_root(int n) {
  long sum = co_await fan_out(n);
  auto h = weft::spawn(sim_cancelled_child());
  co_await weft::yield();
  h.cancel();
  try {
    co_await h;
  } catch (const cancelled_error&) {
    sum += 1;
  }
  co_return sum;
}

TEST(StatsTest, SimulationCountsExactlyInVirtualTime) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.workers = 3;
  o.simulation = weft::sim::options{};
  weft::runtime rt(std::move(o));
  EXPECT_EQ(rt.block_on(sim_root(50)), 50L * 49 / 2 + 1);
  const auto st = rt.stats();
  EXPECT_EQ(st.total.spawned, 50u + 2);
  EXPECT_EQ(st.total.completed, st.total.spawned);
  EXPECT_EQ(st.total.cancelled_of(cancel_kind::explicit_request), 1u);
  EXPECT_EQ(st.cancel_to_delivery.count(), 1u);
  EXPECT_EQ(st.cancel_to_finish.count(), 1u);
  EXPECT_EQ(st.total.parks, 0u);  // a simulation never parks
  EXPECT_GT(st.total.busy, 0ns);  // virtual step costs
  EXPECT_LE(st.total.busy.count(), static_cast<std::int64_t>(weft::sim::stats(rt).steps) * 2000);
  EXPECT_EQ(st.workers.size(), 3u);
  expect_sums_match(st);
}

TEST(StatsTest, DrivenRuntimeCountsItsRunsAndParks) {
  watchdog dog(60s);
  weft::runtime_options o;
  o.driven = true;
  weft::runtime rt(std::move(o));
  auto h = rt.spawn(fan_out(100));
  while (!h.done()) (void)rt.run_ready();
  EXPECT_EQ(h.join(), 100L * 99 / 2);
  const auto st = rt.stats();
  EXPECT_EQ(st.total.spawned, 101u);
  EXPECT_EQ(st.total.completed, 101u);
  EXPECT_GE(st.total.parks, 1u);
  EXPECT_GT(st.total.busy, 0ns);
  EXPECT_GT(st.total.longest_run, 0ns);
  EXPECT_LE(st.total.longest_run, st.total.busy);
  expect_sums_match(st);
}

// ------------------------------------------------------------ the types

TEST(StatsTest, HistogramQuantilesAreBucketUpperEdgesCappedAtTheMax) {
  weft::latency_histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.p50(), 0ns);
  EXPECT_EQ(h.summary(), "n=0");
  auto add = [&](std::uint64_t ns) {
    ++h.counts[weft::latency_histogram::bucket_of(ns)];
    h.sum_ns += ns;
    h.max_ns = std::max(h.max_ns, ns);
  };
  EXPECT_EQ(weft::latency_histogram::bucket_of(0), 0u);
  EXPECT_EQ(weft::latency_histogram::bucket_of(1), 1u);
  EXPECT_EQ(weft::latency_histogram::bucket_of(1023), 10u);
  EXPECT_EQ(weft::latency_histogram::bucket_of(1024), 11u);
  EXPECT_EQ(weft::latency_histogram::bucket_of(~std::uint64_t{0}),
            weft::latency_histogram::kBuckets - 1);
  for (int i = 0; i < 99; ++i) add(1000);  // bucket [512, 1024)
  add(5'000'000);                          // one slow sample
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.p50(), 1024ns);  // the bucket's upper edge: at most twice the truth
  EXPECT_EQ(h.p99(), 1024ns);
  EXPECT_EQ(h.quantile(1.0), 5'000'000ns);  // capped at the exact max
  EXPECT_EQ(h.max(), 5'000'000ns);
  EXPECT_EQ(h.mean(), std::chrono::nanoseconds((99 * 1000 + 5'000'000) / 100));
  weft::latency_histogram sum = h;
  sum += h;
  EXPECT_EQ(sum.count(), 200u);
  EXPECT_EQ(sum.max(), h.max());
}

TEST(StatsTest, ToStringHasARowPerWorkerOutsideAndTotal) {
  watchdog dog(30s);
  weft::runtime rt(with_workers(2));
  EXPECT_EQ(rt.block_on(leaf(1)), 1);
  const std::string s = rt.stats().to_string();
  for (const char* needle :
       {"worker", "\n0 ", "\n1 ", "\noutside ", "\ntotal ",
        "cancelled by kind: explicit=0 timeout=0 group=0 parent=0 shutdown=0",
        "cancel -> delivered:", "delivered -> finished:", "cancel -> finished:"}) {
    EXPECT_NE(s.find(needle), std::string::npos) << needle << " in:\n" << s;
  }
}

}  // namespace
