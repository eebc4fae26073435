// fib_compare -- naive fib(n) with weft and with oneTBB task_group, side by
// side, interleaved, plus the plain recursive function as the floor.
//
//   fib_compare [--n=30] [--workers=1,2] [--reps=5] [--quick]
//
// --quick: n=30, reps=3 (a smoke run; scripts/run.sh uses it).
//
// For each worker count the weft runtime (runtime_options{.workers=k}) and the
// oneTBB arena (tbb::task_arena(k)) are built once and warmed up with one
// untimed run; then each repetition times the serial function, weft and oneTBB
// (the order of the last two alternates between repetitions).  Only the
// computation is timed (steady_clock): for weft, block_on(fib(n)) on a runtime
// that already exists; for oneTBB, arena.execute of the task_group fib.
// Every result is checked against the serial value; a mismatch exits 1.
//
// fib(n) makes 2*fib(n+1)-1 calls; "ns/call" is the median divided by that.
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fib/serial.hpp"
#include "fib/tbb_fib.hpp"
#include "fib/weft_fib.hpp"

#ifndef WEFT_BUILD_TYPE
#define WEFT_BUILD_TYPE "unknown"
#endif

namespace {

using clock_type = std::chrono::steady_clock;

struct options {
  int n = 30;
  std::vector<unsigned> workers{1, 2};
  int reps = 5;
};

[[noreturn]] void usage(const char* bad) {
  std::fprintf(stderr,
               "fib_compare: bad argument '%s'\n"
               "usage: fib_compare [--n=30] [--workers=1,2] [--reps=5] [--quick]\n",
               bad);
  std::exit(2);
}

bool parse_int(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    long v = 0;
    if (std::strcmp(a, "--quick") == 0) {
      o.n = 30;
      o.reps = 3;
    } else if (std::strncmp(a, "--n=", 4) == 0) {
      if (!parse_int(a + 4, 0, 45, &v)) usage(a);
      o.n = static_cast<int>(v);
    } else if (std::strncmp(a, "--reps=", 7) == 0) {
      if (!parse_int(a + 7, 1, 1000, &v)) usage(a);
      o.reps = static_cast<int>(v);
    } else if (std::strncmp(a, "--workers=", 10) == 0) {
      o.workers.clear();
      std::string list(a + 10);
      std::size_t pos = 0;
      while (pos <= list.size()) {
        std::size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        std::string item = list.substr(pos, comma - pos);
        if (!parse_int(item.c_str(), 1, 1024, &v)) usage(a);
        o.workers.push_back(static_cast<unsigned>(v));
        pos = comma + 1;
      }
      if (o.workers.empty()) usage(a);
    } else {
      usage(a);
    }
  }
  return o;
}

struct stats {
  double median = 0, min = 0, max = 0;
};

stats summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  stats s;
  s.min = ms.front();
  s.max = ms.back();
  const std::size_t k = ms.size();
  s.median = (k % 2) ? ms[k / 2] : (ms[k / 2 - 1] + ms[k / 2]) / 2;
  return s;
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

bool g_mismatch = false;

// The serial reference is called through a volatile pointer: fib_serial is a
// pure function, and clang otherwise hoists the call out of the timed region
// (measured: 0.00 ms).  The recursion inside is compiled as usual.
long (*volatile g_serial)(int) = fib_bench::fib_serial;

void check(const char* who, unsigned workers, long got, long want) {
  if (got == want) return;
  std::fprintf(stderr, "MISMATCH: %s with %u workers computed %ld, expected %ld\n", who, workers,
               got, want);
  g_mismatch = true;
}

long run_weft(weft::runtime& rt, int n) { return rt.block_on(fib_bench::fib_weft(n)); }

long run_tbb(tbb::task_arena& arena, int n) {
  long r = 0;
  arena.execute([&r, n] { r = fib_bench::fib_tbb(n); });
  return r;
}

void print_row(const char* workers, const char* name, const stats& s, double calls,
               const char* ratio) {
  std::printf("%-8s %-8s %10.2f %10.2f %10.2f %9.2f  %s\n", workers, name, s.median, s.min, s.max,
              s.median * 1e6 / calls, ratio);
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);

#if defined(__clang__)
  const char* compiler = "clang";
#elif defined(__GNUC__)
  const char* compiler = "g++";
#else
  const char* compiler = "unknown compiler";
#endif
#ifdef NDEBUG
  const char* asserts = "NDEBUG";
#else
  const char* asserts = "asserts on";
#endif
  std::printf("compiler: %s %s, build type: %s (%s)\n", compiler, __VERSION__, WEFT_BUILD_TYPE,
              asserts);

  const long want = fib_bench::fib_value(opt.n);
  const double calls = static_cast<double>(fib_bench::fib_calls(opt.n));
  std::printf("fib(%d) = %ld, %.0f calls per run, %d reps; weft and oneTBB interleaved\n", opt.n,
              want, calls, opt.reps);
  std::fflush(stdout);

  std::vector<double> serial_ms;
  struct group {
    unsigned workers;
    stats weft, tbb;
  };
  std::vector<group> groups;

  for (unsigned k : opt.workers) {
    weft::runtime_options ro;
    ro.workers = k;
    weft::runtime rt(ro);
    tbb::task_arena arena(static_cast<int>(k));
    arena.initialize();
    if (rt.workers() != k)
      std::fprintf(stderr, "warning: weft runtime has %u workers, asked for %u\n", rt.workers(), k);
    if (arena.max_concurrency() != static_cast<int>(k))
      std::fprintf(stderr, "warning: oneTBB arena has concurrency %d, asked for %u\n",
                   arena.max_concurrency(), k);

    // Warm-up (untimed): threads started, frame caches and tbb pools filled.
    check("weft (warm-up)", k, run_weft(rt, opt.n), want);
    check("oneTBB (warm-up)", k, run_tbb(arena, opt.n), want);

    std::vector<double> weft_ms, tbb_ms;
    for (int rep = 0; rep < opt.reps; ++rep) {
      auto t0 = clock_type::now();
      const long s = g_serial(opt.n);
      serial_ms.push_back(ms_since(t0));
      check("serial", 1, s, want);

      for (int turn = 0; turn < 2; ++turn) {
        const bool weft_turn = (turn == 0) == (rep % 2 == 0);
        if (weft_turn) {
          t0 = clock_type::now();
          const long r = run_weft(rt, opt.n);
          weft_ms.push_back(ms_since(t0));
          check("weft", k, r, s);
        } else {
          t0 = clock_type::now();
          const long r = run_tbb(arena, opt.n);
          tbb_ms.push_back(ms_since(t0));
          check("oneTBB", k, r, s);
        }
      }
    }
    groups.push_back({k, summarize(weft_ms), summarize(tbb_ms)});
  }

  std::printf("\n%-8s %-8s %10s %10s %10s %9s  %s\n", "workers", "runtime", "median ms", "min ms",
              "max ms", "ns/call", "oneTBB/weft");
  const stats ser = summarize(serial_ms);
  print_row("-", "serial", ser, calls, "");
  for (const group& g : groups) {
    char w[16], ratio[32];
    std::snprintf(w, sizeof w, "%u", g.workers);
    std::snprintf(ratio, sizeof ratio, "%.2fx", g.tbb.median / g.weft.median);
    print_row(w, "weft", g.weft, calls, ratio);
    print_row(w, "oneTBB", g.tbb, calls, "");
  }
  // Scaling and distance from the floor, for the first worker count vs the others.
  if (!groups.empty()) {
    const group& base = groups.front();
    std::printf("\nweft %u worker(s) / serial: %.1fx;  oneTBB %u worker(s) / serial: %.1fx\n",
                base.workers, base.weft.median / ser.median, base.workers,
                base.tbb.median / ser.median);
    for (std::size_t i = 1; i < groups.size(); ++i)
      std::printf("scaling %u -> %u workers: weft %.2fx, oneTBB %.2fx\n", base.workers,
                  groups[i].workers, base.weft.median / groups[i].weft.median,
                  base.tbb.median / groups[i].tbb.median);
  }
  if (g_mismatch) {
    std::printf("\nFAILED: some result differed from the serial value (see stderr)\n");
    return 1;
  }
  return 0;
}
