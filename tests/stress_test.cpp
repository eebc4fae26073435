// SPDX-License-Identifier: MIT
// Stress tests through the public API: the spawn storm with random
// cancellation, lost wakeups with parked workers, and many runtime
// create/load/destroy cycles.  Each checks exactly-once outcomes, RAII
// destructors and frame counts, and prints its figures (informational).
#include <algorithm>
#include <cstdio>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace weft_test;

// =================================================================== storm
//
// 1e6 tasks (2e5 under TSan and ASan) spawned from 4 driver tasks on 2 workers
// and from an outside thread.  Each task does 0-4 random steps (yield, direct
// sub-task, spawned child awaited, detached child, checkpoint, short timer,
// busy spin) and returns mix(id); 10% of them catch a cancellation and carry
// on.  30% are cancelled: 10% right after spawn (usually before they start),
// 10% after the spawner yielded or waited a random gap (while suspended or
// running), 10% after they completed (cancel must return false and change
// nothing).  Every outcome is observed exactly once by the spawner.
//
// Each task publishes its phase (not started / running / suspended at an await
// / returned); the canceller samples it just before cancel(), so the test can
// show that the cancels really landed in every one of those moments, and it
// checks that a task whose body never started ended cancelled.  Some of the
// deferred-cancel tasks stay busy until their request arrives (at most 200
// us), so that "while running" happens under the sanitizers too.

constexpr long kStormTasks = scaled(1'000'000, 200'000, 200'000);

enum plan : std::uint8_t { none = 0, before_start = 1, deferred = 2, after_completion = 3 };

plan plan_of(std::uint64_t id) {
  rng r(id * 7 + 1);
  const auto p = r.below(100);
  if (p < 10) return before_start;
  if (p < 20) return deferred;
  if (p < 30) return after_completion;
  return none;
}

std::uint64_t mix(std::uint64_t id) { return rng(id + 99).next(); }

// A storm task's phase, as the task publishes it.
enum phase : std::uint8_t { not_started = 0, running = 1, suspended = 2, returned = 3 };

struct storm_state {
  explicit storm_state(long n)
      : n(n), outcome(new std::atomic<std::uint8_t>[n]), phase(new std::atomic<std::uint8_t>[n]) {
    for (long i = 0; i < n; ++i) {
      // Relaxed: initialisation before the runtime (and its threads) exists.
      outcome[i].store(0, std::memory_order_relaxed);
      phase[i].store(not_started, std::memory_order_relaxed);
    }
  }
  long n;
  std::unique_ptr<std::atomic<std::uint8_t>[]> outcome;  // 0 unseen, 1 value, 2 cancelled
  std::unique_ptr<std::atomic<std::uint8_t>[]> phase;    // see `phase`
  // The phase each cancel() found (sampled just before the call), per plan.
  std::atomic<long> cancelled_at[4][4]{};            // [plan][phase]
  std::atomic<long> never_started_not_cancelled{0};  // body never ran, yet no cancellation
  raii_counter rc;                                   // storm tasks and their children
  std::atomic<long> bodies_started{0};
  std::atomic<long> values{0}, cancels{0};
  std::atomic<long> duplicate{0}, wrong_value{0}, wrong_exception{0};
  std::atomic<long> unexpected_cancel{0};  // cancelled although never asked to be
  std::atomic<long> cancel_false_then_cancelled{0};
  std::atomic<long> late_cancel_returned_true{0};
  std::atomic<long> handle_state_mismatch{0};
  std::atomic<long> step_mismatch{0};
  std::atomic<long> refused{0};
  std::atomic<long> observed{0};
  watchdog* wd = nullptr;

  // Sample the task's phase, then cancel it.
  int cancel(weft::join_handle<std::uint64_t>& h, std::uint64_t id, plan p, const char* why) {
    // Relaxed: a sample for the statistics; nothing is read through it.
    const auto ph = phase[id].load(std::memory_order_relaxed);
    // Relaxed: a counter, read after every driver was joined.
    cancelled_at[p][ph].fetch_add(1, std::memory_order_relaxed);
    return h.cancel(why) ? 1 : 0;
  }

  void record(std::uint64_t id, plan p, int cancel_result, bool cancelled, std::uint64_t v,
              bool handle_cancelled) {
    const std::uint8_t mine = cancelled ? 2 : 1;
    // Relaxed, every counter and outcome slot here: each is an RMW (no update
    // is lost) read only after the drivers and the outside thread were joined.
    if (outcome[id].exchange(mine, std::memory_order_relaxed) != 0)
      duplicate.fetch_add(1, std::memory_order_relaxed);
    if (handle_cancelled != cancelled)
      handle_state_mismatch.fetch_add(1, std::memory_order_relaxed);
    if (cancelled) {
      cancels.fetch_add(1, std::memory_order_relaxed);
      if (p == none || p == after_completion)
        unexpected_cancel.fetch_add(1, std::memory_order_relaxed);
      if (cancel_result == 0) cancel_false_then_cancelled.fetch_add(1, std::memory_order_relaxed);
    } else {
      values.fetch_add(1, std::memory_order_relaxed);
      if (v != mix(id)) wrong_value.fetch_add(1, std::memory_order_relaxed);
    }
    // Relaxed: the task's last store happens-before this (we observed its
    // outcome through its handle, which synchronises with its completion).
    if (phase[id].load(std::memory_order_relaxed) == not_started &&
        (!cancelled || p == none || p == after_completion))
      never_started_not_cancelled.fetch_add(1, std::memory_order_relaxed);
    if ((observed.fetch_add(1, std::memory_order_relaxed) & 1023) == 0 && wd) wd->kick();
  }
};

weft::task<std::uint64_t> storm_leaf(std::uint64_t x) { co_return x * 3; }

weft::task<std::uint64_t> storm_child(std::uint64_t x, storm_state* s) {
  raii_probe g(s->rc);
  if (x & 1) co_await weft::yield();
  co_return x * 5;
}

weft::task<std::uint64_t> storm_task(std::uint64_t id, storm_state* s) {
  raii_probe g(s->rc);
  s->bodies_started.fetch_add(1, std::memory_order_relaxed);
  // Relaxed, every phase store: samples for the statistics and for the
  // "never started" check, which reads them after the task's completion was
  // observed through its handle.
  std::atomic<std::uint8_t>& ph = s->phase[id];
  ph.store(running, std::memory_order_relaxed);
  rng r(id ^ 0x5eed);
  const int steps = static_cast<int>(r.below(5));
  const bool refuses = r.below(10) == 0;
  // One in 16 of the tasks that get a deferred cancel stays busy (running, no
  // resume point) until the request is visible, at most 200 us: the cancel
  // then lands on a running task.  (Without this, the short bodies were
  // almost never caught running under TSan.)
  if (plan_of(id) == deferred && rng(id * 3 + 5).below(16) == 0) {
    const auto until = clock_type::now() + 200us;
    while (!weft::this_task::cancel_requested() && clock_type::now() < until) {
    }
  }
  std::uint64_t acc = 0, expect = 0;
  bool interrupted = false;
  for (int k = 0; k < steps; ++k) {
    const auto op = r.below(7);
    const std::uint64_t x = id + k;
    try {
      switch (op) {
        case 0:
          ph.store(suspended, std::memory_order_relaxed);
          co_await weft::yield();
          break;
        case 1:
          expect += x * 3;
          acc += co_await storm_leaf(x);
          break;
        case 2: {
          expect += x * 5;
          auto h = weft::spawn(storm_child(x, s));
          ph.store(suspended, std::memory_order_relaxed);
          acc += co_await h;
          break;
        }
        case 3: {
          auto detached = weft::spawn(storm_child(x, s));
          break;
        }
        case 4:
          ph.store(suspended, std::memory_order_relaxed);
          co_await weft::checkpoint();
          break;
        case 5:
          ph.store(suspended, std::memory_order_relaxed);
          co_await weft::sleep_for(std::chrono::microseconds(r.below(30)));
          break;
        case 6:
          busy_gap(std::chrono::nanoseconds(r.below(3000)));
          ph.store(suspended, std::memory_order_relaxed);
          co_await weft::checkpoint();
          break;
      }
      ph.store(running, std::memory_order_relaxed);
    } catch (const cancelled_error&) {
      ph.store(running, std::memory_order_relaxed);
      if (!refuses) {
        ph.store(returned, std::memory_order_relaxed);
        throw;
      }
      interrupted = true;
      s->refused.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Relaxed: a counter, read after every driver was joined.
  if (!interrupted && acc != expect) s->step_mismatch.fetch_add(1, std::memory_order_relaxed);
  ph.store(returned, std::memory_order_relaxed);
  co_return mix(id);
}

// Observes one handle from inside a task.
weft::task<void> observe_in_task(weft::join_handle<std::uint64_t>* h, std::uint64_t id, plan p,
                                 int cancel_result, storm_state* s) {
  if (p == after_completion) {
    while (!h->done()) co_await weft::yield();
    if (s->cancel(*h, id, after_completion, "late") != 0)
      s->late_cancel_returned_true.fetch_add(1, std::memory_order_relaxed);  // counter
    cancel_result = 0;
  }
  try {
    const std::uint64_t v = co_await *h;
    s->record(id, p, cancel_result, false, v, h->cancelled());
  } catch (const cancelled_error&) {
    s->record(id, p, cancel_result, true, 0, h->cancelled());
  } catch (...) {
    s->wrong_exception.fetch_add(1, std::memory_order_relaxed);
  }
}

weft::task<void> storm_driver(storm_state* s, std::uint64_t first, std::uint64_t count) {
  const std::uint64_t batch = 256;
  std::vector<weft::join_handle<std::uint64_t>> hs;
  std::vector<int> cancel_result;
  hs.reserve(batch);
  cancel_result.reserve(batch);
  for (std::uint64_t base = first; base < first + count; base += batch) {
    const std::uint64_t m = std::min(batch, first + count - base);
    hs.clear();
    cancel_result.assign(m, -1);  // -1: not cancelled (yet)
    for (std::uint64_t i = 0; i < m; ++i) {
      hs.push_back(weft::spawn(storm_task(base + i, s)));
      if (plan_of(base + i) == before_start)
        cancel_result[i] = s->cancel(hs[i], base + i, before_start, "storm");
    }
    co_await weft::yield();  // let some of them run and suspend
    for (std::uint64_t i = 0; i < m; ++i)
      if (plan_of(base + i) == deferred)
        cancel_result[i] = s->cancel(hs[i], base + i, deferred, "storm");
    for (std::uint64_t i = 0; i < m; ++i) {
      const std::uint64_t id = base + i;
      co_await observe_in_task(&hs[i], id, plan_of(id), cancel_result[i], s);
    }
  }
}

void storm_outside(weft::runtime* rt, storm_state* s, std::uint64_t first, std::uint64_t count) {
  const std::uint64_t batch = 64;
  rng r(first);
  std::vector<weft::join_handle<std::uint64_t>> hs;
  std::vector<int> cancel_result;
  for (std::uint64_t base = first; base < first + count; base += batch) {
    const std::uint64_t m = std::min(batch, first + count - base);
    hs.clear();
    cancel_result.assign(m, -1);
    for (std::uint64_t i = 0; i < m; ++i) {
      hs.push_back(rt->spawn(storm_task(base + i, s)));
      if (plan_of(base + i) == before_start)
        cancel_result[i] = s->cancel(hs[i], base + i, before_start, "storm");
    }
    for (std::uint64_t i = 0; i < m; ++i) {
      if (plan_of(base + i) == deferred) {
        busy_gap(std::chrono::nanoseconds(r.below(5000)));  // lands while running or suspended
        cancel_result[i] = s->cancel(hs[i], base + i, deferred, "storm");
      }
    }
    for (std::uint64_t i = 0; i < m; ++i) {
      const std::uint64_t id = base + i;
      const plan p = plan_of(id);
      int cr = cancel_result[i];
      if (p == after_completion) {
        if (!wait_done(hs[i], 60'000ms)) ADD_FAILURE() << "task " << id << " never finished";
        if (s->cancel(hs[i], id, after_completion, "late") != 0)
          s->late_cancel_returned_true.fetch_add(1, std::memory_order_relaxed);  // counter
        cr = 0;
      }
      try {
        const std::uint64_t v = hs[i].join();
        s->record(id, p, cr, false, v, hs[i].cancelled());
      } catch (const cancelled_error&) {
        s->record(id, p, cr, true, 0, hs[i].cancelled());
      } catch (...) {
        s->wrong_exception.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
}

TEST(StormTest, MillionTasksWithRandomCancellationObservedExactlyOnce) {
  watchdog wd(100s, 20s);
  frame_baseline frames;
  const long n = kStormTasks;
  storm_state s(n);
  s.wd = &wd;
  const auto t0 = clock_type::now();
  {
    weft::runtime rt(with_workers(2));
    // ids [0, n/5) from the outside thread, the rest from 4 drivers on the workers.
    const std::uint64_t outside_n = n / 5;
    const std::uint64_t drivers = 4;
    const std::uint64_t per_driver = (n - outside_n) / drivers;
    std::vector<weft::join_handle<void>> ds;
    for (std::uint64_t d = 0; d < drivers; ++d) {
      const std::uint64_t first = outside_n + d * per_driver;
      const std::uint64_t count = d + 1 == drivers ? n - first : per_driver;
      ds.push_back(rt.spawn(storm_driver(&s, first, count)));
    }
    std::jthread outside([&] { storm_outside(&rt, &s, 0, outside_n); });
    for (auto& d : ds) d.join();
    outside.join();
    wd.phase("runtime destructor");
  }
  const double secs = seconds_since(t0);

  // Relaxed, every read below: the runtime is gone (its workers were joined),
  // and so is the outside thread.
  long missing = 0;
  for (long i = 0; i < n; ++i)
    if (s.outcome[i].load(std::memory_order_relaxed) == 0) ++missing;
  EXPECT_EQ(missing, 0) << "outcomes never observed";
  EXPECT_EQ(s.duplicate.load(std::memory_order_relaxed), 0) << "outcomes observed twice";
  EXPECT_EQ(s.observed.load(std::memory_order_relaxed), n);
  EXPECT_EQ(s.values.load(std::memory_order_relaxed) + s.cancels.load(std::memory_order_relaxed),
            n);
  EXPECT_EQ(s.wrong_value.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(s.wrong_exception.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(s.unexpected_cancel.load(std::memory_order_relaxed), 0)
      << "tasks never cancelled (or cancelled after completion) ended cancelled";
  EXPECT_EQ(s.cancel_false_then_cancelled.load(std::memory_order_relaxed), 0)
      << "cancel() returned false yet the task ended cancelled";
  EXPECT_EQ(s.late_cancel_returned_true.load(std::memory_order_relaxed), 0)
      << "cancel after completion returned true";
  EXPECT_EQ(s.handle_state_mismatch.load(std::memory_order_relaxed), 0)
      << "cancelled() disagrees with the observed outcome";
  EXPECT_EQ(s.step_mismatch.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(s.rc.constructed.load(std::memory_order_relaxed),
            s.rc.destroyed.load(std::memory_order_relaxed))
      << "RAII locals not destroyed exactly once";
  EXPECT_GT(s.cancels.load(std::memory_order_relaxed), 0);
  EXPECT_GT(s.values.load(std::memory_order_relaxed), n / 2);
  EXPECT_LT(s.bodies_started.load(std::memory_order_relaxed), n)
      << "no task cancelled before it started skipped its body";
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
  EXPECT_EQ(s.never_started_not_cancelled.load(std::memory_order_relaxed), 0)
      << "a task whose body never started did not end cancelled (or was never asked to be)";
  // The cancels landed at every moment the scenario names.  (Relaxed: read
  // after the drivers and the outside thread were joined.)
  auto at = [&](plan p, phase ph) { return s.cancelled_at[p][ph].load(std::memory_order_relaxed); };
  EXPECT_GT(at(before_start, not_started), 0) << "no cancel before the task started";
  EXPECT_GT(at(deferred, running), 0) << "no cancel while the task was running";
  EXPECT_GT(at(deferred, suspended), 0) << "no cancel while the task was suspended";
  EXPECT_EQ(at(after_completion, not_started) + at(after_completion, running) +
                at(after_completion, suspended),
            0)
      << "an after-completion cancel came before the completion";
  EXPECT_GT(at(after_completion, returned), 0);

  std::printf(
      "[ info ] storm: %ld tasks in %.2f s = %.0f tasks/s (2 workers + 1 outside thread); "
      "%ld cancelled, %ld values, %ld bodies never ran, %ld refusals, %ld RAII locals\n",
      n, secs, n / secs, s.cancels.load(std::memory_order_relaxed),
      s.values.load(std::memory_order_relaxed),
      n - s.bodies_started.load(std::memory_order_relaxed),
      s.refused.load(std::memory_order_relaxed), s.rc.constructed.load(std::memory_order_relaxed));
  std::printf(
      "[ info ] storm: cancel() found the task (not started / running / suspended / returned): "
      "before start %ld/%ld/%ld/%ld, deferred %ld/%ld/%ld/%ld, after completion %ld/%ld/%ld/%ld\n",
      at(before_start, not_started), at(before_start, running), at(before_start, suspended),
      at(before_start, returned), at(deferred, not_started), at(deferred, running),
      at(deferred, suspended), at(deferred, returned), at(after_completion, not_started),
      at(after_completion, running), at(after_completion, suspended),
      at(after_completion, returned));
}

// ============================================================ lost wakeups
//
// All workers parked, an outside thread spawns one tiny task at a time and
// joins it, 1e5 times (1e4 under TSan, 5e4 under ASan) on 1 worker and again
// on 2.  Where each spawn lands, in turn:
//   * right after the worker that ran the previous task was seen to park
//     (runtime::counters::parks moved): it is in park(), past its last look at
//     the queues, about to sleep or asleep;
//   * after that, plus a random 0-50 us: asleep;
//   * after a random 0-100 us gap only: anywhere in the spin-then-park
//     sequence, including the announce-then-recheck window.
// With 2 workers the other one stays parked throughout: one spawn wakes one
// worker, and the first spawn waits until both have parked.  A lost wakeup
// leaves the task queued with every worker asleep: its join hangs and the stall
// watchdog (10 s without progress) aborts.  Each spawn+join must also finish
// within a generous bound.

TEST(WakeupTest, OutsideSpawnsOneTaskAtATimeIntoParkedWorkersNeverLost) {
  const long n = scaled(100'000, 10'000, 50'000);  // per worker count
  watchdog wd(110s, 10s);
  frame_baseline frames;
  {
    for (unsigned workers : {1u, 2u}) {
      wd.phase(workers == 1 ? "spawn+join, 1 worker" : "spawn+join, 2 workers");
      // Workers park as soon as they run dry (no idle spin): the test is about
      // parked workers, and waits for each park.
      weft::runtime_options o = with_workers(workers);
      o.idle_spin = std::chrono::microseconds(0);
      weft::runtime rt(std::move(o));
      rng r(workers);
      double worst = 0;
      long over_1ms = 0, over_10ms = 0, done = 0;
      long meant_parked = 0, seen_parked = 0;
      // Every worker parks once before the first spawn.
      ASSERT_TRUE(spin_until([&] { return rt.stats().total.parks >= workers; }, 10'000ms));
      const auto parks_before = rt.stats().total.parks;
      auto parks_at_last_spawn = parks_before - 1;  // the first spawn finds them parked
      const auto t0 = clock_type::now();
      for (long i = 0; i < n; ++i) {
        const int mode = static_cast<int>(i % 3);
        if (mode != 2) {
          ++meant_parked;
          seen_parked +=
              spin_until([&] { return rt.stats().total.parks > parks_at_last_spawn; }, 1'000ms);
          if (mode == 1) busy_gap(std::chrono::nanoseconds(r.below(50'000)));
        } else {
          busy_gap(std::chrono::nanoseconds(r.below(100'000)));
        }
        parks_at_last_spawn = rt.stats().total.parks;
        const auto t1 = clock_type::now();
        auto h = rt.spawn(value_task(static_cast<int>(i)));
        EXPECT_EQ(h.join(), static_cast<int>(i));
        const double d = seconds_since(t1);
        worst = std::max(worst, d);
        over_1ms += d > 1e-3;
        over_10ms += d > 1e-2;
        ++done;
        if ((i & 255) == 0) wd.kick();
        if (::testing::Test::HasFailure()) break;
      }
      EXPECT_EQ(done, n);
      EXPECT_LT(worst, 2.0) << "a spawn into parked workers took this long to run";
      // The scenario needs parked workers: the spawns meant to land on them did.
      EXPECT_GE(seen_parked, meant_parked * 99 / 100);
      std::printf(
          "[ info ] wakeups, %u worker(s): %ld spawn+join in %.2f s; worst %.3f ms; "
          ">1 ms: %ld, >10 ms: %ld; parks %llu; %ld of %ld spawns right after a park\n",
          workers, done, seconds_since(t0), worst * 1e3, over_1ms, over_10ms,
          static_cast<unsigned long long>(rt.stats().total.parks - parks_before), seen_parked,
          meant_parked);
    }
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Wakes across threads in both directions: a task on a worker waits for a
// task the outside thread spawned, which waits for the next, ... (ping-pong
// between an outside thread and the workers).
// Each task releases its predecessor's handle once it has the value: a frame
// parameter would otherwise keep the whole chain of 1e5 frames alive and
// destroy it recursively at the end (a linked list freed by recursion).
weft::task<int> await_handle_plus_one(weft::join_handle<int> h) {
  const int v = co_await h;
  {
    auto release = std::move(h);
  }
  co_return v + 1;
}

TEST(WakeupTest, CrossThreadWakeChainsResolve) {
  watchdog wd(60s, 10s);
  const int n = static_cast<int>(scaled(100'000, 10'000));
  weft::runtime rt(with_workers(2));
  auto h = rt.spawn(value_task(0));
  for (int i = 0; i < n; ++i) {
    h = rt.spawn(await_handle_plus_one(std::move(h)));
    if ((i & 255) == 0) wd.kick();
  }
  EXPECT_EQ(h.join(), n);
}

// ========================================================== create/destroy
//
// 1,000 runtimes (100 under TSan), each loaded with tasks that are sleeping,
// yielding, spawning, awaiting others, and whose destructors spawn or cancel
// other tasks, destroyed at a random moment.  Every destruction is bounded,
// every handle resolves (value or cancelled), nothing leaks.

// Counters, relaxed everywhere: `started` is polled by the test only to pick
// a moment (it publishes nothing); the others are read after the runtime was
// destroyed (its workers joined).
struct cycle_state {
  raii_counter rc;
  std::atomic<long> started{0};
  std::atomic<long> dtor_spawn_threw{0};
  std::atomic<long> dtor_spawned{0};
};

weft::task<int> cycle_leaf(cycle_state* st) {
  raii_probe g(st->rc);
  co_await weft::yield();
  co_return 1;
}

struct spawn_on_destroy {
  cycle_state* st;
  ~spawn_on_destroy() {
    try {
      auto h = weft::spawn(cycle_leaf(st));
      st->dtor_spawned.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
      st->dtor_spawn_threw.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

struct cancel_on_destroy {
  weft::join_handle<int>* target;
  ~cancel_on_destroy() { (void)target->cancel("from a destructor"); }
};

weft::task<int> cycle_sleeper(cycle_state* st) {
  raii_probe g(st->rc);
  spawn_on_destroy sd{st};
  st->started.fetch_add(1, std::memory_order_relaxed);
  co_await weft::sleep_for(std::chrono::hours(1));
  co_return 1;
}

weft::task<int> cycle_yielder(cycle_state* st) {
  raii_probe g(st->rc);
  st->started.fetch_add(1, std::memory_order_relaxed);
  for (;;) co_await weft::yield();
}

weft::task<int> cycle_spawner(cycle_state* st) {
  raii_probe g(st->rc);
  st->started.fetch_add(1, std::memory_order_relaxed);
  int sum = 0;
  for (int i = 0;; ++i) {
    auto a = weft::spawn(cycle_leaf(st));
    {
      auto dropped = weft::spawn(cycle_leaf(st));
    }
    sum += co_await a;
    if (sum != i + 1) co_return -1;  // every awaited leaf returns 1
    if (i % 8 == 0) co_await weft::sleep_for(std::chrono::microseconds(50));
  }
}

weft::task<int> cycle_joiner(cycle_state* st, weft::join_handle<int>* other) {
  raii_probe g(st->rc);
  st->started.fetch_add(1, std::memory_order_relaxed);
  co_return co_await *other;
}

weft::task<int> cycle_waker(cycle_state* st, weft::join_handle<int>* victim) {
  raii_probe g(st->rc);
  cancel_on_destroy cd{victim};
  st->started.fetch_add(1, std::memory_order_relaxed);
  co_await weft::sleep_for(std::chrono::hours(1));
  co_return 1;
}

TEST(LifecycleTest, ThousandRuntimeCreateLoadDestroyCycles) {
  const int cycles = static_cast<int>(scaled(1000, 100, 300));
  watchdog wd(110s, 10s);
  frame_baseline frames;
  cycle_state st;
  double worst_destroy = 0;
  long values = 0, cancels = 0, others = 0, unresolved = 0;
  const auto t0 = clock_type::now();
  for (int c = 0; c < cycles; ++c) {
    wd.kick();
    rng r(c);
    std::vector<weft::join_handle<int>> hs;  // outlive the runtime
    hs.reserve(16);
    st.started.store(0, std::memory_order_relaxed);  // no runtime alive: nobody else touches it
    {
      std::optional<weft::runtime> rt_storage;
      rt_storage.emplace(with_workers(1 + static_cast<unsigned>(c % 2)));
      weft::runtime& rt = *rt_storage;
      hs.push_back(rt.spawn(cycle_sleeper(&st)));         // 0
      hs.push_back(rt.spawn(cycle_yielder(&st)));         // 1
      hs.push_back(rt.spawn(cycle_spawner(&st)));         // 2
      hs.push_back(rt.spawn(cycle_joiner(&st, &hs[0])));  // 3: awaits the sleeper
      hs.push_back(rt.spawn(cycle_sleeper(&st)));         // 4: the waker's victim
      hs.push_back(rt.spawn(cycle_waker(&st, &hs[4])));   // 5
      hs.push_back(rt.spawn(value_task(c)));              // 6
      {
        auto dropped = rt.spawn(cycle_sleeper(&st));
      }
      {
        auto dropped = rt.spawn(cycle_spawner(&st));
      }
      switch (r.below(3)) {
        case 0:  // destroy at once: some tasks may not have started
          break;
        case 1:  // destroy once everything started
          (void)spin_until([&] { return st.started.load(std::memory_order_relaxed) >= 8; },
                           10'000ms);
          break;
        case 2:  // destroy after an explicit shutdown, from another thread
          (void)spin_until(
              [&] { return st.started.load(std::memory_order_relaxed) >= long(r.below(8)); },
              10'000ms);
          std::jthread([&] { rt.shutdown(); }).join();
          break;
      }
      wd.phase("runtime destructor");
      const auto d0 = clock_type::now();
      rt_storage.reset();  // ~runtime
      worst_destroy = std::max(worst_destroy, seconds_since(d0));
    }
    wd.phase("checking handles");
    for (std::size_t i = 0; i < hs.size(); ++i) {
      if (!hs[i].done()) {
        ++unresolved;
        continue;
      }
      if (i == 0) continue;  // awaited by the joiner (hs[3]), which took its result
      try {
        const int v = hs[i].join();
        ++values;
        if (i == 6) {
          EXPECT_EQ(v, c);
        }
      } catch (const cancelled_error&) {
        ++cancels;
      } catch (...) {
        ++others;
      }
    }
    if (::testing::Test::HasFailure()) break;
  }
  const double secs = seconds_since(t0);
  EXPECT_EQ(unresolved, 0) << "handles not done after the runtime was destroyed";
  EXPECT_EQ(others, 0);
  EXPECT_LT(worst_destroy, 5.0);
  EXPECT_EQ(st.dtor_spawn_threw.load(std::memory_order_relaxed), 0);
  EXPECT_EQ(st.rc.constructed.load(std::memory_order_relaxed),
            st.rc.destroyed.load(std::memory_order_relaxed));
  EXPECT_EQ(frames.now(), frames.start) << "frames leaked";
  std::printf(
      "[ info ] %d runtime cycles in %.2f s; worst destruction %.1f ms; handles: %ld values, "
      "%ld cancelled; destructor spawns %ld\n",
      cycles, secs, worst_destroy * 1e3, values, cancels,
      st.dtor_spawned.load(std::memory_order_relaxed));
}

}  // namespace
