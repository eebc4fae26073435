// SPDX-License-Identifier: MIT
// slow_mode -- does a runtime have runs that are much slower than its best in
// a long-lived process?  weft and libfork take turns computing fib(n) in one
// process, on runtimes built once, for --pairs pairs of runs; then, for each
// runtime, the best time and how many runs were slower than --slow times it.
// Built only with libfork (docs/benchmarks.md, "Slow mode").
//
//   slow_mode [--pairs=150] [--n=30] [--workers=2] [--slow=1.5]
//             [--weft=inline|extern|fork|fork-extern] [--settle-us=5000] [--json=FILE]
//
// The order within a pair alternates (weft first in even pairs), and every run
// is followed by the same pause, as in the throughput programs.  --weft picks
// the form and spelling of weft's fib: spawn+join inline in a header
// (fib/weft_fib.hpp) or in its own .cpp (fib/weft_fib_extern.cpp), or the
// fork-join form, inline (fib/weft_fork_fib.hpp) or in its own .cpp
// (fib/weft_fork_fib_extern.cpp).
// Every result is checked against fib(n); a mismatch exits 1.  --reps and
// --quick are accepted (common options) and ignored but for --quick, which
// makes 20 pairs.
#include <algorithm>
#include <memory>

#include "common/bench.hpp"
#include "fib/serial.hpp"
#include "fib/weft_fib.hpp"
#include "fib/weft_fib_extern.hpp"
#include "fib/weft_fork_fib.hpp"
#include "fib/weft_fork_fib_extern.hpp"

#ifndef WEFT_BENCH_LIBFORK
#error "slow_mode compares weft with libfork: build it with WEFT_LIBFORK_DIR set"
#endif

namespace {

struct runner {
  std::string name;
  std::function<long()> run;
  std::vector<double> ms;
  std::vector<double> slow;  // indices of the slow runs, once all ran
};

// Run indices (0-based, in that runtime's own sequence) slower than `limit`.
std::vector<double> slow_runs(const std::vector<double>& ms, double limit) {
  std::vector<double> idx;
  for (std::size_t i = 0; i < ms.size(); ++i)
    if (ms[i] > limit) idx.push_back(static_cast<double>(i));
  return idx;
}

}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "slow_mode [--pairs=150] [--n=30] [--workers=2] [--slow=1.5] "
                "[--weft=inline|extern|fork|fork-extern] [--settle-us=5000] [--quick] "
                "[--json=FILE]",
                {"pairs", "n", "slow", "weft", "settle-us"});
  const int pairs = static_cast<int>(a.num("pairs", a.quick() ? 20 : 150, 1, 1000000));
  const int n = static_cast<int>(a.num("n", 30, 2, 45));
  unsigned k = 2;
  if (a.has("workers")) {
    const std::vector<unsigned> w = a.workers();
    if (w.size() != 1) a.fail("--workers=" + a.str("workers", "") + " (one worker count)");
    k = w[0];
  }
  const double slow = std::stod(a.str("slow", "1.5"));
  if (!(slow > 1.0)) a.fail("--slow=" + a.str("slow", ""));
  const std::string spelling = a.str("weft", "inline");
  if (spelling != "inline" && spelling != "extern" && spelling != "fork" &&
      spelling != "fork-extern")
    a.fail("--weft=" + spelling);
  const auto settle = std::chrono::microseconds(a.num("settle-us", 5000, 0, 10000000));
  const long expected = fib_bench::fib_value(n);

  bench::print_header("slow_mode", "weft and libfork alternating on fib(n) in one process");
  std::printf(
      "fib(%d), %u workers, %d pairs, slow = over %.2fx the runtime's best, weft's fib: %s\n", n, k,
      pairs, slow, spelling.c_str());
  std::fflush(stdout);

  weft::runtime_options ro;
  ro.workers = k;
  weft::runtime rt(ro);
  peer_libfork::pool lf(k);

  std::vector<runner> rs;
  if (spelling == "inline")
    rs.push_back({"weft", [&] { return rt.block_on(fib_bench::fib_weft(n)); }, {}, {}});
  else if (spelling == "extern")
    rs.push_back(
        {"weft-extern", [&] { return rt.block_on(fib_bench::fib_weft_extern(n)); }, {}, {}});
  else if (spelling == "fork")
    rs.push_back(
        {"weft-fork", [&] { return rt.block_on(weft::as_task(fib_bench::fib_fork(n))); }, {}, {}});
  else
    rs.push_back({"weft-fork-extern",
                  [&] { return rt.block_on(weft::as_task(fib_bench::fib_fork_extern(n))); },
                  {},
                  {}});
  rs.push_back({"libfork", [&] { return peer_libfork::fib(lf, n); }, {}, {}});

  for (runner& r : rs) bench::warm_up(r.name, k, r.run, expected);
  std::this_thread::sleep_for(settle);
  for (int pair = 0; pair < pairs; ++pair) {
    for (std::size_t turn = 0; turn < rs.size(); ++turn) {
      runner& r = rs[(turn + static_cast<std::size_t>(pair)) % rs.size()];
      const auto t0 = bench::clock_type::now();
      const long got = r.run();
      r.ms.push_back(bench::ms_since(t0));
      bench::check(r.name.c_str(), k, got, expected);
      std::this_thread::sleep_for(settle);
    }
  }

  bench::json doc = bench::document("slow_mode", a);
  doc.add("n", n).add("workers", k).add("pairs", pairs).add("slow_factor", slow);
  bench::json results = bench::json::array();
  std::printf("\n%-12s %9s %9s %9s %9s  %s\n", "runtime", "best ms", "median", "max ms", "slow",
              "slow runs (index in the runtime's own sequence)");
  for (runner& r : rs) {
    const bench::summary s = bench::summarize(r.ms);
    r.slow = slow_runs(r.ms, slow * s.min);
    const std::vector<double>& idx = r.slow;
    std::string list;
    for (std::size_t i = 0; i < idx.size() && i < 20; ++i) {
      if (i) list += ' ';
      list += std::to_string(static_cast<long>(idx[i]));
    }
    if (idx.size() > 20) list += " ...";
    std::printf("%-12s %9.2f %9.2f %9.2f %4zu/%-4zu  %s\n", r.name.c_str(), s.min, s.median, s.max,
                idx.size(), r.ms.size(), list.c_str());
    bench::json j = bench::json::object();
    j.add("runtime", r.name)
        .add("runs", static_cast<long long>(r.ms.size()))
        .add("best_ms", s.min)
        .add("median_ms", s.median)
        .add("max_ms", s.max)
        .add("slow_runs", static_cast<long long>(idx.size()))
        .add("slow_indices", idx)
        .add("samples_ms", r.ms);
    results.push(j);
  }
  const std::size_t weft_slow = rs[0].slow.size(), lf_slow = rs[1].slow.size();
  std::printf(
      "\n%s slow in %zu of %d runs, libfork in %zu of %d: %s\n", rs[0].name.c_str(), weft_slow,
      pairs, lf_slow, pairs,
      weft_slow <= lf_slow ? "weft no more often than libfork" : "weft more often than libfork");
  doc.add("weft_no_more_often_slow", weft_slow <= lf_slow);
  return bench::finish(doc, results, a);
}
