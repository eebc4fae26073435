// SPDX-License-Identifier: MIT
// skynet_bench -- skynet (a ten-way fan-out tree summing its leaf indices)
// with weft (spawn+join, "weft", and the fork-join form, "weft-fork"), oneTBB
// task_group (and libfork when the suite is built with it) and a plain
// recursive function, interleaved.
//
//   skynet_bench [--leaves=10^6,10^8] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: 10^6 leaves only, 3 reps.  Every node is a task: 10^8 leaves make
// 111,111,111 tasks.  Each run is checked against size*(size-1)/2.
#include "common/bench.hpp"
#include "skynet/serial.hpp"
#include "skynet/tbb_skynet.hpp"
#include "skynet/weft_fork_skynet.hpp"
#include "skynet/weft_skynet.hpp"

namespace {
// Called through a volatile pointer: a pure function's call could otherwise be
// hoisted out of the timed region.
long (*volatile g_serial)(long, long) = skynet_bench::skynet_serial;
}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "skynet_bench [--leaves=10^6,10^8] [--workers=1,2] [--reps=5] [--quick] "
                "[--json=FILE]",
                {"leaves"});
  std::vector<long long> dflt{1'000'000};
  if (!a.quick()) dflt.push_back(100'000'000);
  const std::vector<long long> leaves = a.nums("leaves", dflt, 1, 1'000'000'000'000LL);
  for (long long s : leaves) {
    long long p = 1;
    while (p < s) p *= 10;
    if (p != s) a.fail("--leaves: not a power of ten");
  }
  const int reps = a.reps(5, 3);
  bench::print_header("skynet_bench", "ten-way fan-out tree, sum of leaf indices");

  bench::json doc = bench::document("skynet", a);
  bench::json results = bench::json::array();
  for (long long size : leaves) {
    int d = 0;
    for (long long s = size; s > 1; s /= 10) ++d;
    bench::problem p;
    p.name = "skynet";
    p.instance = "10^" + std::to_string(d) + " leaves";
    p.tasks = skynet_bench::skynet_nodes(static_cast<long>(size));
    p.expected = skynet_bench::skynet_expected(static_cast<long>(size));
    const long n = static_cast<long>(size);
    p.serial = [n] { return g_serial(0, n); };
    p.weft = [n](weft::runtime& rt) { return rt.block_on(skynet_bench::skynet_weft(0, n)); };
    p.weft_more.push_back({"weft-fork", [n](weft::runtime& rt) {
                             return rt.block_on(weft::as_task(skynet_bench::skynet_fork(0, n)));
                           }});
    p.tbb = [n](tbb::task_arena& arena) {
      long r = 0;
      arena.execute([&r, n] { r = skynet_bench::skynet_tbb(0, n); });
      return static_cast<long long>(r);
    };
#ifdef WEFT_BENCH_LIBFORK
    p.libfork = [n](peer_libfork::pool& lf) { return peer_libfork::skynet(lf, n); };
#endif
    bench::run_problem(p, a.workers(), reps, results);
  }
  return bench::finish(doc, results, a);
}
