// memory_bench -- memory: peak RSS of fib(n) and bytes per suspended task.
// Every measurement runs in a fresh child process (this program, started
// again with --child=...), so that each peak is its own; the parent runs the
// cases in turn, repetition by repetition, and reports medians.
//
//   memory_bench [--n=35] [--tasks=10^6] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: fib(30), 10^5 sleeping tasks, 3 reps.  Cases:
//
//   fib, runtime=serial|weft|tbb, workers=k: VmHWM (/proc/self/status) after
//     one fib(n) (weft: block_on on a runtime with k workers; oneTBB:
//     task_group fib in a task_arena(k)); the serial case is the process's
//     own floor.  The result is checked.  "before" is VmHWM once the runtime
//     exists and before fib starts.
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
#include <oneapi/tbb/task_arena.h>

#include <unistd.h>

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
  if (!child.empty()) a.fail("--child=" + child);

  const int reps = a.reps(5, 3);
  bench::print_header("memory_bench", "peak RSS of fib(n); bytes per suspended task");
  std::printf("fib(%d), %lld sleeping tasks, %d reps, one child process per measurement\n", n,
              tasks, reps);

  struct fib_case {
    std::string runtime;
    unsigned workers;
    std::vector<double> hwm, before, ms;
  };
  std::vector<fib_case> fibs{{"serial", 1, {}, {}, {}}};
  for (unsigned k : a.workers()) {
    fibs.push_back({"weft", k, {}, {}, {}});
    fibs.push_back({"oneTBB", k, {}, {}, {}});
  }
  struct sleep_case {
    unsigned workers;
    std::vector<double> bytes, cancel_ns, rss_before, rss_after;
  };
  std::vector<sleep_case> sleeps;
  for (unsigned k : a.workers()) sleeps.push_back({k, {}, {}, {}, {}});

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
  }

  bench::json doc = bench::document("memory", a);
  doc.add("fib_n", n).add("sleeping_tasks", tasks);
  bench::json results = bench::json::array();
  std::printf("\nfib(%d) peak RSS (VmHWM), medians of %d child processes\n", n, reps);
  std::printf("%-8s %-8s %14s %20s %10s\n", "workers", "runtime", "peak MiB", "before fib MiB",
              "fib ms");
  for (const fib_case& c : fibs) {
    std::printf("%-8s %-8s %14.2f %20.2f %10.1f\n",
                c.runtime == "serial" ? "-" : std::to_string(c.workers).c_str(), c.runtime.c_str(),
                bench::median(c.hwm), bench::median(c.before), bench::median(c.ms));
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
  return bench::finish(doc, results, a);
}
