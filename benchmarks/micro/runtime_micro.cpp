// SPDX-License-Identifier: MIT
// weft_micro -- runtime micro-benchmarks (Google Benchmark).
//
//   weft_micro [--benchmark_filter=...] [--benchmark_min_time=0.5]
//
// The argument of each benchmark is the number of workers.  Runtimes are built
// outside the timed loop (one per worker count, kept for the whole program).
// Per-operation benchmarks run kOps operations inside one block_on'd driver
// task per iteration; the "per_op" counter is the wall time per operation
// (it includes 1/kOps of the block_on that starts the driver).  Wall time, not
// CPU time: the benchmark thread sleeps in join() while the workers run.
//
//   BM_SpawnJoin        spawn an empty task and co_await its handle
//   BM_Yield            co_await weft::yield() (a full reschedule round trip)
//   BM_Checkpoint       co_await weft::checkpoint() with nothing pending
//                       (10^6 per iteration; target: under 5 ns)
//   BM_BlockOnHot       spawn + join from the benchmark thread, back to back
//   BM_WakeParked       as above, after 2 ms idle so the workers are parked:
//                       the wake-up latency of a parked runtime (manual time)
#include <benchmark/benchmark.h>

#include <weft/weft.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace {

constexpr int kOps = 1000;
constexpr int kCheckpoints = 1'000'000;

std::mutex g_runtimes_mu;
std::map<unsigned, std::unique_ptr<weft::runtime>>* g_runtimes = nullptr;

weft::runtime& runtime_for(unsigned workers) {
  std::lock_guard<std::mutex> lock(g_runtimes_mu);
  auto& slot = (*g_runtimes)[workers];
  if (!slot) {
    weft::runtime_options o;
    o.workers = workers;
    slot = std::make_unique<weft::runtime>(o);
  }
  return *slot;
}

void per_op(benchmark::State& state, std::int64_t ops_per_iteration) {
  const std::int64_t ops = static_cast<std::int64_t>(state.iterations()) * ops_per_iteration;
  state.SetItemsProcessed(ops);
  // Seconds per operation, printed with an SI prefix (e.g. "2.6ns").
  state.counters["per_op"] = benchmark::Counter(
      static_cast<double>(ops), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

weft::task<void> empty_task() { co_return; }

weft::task<void> spawn_join_driver(int n) {
  for (int i = 0; i < n; ++i) {
    auto h = weft::spawn(empty_task());
    co_await h;
  }
}

weft::task<void> yield_driver(int n) {
  for (int i = 0; i < n; ++i) co_await weft::yield();
}

weft::task<std::int64_t> checkpoint_driver(int n) {
  std::int64_t sum = 0;
  for (int i = 0; i < n; ++i) {
    co_await weft::checkpoint();
    sum += i;
  }
  co_return sum;
}

void BM_SpawnJoin(benchmark::State& state) {
  weft::runtime& rt = runtime_for(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) rt.block_on(spawn_join_driver(kOps));
  per_op(state, kOps);
}
BENCHMARK(BM_SpawnJoin)->Arg(1)->Arg(2)->UseRealTime();

void BM_Yield(benchmark::State& state) {
  weft::runtime& rt = runtime_for(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) rt.block_on(yield_driver(kOps));
  per_op(state, kOps);
}
BENCHMARK(BM_Yield)->Arg(1)->Arg(2)->UseRealTime();

void BM_Checkpoint(benchmark::State& state) {
  weft::runtime& rt = runtime_for(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) {
    std::int64_t s = rt.block_on(checkpoint_driver(kCheckpoints));
    benchmark::DoNotOptimize(s);
  }
  per_op(state, kCheckpoints);
}
BENCHMARK(BM_Checkpoint)->Arg(1)->Arg(2)->UseRealTime();

void BM_BlockOnHot(benchmark::State& state) {
  weft::runtime& rt = runtime_for(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) {
    auto h = rt.spawn(empty_task());
    h.join();
  }
  per_op(state, 1);
}
BENCHMARK(BM_BlockOnHot)->Arg(1)->Arg(2)->UseRealTime();

void BM_WakeParked(benchmark::State& state) {
  weft::runtime& rt = runtime_for(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) {
    // Idle long enough for every worker to park (not timed).
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const auto t0 = std::chrono::steady_clock::now();
    auto h = rt.spawn(empty_task());
    h.join();
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  per_op(state, 1);
}
// Fixed iterations: with manual time the library would otherwise sleep for
// minutes to accumulate its minimum measured time.
BENCHMARK(BM_WakeParked)
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Iterations(300)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  // Before anything else: it consumes the --benchmark_* flags.
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::map<unsigned, std::unique_ptr<weft::runtime>> runtimes;
  g_runtimes = &runtimes;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_runtimes = nullptr;
  return 0;  // runtimes shut down here
}
