// SPDX-License-Identifier: MIT
// The deterministic simulation (weft/sim.hpp): the same seed gives the same
// run event for event; time is virtual (long sleeps cost nothing, timeouts
// fire at their deadline); a deadlock and a livelock are reported instead of
// hanging; calls from another thread are refused; the exploration modes
// (cancel at the k-th resume point, PCT) work and keep the invariants; the
// generator really explores (a planted lost update is found and its seed
// replays it).
#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;
using namespace std::chrono_literals;
using weft::cancel_kind;
using weft::cancelled_error;

weft::runtime_options sim_options(std::uint64_t seed, unsigned workers = 3,
                                  std::vector<weft::sim::event>* trace = nullptr) {
  weft::runtime_options o;
  o.workers = workers;
  o.simulation = weft::sim::options{};
  o.simulation->seed = seed;
  o.simulation->trace = trace;
  return o;
}

// ------------------------------------------------------------- a workload
//
// A mix of what weft offers, with random choices from the seed: children that
// yield, sleep, loop on checkpoint(), spawn and await a grandchild, wait on
// an event, or throw; some cancelled right after spawn, some after a yield,
// one raced by wait_for, and a task group with a failing child.  Every
// outcome goes into `log` in a fixed order, so two runs can be compared.

struct workload {
  std::vector<std::string> log;
  weft::event gate;
  long bodies = 0;
  long cleanups = 0;
};

struct cleanup_count {
  workload* w;
  explicit cleanup_count(workload* wl) : w(wl) { ++w->bodies; }
  ~cleanup_count() { ++w->cleanups; }
  cleanup_count(const cleanup_count&) = delete;
  cleanup_count& operator=(const cleanup_count&) = delete;
};

weft::task<int> grandchild(int v) {
  co_await weft::yield();
  co_return v * 2;
}

weft::task<int> child(workload* w, int id, int mode) {
  cleanup_count c(w);
  switch (mode) {
    case 0:
      for (int i = 0; i < 3; ++i) co_await weft::yield();
      break;
    case 1:
      co_await weft::sleep_for(std::chrono::milliseconds(1 + id % 7));
      break;
    case 2:
      for (int i = 0; i < 50; ++i) co_await weft::checkpoint();
      break;
    case 3: {
      auto h = weft::spawn(grandchild(id));
      co_return co_await h;
    }
    case 4:
      co_await w->gate.wait();
      break;
    default:
      co_await weft::yield();
      throw std::runtime_error("planned failure");
  }
  co_return id;
}

weft::task<void> take_into_log(workload* w, int id, weft::join_handle<int>& h) {
  std::string line = "child " + std::to_string(id) + ": ";
  try {
    int v = co_await h;
    line += "value " + std::to_string(v);
  } catch (const cancelled_error& e) {
    line += "cancelled (" + std::string(weft::to_string(e.kind())) + ")";
  } catch (const std::exception& e) {
    line += std::string("error ") + e.what();
  }
  w->log.push_back(line);
}

weft::task<void> group_body(workload* w) {
  weft::task_group g;
  (void)g.spawn(child(w, 100, 0));
  (void)g.spawn(child(w, 101, 5));  // fails: the group cancels its sibling
  (void)g.spawn(child(w, 102, 1));
  try {
    co_await g.join();
    w->log.push_back("group: joined");
  } catch (const weft::task_group_error& e) {
    w->log.push_back("group: " + std::to_string(e.size()) + " failure(s)");
  }
}

weft::task<int> workload_root(workload* w, std::uint64_t seed) {
  rng r(seed);
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < 12; ++i) {
    hs.push_back(weft::spawn(child(w, i, static_cast<int>(r.below(6)))));
    const auto when = r.below(4);
    if (when == 0) hs.back().cancel("right after spawn");
    if (when == 1) {
      co_await weft::yield();
      hs.back().cancel("after a yield");
    }
  }
  w->gate.set();
  auto slow = weft::spawn(child(w, 50, 1));
  try {
    int v = co_await weft::wait_for(slow, std::chrono::microseconds(r.below(12'000)));
    w->log.push_back("wait_for: value " + std::to_string(v));
  } catch (const weft::timeout_error&) {
    w->log.push_back("wait_for: timeout");
  }
  co_await group_body(w);
  for (int i = 0; i < 12; ++i) co_await take_into_log(w, i, hs[static_cast<std::size_t>(i)]);
  co_return 7;
}

struct run_result {
  std::vector<weft::sim::event> trace;
  std::vector<std::string> log;
  weft::sim::statistics stats;
};

run_result run_workload(std::uint64_t seed, weft::sim::policy p = weft::sim::policy::random) {
  run_result out;
  workload w;
  {
    auto o = sim_options(seed, 3, &out.trace);
    o.simulation->schedule = p;
    o.simulation->pct_steps = 300;
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(workload_root(&w, seed)), 7);
    out.stats = weft::sim::stats(rt);
  }
  EXPECT_EQ(w.bodies, w.cleanups) << "seed " << seed;
  out.log = std::move(w.log);
  return out;
}

TEST(SimulationTest, SameSeedGivesTheSameTrace) {
  watchdog wd(60s);
  frame_baseline frames;
  std::set<std::size_t> distinct_lengths;
  for (std::uint64_t seed = 1; seed <= static_cast<std::uint64_t>(scaled(60, 15)); ++seed) {
    for (auto p : {weft::sim::policy::random, weft::sim::policy::pct}) {
      run_result a = run_workload(seed, p);
      run_result b = run_workload(seed, p);
      ASSERT_GT(a.trace.size(), 50u);
      ASSERT_EQ(a.trace.size(), b.trace.size()) << "seed " << seed;
      for (std::size_t i = 0; i < a.trace.size(); ++i) {
        ASSERT_EQ(a.trace[i], b.trace[i])
            << "seed " << seed << ", event " << i << ": " << a.trace[i].to_string() << " vs "
            << b.trace[i].to_string();
      }
      EXPECT_EQ(a.log, b.log) << "seed " << seed;
      EXPECT_EQ(a.stats.resume_points, b.stats.resume_points);
      EXPECT_EQ(a.stats.virtual_ns, b.stats.virtual_ns);
      distinct_lengths.insert(a.trace.size());
    }
  }
  // Different seeds explore different schedules.
  EXPECT_GT(distinct_lengths.size(), 5u);
  EXPECT_EQ(frames.now(), frames.start);
}

TEST(SimulationTest, DifferentSeedsGiveDifferentSchedules) {
  watchdog wd(30s);
  std::set<std::vector<std::uint64_t>> orders;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    run_result r = run_workload(seed);
    std::vector<std::uint64_t> order;
    for (const auto& e : r.trace)
      if (e.what == weft::sim::event::kind::step) order.push_back(e.task * 16 + e.worker);
    orders.insert(order);
  }
  EXPECT_GE(orders.size(), 18u);
}

// ------------------------------------------------------------ virtual time

weft::task<std::int64_t> sleep_and_measure(std::chrono::nanoseconds d) {
  auto t0 = weft::sim::now();
  co_await weft::sleep_for(d);
  co_return (weft::sim::now() - t0).count();
}

TEST(SimulationTest, AnHourOfSleepCostsNoWallTimeAndEndsExactlyOnTime) {
  watchdog wd(30s);
  weft::runtime rt(sim_options(3));
  const auto t0 = clock_type::now();
  const std::int64_t slept = rt.block_on(sleep_and_measure(1h));
  EXPECT_EQ(slept, std::chrono::nanoseconds(1h).count());  // nothing else ran: exact
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_GE(weft::sim::stats(rt).virtual_ns, static_cast<std::uint64_t>(slept));
}

weft::task<int> sleeps_forever_with_cleanup(int* cleanups) {
  try {
    co_await weft::sleep_for(1h);
  } catch (const cancelled_error&) {
    ++*cleanups;
    throw;
  }
  co_return 1;
}

weft::task<std::int64_t> time_a_timeout(int* cleanups, bool* timed_out) {
  auto h = weft::spawn(sleeps_forever_with_cleanup(cleanups));
  const auto t0 = weft::sim::now();
  try {
    (void)co_await weft::wait_for(h, 250ms);
  } catch (const weft::timeout_error&) {
    *timed_out = true;
  }
  co_return (weft::sim::now() - t0).count();
}

TEST(SimulationTest, ATimeoutFiresAtItsDeadline) {
  watchdog wd(30s);
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    int cleanups = 0;
    bool timed_out = false;
    weft::runtime rt(sim_options(seed));
    const std::int64_t took = rt.block_on(time_a_timeout(&cleanups, &timed_out));
    EXPECT_TRUE(timed_out);
    EXPECT_EQ(cleanups, 1);
    // At the deadline, plus the few steps that deliver the cancel and run the
    // cleanup (each costs at most options::max_step_cost, 2 us).
    EXPECT_GE(took, std::chrono::nanoseconds(250ms).count()) << "seed " << seed;
    EXPECT_LT(took, std::chrono::nanoseconds(250ms + 100us).count()) << "seed " << seed;
  }
}

weft::task<void> waits_on(weft::event* e) { co_await e->wait(); }

TEST(SimulationTest, ADeadlockIsReportedInsteadOfHanging) {
  watchdog wd(30s);
  frame_baseline frames;
  {
    weft::event never;
    weft::runtime rt(sim_options(5));
    try {
      rt.block_on(waits_on(&never));
      FAIL() << "block_on returned";
    } catch (const weft::sim::deadlock_error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("deadlock"), std::string::npos) << what;
      EXPECT_NE(what.find("Blocked list waits (event, semaphore, shield): 1"), std::string::npos)
          << what;
    }
    // The runtime's shutdown interrupts the wait: nothing is leaked.
  }
  EXPECT_EQ(frames.now(), frames.start);
}

weft::task<void> yields_forever() {
  for (;;) co_await weft::yield();
}

TEST(SimulationTest, ALivelockHitsTheStepLimit) {
  watchdog wd(30s);
  auto o = sim_options(1);
  o.simulation->max_steps = 5000;
  weft::runtime rt(o);
  auto h = rt.spawn(yields_forever());
  EXPECT_THROW(h.join(), weft::sim::step_limit_error);
  EXPECT_FALSE(h.done());
  h.cancel();  // the next yield delivers it
  EXPECT_THROW(h.join(), cancelled_error);
}

TEST(SimulationTest, CallsFromAnotherThreadAreRefused) {
  watchdog wd(30s);
  weft::runtime rt(sim_options(2));
  auto h = rt.spawn(grandchild(4));
  int refused = 0;
  std::thread other([&] {
    try {
      (void)rt.spawn(grandchild(1));
    } catch (const weft::usage_error&) {
      ++refused;
    }
    try {
      (void)h.join();
    } catch (const weft::usage_error&) {
      ++refused;
    }
    try {
      h.cancel();
    } catch (const weft::usage_error&) {
      ++refused;
    }
    try {
      rt.shutdown();
    } catch (const weft::usage_error&) {
      ++refused;
    }
    try {
      weft::sim::run(rt, 10);
    } catch (const weft::usage_error&) {
      ++refused;
    }
  });
  other.join();
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(h.join(), 8);  // the owner can still drive it
}

weft::task<void> calls_block_on(weft::runtime* rt) {
  (void)rt->block_on(grandchild(1));
  co_return;
}

TEST(SimulationTest, BlockingInsideATaskIsAUsageError) {
  watchdog wd(30s);
  weft::runtime rt(sim_options(2));
  EXPECT_THROW(rt.block_on(calls_block_on(&rt)), weft::usage_error);
}

// ---------------------------------------------------- the README's example

weft::task<std::string> readme_worker() {
  try {
    co_await weft::sleep_for(5s);
    co_return "Finished";
  } catch (const cancelled_error&) {
    co_return "Canceled";
  }
}

weft::task<std::string> readme_supervisor(std::int64_t* took) {
  const auto t0 = weft::sim::now();
  auto h = weft::spawn(readme_worker());
  co_await weft::sleep_for(1s);
  h.cancel("too slow");
  std::string r = co_await h;
  *took = (weft::sim::now() - t0).count();
  co_return r;
}

TEST(SimulationTest, UserTasksRunUnchanged) {
  watchdog wd(30s);
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    std::int64_t took = 0;
    weft::runtime rt(sim_options(seed));
    EXPECT_EQ(rt.block_on(readme_supervisor(&took)), "Canceled");
    EXPECT_GE(took, std::chrono::nanoseconds(1s).count());
    EXPECT_LT(took, std::chrono::nanoseconds(1s + 100us).count());
  }
}

// -------------------------------------------------------------- exploration

// Every spawned task is awaited exactly once, whatever is cancelled where.
struct tally {
  int bodies = 0;
  int cleanups = 0;
  int taken = 0;
  int spawned = 0;
};

struct body_scope {
  tally* t;
  explicit body_scope(tally* x) : t(x) { ++t->bodies; }
  ~body_scope() { ++t->cleanups; }
  body_scope(const body_scope&) = delete;
  body_scope& operator=(const body_scope&) = delete;
};

weft::task<int> small_leaf(tally* t, int i) {
  body_scope s(t);
  if (i % 3 == 0) co_await weft::sleep_for(1ms);
  if (i % 3 == 1) co_await weft::yield();
  if (i % 3 == 2)
    for (int k = 0; k < 4; ++k) co_await weft::checkpoint();
  co_return i;
}

// Awaits `h` until its outcome is taken: a cancellation of the awaiting task
// itself may be delivered by the await instead (then the outcome is still
// there, and the next await takes it; an outcome already taken is a
// usage_error).
weft::task<void> take_once(tally* t, weft::join_handle<int>& h, std::exception_ptr* own) {
  bool maybe_taken = false;
  for (;;) {
    try {
      (void)co_await h;
      ++t->taken;
      co_return;
    } catch (const weft::usage_error&) {
      if (maybe_taken) ++t->taken;  // the cancelled_error before was the outcome
      co_return;
    } catch (const cancelled_error&) {
      if (!*own) *own = std::current_exception();
      maybe_taken = true;
    }
  }
}

weft::task<int> small_root(tally* t) {
  body_scope s(t);
  std::vector<weft::join_handle<int>> hs;
  std::exception_ptr own;
  try {
    for (int i = 0; i < 4; ++i) {
      hs.push_back(weft::spawn(small_leaf(t, i)));
      ++t->spawned;
      co_await weft::yield();
    }
  } catch (const cancelled_error&) {
    own = std::current_exception();
  }
  for (auto& h : hs) co_await take_once(t, h, &own);
  if (own) std::rethrow_exception(own);
  co_return 1;
}

TEST(SimulationTest, CancelAtEveryResumePointKeepsTheInvariants) {
  watchdog wd(60s);
  frame_baseline frames;
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    std::uint64_t points = 0;
    {
      tally t;
      weft::runtime rt(sim_options(seed, 2));
      EXPECT_EQ(rt.block_on(small_root(&t)), 1);
      points = weft::sim::stats(rt).resume_points;
      EXPECT_EQ(t.taken, t.spawned);
    }
    ASSERT_GT(points, 10u);
    int root_cancelled = 0, hit_unstarted = 0;
    for (std::uint64_t k = 1; k <= points; ++k) {
      tally t;
      auto o = sim_options(seed, 2);
      o.simulation->cancel_at = k;
      {
        weft::runtime rt(o);
        try {
          (void)rt.block_on(small_root(&t));
        } catch (const cancelled_error& e) {
          ++root_cancelled;
          EXPECT_EQ(e.reason(), "sim: cancel at resume point " + std::to_string(k));
        }
        const auto st = weft::sim::stats(rt);
        // The schedule up to k is the uncancelled one: point k exists.
        EXPECT_TRUE(st.cancel_delivered) << "seed " << seed << " k " << k;
      }
      EXPECT_EQ(t.taken, t.spawned) << "seed " << seed << " k " << k;
      EXPECT_EQ(t.bodies, t.cleanups) << "seed " << seed << " k " << k;
      if (t.bodies < t.spawned + 1) ++hit_unstarted;
    }
    EXPECT_GT(root_cancelled, 0);
    EXPECT_GT(hit_unstarted, 0);  // some cancel landed before a body started
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// cancel_target: cancel_at counts one task's resume points; the cancellation
// reaches that task and no other, at each of its resume points in turn.
TEST(SimulationTest, CancelTargetHitsOnlyTheChosenTaskAtEachOfItsResumePoints) {
  watchdog wd(60s);
  const auto child = []() -> weft::task<int> {
    for (int i = 0; i < 3; ++i) co_await weft::yield();
    co_return 1;
  };
  const auto root = [&]() -> weft::task<int> {
    auto a = weft::spawn(child());
    auto b = weft::spawn(child());
    int n = 0;
    for (auto* h : {&a, &b}) {
      try {
        n += co_await *h;
      } catch (const cancelled_error&) {
      }
    }
    co_return n;
  };
  // The uncancelled run: which id is a child, and how many resume points it has.
  std::uint64_t target = 0, points = 0;
  for (std::uint64_t id = 2; id <= 3 && points == 0; ++id) {
    auto o = sim_options(7, 2);
    o.simulation->cancel_target = id;
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(root()), 2);
    points = weft::sim::stats(rt).target_resume_points;
    target = id;
  }
  ASSERT_GE(points, 4u);  // its start and three yields
  for (std::uint64_t k = 1; k <= points; ++k) {
    auto o = sim_options(7, 2);
    o.simulation->cancel_target = target;
    o.simulation->cancel_at = k;
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(root()), 1) << "k " << k;  // exactly one child lost
    const auto st = weft::sim::stats(rt);
    EXPECT_TRUE(st.cancel_delivered) << "k " << k;
    EXPECT_EQ(st.cancel_task, target) << "k " << k;
    EXPECT_EQ(st.target_resume_points, k) << "the target ran on after its cancellation";
  }
  // Beyond its last resume point nothing is delivered.
  auto o = sim_options(7, 2);
  o.simulation->cancel_target = target;
  o.simulation->cancel_at = points + 1;
  weft::runtime rt(o);
  EXPECT_EQ(rt.block_on(root()), 2);
  EXPECT_FALSE(weft::sim::stats(rt).cancel_delivered);
}

// A planted bug: a read-modify-write split by a yield (a lost update when two
// tasks interleave there).
struct shared_counter {
  int value = 0;
};

weft::task<void> racy_increment(shared_counter* c, int pre_yields) {
  for (int i = 0; i < pre_yields; ++i) co_await weft::yield();
  int v = c->value;
  co_await weft::yield();
  c->value = v + 1;
}

weft::task<int> racy_root(shared_counter* c, std::uint64_t seed) {
  rng r(seed);
  std::vector<weft::join_handle<void>> hs;
  for (int i = 0; i < 3; ++i)
    hs.push_back(weft::spawn(racy_increment(c, static_cast<int>(r.below(6)))));
  for (auto& h : hs) co_await h;
  co_return c->value;
}

int racy_run(std::uint64_t seed, weft::sim::policy p, std::vector<weft::sim::event>* trace) {
  shared_counter c;
  auto o = sim_options(seed, 2, trace);
  o.simulation->schedule = p;
  o.simulation->pct_steps = 40;
  weft::runtime rt(o);
  return rt.block_on(racy_root(&c, seed));
}

TEST(SimulationTest, APlantedLostUpdateIsFoundAndItsSeedReplaysIt) {
  watchdog wd(30s);
  for (auto p : {weft::sim::policy::random, weft::sim::policy::pct}) {
    int found = 0, clean = 0;
    std::uint64_t first_bad = 0;
    for (std::uint64_t seed = 1; seed <= 200; ++seed) {
      if (racy_run(seed, p, nullptr) != 3) {
        ++found;
        if (first_bad == 0) first_bad = seed;
      } else {
        ++clean;
      }
    }
    EXPECT_GT(found, 0) << "policy " << static_cast<int>(p);
    EXPECT_GT(clean, 0) << "policy "
                        << static_cast<int>(p);  // the bug is an interleaving, not a certainty
    ASSERT_NE(first_bad, 0u);
    std::vector<weft::sim::event> t1, t2;
    EXPECT_NE(racy_run(first_bad, p, &t1), 3);
    EXPECT_NE(racy_run(first_bad, p, &t2), 3);
    EXPECT_EQ(t1, t2);
  }
}

weft::task<void> load(tally* t, int n) {
  std::vector<weft::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(weft::spawn(small_leaf(t, i)));
  std::exception_ptr own;
  for (auto& h : hs) co_await take_once(t, h, &own);
  if (own) std::rethrow_exception(own);
}

TEST(SimulationTest, ShutdownUnderLoadFinishesEveryTask) {
  watchdog wd(30s);
  frame_baseline frames;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    tally t;
    {
      weft::runtime rt(sim_options(seed));
      auto h = rt.spawn(load(&t, 30));
      weft::sim::run(rt, 10 + seed * 3);
      rt.shutdown();
      EXPECT_TRUE(h.done());
      try {
        h.join();
      } catch (const cancelled_error& e) {
        EXPECT_EQ(e.kind(), cancel_kind::shutdown);
      }
    }
    EXPECT_EQ(t.bodies, t.cleanups) << "seed " << seed;
  }
  EXPECT_EQ(frames.now(), frames.start);
}

}  // namespace
