// SPDX-License-Identifier: MIT
// uts_bench -- unbalanced tree search: count the nodes of a fixed-seed tree
// with a task per node, with weft (spawn+join, "weft", and the fork-join form,
// "weft-fork"), oneTBB task_group (and libfork when the suite is built with
// it) and a plain recursive function, interleaved.  Two trees (uts/tree.hpp):
//
//   uts_geo  geometric, b0=4, depth 11, seed 19: 6,805,212 nodes (bushy)
//   uts_bin  binomial, root 2000, q=0.124875, m=8, seed 13: 4,792,385 nodes,
//            depth 2190 (long narrow chains: load balance)
//
//   uts_bench [--shapes=geo,bin] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: geometric depth 9 (423,350 nodes) and binomial seed 19 (1,508,361
// nodes), 3 reps.  The seeds were picked for the tree sizes (UTS's T1 and T3
// have 4.1M nodes), before either runtime was run on them.  Every run is
// checked against the serial count, and the serial count against the
// constant above.
#include "common/bench.hpp"
#include "uts/tbb_uts.hpp"
#include "uts/tree.hpp"
#include "uts/weft_fork_uts.hpp"
#include "uts/weft_uts.hpp"

namespace {
long (*volatile g_serial)(const uts_bench::tree*, std::uint64_t, int) = uts_bench::uts_serial;
}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "uts_bench [--shapes=geo,bin] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]",
                {"shapes"});
  const std::string shapes = a.str("shapes", "geo,bin");
  const int reps = a.reps(5, 3);
  bench::print_header("uts_bench", "unbalanced tree search, node count, a task per node");

  bench::json doc = bench::document("uts", a);
  bench::json results = bench::json::array();

  // Trees live for the whole program: the tasks keep a pointer to them.
  struct instance {
    const char* name;
    uts_bench::tree t;
    long known;
  };
  std::vector<instance> todo;
  if (shapes.find("geo") != std::string::npos) {
    uts_bench::tree t;
    t.kind = uts_bench::tree::shape::geometric;
    t.b0 = 4;
    t.seed = 19;
    t.max_depth = a.quick() ? 9 : 11;
    todo.push_back({"uts_geo", t, a.quick() ? 423350 : 6805212});
  }
  if (shapes.find("bin") != std::string::npos) {
    uts_bench::tree t;
    t.kind = uts_bench::tree::shape::binomial;
    t.root_children = 2000;
    t.q = 0.124875;
    t.m = 8;
    t.seed = a.quick() ? 19 : 13;
    todo.push_back({"uts_bin", t, a.quick() ? 1508361 : 4792385});
  }
  if (todo.empty()) a.fail("--shapes=" + shapes);

  for (instance& in : todo) {
    in.t.prepare();
    const uts_bench::tree* t = &in.t;
    const std::uint64_t root = uts_bench::root_state(*t);
    const long count = uts_bench::uts_serial(t, root, 0);
    bench::check("serial vs the known count", 1, count, in.known);

    bench::problem p;
    p.name = in.name;
    p.instance = t->describe();
    p.tasks = static_cast<double>(count);
    p.expected = count;
    p.serial = [=] { return g_serial(t, root, 0); };
    p.weft = [=](weft::runtime& rt) { return rt.block_on(uts_bench::uts_weft(t, root, 0)); };
    p.weft_more.push_back({"weft-fork", [=](weft::runtime& rt) {
                             return rt.block_on(weft::as_task(uts_bench::uts_fork(t, root, 0)));
                           }});
    p.tbb = [=](tbb::task_arena& arena) {
      long r = 0;
      arena.execute([&r, t, root] { r = uts_bench::uts_tbb(t, root, 0); });
      return static_cast<long long>(r);
    };
#ifdef WEFT_BENCH_LIBFORK
    p.libfork = [=](peer_libfork::pool& lf) { return peer_libfork::uts(lf, t, root); };
#endif
    bench::run_problem(p, a.workers(), reps, results);
  }
  return bench::finish(doc, results, a);
}
