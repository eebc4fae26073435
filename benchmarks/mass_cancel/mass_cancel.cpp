// SPDX-License-Identifier: MIT
// mass_cancel -- cancel 10^6 tasks that were spawned but have not started,
// and time until every one of them has resolved; count the bodies that ran
// (must be 0).  weft and oneTBB alternate, repetition by repetition.
//
//   mass_cancel [--tasks=10^6] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]
//
// --quick: 3 reps.  How the tasks are kept from starting, for k workers:
//
// weft: k-1 "blocker" tasks are spawned first; each takes a worker and blocks
// its thread on a std::latch (deliberately: a weft::event wait would suspend
// the task and free the worker to steal).  Then a driver task runs on the one
// free worker: it spawns N empty bodies onto its own deque, takes t0, calls
// cancel() on each of the N handles, takes t_cancelled, counts the latch down
// and returns.  The workers then drain their deques: a task cancelled before
// it starts is completed as cancelled without running its body.  The main
// thread looks at every handle's done() in turn (sleeping 20 us whenever one
// is not done yet) and takes t_end when the last one is.
//
// oneTBB: a task_arena(k) entered by the main thread (as in the throughput
// problems); k-1 blocker tasks taken by the arena's workers and blocked on a
// std::latch; the main thread runs N empty bodies into a task_group, takes
// t0, calls task_group::cancel() once, takes t_cancelled, counts the latch
// down and calls wait(), which returns when every queued task was skipped
// (t_end).
//
// Reported per task: (t_end - t0) / N (total), (t_cancelled - t0) / N (the
// cancel calls; weft needs one per handle, oneTBB one per group) and
// (t_end - t_cancelled) / N (the drain).  Checks: 0 bodies ran; every weft
// handle reports cancelled(); oneTBB's wait() reports canceled.
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <vector>

#include "common/bench.hpp"

namespace {

struct run_result {
  double total_ns_per_task, cancel_ns_per_task, drain_ns_per_task;
  long long bodies;
};

struct weft_shared {
  std::latch* release = nullptr;
  std::atomic<int> blockers_in{0};
  std::atomic<long long> bodies{0};
  std::vector<weft::join_handle<void>> handles;
  std::int64_t t0 = 0, t_cancelled = 0;
};

weft::task<void> body(std::atomic<long long>* ran) {
  ran->fetch_add(1, std::memory_order_relaxed);
  co_return;
}

weft::task<void> blocker(weft_shared* s) {
  s->blockers_in.fetch_add(1, std::memory_order_release);
  s->release->wait();  // blocks this worker's thread on purpose
  co_return;
}

weft::task<void> driver(weft_shared* s) {
  for (auto& h : s->handles) h = weft::spawn(body(&s->bodies));
  s->t0 = bench::now_ns();
  for (auto& h : s->handles) h.cancel();
  s->t_cancelled = bench::now_ns();
  s->release->count_down();
  co_return;
}

run_result run_weft(weft::runtime& rt, unsigned k, long long n) {
  std::latch release(1);
  weft_shared s;
  s.release = &release;
  s.handles.resize(static_cast<std::size_t>(n));
  std::vector<weft::join_handle<void>> blockers;
  for (unsigned j = 0; j + 1 < k; ++j) blockers.push_back(rt.spawn(blocker(&s)));
  while (s.blockers_in.load(std::memory_order_acquire) < static_cast<int>(k) - 1)
    std::this_thread::yield();
  rt.block_on(driver(&s));
  for (auto& h : s.handles) {
    while (!h.done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  const std::int64_t t_end = bench::now_ns();
  for (auto& b : blockers) b.join();
  long long not_cancelled = 0;
  for (auto& h : s.handles) not_cancelled += h.cancelled() ? 0 : 1;
  bench::check("weft: handles not reporting cancelled()", k, not_cancelled, 0LL);
  const double dn = static_cast<double>(n);
  return {static_cast<double>(t_end - s.t0) / dn, static_cast<double>(s.t_cancelled - s.t0) / dn,
          static_cast<double>(t_end - s.t_cancelled) / dn,
          s.bodies.load(std::memory_order_relaxed)};
}

run_result run_tbb(tbb::task_arena& arena, unsigned k, long long n) {
  run_result r{};
  arena.execute([&] {
    std::latch release(1);
    std::atomic<int> in{0};
    std::atomic<long long> bodies{0};
    tbb::task_group blockers;
    for (unsigned j = 0; j + 1 < k; ++j)
      blockers.run([&] {
        in.fetch_add(1, std::memory_order_release);
        release.wait();
      });
    while (in.load(std::memory_order_acquire) < static_cast<int>(k) - 1) std::this_thread::yield();
    tbb::task_group g;
    for (long long i = 0; i < n; ++i)
      g.run([&bodies] { bodies.fetch_add(1, std::memory_order_relaxed); });
    const std::int64_t t0 = bench::now_ns();
    g.cancel();
    const std::int64_t t_cancelled = bench::now_ns();
    release.count_down();
    const tbb::task_group_status st = g.wait();
    const std::int64_t t_end = bench::now_ns();
    blockers.wait();
    bench::check("oneTBB: wait() reported canceled", k, st == tbb::task_group_status::canceled,
                 true);
    const double dn = static_cast<double>(n);
    r = {static_cast<double>(t_end - t0) / dn, static_cast<double>(t_cancelled - t0) / dn,
         static_cast<double>(t_end - t_cancelled) / dn, bodies.load(std::memory_order_relaxed)};
  });
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bench::args a(argc, argv,
                "mass_cancel [--tasks=10^6] [--workers=1,2] [--reps=5] [--quick] [--json=FILE]",
                {"tasks"});
  const long long n = a.num("tasks", 1'000'000, 1, 100'000'000);
  const int reps = a.reps(5, 3);
  bench::print_header("mass_cancel", "cancel N spawned-but-not-started tasks");
  std::printf("%lld tasks, %d reps, weft and oneTBB alternating\n", n, reps);

  bench::json doc = bench::document("mass_cancel", a);
  doc.add("tasks", n);
  bench::json results = bench::json::array();
  std::printf("\n%-8s %-8s %16s %16s %16s %8s\n", "workers", "runtime", "total ns/task",
              "cancel ns/task", "drain ns/task", "bodies");
  for (unsigned k : a.workers()) {
    weft::runtime_options ro;
    ro.workers = k;
    weft::runtime rt(ro);
    tbb::task_arena arena(static_cast<int>(k));
    arena.initialize();
    run_weft(rt, k, n / 10);  // warm-up (untimed): threads, frame caches, pools
    run_tbb(arena, k, n / 10);
    std::vector<run_result> w, t;
    for (int rep = 0; rep < reps; ++rep) {
      for (int turn = 0; turn < 2; ++turn) {
        if ((turn == 0) == (rep % 2 == 0))
          w.push_back(run_weft(rt, k, n));
        else
          t.push_back(run_tbb(arena, k, n));
        std::this_thread::sleep_for(bench::kSettle);
      }
    }
    for (int which = 0; which < 2; ++which) {
      const auto& v = which == 0 ? w : t;
      const char* who = which == 0 ? "weft" : "oneTBB";
      std::vector<double> total, cancel, drain;
      long long bodies = 0;
      for (const run_result& r : v) {
        total.push_back(r.total_ns_per_task);
        cancel.push_back(r.cancel_ns_per_task);
        drain.push_back(r.drain_ns_per_task);
        bodies += r.bodies;
      }
      bench::check(which == 0 ? "weft: bodies that ran" : "oneTBB: bodies that ran", k, bodies,
                   0LL);
      std::printf("%-8u %-8s %16.1f %16.1f %16.1f %8lld\n", k, who, bench::median(total),
                  bench::median(cancel), bench::median(drain), bodies);
      bench::json j = bench::json::object();
      j.add("workers", k)
          .add("runtime", who)
          .add("tasks", n)
          .add("median_total_ns_per_task", bench::median(total))
          .add("median_cancel_ns_per_task", bench::median(cancel))
          .add("median_drain_ns_per_task", bench::median(drain))
          .add("total_ns_per_task", total)
          .add("cancel_ns_per_task", cancel)
          .add("drain_ns_per_task", drain)
          .add("bodies_ran", bodies);
      results.push(j);
    }
    std::fflush(stdout);
  }
  return bench::finish(doc, results, a);
}
