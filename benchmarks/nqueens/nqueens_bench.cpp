// SPDX-License-Identifier: MIT
// nqueens_bench -- count the solutions of n-queens with a task per placement:
// weft (spawn+join, "weft", and the fork-join form, "weft-fork"), oneTBB
// task_group (and libfork when the suite is built with it) and a plain
// recursive function, interleaved.
//
//   nqueens_bench [--n=13] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: n=12, 3 reps.  Each run is checked against the known count
// (OEIS A000170).
#include "common/bench.hpp"
#include "nqueens/serial.hpp"
#include "nqueens/tbb_nqueens.hpp"
#include "nqueens/weft_fork_nqueens.hpp"
#include "nqueens/weft_nqueens.hpp"

namespace {
long (*volatile g_serial)(nqueens_bench::board, std::uint32_t) = nqueens_bench::nqueens_serial;
}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "nqueens_bench [--n=13] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]", {"n"});
  const int n = static_cast<int>(a.num("n", a.quick() ? 12 : 13, 1, nqueens_bench::kMaxN));
  const int reps = a.reps(5, 3);
  bench::print_header("nqueens_bench", "n-queens solution count, a task per placement");

  const std::uint32_t all = nqueens_bench::full_mask(n);
  const nqueens_bench::board empty{0, 0, 0};
  bench::problem p;
  p.name = "nqueens";
  p.instance = "n=" + std::to_string(n);
  p.tasks = static_cast<double>(nqueens_bench::nqueens_placements(empty, all));
  p.expected = nqueens_bench::nqueens_known(n);
  p.serial = [=] { return g_serial(empty, all); };
  p.weft = [=](weft::runtime& rt) { return rt.block_on(nqueens_bench::nqueens_weft(empty, all)); };
  p.weft_more.push_back({"weft-fork", [=](weft::runtime& rt) {
                           return rt.block_on(
                               weft::as_task(nqueens_bench::nqueens_fork(empty, all)));
                         }});
  p.tbb = [=](tbb::task_arena& arena) {
    long r = 0;
    arena.execute([&r, empty, all] { r = nqueens_bench::nqueens_tbb(empty, all); });
    return static_cast<long long>(r);
  };
#ifdef WEFT_BENCH_LIBFORK
  p.libfork = [=](peer_libfork::pool& lf) { return peer_libfork::nqueens(lf, empty, all); };
#endif

  bench::json doc = bench::document("nqueens", a);
  bench::json results = bench::json::array();
  bench::run_problem(p, a.workers(), reps, results);
  return bench::finish(doc, results, a);
}
