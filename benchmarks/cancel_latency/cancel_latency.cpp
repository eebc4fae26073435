// SPDX-License-Identifier: MIT
// cancel_latency -- how long cancellation takes to reach a task, weft and
// oneTBB side by side in one process, sample by sample interleaved.
//
//   cancel_latency [--samples=10^4] [--settle-us=200] [--idle-spin-us=1000] [--block=50]
//                  [--workers=1,2] [--quick]
//
// --idle-spin-us sets weft's runtime_options::idle_spin (how long an idle
// worker spins before it parks; default 1000, as the runtime's).  With the
// default settle (200 us) shorter than the spin, the parked *task*'s worker is
// still looking for work when cancel() comes, as oneTBB's spinning workers
// are; a settle longer than the spin (e.g. --settle-us=3000) measures the
// wake-up of a worker asleep in the kernel.
//                  [--json=FILE]
//
// --quick: 10^3 samples per variant.  The variants take turns in blocks of
// --block samples, with a 5 ms pause before each block (oneTBB's workers spin
// for a few ms after their work runs out; they must not share the CPUs with a
// weft sample, nor weft's with a oneTBB one).  Variants (each sample starts one task,
// waits until it runs, waits --settle-us more, then cancels it from the main
// thread, which is not a worker; t0 is taken right before the cancel call):
//
//   weft_parked      the task is parked in co_await weft::sleep_for(1h):
//                    its worker has nothing else to do and goes to sleep.
//   weft_checkpoint  the task spins in a CPU-bound loop: a fixed chunk of work
//                    (kChunk xorshift steps), then co_await weft::checkpoint().
//   tbb_poll         oneTBB: a task_group task runs the same loop and polls
//                    tbb::is_current_task_group_canceling() after each chunk;
//                    the main thread calls task_group::cancel() and then
//                    wait() (inside the arena, in its reserved master slot).
//
// Two latencies per sample:
//   to_handler  t0 -> first thing in the task's catch block (weft), or the
//               moment the polling loop sees the flag (oneTBB)
//   to_join     t0 -> the canceller's join() (weft) / wait() (oneTBB) returns
// Next to them, for weft, the runtime's own figure (runtime::stats(): its
// cancellation-latency histogram, read before and after each sample; the
// histogram's sum is exact, so each sample's value is too):
//   rt_to_delivery  cancel() stamps the task -> the task takes the request at
//                   its resume point (1 us resolution)
// and after each worker count the runtime's histogram summaries over all the
// weft samples (warm-up included).  The runtime's "finished" histograms stay
// empty here: these tasks catch their cancellation and return a value.
// The weft task catches cancelled_error and returns the catch-block timestamp,
// so each sample also checks that the catch block ran (and after t0); the
// oneTBB sample checks that the task saw the flag and that wait() reported
// task_group_status::canceled.  p50 / p99 / max over all samples; the samples
// are also cut into five consecutive chunks ("repetitions") whose p50 and p99
// show how stable the figures were.
//
// Threads: weft runtime_options{.workers = k}; oneTBB task_arena(k + 1, 1)
// (k worker slots + the main thread's reserved slot for wait()), with
// global_control allowing k workers.  The same main thread cancels for both.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bench.hpp"

namespace {

constexpr int kChunk = 32;  // xorshift steps between two polls (about 50 ns)

inline std::uint64_t work(std::uint64_t x) {
  for (int i = 0; i < kChunk; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

std::atomic<std::uint64_t> g_sink{0};

weft::task<std::int64_t> parked_task(std::atomic<int>* started) {
  try {
    started->store(1, std::memory_order_release);
    co_await weft::sleep_for(std::chrono::hours(1));
  } catch (const weft::cancelled_error&) {
    co_return bench::now_ns();
  }
  co_return -1;  // the sleep ended without a cancel: reported as a failure
}

weft::task<std::int64_t> checkpoint_task(std::atomic<int>* started) {
  std::uint64_t x = 88172645463325252ULL;
  try {
    started->store(1, std::memory_order_release);
    for (;;) {
      x = work(x);
      co_await weft::checkpoint();
    }
  } catch (const weft::cancelled_error&) {
    const std::int64_t t = bench::now_ns();
    g_sink.store(x, std::memory_order_relaxed);
    co_return t;
  }
  co_return -1;
}

void wait_started(const std::atomic<int>& started) {
  while (started.load(std::memory_order_acquire) == 0) std::this_thread::yield();
}

struct sample {
  double to_handler_us, to_join_us;
  // weft: the runtime's own measurement; negative when it has none.
  double rt_delivery_us = -1;
};

struct series {
  std::vector<double> to_handler, to_join;  // microseconds
  std::vector<double> rt_delivery;
  void add(const sample& s) {
    to_handler.push_back(s.to_handler_us);
    to_join.push_back(s.to_join_us);
    if (s.rt_delivery_us >= 0) rt_delivery.push_back(s.rt_delivery_us);
  }
};

// The one sample a histogram gained between two stats() reads, in us (its
// sum is exact); -1 unless it gained exactly one.
double one_sample_us(const weft::latency_histogram& before, const weft::latency_histogram& after) {
  if (after.count() != before.count() + 1) return -1;
  return static_cast<double>(after.sum_ns - before.sum_ns) / 1e3;
}

sample weft_sample(weft::runtime& rt, bool parked, std::chrono::microseconds settle, unsigned k) {
  const weft::runtime_stats before = rt.stats();  // outside the timed interval
  std::atomic<int> started{0};
  weft::join_handle<std::int64_t> h =
      parked ? rt.spawn(parked_task(&started)) : rt.spawn(checkpoint_task(&started));
  wait_started(started);
  std::this_thread::sleep_for(settle);
  const std::int64_t t0 = bench::now_ns();
  h.cancel("latency sample");
  std::int64_t in_handler = -1;
  try {
    in_handler = h.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft sample: join threw %s\n", e.what());
  }
  const std::int64_t t1 = bench::now_ns();
  bench::check(parked ? "weft_parked: catch block ran after cancel()"
                      : "weft_checkpoint: catch block ran after cancel()",
               k, in_handler >= t0, true);
  const weft::runtime_stats after = rt.stats();
  return {static_cast<double>(in_handler - t0) / 1e3, static_cast<double>(t1 - t0) / 1e3,
          one_sample_us(before.cancel_to_delivery, after.cancel_to_delivery)};
}

sample tbb_sample(tbb::task_arena& arena, std::chrono::microseconds settle, unsigned k) {
  std::atomic<int> started{0};
  std::atomic<std::int64_t> observed{-1};
  tbb::task_group g;
  arena.execute([&] {
    g.run([&] {
      std::uint64_t x = 88172645463325252ULL;
      started.store(1, std::memory_order_release);
      for (;;) {
        x = work(x);
        if (tbb::is_current_task_group_canceling()) {
          observed.store(bench::now_ns(), std::memory_order_relaxed);
          break;
        }
      }
      g_sink.store(x, std::memory_order_relaxed);
    });
  });
  wait_started(started);
  std::this_thread::sleep_for(settle);
  const std::int64_t t0 = bench::now_ns();
  g.cancel();
  tbb::task_group_status st = tbb::task_group_status::not_complete;
  arena.execute([&] { st = g.wait(); });
  const std::int64_t t1 = bench::now_ns();
  const std::int64_t seen = observed.load(std::memory_order_relaxed);
  bench::check("tbb_poll: the task saw the cancellation after cancel()", k, seen >= t0, true);
  bench::check("tbb_poll: wait() reported canceled", k, st == tbb::task_group_status::canceled,
               true);
  return {static_cast<double>(seen - t0) / 1e3, static_cast<double>(t1 - t0) / 1e3};
}

bench::json describe(const std::string& variant, const char* metric, unsigned k,
                     const std::vector<double>& us) {
  std::vector<double> s = us;
  std::sort(s.begin(), s.end());
  std::vector<double> p50s, p99s;
  const std::size_t chunks = 5, per = us.size() / chunks;
  for (std::size_t c = 0; c < chunks && per > 0; ++c) {
    std::vector<double> part(us.begin() + static_cast<std::ptrdiff_t>(c * per),
                             us.begin() + static_cast<std::ptrdiff_t>((c + 1) * per));
    std::sort(part.begin(), part.end());
    p50s.push_back(bench::percentile_sorted(part, 50));
    p99s.push_back(bench::percentile_sorted(part, 99));
  }
  bench::json j = bench::json::object();
  j.add("variant", variant)
      .add("metric", metric)
      .add("workers", k)
      .add("count", static_cast<long long>(s.size()))
      .add("p50_us", bench::percentile_sorted(s, 50))
      .add("p90_us", bench::percentile_sorted(s, 90))
      .add("p99_us", bench::percentile_sorted(s, 99))
      .add("p999_us", bench::percentile_sorted(s, 99.9))
      .add("max_us", s.empty() ? 0.0 : s.back())
      .add("min_us", s.empty() ? 0.0 : s.front())
      .add("chunk_p50_us", p50s)
      .add("chunk_p99_us", p99s)
      .add("samples_us", us);
  std::string fifths;
  for (double v : p50s) {
    char b[24];
    std::snprintf(b, sizeof b, "%s%.1f", fifths.empty() ? "" : " ", v);
    fifths += b;
  }
  std::printf("%-8u %-16s %-11s %9.2f %9.2f %9.2f %10.1f   [%s]\n", k, variant.c_str(), metric,
              bench::percentile_sorted(s, 50), bench::percentile_sorted(s, 90),
              bench::percentile_sorted(s, 99), s.empty() ? 0.0 : s.back(), fifths.c_str());
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "cancel_latency [--samples=10^4] [--settle-us=200] [--idle-spin-us=1000] "
                "[--block=50] [--workers=1,2] "
                "[--quick] [--json=FILE]",
                {"samples", "settle-us", "idle-spin-us", "block"});
  const long long samples = a.num("samples", a.quick() ? 1000 : 10000, 10, 10'000'000);
  const std::chrono::microseconds settle(a.num("settle-us", 200, 0, 1'000'000));
  const long long block = a.num("block", 50, 1, 1'000'000);
  const std::chrono::microseconds idle_spin(a.num("idle-spin-us", 1000, 0, 10'000'000));
  const std::vector<unsigned> workers = a.workers();
  bench::print_header("cancel_latency", "cancel() to handler / join, weft and oneTBB interleaved");
  std::printf(
      "%lld samples per variant and worker count, in blocks of %lld; settle %lld us; weft "
      "idle_spin %lld us; work chunk %d steps\n",
      samples, block, static_cast<long long>(settle.count()),
      static_cast<long long>(idle_spin.count()), kChunk);

  unsigned max_k = 1;
  for (unsigned k : workers) max_k = std::max(max_k, k);
  // Let oneTBB have k worker threads besides the main thread (its default is
  // one fewer than the CPUs).
  tbb::global_control allow(tbb::global_control::max_allowed_parallelism, max_k + 1);

  bench::json doc = bench::document("cancel_latency", a);
  doc.add("samples", samples)
      .add("settle_us", static_cast<long long>(settle.count()))
      .add("idle_spin_us", static_cast<long long>(idle_spin.count()))
      .add("block", block)
      .add("work_chunk_steps", kChunk);
  bench::json results = bench::json::array();

  std::printf("\n%-8s %-16s %-11s %9s %9s %9s %10s   %s\n", "workers", "variant", "metric",
              "p50 us", "p90 us", "p99 us", "max us", "p50 of each fifth");
  for (unsigned k : workers) {
    weft::runtime_options ro;
    ro.workers = k;
    ro.idle_spin = idle_spin;
    weft::runtime rt(ro);
    tbb::task_arena arena(static_cast<int>(k) + 1, 1);
    arena.initialize();

    series parked, checkpoint, poll;
    // Warm-up: a few untimed samples of each.
    for (int i = 0; i < 20; ++i) {
      weft_sample(rt, true, settle, k);
      weft_sample(rt, false, settle, k);
      tbb_sample(arena, settle, k);
    }
    // Blocks of --block samples per variant, the variants taking turns (in a
    // rotating order), with kSettle between blocks: oneTBB's workers spin for
    // a few milliseconds after their work runs out, and must not share the
    // CPUs with a weft sample (nor weft's threads with a oneTBB sample).
    for (long long done = 0, b = 0; done < samples; ++b) {
      const long long m = std::min(block, samples - done);
      for (int j = 0; j < 3; ++j) {
        std::this_thread::sleep_for(bench::kSettle);
        for (long long i = 0; i < m; ++i) {
          switch ((b + j) % 3) {
            case 0:
              parked.add(weft_sample(rt, true, settle, k));
              break;
            case 1:
              checkpoint.add(weft_sample(rt, false, settle, k));
              break;
            default:
              poll.add(tbb_sample(arena, settle, k));
              break;
          }
        }
      }
      done += m;
    }
    results.push(describe("weft_parked", "to_handler", k, parked.to_handler));
    results.push(describe("weft_parked", "to_join", k, parked.to_join));
    results.push(describe("weft_checkpoint", "to_handler", k, checkpoint.to_handler));
    results.push(describe("weft_checkpoint", "to_join", k, checkpoint.to_join));
    results.push(describe("tbb_poll", "to_handler", k, poll.to_handler));
    results.push(describe("tbb_poll", "to_join", k, poll.to_join));
    results.push(describe("weft_parked", "rt_to_delivery", k, parked.rt_delivery));
    results.push(describe("weft_checkpoint", "rt_to_delivery", k, checkpoint.rt_delivery));
    const weft::runtime_stats st = rt.stats();
    std::printf(
        "runtime::stats(), %u worker%s, all weft samples: cancel -> delivered %s; "
        "delivered -> finished %s; cancel -> finished %s\n",
        k, k > 1 ? "s" : "", st.cancel_to_delivery.summary().c_str(),
        st.delivery_to_finish.summary().c_str(), st.cancel_to_finish.summary().c_str());
    std::fflush(stdout);
  }
  doc.add("time_slice_us", static_cast<long long>(weft::runtime_options{}.time_slice.count()));
  return bench::finish(doc, results, a);
}
