// SPDX-License-Identifier: MIT
// The fork-join form (weft/fork.hpp): values, joins after steals, exceptions,
// frames that never join, the task's cancellation reaching every frame of its
// tree, shutdown, yields, misuse, the frame stacks, and the simulation (same
// seed, same run; a cancellation at every resume point).
//
// Steals are forced where a scenario needs one: a child spins (watchdog
// bounded) until its parent's continuation -- which runs only once stolen --
// tells it so.
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

weft::runtime_options workers_opt(unsigned n) {
  weft::runtime_options o;
  o.workers = n;
  return o;
}

weft::fork_task<long> fib(int n) {
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib(n - 1));
  long b = co_await fib(n - 2);
  co_await weft::join();
  co_return a + b;
}

weft::fork_task<int> fib_int(int n) { co_return static_cast<int>(co_await fib(n)); }

long fib_ref(int n) {
  long a = 0, b = 1;
  for (int i = 0; i < n; ++i) {
    const long c = a + b;
    a = b;
    b = c;
  }
  return a;
}

TEST(ForkJoinTest, FibGivesTheRightValueOnOneTwoAndFourWorkers) {
  watchdog dog(60s);
  for (unsigned workers : {1u, 2u, 4u}) {
    weft::runtime rt(workers_opt(workers));
    for (int n : {0, 1, 2, 10, static_cast<int>(scaled(24, 16))})
      EXPECT_EQ(rt.block_on(weft::as_task(fib(n))), fib_ref(n)) << workers << " workers, n=" << n;
  }
}

weft::fork_task<> count_leaves(int depth, std::atomic<long>* leaves) {
  if (depth == 0) {
    // Relaxed: a counter read after the join.
    leaves->fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  co_await weft::fork(count_leaves(depth - 1, leaves));
  co_await weft::fork(count_leaves(depth - 1, leaves));
  co_await count_leaves(depth - 1, leaves);
  co_await weft::join();
}

TEST(ForkJoinTest, VoidChildrenAllRunBeforeJoinReturns) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  std::atomic<long> leaves{0};
  const int depth = static_cast<int>(scaled(9, 6));
  rt.block_on(weft::as_task(count_leaves(depth, &leaves)));
  long expect = 1;
  for (int i = 0; i < depth; ++i) expect *= 3;
  EXPECT_EQ(leaves.load(), expect);
}

// ---- forced steals ----

struct steal_gate {
  std::atomic<bool> stolen{false};
  std::atomic<bool> child_done{false};
};

// Spins until the parent's continuation ran elsewhere.  Writes `out` late.
weft::fork_task<int> wait_for_thief(steal_gate* g, int v) {
  await_true([g] { return g->stolen.load(); });
  g->child_done.store(true);
  co_return v;
}

weft::fork_task<int> fork_then_get_stolen(steal_gate* g) {
  int a = 0;
  co_await weft::fork(a, wait_for_thief(g, 7));
  // Only a thief gets here before the child ends (the child spins).
  g->stolen.store(true);
  int b = 0;
  co_await weft::fork(b, fib_int(5));
  co_await weft::join();
  co_return a + b;
}

TEST(ForkJoinTest, AContinuationStolenMidForkStillJoinsEveryChild) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  for (int round = 0; round < scaled(200, 20); ++round) {
    steal_gate g;
    EXPECT_EQ(rt.block_on(weft::as_task(fork_then_get_stolen(&g))), 7 + 5);
    EXPECT_TRUE(g.child_done.load());
  }
}

weft::fork_task<int> throws_after(int v) {
  if (v >= 0) throw std::runtime_error("child failed");
  co_return v;
}

weft::fork_task<int> one_child_throws(std::atomic<int>* finished) {
  int a = 0, b = 0, c = 0;
  co_await weft::fork(a, fib_int(12));
  co_await weft::fork(b, throws_after(1));
  co_await weft::fork(c, fib_int(12));
  finished->store(1);
  co_await weft::join();  // throws the child's exception
  co_return a + b + c;
}

TEST(ForkJoinTest, AChildExceptionReachesTheJoinAfterEverySiblingFinished) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  std::atomic<int> finished{0};
  auto err = expect_throws<std::runtime_error>(
      [&] { rt.block_on(weft::as_task(one_child_throws(&finished))); });
  ASSERT_TRUE(err.has_value());
  EXPECT_STREQ(err->what(), "child failed");
  EXPECT_EQ(finished.load(), 1);
}

// A call that throws while a stolen sibling still runs: the exception leaves
// the frame only after the sibling wrote its output.
weft::fork_task<int> call_throws_with_sibling_out(steal_gate* g, bool* sibling_seen) {
  int a = 0;
  co_await weft::fork(a, wait_for_thief(g, 3));
  g->stolen.store(true);
  try {
    co_await throws_after(2);
  } catch (const std::runtime_error&) {
    *sibling_seen = g->child_done.load();
    throw;
  }
  co_await weft::join();
  co_return a;
}

TEST(ForkJoinTest, ACalledChildsExceptionWaitsForStolenSiblingsBeforeItUnwinds) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  for (int round = 0; round < scaled(100, 10); ++round) {
    steal_gate g;
    bool sibling_seen = false;
    expect_throws<std::runtime_error>(
        [&] { rt.block_on(weft::as_task(call_throws_with_sibling_out(&g, &sibling_seen))); });
    EXPECT_TRUE(sibling_seen) << "round " << round;
  }
}

weft::fork_task<int> never_joins(steal_gate* g, int* out) {
  co_await weft::fork(*out, wait_for_thief(g, 11));
  g->stolen.store(true);
  co_return 1;  // no join: the frame waits for its child before its parent resumes
}

weft::fork_task<int> parent_of_never_joins(steal_gate* g) {
  int out = 0;
  const int r = co_await never_joins(g, &out);
  co_return r + out;  // the child has written `out` by now
}

TEST(ForkJoinTest, AFrameThatNeverJoinsWaitsForItsChildrenBeforeItsParentResumes) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  for (int round = 0; round < scaled(100, 10); ++round) {
    steal_gate g;
    EXPECT_EQ(rt.block_on(weft::as_task(parent_of_never_joins(&g))), 12);
  }
}

// ---- cancellation ----

struct cancel_probe {
  std::atomic<int> running{0};
  std::atomic<int> parent_kind{0};
  std::atomic<int> other{0};
  std::atomic<bool> wrong_reason{false};
};

weft::fork_task<> spin_until_cancelled(cancel_probe* p) {
  p->running.fetch_add(1);
  try {
    for (;;) co_await weft::checkpoint();
  } catch (const cancelled_error& e) {
    if (e.kind() == cancel_kind::parent) {
      p->parent_kind.fetch_add(1);
      if (e.reason() != "stop it") p->wrong_reason.store(true);
    } else {
      p->other.fetch_add(1);
    }
    throw;
  }
}

weft::fork_task<> spinning_tree(int depth, cancel_probe* p) {
  if (depth == 0) {
    co_await spin_until_cancelled(p);
    co_return;
  }
  co_await weft::fork(spinning_tree(depth - 1, p));
  co_await weft::fork(spinning_tree(depth - 1, p));
  co_await weft::join();
}

weft::task<> run_spinning_tree(cancel_probe* p) { co_await spinning_tree(3, p); }

TEST(ForkJoinTest, CancellingTheTaskReachesEveryFrameAsParentKindAndTheTaskGetsItsRequest) {
  watchdog dog(60s);
  cancel_probe p;
  weft::runtime rt(workers_opt(2));
  auto h = rt.spawn(run_spinning_tree(&p));
  await_true([&] { return p.running.load() >= 1; });
  const int line = __LINE__ + 1;
  h.cancel("stop it");
  const cancelled_error e = expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
  EXPECT_EQ(e.reason(), "stop it");
  EXPECT_EQ(static_cast<int>(e.where().line()), line);
  // fork() is no cancellation point and runs its child at once, so all 8
  // leaves ran, each until its first checkpoint after the request.
  EXPECT_EQ(p.running.load(), 8);
  EXPECT_EQ(p.parent_kind.load(), 8);
  EXPECT_EQ(p.other.load(), 0);
  EXPECT_FALSE(p.wrong_reason.load());
}

weft::fork_task<int> catches_and_returns(cancel_probe* p) {
  try {
    co_await spin_until_cancelled(p);
  } catch (const cancelled_error&) {
    co_return 42;  // carries on with a value (not recommended)
  }
  co_return 0;
}

weft::task<int> tree_value_then_checkpoint(cancel_probe* p, int* value) {
  *value = co_await catches_and_returns(p);
  co_await weft::checkpoint();  // the task's own request is delivered here
  co_return 1;
}

TEST(ForkJoinTest, ATreeThatCatchesTheCancellationGivesItsValueAndTheTaskGetsTheRequestNext) {
  watchdog dog(60s);
  cancel_probe p;
  int value = 0;
  weft::runtime rt(workers_opt(2));
  auto h = rt.spawn(tree_value_then_checkpoint(&p, &value));
  await_true([&] { return p.running.load() >= 1; });
  h.cancel("later");
  const cancelled_error e = expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.kind(), cancel_kind::explicit_request);
  EXPECT_EQ(e.reason(), "later");
  EXPECT_EQ(value, 42);
}

TEST(ForkJoinTest, ShutdownEndsARunningTreeWithTheShutdownCancellation) {
  watchdog dog(60s);
  cancel_probe p;
  weft::join_handle<> h;
  {
    weft::runtime rt(workers_opt(2));
    h = rt.spawn(run_spinning_tree(&p));
    await_true([&] { return p.running.load() >= 1; });
  }
  const cancelled_error e = expect_cancelled([&] { h.join(); });
  EXPECT_EQ(e.kind(), cancel_kind::shutdown);
  EXPECT_EQ(p.other.load(), 0);
  EXPECT_EQ(p.parent_kind.load(), p.running.load());
}

// ---- yields ----

weft::task<> set_flag(std::atomic<bool>* f) {
  f->store(true);
  co_return;
}

weft::fork_task<int> yield_until(std::atomic<bool>* f) {
  int yields = 0;
  while (!f->load()) {
    co_await weft::yield();
    ++yields;
  }
  co_return yields;
}

weft::fork_task<int> forked_yielders(std::atomic<bool>* f) {
  int a = 0, b = 0;
  co_await weft::fork(a, yield_until(f));
  co_await weft::fork(b, yield_until(f));
  co_await weft::join();
  co_return a + b;
}

weft::task<int> spawn_then_tree(std::atomic<bool>* f) {
  auto other = weft::spawn(set_flag(f));
  const int yields = co_await forked_yielders(f);
  co_await other;
  co_return yields;
}

TEST(ForkJoinTest, YieldInAForkFrameLetsAnotherTaskRunOnOneWorker) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(1));
  std::atomic<bool> flag{false};
  EXPECT_GE(rt.block_on(spawn_then_tree(&flag)), 1);
}

// ---- misuse and memory ----

weft::fork_task<int> forks_an_empty_task() {
  int a = 0;
  weft::fork_task<int> empty;
  co_await weft::fork(a, std::move(empty));
  co_await weft::join();
  co_return a;
}

TEST(ForkJoinTest, ForkingAnEmptyTaskIsAUsageError) {
  watchdog dog(30s);
  weft::runtime rt(workers_opt(1));
  expect_throws<weft::usage_error>([&] { rt.block_on(weft::as_task(forks_an_empty_task())); });
}

TEST(ForkJoinTest, ATreeCreatedOutsideAWorkerRunsFromTheHeap) {
  watchdog dog(30s);
  weft::runtime rt(workers_opt(2));
  weft::fork_task<long> t = fib(15);  // this thread is no worker: a heap frame
  EXPECT_EQ(rt.block_on(weft::as_task(std::move(t))), fib_ref(15));
  weft::fork_task<long> dropped = fib(3);  // never run: freed by its destructor
}

// A fork_task made inside a task (its frame on that worker's stack) and moved
// out of the runtime outlives the worker: its frame must stay valid, to run
// on another runtime or to be dropped.
weft::task<weft::fork_task<long>> make_fib_on_a_worker(int n) { co_return fib(n); }

TEST(ForkJoinTest, AForkTaskMadeOnAWorkerOutlivesItsRuntime) {
  watchdog dog(30s);
  weft::fork_task<long> kept;
  weft::fork_task<long> dropped;
  {
    weft::runtime rt(workers_opt(1));
    kept = rt.block_on(make_fib_on_a_worker(12));
    dropped = rt.block_on(make_fib_on_a_worker(5));
  }
  // Memory freed by the runtime's destruction is likely to be handed out
  // again here: were the frames' segments freed, this would overwrite them.
  std::vector<std::vector<unsigned char>> churn;
  for (int i = 0; i < 64; ++i) churn.emplace_back(std::size_t{64} << 10, 0xA5);
  dropped = weft::fork_task<long>{};
  weft::runtime rt2(workers_opt(2));
  EXPECT_EQ(rt2.block_on(weft::as_task(std::move(kept))), fib_ref(12));
}

// Deep chains of calls with large frames cross many stack segments, both ways.
weft::fork_task<long> deep(int n) {
  volatile char pad[900] = {};
  pad[n % 900] = static_cast<char>(n);
  if (n == 0) co_return pad[0];
  long below = 0;
  co_await weft::fork(below, deep(n - 1));
  co_await weft::join();
  co_return below + 1;
}

TEST(ForkJoinTest, DeepChainsGrowAndShrinkTheWorkerStack) {
  watchdog dog(60s);
  weft::runtime rt(workers_opt(2));
  const int n = static_cast<int>(scaled(5000, 500));
  for (int round = 0; round < 3; ++round) EXPECT_EQ(rt.block_on(weft::as_task(deep(n))), n);
}

weft::fork_task<int> out_of_order_frees() {
  weft::fork_task<long> first = fib(6);
  weft::fork_task<long> second = fib(7);
  first = weft::fork_task<long>{};  // freed below `second`: reclaimed when `second` goes
  long b = co_await std::move(second);
  co_return static_cast<int>(b);
}

TEST(ForkJoinTest, FramesFreedOutOfOrderAreReclaimed) {
  watchdog dog(30s);
  weft::runtime rt(workers_opt(1));
  for (int round = 0; round < 1000; ++round)
    EXPECT_EQ(rt.block_on(weft::as_task(out_of_order_frees())), fib_ref(7));
}

// ---- the simulation ----

// Odd seeds run random schedules, even ones PCT (which also picks the oldest
// items of other workers' deques: steals of continuations).
weft::runtime_options sim_options(std::uint64_t seed, std::uint64_t cancel_at = 0,
                                  std::vector<weft::sim::event>* trace = nullptr) {
  weft::runtime_options o;
  o.workers = 3;
  o.simulation = weft::sim::options{};
  o.simulation->seed = seed;
  o.simulation->schedule = seed % 2 == 0 ? weft::sim::policy::pct : weft::sim::policy::random;
  o.simulation->cancel_at = cancel_at;
  o.simulation->trace = trace;
  return o;
}

weft::fork_task<long> fib_checkpoints(int n) {
  co_await weft::checkpoint();
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib_checkpoints(n - 1));
  long b = co_await fib_checkpoints(n - 2);
  co_await weft::join();
  co_return a + b;
}

TEST(ForkSimTest, FibUnderManySeedsIsRightAndReplaysEventForEvent) {
  watchdog dog(60s);
  std::uint64_t steals = 0;
  for (std::uint64_t seed = 1; seed <= static_cast<std::uint64_t>(scaled(200, 30)); ++seed) {
    std::vector<weft::sim::event> t1, t2;
    {
      weft::runtime rt(sim_options(seed, 0, &t1));
      EXPECT_EQ(rt.block_on(weft::as_task(fib_checkpoints(9))), fib_ref(9)) << "seed " << seed;
      steals += weft::sim::stats(rt).steals;
    }
    {
      weft::runtime rt(sim_options(seed, 0, &t2));
      rt.block_on(weft::as_task(fib_checkpoints(9)));
    }
    ASSERT_EQ(t1.size(), t2.size()) << "seed " << seed;
    for (std::size_t i = 0; i < t1.size(); ++i) {
      ASSERT_EQ(t1[i].what, t2[i].what) << "seed " << seed << " event " << i;
      ASSERT_EQ(t1[i].task, t2[i].task) << "seed " << seed << " event " << i;
      ASSERT_EQ(t1[i].worker, t2[i].worker) << "seed " << seed << " event " << i;
    }
  }
  EXPECT_GT(steals, 100u);  // the continuation-stealing paths ran
}

TEST(ForkSimTest, ACancellationAtEveryResumePointEndsTheTreeAsTheTasksRequest) {
  watchdog dog(100s);
  int cancelled = 0;
  for (std::uint64_t seed : {7u, 8u}) {
    // How many resume points one run has.
    std::uint64_t points = 0;
    {
      weft::runtime rt(sim_options(seed));
      rt.block_on(weft::as_task(fib_checkpoints(7)));
      points = weft::sim::stats(rt).resume_points;
    }
    ASSERT_GT(points, 10u);
    for (std::uint64_t k = 1; k <= points; ++k) {
      weft::runtime rt(sim_options(seed, k));
      try {
        EXPECT_EQ(rt.block_on(weft::as_task(fib_checkpoints(7))), fib_ref(7))
            << "seed " << seed << " k=" << k;
      } catch (const cancelled_error& e) {
        ++cancelled;
        EXPECT_EQ(e.kind(), cancel_kind::explicit_request) << "seed " << seed << " k=" << k;
        EXPECT_EQ(e.reason().substr(0, 4), "sim:") << "seed " << seed << " k=" << k;
      }
    }
  }
  EXPECT_GT(cancelled, 20);
}

}  // namespace
