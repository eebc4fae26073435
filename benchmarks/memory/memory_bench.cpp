// SPDX-License-Identifier: MIT
// memory_bench -- memory: peak RSS of fib(n), bytes per suspended task and
// bytes per suspended forked child (the fork-join form).  Every measurement
// runs in a fresh child process (this program, started again with
// --child=...), so that each peak is its own; the parent runs the cases in
// turn, repetition by repetition, and reports medians.
//
//   memory_bench [--n=35] [--tasks=10^6] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: fib(30), 10^5 sleeping tasks and forked children, 3 reps.  Cases:
//
//   fib, runtime=serial|weft|weft-fork|weft-fork-extern|tbb, workers=k: VmHWM
//     (/proc/self/status) after one fib(n) (weft: block_on on a runtime with
//     k workers, spawn+join (fib/weft_fib.hpp) or the fork-join form, inline
//     (fib/weft_fork_fib.hpp) or in its own .cpp (fib/weft_fork_fib_extern.cpp);
//     oneTBB: task_group fib in a task_arena(k)); the serial case is the
//     process's own floor.  The result is checked.  "before" is VmHWM once the
//     runtime exists and before fib starts.
//   sleepers, workers=k (weft only: a oneTBB task cannot suspend): a driver
//     task spawns N tasks that each co_await weft::sleep_for(1h); once all N
//     have started (and 50 ms more), VmRSS minus VmRSS before the spawns,
//     divided by N, is the memory per suspended task: frame, task state, the
//     timer heap's slot and the allocator's overhead.  The vector of N handles
//     is allocated and written before the first reading, so it is not counted.
//     Then all N are cancelled from the main thread; each catches
//     cancelled_error and returns 1.  Reported as well: the time from the
//     first cancel() until every handle is done, per task, and that every
//     catch block ran and no frame is left (diagnostics::live_frames()).
//   forked, workers=k (the fork-join form): a fork tree whose N leaves all
//     suspend at once.  The root forks ceil(N / 1000) group frames in a loop,
//     each group forks up to 1000 leaves in a loop, and each joins once.  A
//     leaf counts itself and then co_awaits weft::yield() until a gate opens
//     (a yielded frame waits in the runtime's injection queue; the group
//     frames wait at their joins).  Once all N have counted themselves (and
//     50 ms more), VmRSS minus VmRSS before the tree started, divided by N, is
//     the memory per suspended forked child: its frame block on a worker's
//     fork stack (api/weft/detail/fork_stack.hpp: 64 KiB segments, blocks of
//     whole 64-byte lines), its slot in the injection queue, and its share of
//     the group frames.  At most k leaves run at the reading; the rest are
//     suspended.  The outputs (a long per leaf and per group) are allocated
//     and written before the first reading, as the sleepers' handles are.
//     Then the gate opens, every leaf returns 1 and the tree's sum is checked
//     against N.  Reported beside it: the block sizes of a leaf and of a
//     group frame (each block's `bytes`, header included), read from a frame
//     made off the workers (where it comes from the heap with the same header).
#include <oneapi/tbb/task_arena.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/bench.hpp"
#include "fib/serial.hpp"
#include "fib/tbb_fib.hpp"
#include "fib/weft_fib.hpp"
#include "fib/weft_fork_fib.hpp"
#include "fib/weft_fork_fib_extern.hpp"

namespace {

// A /proc/self/status field in KiB ("VmHWM", "VmRSS").
long long status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size());
  }
  return -1;
}

long (*volatile g_serial)(int) = fib_bench::fib_serial;

// ---------------------------------------------------------------- children

int child_fib(const std::string& runtime, unsigned k, int n) {
  const long want = fib_bench::fib_value(n);
  long got = -1;
  long long before = 0;
  auto t0 = bench::clock_type::now();
  if (runtime == "serial") {
    before = status_kib("VmHWM");
    t0 = bench::clock_type::now();
    got = g_serial(n);
  } else if (runtime == "weft") {
    weft::runtime_options ro;
    ro.workers = k;
    weft::runtime rt(ro);
    before = status_kib("VmHWM");
    t0 = bench::clock_type::now();
    got = rt.block_on(fib_bench::fib_weft(n));
  } else if (runtime == "weft-fork" || runtime == "weft-fork-extern") {
    weft::runtime_options ro;
    ro.workers = k;
    weft::runtime rt(ro);
    before = status_kib("VmHWM");
    t0 = bench::clock_type::now();
    got = rt.block_on(weft::as_task(runtime == "weft-fork" ? fib_bench::fib_fork(n)
                                                           : fib_bench::fib_fork_extern(n)));
  } else {
    tbb::task_arena arena(static_cast<int>(k));
    arena.initialize();
    before = status_kib("VmHWM");
    t0 = bench::clock_type::now();
    arena.execute([&] { got = fib_bench::fib_tbb(n); });
  }
  const double ms = bench::ms_since(t0);
  std::printf("RESULT hwm_kib=%lld before_kib=%lld ms=%.3f ok=%d\n", status_kib("VmHWM"), before,
              ms, got == want ? 1 : 0);
  return got == want ? 0 : 1;
}

weft::task<int> sleeper(std::atomic<long long>* started) {
  try {
    started->fetch_add(1, std::memory_order_relaxed);
    co_await weft::sleep_for(std::chrono::hours(1));
  } catch (const weft::cancelled_error&) {
    co_return 1;
  }
  co_return 0;
}

weft::task<void> spawn_sleepers(std::vector<weft::join_handle<int>>* handles,
                                std::atomic<long long>* started) {
  for (auto& h : *handles) h = weft::spawn(sleeper(started));
  co_return;
}

weft::task<void> nothing() { co_return; }

int child_sleepers(unsigned k, long long n) {
  weft::runtime_options ro;
  ro.workers = k;
  weft::runtime rt(ro);
  // Warm the workers up and write the handle vector before the first reading.
  for (int i = 0; i < 100; ++i) rt.block_on(nothing());
  std::vector<weft::join_handle<int>> handles(static_cast<std::size_t>(n));
  std::atomic<long long> started{0};
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const long long rss0 = status_kib("VmRSS");

  rt.block_on(spawn_sleepers(&handles, &started));
  while (started.load(std::memory_order_relaxed) < n)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const long long rss1 = status_kib("VmRSS");
  const long long hwm = status_kib("VmHWM");
  bool ok = true;
  for (auto& h : handles) ok = ok && !h.done();  // all still asleep

  const auto t0 = bench::clock_type::now();
  for (auto& h : handles) h.cancel();
  for (auto& h : handles) {
    while (!h.done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  const double cancel_ms = bench::ms_since(t0);
  long long caught = 0;
  for (auto& h : handles) caught += h.join();
  handles.clear();
  handles.shrink_to_fit();
  rt.shutdown();
  const long long live = weft::diagnostics::live_frames();
  ok = ok && caught == n && live == 0;
  std::printf(
      "RESULT rss_before_kib=%lld rss_after_kib=%lld hwm_kib=%lld bytes_per_task=%.2f "
      "cancel_ns_per_task=%.1f caught=%lld live_frames=%lld ok=%d\n",
      rss0, rss1, hwm, static_cast<double>(rss1 - rss0) * 1024.0 / static_cast<double>(n),
      cancel_ms * 1e6 / static_cast<double>(n), caught, live, ok ? 1 : 0);
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------- forked children

struct fork_gate {
  std::atomic<long long> arrived{0};
  std::atomic<bool> open{false};
};

weft::fork_task<long> suspended_leaf(fork_gate* g) {
  // Relaxed: a count the main thread polls; nothing is read through it.
  g->arrived.fetch_add(1, std::memory_order_relaxed);
  // Acquire: pairs with the main thread's release store that opens the gate.
  do {
    co_await weft::yield();
  } while (!g->open.load(std::memory_order_acquire));
  co_return 1;
}

weft::fork_task<long> suspended_group(fork_gate* g, long* out, long n) {
  for (long i = 0; i < n; ++i) co_await weft::fork(out[i], suspended_leaf(g));
  co_await weft::join();
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += out[i];
  co_return sum;
}

constexpr long kGroup = 1000;  // leaves per group frame

weft::fork_task<long> suspended_tree(fork_gate* g, long* leaf_out, long* group_out, long n) {
  const long groups = (n + kGroup - 1) / kGroup;
  for (long i = 0; i < groups; ++i)
    co_await weft::fork(
        group_out[i], suspended_group(g, leaf_out + i * kGroup, std::min(kGroup, n - i * kGroup)));
  co_await weft::join();
  long sum = 0;
  for (long i = 0; i < groups; ++i) sum += group_out[i];
  co_return sum;
}

// Frames for block_bytes, made where the compiler cannot see them destroyed
// (a frame created and destroyed in one function may be elided onto the
// caller's stack, with no block at all).
[[gnu::noinline]] weft::fork_task<long> make_leaf(fork_gate* g) { return suspended_leaf(g); }
[[gnu::noinline]] weft::fork_task<long> make_group(fork_gate* g) {
  return suspended_group(g, nullptr, 0);
}

// The block a fork frame was given (header included); -1 if the frame's
// address is not right after a heap block's header (an elided frame, or a
// compiler that puts the coroutine's frame elsewhere in its allocation).
template <class T>
long long block_bytes(weft::fork_task<T> t) {
  const auto h = t.release();
  const auto* b = static_cast<const weft::detail::fork_block*>(h.address()) - 1;
  // Relaxed: this thread made the frame.  Made off the workers, the block is
  // a heap block (kHeap), the same header and size as on a worker's stack.
  const bool heap = b->state.load(std::memory_order_relaxed) == weft::detail::fork_block::kHeap;
  const long long bytes = heap ? static_cast<long long>(b->bytes) : -1;
  h.destroy();
  return bytes;
}

int child_forked(unsigned k, long long n) {
  weft::runtime_options ro;
  ro.workers = k;
  weft::runtime rt(ro);
  fork_gate probe_gate;
  const long long leaf_block = block_bytes(make_leaf(&probe_gate));
  const long long group_block = block_bytes(make_group(&probe_gate));
  // Warm the workers and their fork stacks up and write the outputs before
  // the first reading.
  for (int i = 0; i < 20; ++i) rt.block_on(weft::as_task(fib_bench::fib_fork(20)));
  const long groups = static_cast<long>((n + kGroup - 1) / kGroup);
  std::vector<long> leaf_out(static_cast<std::size_t>(n), -1);
  std::vector<long> group_out(static_cast<std::size_t>(groups), -1);
  fork_gate g;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const long long rss0 = status_kib("VmRSS");

  const auto t0 = bench::clock_type::now();
  long long rss1 = 0, hwm = 0;
  double build_ms = 0;
  long got = -1;
  bool ok = true;
  {
    weft::join_handle<long> h = rt.spawn(
        weft::as_task(suspended_tree(&g, leaf_out.data(), group_out.data(), static_cast<long>(n))));
    while (g.arrived.load(std::memory_order_relaxed) < n)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    build_ms = bench::ms_since(t0);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    rss1 = status_kib("VmRSS");
    hwm = status_kib("VmHWM");
    ok = !h.done();
    // Release: pairs with the leaves' acquire loads.
    g.open.store(true, std::memory_order_release);
    while (!h.done()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    got = h.join();
  }
  rt.shutdown();
  const long long live = weft::diagnostics::live_frames();
  ok = ok && got == n && live == 0;
  std::printf(
      "RESULT rss_before_kib=%lld rss_after_kib=%lld hwm_kib=%lld bytes_per_child=%.2f "
      "leaf_block=%lld group_block=%lld promise=%zu build_ms=%.1f sum=%ld live_frames=%lld "
      "ok=%d\n",
      rss0, rss1, hwm, static_cast<double>(rss1 - rss0) * 1024.0 / static_cast<double>(n),
      leaf_block, group_block, sizeof(weft::fork_task<long>::promise_type), build_ms, got, live,
      ok ? 1 : 0);
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------- parent

// Runs this program again with `args`; returns the key=value pairs of its
// RESULT line (empty on failure).
std::vector<std::pair<std::string, double>> run_child(const std::string& args) {
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return {};
  self[len] = '\0';
  const std::string cmd = std::string("'") + self + "' " + args;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {};
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int status = ::pclose(p);
  std::vector<std::pair<std::string, double>> kv;
  const auto pos = out.find("RESULT ");
  if (pos == std::string::npos || status != 0) {
    std::fprintf(stderr, "child '%s' failed (status %d): %s\n", args.c_str(), status, out.c_str());
    return {};
  }
  std::istringstream in(out.substr(pos + 7));
  std::string tok;
  while (in >> tok) {
    const auto eq = tok.find('=');
    if (eq != std::string::npos)
      kv.emplace_back(tok.substr(0, eq), std::atof(tok.c_str() + eq + 1));
  }
  return kv;
}

double get(const std::vector<std::pair<std::string, double>>& kv, const char* key) {
  for (const auto& [k, v] : kv)
    if (k == key) return v;
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "memory_bench [--n=35] [--tasks=10^6] [--workers=1,2] [--reps=5] [--quick] "
                "[--json=FILE]",
                {"n", "tasks", "child", "runtime"});
  const int n = static_cast<int>(a.num("n", a.quick() ? 30 : 35, 0, 45));
  const long long tasks = a.num("tasks", a.quick() ? 100'000 : 1'000'000, 1, 100'000'000);
  const std::string child = a.str("child", "");
  if (child == "fib") return child_fib(a.str("runtime", "weft"), a.workers().front(), n);
  if (child == "sleepers") return child_sleepers(a.workers().front(), tasks);
  if (child == "forked") return child_forked(a.workers().front(), tasks);
  if (!child.empty()) a.fail("--child=" + child);

  const int reps = a.reps(5, 3);
  bench::print_header(
      "memory_bench",
      "peak RSS of fib(n); bytes per suspended task and per suspended forked child");
  std::printf(
      "fib(%d), %lld sleeping tasks, %lld suspended forked children, %d reps, one child process "
      "per measurement\n",
      n, tasks, tasks, reps);

  struct fib_case {
    std::string runtime;
    unsigned workers;
    std::vector<double> hwm, before, ms;
  };
  std::vector<fib_case> fibs{{"serial", 1, {}, {}, {}}};
  for (unsigned k : a.workers()) {
    fibs.push_back({"weft", k, {}, {}, {}});
    fibs.push_back({"weft-fork", k, {}, {}, {}});
    fibs.push_back({"weft-fork-extern", k, {}, {}, {}});
    fibs.push_back({"oneTBB", k, {}, {}, {}});
  }
  struct sleep_case {
    unsigned workers;
    std::vector<double> bytes, cancel_ns, rss_before, rss_after;
  };
  std::vector<sleep_case> sleeps;
  for (unsigned k : a.workers()) sleeps.push_back({k, {}, {}, {}, {}});
  struct fork_case {
    unsigned workers;
    std::vector<double> bytes, rss_before, rss_after, build_ms;
    double leaf_block = 0, group_block = 0, promise = 0;
  };
  std::vector<fork_case> forks;
  for (unsigned k : a.workers()) forks.push_back({k, {}, {}, {}, {}, 0, 0, 0});

  for (int rep = 0; rep < reps; ++rep) {
    // Alternate the order of the cases from one repetition to the next.
    std::vector<std::size_t> order(fibs.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = rep % 2 ? order.size() - 1 - i : i;
    for (std::size_t i : order) {
      fib_case& c = fibs[i];
      const auto kv = run_child(
          "--child=fib --runtime=" + std::string(c.runtime == "oneTBB" ? "tbb" : c.runtime) +
          " --workers=" + std::to_string(c.workers) + " --n=" + std::to_string(n));
      bench::check(("fib child " + c.runtime + " ok").c_str(), c.workers, get(kv, "ok"), 1.0);
      c.hwm.push_back(get(kv, "hwm_kib") / 1024.0);
      c.before.push_back(get(kv, "before_kib") / 1024.0);
      c.ms.push_back(get(kv, "ms"));
    }
    for (sleep_case& c : sleeps) {
      const auto kv = run_child("--child=sleepers --workers=" + std::to_string(c.workers) +
                                " --tasks=" + std::to_string(tasks));
      bench::check("sleepers child ok (all parked, all caught, no frame left)", c.workers,
                   get(kv, "ok"), 1.0);
      c.bytes.push_back(get(kv, "bytes_per_task"));
      c.cancel_ns.push_back(get(kv, "cancel_ns_per_task"));
      c.rss_before.push_back(get(kv, "rss_before_kib") / 1024.0);
      c.rss_after.push_back(get(kv, "rss_after_kib") / 1024.0);
    }
    for (fork_case& c : forks) {
      const auto kv = run_child("--child=forked --workers=" + std::to_string(c.workers) +
                                " --tasks=" + std::to_string(tasks));
      bench::check("forked child ok (all suspended, sum right, no frame left)", c.workers,
                   get(kv, "ok"), 1.0);
      c.bytes.push_back(get(kv, "bytes_per_child"));
      c.rss_before.push_back(get(kv, "rss_before_kib") / 1024.0);
      c.rss_after.push_back(get(kv, "rss_after_kib") / 1024.0);
      c.build_ms.push_back(get(kv, "build_ms"));
      c.leaf_block = get(kv, "leaf_block");
      c.group_block = get(kv, "group_block");
      c.promise = get(kv, "promise");
    }
  }

  bench::json doc = bench::document("memory", a);
  doc.add("fib_n", n).add("sleeping_tasks", tasks);
  bench::json results = bench::json::array();
  std::printf("\nfib(%d) peak RSS (VmHWM), medians of %d child processes\n", n, reps);
  const double serial_peak = bench::median(fibs.front().hwm);
  std::printf("%-8s %-17s %10s %16s %10s %16s\n", "workers", "runtime", "peak MiB",
              "before fib MiB", "fib ms", "peak - serial");
  for (const fib_case& c : fibs) {
    std::printf("%-8s %-17s %10.2f %16.2f %10.1f %12.2f MiB\n",
                c.runtime == "serial" ? "-" : std::to_string(c.workers).c_str(), c.runtime.c_str(),
                bench::median(c.hwm), bench::median(c.before), bench::median(c.ms),
                bench::median(c.hwm) - serial_peak);
    bench::json j = bench::json::object();
    j.add("case", "fib_peak_rss")
        .add("runtime", c.runtime)
        .add("workers", c.workers)
        .add("n", n)
        .add("median_peak_mib", bench::median(c.hwm))
        .add("median_before_mib", bench::median(c.before))
        .add("median_ms", bench::median(c.ms))
        .add("peak_mib", c.hwm)
        .add("before_mib", c.before)
        .add("ms", c.ms);
    results.push(j);
  }
  std::printf("\n%lld tasks suspended in sleep_for (weft), medians of %d child processes\n", tasks,
              reps);
  std::printf("%-8s %16s %16s %16s %22s\n", "workers", "bytes/task", "RSS before MiB",
              "RSS after MiB", "cancel all, ns/task");
  for (const sleep_case& c : sleeps) {
    std::printf("%-8u %16.1f %16.1f %16.1f %22.1f\n", c.workers, bench::median(c.bytes),
                bench::median(c.rss_before), bench::median(c.rss_after),
                bench::median(c.cancel_ns));
    bench::json j = bench::json::object();
    j.add("case", "suspended_tasks")
        .add("runtime", "weft")
        .add("workers", c.workers)
        .add("tasks", tasks)
        .add("median_bytes_per_task", bench::median(c.bytes))
        .add("median_cancel_ns_per_task", bench::median(c.cancel_ns))
        .add("bytes_per_task", c.bytes)
        .add("cancel_ns_per_task", c.cancel_ns)
        .add("rss_before_mib", c.rss_before)
        .add("rss_after_mib", c.rss_after);
    results.push(j);
  }
  std::printf(
      "\n%lld forked children suspended at once (fork-join form: leaves in yield(), %ld per "
      "group frame), medians of %d child processes\n",
      tasks, kGroup, reps);
  std::printf("%-8s %14s %15s %14s %10s %12s %12s %14s\n", "workers", "bytes/child",
              "RSS before MiB", "RSS after MiB", "build ms", "leaf block", "group block",
              "promise<long>");
  for (const fork_case& c : forks) {
    std::printf("%-8u %14.1f %15.1f %14.1f %10.1f %10.0f B %10.0f B %12.0f B\n", c.workers,
                bench::median(c.bytes), bench::median(c.rss_before), bench::median(c.rss_after),
                bench::median(c.build_ms), c.leaf_block, c.group_block, c.promise);
    bench::json j = bench::json::object();
    j.add("case", "suspended_forked_children")
        .add("runtime", "weft-fork")
        .add("workers", c.workers)
        .add("children", tasks)
        .add("children_per_group", static_cast<long long>(kGroup))
        .add("median_bytes_per_child", bench::median(c.bytes))
        .add("leaf_block_bytes", c.leaf_block)
        .add("group_block_bytes", c.group_block)
        .add("promise_bytes", c.promise)
        .add("bytes_per_child", c.bytes)
        .add("build_ms", c.build_ms)
        .add("rss_before_mib", c.rss_before)
        .add("rss_after_mib", c.rss_after);
    results.push(j);
  }
  return bench::finish(doc, results, a);
}
