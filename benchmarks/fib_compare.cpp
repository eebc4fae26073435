// SPDX-License-Identifier: MIT
// fib_compare -- naive fib(n) with weft and with oneTBB task_group (and with
// libfork when the suite is built with it), side by side, interleaved, plus
// the plain recursive function as the floor.  weft's fib is measured in two
// forms, each in two spellings of the same coroutine:
//   weft              spawn+join, inline function in a header (fib/weft_fib.hpp)
//   weft-extern       the same, a non-inline function in its own .cpp, as users
//                     write coroutines (fib/weft_fib_extern.cpp)
//   weft-fork         the fork-join form, weft::fork_task (fib/weft_fork_fib.hpp)
//   weft-fork-extern  the same in its own .cpp (fib/weft_fork_fib_extern.cpp)
//
//   fib_compare [--n=30] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: n=30, reps=3 (a smoke run; scripts/run.sh uses it).
//
// For each worker count the weft runtime (runtime_options{.workers=k}) and the
// oneTBB arena (tbb::task_arena(k)) (and libfork's pool) are built once and
// warmed up with untimed runs (at least one, for 300 ms); then each repetition times the serial
// function and each runtime (the order of the runtimes rotates between repetitions).  Only the
// computation is timed (steady_clock): for weft, block_on(fib(n)) on a runtime
// that already exists; for oneTBB, arena.execute of the task_group fib.
// Every result is checked against fib(n) computed iteratively; a mismatch
// exits 1.  The loop is common/bench.hpp's run_problem, shared with the other
// problems.
//
// fib(n) makes 2*fib(n+1)-1 calls; "ns/task" is the median divided by that.
#include "common/bench.hpp"
#include "fib/serial.hpp"
#include "fib/tbb_fib.hpp"
#include "fib/weft_fib.hpp"
#include "fib/weft_fib_extern.hpp"
#include "fib/weft_fork_fib.hpp"
#include "fib/weft_fork_fib_extern.hpp"

namespace {

// The serial reference is called through a volatile pointer: fib_serial is a
// pure function, and clang otherwise hoists the call out of the timed region
// (measured: 0.00 ms).  The recursion inside is compiled as usual.
long (*volatile g_serial)(int) = fib_bench::fib_serial;

}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "fib_compare [--n=30] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]", {"n"});
  const int n = static_cast<int>(a.num("n", 30, 0, 45));
  const int reps = a.reps(5, 3);
  bench::print_header("fib_compare", "naive fib(n), every call forks one child and joins it");

  bench::problem p;
  p.name = "fib";
  p.instance = "n=" + std::to_string(n);
  p.tasks = static_cast<double>(fib_bench::fib_calls(n));
  p.expected = fib_bench::fib_value(n);
  p.serial = [n] { return g_serial(n); };
  p.weft = [n](weft::runtime& rt) { return rt.block_on(fib_bench::fib_weft(n)); };
  p.weft_more.push_back({"weft-extern", [n](weft::runtime& rt) {
                           return rt.block_on(fib_bench::fib_weft_extern(n));
                         }});
  p.weft_more.push_back({"weft-fork", [n](weft::runtime& rt) {
                           return rt.block_on(weft::as_task(fib_bench::fib_fork(n)));
                         }});
  p.weft_more.push_back({"weft-fork-extern", [n](weft::runtime& rt) {
                           return rt.block_on(weft::as_task(fib_bench::fib_fork_extern(n)));
                         }});
  p.tbb = [n](tbb::task_arena& arena) {
    long r = 0;
    arena.execute([&r, n] { r = fib_bench::fib_tbb(n); });
    return static_cast<long long>(r);
  };
#ifdef WEFT_BENCH_LIBFORK
  p.libfork = [n](peer_libfork::pool& lf) { return peer_libfork::fib(lf, n); };
#endif

  bench::json doc = bench::document("fib", a);
  bench::json results = bench::json::array();
  const bench::problem_medians m = bench::run_problem(p, a.workers(), reps, results);

  // Scaling and distance from the floor, for the first worker count vs the others.
  if (!m.workers.empty()) {
    std::printf("\nweft %u worker(s) / serial: %.1fx;  oneTBB %u worker(s) / serial: %.1fx\n",
                m.workers[0], m.weft_ms[0] / m.serial_ms, m.workers[0], m.tbb_ms[0] / m.serial_ms);
    for (std::size_t i = 1; i < m.workers.size(); ++i) {
      std::printf("scaling %u -> %u workers: weft %.2fx, oneTBB %.2fx", m.workers[0], m.workers[i],
                  m.weft_ms[0] / m.weft_ms[i], m.tbb_ms[0] / m.tbb_ms[i]);
      for (const auto& [name, ms] : m.ms)
        if (name != "weft" && name != "oneTBB")
          std::printf(", %s %.2fx", name.c_str(), ms[0] / ms[i]);
      std::printf("\n");
    }
  }
  return bench::finish(doc, results, a);
}
