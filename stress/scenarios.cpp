// SPDX-License-Identifier: MIT
// stress/scenarios.cpp -- the scenarios of weft-stress, as weft tasks.
//
// Each scenario is a driver coroutine that spawns tracked tasks (a record in
// the round's registry each), cancels some of them at chosen moments and
// observes every outcome exactly once with take().  Every driver is written
// to survive its own cancellation (a cancel at any resume point in the
// simulation's cancel_points mode, or the shutdown of a shutdown round): the
// spawning phase runs inside a try; whatever happens, the wind-down cancels
// the tasks that would otherwise wait forever and then takes every outcome,
// and only then rethrows the driver's own cancellation.
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "internal.hpp"
#include "scenarios.hpp"

namespace weft_stress {

namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kRefused = 0x5EF05ED;  // what a task that refuses its cancel returns

// ------------------------------------------------------------ work bodies

enum class op : std::uint8_t {
  quick,           // returns at once
  yields,          // n yields
  checkpoints,     // n iterations of a little CPU work and a checkpoint()
  sleeps,          // n sleeps of sleep_us
  child,           // spawns a child and takes its outcome
  fail,            // yields, then throws planned_failure
  forever_sleep,   // sleeps an hour: only a cancel ends it in time
  forever_loop,    // checkpoint() loop until cancelled
  forever_event,   // waits on an event nobody sets
  fail_on_cancel,  // waits on an event nobody sets; a cancellation makes it throw planned_failure
};

bool is_infinite(op k) noexcept {
  return k == op::forever_sleep || k == op::forever_loop || k == op::forever_event ||
         k == op::fail_on_cancel;
}

struct plan {
  op kind = op::quick;
  std::uint16_t n = 0;
  std::uint32_t sleep_us = 0;
  bool refuse = false;  // catches its cancellation and returns kRefused
};

class planned_failure : public std::runtime_error {
 public:
  explicit planned_failure(std::uint64_t id)
      : std::runtime_error("planned failure of task #" + std::to_string(id)) {}
};

std::uint64_t spin(std::uint64_t acc, int rounds) noexcept {
  for (int i = 0; i < rounds; ++i) acc = acc * 6364136223846793005ull + 1442695040888963407ull;
  return acc;
}

// The value a finished (not refused) body of plan `p` returns, when knowable.
bool expected_value(const plan& p, std::uint64_t seed, std::uint64_t* v) noexcept {
  std::uint64_t acc = mix(seed);
  switch (p.kind) {
    case op::quick:
    case op::yields:
    case op::sleeps:
    case op::forever_sleep:  // reached its hour
      *v = acc;
      return true;
    case op::checkpoints:
      for (int i = 0; i < p.n; ++i) acc = spin(acc, 16);
      *v = acc;
      return true;
    default:
      return false;
  }
}

// A tracked task spawned by the tracked task `parent` (null: by the round).
record* make_record(round_ctx* c, std::uint32_t si, record* parent,
                    std::source_location where = std::source_location::current()) {
  record* r = c->reg.make(si, where, parent);
  add(global_figures().per[si].spawned);
  add(c->spawned[si]);
  return r;
}

weft::task<std::uint64_t> work(round_ctx* c, record* r, plan p, std::uint64_t seed);

weft::task<std::uint64_t> run_plan(round_ctx* c, record* r, plan p, std::uint64_t seed) {
  resume_meter m(r);
  std::uint64_t acc = mix(seed);
  switch (p.kind) {
    case op::quick:
      break;
    case op::yields:
      for (int i = 0; i < p.n; ++i) {
        m.before("yield");
        co_await weft::yield();
        m.after();
      }
      break;
    case op::checkpoints:
      for (int i = 0; i < p.n; ++i) {
        acc = spin(acc, 16);
        m.before("checkpoint");
        co_await weft::checkpoint();
        m.after();
      }
      break;
    case op::sleeps:
      for (int i = 0; i < p.n; ++i) {
        m.before("sleep");
        co_await weft::sleep_for(std::chrono::microseconds(p.sleep_us));
        m.after();
      }
      break;
    case op::child: {
      record* cr = make_record(c, r->scenario_index, r);
      plan cp;
      cp.kind = (seed & 1) ? op::yields : op::quick;
      cp.n = 2;
      auto h = weft::spawn(work(c, cr, cp, seed + 1));
      std::exception_ptr own;
      m.before("join child");
      auto t = co_await take(c, r, cr, &h, &own);
      m.after();
      if (own) std::rethrow_exception(own);
      if (t.kind == got::value) acc += *t.value;
      break;
    }
    case op::fail:
      m.before("yield before failing");
      co_await weft::yield();
      m.after();
      r->threw.store(true, std::memory_order_relaxed);
      throw planned_failure(r->id);
    case op::forever_sleep:
      m.before("sleep 1h");
      co_await weft::sleep_for(1h);
      m.after();
      break;
    case op::forever_loop:
      for (;;) {
        acc = spin(acc, 16);
        m.before("checkpoint loop");
        co_await weft::checkpoint();
        m.after();
      }
    case op::forever_event:
      m.before("event never set");
      co_await c->never_set.wait();
      m.after();
      break;
    case op::fail_on_cancel: {
      bool cancelled = false;
      try {
        m.before("event never set (fails when cancelled)");
        co_await c->never_set.wait();
        m.after();
      } catch (const weft::cancelled_error&) {
        observe(c, r, std::current_exception());
        cancelled = true;
      }
      if (cancelled) {
        m.after();
        r->threw.store(true, std::memory_order_relaxed);
        throw planned_failure(r->id);  // a child failing while it is being cancelled
      }
      break;
    }
  }
  co_return acc;
}

weft::task<std::uint64_t> work(round_ctx* c, record* r, plan p, std::uint64_t seed) {
  body_guard g(c, r);
  std::exception_ptr cancel;
  std::uint64_t v = 0;
  try {
    v = co_await run_plan(c, r, p, seed);
  } catch (const weft::cancelled_error&) {
    r->saw_cancel.store(true, std::memory_order_relaxed);
    cancel = std::current_exception();
    observe(c, r, cancel);
  }
  if (cancel) {
    if (p.refuse) {
      r->refused.store(true, std::memory_order_relaxed);
      add(global_figures().per[r->scenario_index].refused);
      co_return kRefused;
    }
    std::rethrow_exception(cancel);
  }
  co_return v;
}

// One tracked task of a driver.
struct target {
  record* r = nullptr;
  weft::join_handle<std::uint64_t> h;
  plan p;
  std::uint64_t seed = 0;
  std::uint8_t when = 0;      // see cancel_moment
  bool cancelled_ok = false;  // cancel() returned true
};

enum cancel_moment : std::uint8_t { never, before_start, suspended, running, after_completion };

// Wait (yielding) until `r` reached `want`, or finished, at most `max` yields.
weft::task<void> await_state(record* r, task_state want, int max) {
  for (int i = 0; i < max; ++i) {
    if (r->state.load(std::memory_order_acquire) == want) co_return;
    if (r->cleanups.load(std::memory_order_acquire) != 0) co_return;
    co_await weft::yield();
  }
}

// The wind-down: cancel what would otherwise wait forever.
void release_infinite(round_ctx* c, std::vector<target>& ts) {
  for (auto& t : ts) {
    if (!t.h.valid() || !is_infinite(t.p.kind)) continue;
    if (t.r->cancel_sent.load(std::memory_order_relaxed)) continue;
    if (cancel_tracked(c, t.r, t.h, "stress: wind-down")) t.cancelled_ok = true;
  }
}

// Take every target, check what the plan says about its outcome.  `self`:
// the tracked task taking them (null: the round's root).
weft::task<void> take_all(round_ctx* c, record* self, std::vector<target>* ts,
                          std::exception_ptr* own) {
  for (auto& t : *ts) {
    if (!t.h.valid()) continue;
    auto got_it = co_await take(c, self, t.r, &t.h, own);
    if (t.when == after_completion) {
      const bool again = cancel_tracked(c, t.r, t.h, "stress: cancel after completion");
      if (again) c->violation(t.r, "cancel() after the task completed returned true");
      add(global_figures().per[t.r->scenario_index].cancels_late_false);
    }
    const bool refused = t.r->refused.load(std::memory_order_relaxed);
    if (got_it.kind == got::value && !refused) {
      std::uint64_t want = 0;
      if (expected_value(t.p, t.seed, &want) && *got_it.value != want)
        c->violation(t.r, "wrong value: the outcome of another task?");
      if (is_infinite(t.p.kind) && t.r->cancel_sent.load(std::memory_order_relaxed) &&
          t.r->bodies.load(std::memory_order_relaxed) != 0) {
        // Cancelled while it waited forever, did not refuse, and returned a
        // value: the cancellation was lost (its wait ended some other way).
        c->violation(t.r, "a cancelled task that waits until cancelled finished normally");
      }
    }
    if (refused && got_it.kind == got::value && *got_it.value != kRefused)
      c->violation(t.r, "a task that refused its cancellation returned the wrong value");
    if (c->strict_start && t.r->cancel_before_start.load(std::memory_order_relaxed) &&
        got_it.kind != got::cancelled) {
      c->violation(t.r, "cancelled before it started, yet it did not end cancelled");
    }
  }
}

// ------------------------------------------------------------ storm

struct node_result {
  std::uint64_t seed = 0;  // the node's own seed: a mixed-up outcome shows
  std::uint64_t sum = 0;
};

weft::task<node_result> tree_node(round_ctx* c, record* r, std::uint64_t seed, int depth);

struct tree_child {
  record* r = nullptr;
  weft::join_handle<node_result> h;
  std::uint64_t seed = 0;
  std::uint8_t when = never;
};

weft::task<std::uint64_t> leaf_calc(std::uint64_t x) { co_return spin(x, 8); }

weft::task<void> spawn_children(round_ctx* c, record* self, std::uint64_t seed, int depth,
                                std::vector<tree_child>* kids) {
  rng rr(seed);
  const int fan = 1 + static_cast<int>(rr.below(4));
  for (int i = 0; i < fan; ++i) {
    tree_child k;
    k.seed = rr.next();
    k.r = make_record(c, scenario_index(kStorm), self);
    if (rr.chance(c->cfg->cancel_rate)) k.when = static_cast<std::uint8_t>(1 + rr.below(3));
    k.h = weft::spawn(tree_node(c, k.r, k.seed, depth - 1));
    kids->push_back(std::move(k));
    tree_child& b = kids->back();
    if (b.when == before_start) cancel_tracked(c, b.r, b.h, "storm: before start");
    if (rr.below(3) == 0) co_await weft::yield();
  }
  for (auto& k : *kids) {
    if (k.when == suspended) {  // "at some moment": after the spawner yielded once
      co_await weft::yield();
      cancel_tracked(c, k.r, k.h, "storm: after a yield");
    }
  }
}

weft::task<node_result> tree_node(round_ctx* c, record* r, std::uint64_t seed, int depth) {
  body_guard g(c, r);
  node_result res{seed, mix(seed)};
  if (depth == 0) {
    res.sum += co_await leaf_calc(seed);  // a direct await: part of this task
    if (seed % 4 == 0) co_await weft::yield();
    co_return res;
  }
  std::vector<tree_child> kids;
  std::exception_ptr own;
  try {
    co_await spawn_children(c, r, seed, depth, &kids);
  } catch (const weft::cancelled_error&) {
    keep_own(c, r, &own, std::current_exception());
  }
  if (own) {
    for (auto& k : kids)
      if (!k.r->cancel_sent.load(std::memory_order_relaxed))
        cancel_tracked(c, k.r, k.h, "storm: parent cancelled");
  }
  for (auto& k : kids) {
    auto t = co_await take(c, r, k.r, &k.h, &own);
    if (t.kind == got::value) {
      if (t.value->seed != k.seed) c->violation(k.r, "a tree node got the outcome of another node");
      res.sum += t.value->sum;
    }
    if (k.when == after_completion) {
      if (cancel_tracked(c, k.r, k.h, "storm: after completion"))
        c->violation(k.r, "cancel() after the task completed returned true");
    }
  }
  if (own) std::rethrow_exception(own);
  co_return res;
}

weft::task<void> storm(round_ctx* c, record* self, std::uint64_t seed) {
  rng rr(seed);
  const auto si = scenario_index(kStorm);
  std::vector<tree_child> roots;
  std::exception_ptr own;
  try {
    const std::uint64_t budget = c->cfg->tasks;
    while (c->spawned[si].load(std::memory_order_relaxed) < budget &&
           roots.size() < budget / 4 + 1) {
      tree_child k;
      k.seed = rr.next();
      k.r = make_record(c, si, self);
      k.h = weft::spawn(tree_node(c, k.r, k.seed, 2 + static_cast<int>(rr.below(3))));
      roots.push_back(std::move(k));
      if (roots.size() % 4 == 0) {
        // Keep a few trees in flight: take the oldest.
        auto& old = roots[roots.size() - 4];
        (void)co_await take(c, self, old.r, &old.h, &own);
        if (own) break;
      }
    }
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  for (auto& k : roots) {
    if (k.r->taken.load(std::memory_order_relaxed) != 0) continue;
    auto t = co_await take(c, self, k.r, &k.h, &own);
    if (t.kind == got::value && t.value->seed != k.seed)
      c->violation(k.r, "a tree root got the outcome of another task");
  }
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ cancel

plan plan_for(rng& rr, std::uint8_t when) {
  plan p;
  switch (when) {
    case suspended: {
      const op kinds[] = {op::forever_sleep, op::forever_event, op::sleeps, op::child};
      p.kind = kinds[rr.below(4)];
      p.n = 1;
      p.sleep_us = 50'000;
      break;
    }
    case running:
      p.kind = op::forever_loop;
      break;
    default: {
      const op kinds[] = {op::quick, op::yields, op::checkpoints, op::sleeps, op::child, op::fail};
      p.kind = kinds[rr.below(when == never ? 6 : 5)];
      p.n = static_cast<std::uint16_t>(1 + rr.below(4));
      p.sleep_us = static_cast<std::uint32_t>(10 + rr.below(500));
      break;
    }
  }
  p.refuse = when != never && rr.below(5) == 0;
  return p;
}

weft::task<void> cancel_at_moments(round_ctx* c, record* self, std::uint64_t seed,
                                   std::vector<target>* ts) {
  rng rr(seed);
  const unsigned n = c->cfg->tasks;
  const auto si = scenario_index(kCancel);
  std::size_t settled = 0;  // targets up to here had their mid-run cancel
  for (unsigned i = 0; i < n; ++i) {
    target t;
    t.seed = rr.next();
    t.when = rr.chance(c->cfg->cancel_rate) ? static_cast<std::uint8_t>(1 + rr.below(4))
                                            : static_cast<std::uint8_t>(never);
    t.p = plan_for(rr, t.when);
    t.r = make_record(c, si, self);
    t.r->infinite.store(is_infinite(t.p.kind), std::memory_order_relaxed);
    t.h = weft::spawn(work(c, t.r, t.p, t.seed));
    ts->push_back(std::move(t));
    target& b = ts->back();
    if (b.when == before_start)
      b.cancelled_ok = cancel_tracked(c, b.r, b.h, "cancel: before start");
    if (ts->size() % 8 == 0 || i + 1 == n) {
      for (; settled < ts->size(); ++settled) {
        target& x = (*ts)[settled];
        if (x.when != suspended && x.when != running) continue;
        co_await await_state(x.r, x.when == suspended ? task_state::suspended : task_state::running,
                             200);
        x.cancelled_ok = cancel_tracked(
            c, x.r, x.h, x.when == suspended ? "cancel: while suspended" : "cancel: while running");
      }
    }
  }
}

weft::task<void> cancel_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<target> ts;
  std::exception_ptr own;
  try {
    co_await cancel_at_moments(c, self, seed, &ts);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  release_infinite(c, ts);
  co_await take_all(c, self, &ts, &own);
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ timeout

// One race: a target against wait_for's deadline.  A tracked task of its own,
// so that the races of a round run side by side.
weft::task<std::uint64_t> timeout_racer(round_ctx* c, record* r, std::uint64_t seed) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(seed);
  const auto si = scenario_index(kTimeout);
  target b;
  b.seed = rr.next();
  const auto d = std::chrono::microseconds(rr.below(3000));
  const op kinds[] = {op::sleeps, op::yields, op::checkpoints, op::forever_sleep};
  b.p.kind = kinds[rr.below(4)];
  b.p.n = static_cast<std::uint16_t>(1 + rr.below(3));
  b.p.sleep_us = static_cast<std::uint32_t>(rr.below(3000));
  b.p.refuse = rr.below(6) == 0;
  b.r = make_record(c, si, r);
  b.r->infinite.store(is_infinite(b.p.kind), std::memory_order_relaxed);
  b.h = weft::spawn(work(c, b.r, b.p, b.seed));
  const std::int64_t t0 = clock_ns();
  std::exception_ptr ex;
  bool timed_out = false, returned = false;
  got kind = got::value;
  try {
    m.before("wait_for");
    (void)co_await weft::wait_for(b.h, d);
    returned = true;
  } catch (const weft::timeout_error&) {
    timed_out = true;
    kind = got::cancelled;
  } catch (const weft::cancelled_error&) {
    ex = std::current_exception();  // ours, or b's outcome: take() below tells
  } catch (...) {
    kind = got::error;  // b's exception: taken
  }
  m.after();
  const std::int64_t took = clock_ns() - t0;
  if (ex) {
    std::exception_ptr own;
    m.before("take after a cancelled wait_for");
    (void)co_await take(c, r, b.r, &b.h, &own, ex);
    m.after();
    if (own) std::rethrow_exception(own);
    co_return mix(seed);
  }
  // wait_for took the outcome.
  record_taken(c, b.r, kind, b.h);
  const auto dn = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  if (timed_out) {
    add(global_figures().per[si].timeouts);
    if (!b.h.done()) c->violation(b.r, "wait_for timed out before the task had finished");
    // Acquire: pairs with the guard's release increment of cleanups (and the
    // body's acq_rel increment of bodies).
    if (b.r->bodies.load(std::memory_order_acquire) !=
        b.r->cleanups.load(std::memory_order_acquire))
      c->violation(b.r, "wait_for timed out before the task's cleanup ran");
    if (took < dn) c->violation(b.r, "wait_for timed out before its deadline");
    if (took > dn + c->cancel_bound_ns)
      c->violation(b.r, "wait_for's timeout was observed long after the deadline");
  } else if (returned) {
    // Relaxed: written by the task before it returned, which wait_for's
    // return (the runtime's join) orders before this read.
    const bool refused = b.r->refused.load(std::memory_order_relaxed);
    // (Unless cancel_points cancelled wait_for's own deadline task: then
    // nothing times out, legitimately.)
    if (c->cancel_at == 0 && is_infinite(b.p.kind) && !refused &&
        b.r->bodies.load(std::memory_order_relaxed) != 0 && !b.h.cancelled())
      c->violation(b.r, "wait_for returned the value of a task that sleeps an hour");
  }
  co_return mix(seed);
}

weft::task<void> timeout_races(round_ctx* c, record* self, std::uint64_t seed,
                               std::vector<target>* ts) {
  rng rr(seed);
  const auto si = scenario_index(kTimeout);
  for (unsigned i = 0; i < c->cfg->tasks; ++i) {
    target t;
    t.seed = rr.next();
    t.p.kind = op::child;  // its value is not checked
    t.r = make_record(c, si, self);
    t.h = weft::spawn(timeout_racer(c, t.r, t.seed));
    ts->push_back(std::move(t));
    if (rr.below(4) == 0) co_await weft::yield();
  }
}

weft::task<void> timeout_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<target> ts;
  std::exception_ptr own;
  try {
    co_await timeout_races(c, self, seed, &ts);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  co_await take_all(c, self, &ts, &own);
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ checkpoint

weft::task<void> checkpoint_loops(round_ctx* c, record* self, std::uint64_t seed,
                                  std::vector<target>* ts) {
  rng rr(seed);
  const auto si = scenario_index(kCheckpoint);
  for (unsigned i = 0; i < c->cfg->tasks; ++i) {
    target t;
    t.seed = rr.next();
    const bool cancel_it = rr.chance(c->cfg->cancel_rate);
    t.p.kind = cancel_it && rr.below(2) == 0 ? op::forever_loop : op::checkpoints;
    t.p.n = static_cast<std::uint16_t>(20 + rr.below(200));
    t.p.refuse = cancel_it && rr.below(5) == 0;
    t.when = cancel_it ? running : never;
    t.r = make_record(c, si, self);
    t.r->infinite.store(is_infinite(t.p.kind), std::memory_order_relaxed);
    t.h = weft::spawn(work(c, t.r, t.p, t.seed));
    ts->push_back(std::move(t));
    if (ts->size() % 4 == 0) {
      for (std::size_t k = ts->size() - 4; k < ts->size(); ++k) {
        target& x = (*ts)[k];
        if (x.when != running) continue;
        co_await await_state(x.r, task_state::running, 50);
        x.cancelled_ok = cancel_tracked(c, x.r, x.h, "checkpoint: mid-loop");
      }
    }
  }
}

weft::task<void> checkpoint_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<target> ts;
  std::exception_ptr own;
  try {
    co_await checkpoint_loops(c, self, seed, &ts);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  release_infinite(c, ts);
  co_await take_all(c, self, &ts, &own);
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ groups, shield

// A task that shields a long task and is cancelled while it waits.
weft::task<std::uint64_t> shielding(round_ctx* c, record* r, std::uint64_t seed) {
  body_guard g(c, r);
  resume_meter m(r);
  record* lr = make_record(c, r->scenario_index, r);
  plan lp;
  lp.kind = op::sleeps;
  lp.n = 2;
  lp.sleep_us = 500;
  auto long_task = weft::spawn(work(c, lr, lp, seed));
  std::exception_ptr own;
  std::exception_ptr from_shield;
  bool shield_took = false;
  try {
    m.before("shield");
    // A cancel of ours ends only this wait; once the task is done, shield()
    // gives its outcome (it takes it, like co_await).
    (void)co_await weft::shield(long_task);
    m.after();
    shield_took = true;
  } catch (const weft::cancelled_error&) {
    r->saw_cancel.store(true, std::memory_order_relaxed);
    from_shield = std::current_exception();
    // Nobody else holds its handle: no request may have reached it (unless
    // the simulation's cancel_points mode hit it directly).
    if (c->cancel_at == 0 && long_task.cancelling() != 0)
      c->violation(lr, "shield() let the waiter's cancellation through to the shielded task");
  } catch (...) {
    shield_took = true;  // the task's exception
  }
  if (shield_took) {
    record_taken(c, lr, long_task.cancelled() ? got::cancelled : got::value, long_task);
  } else {
    // Ours (the wait was cut short: the outcome is still in the handle), or
    // the task's cancellation (taken): take() tells.
    m.before("join the shielded task");
    (void)co_await take(c, r, lr, &long_task, &own, from_shield);
    m.after();
  }
  if (own) std::rethrow_exception(own);
  co_return mix(seed);
}

weft::task<std::uint64_t> group_member(round_ctx* c, record* r, std::uint64_t seed, int depth);

weft::task<void> one_group(round_ctx* c, record* self, std::uint64_t seed, int depth) {
  rng rr(seed);
  const auto si = scenario_index(kGroup);
  std::vector<target> kids;
  std::exception_ptr own;
  std::size_t failures = 0;
  bool joined = false;
  {
    weft::task_group g;
    try {
      const int k = 2 + static_cast<int>(rr.below(5));
      for (int i = 0; i < k; ++i) {
        target t;
        t.seed = rr.next();
        t.r = make_record(c, si, self);
        const auto what = rr.below(10);
        if (what < 2) {
          t.p.kind = op::fail;
          t.h = g.spawn(work(c, t.r, t.p, t.seed));
        } else if (what < 4 && depth > 0) {
          t.p.kind = op::child;  // not checked by value
          t.h = g.spawn(group_member(c, t.r, t.seed, depth - 1));
        } else if (what < 6) {
          t.p.kind = op::child;
          t.h = g.spawn(shielding(c, t.r, t.seed));
          t.when = running;
        } else {
          t.p.kind = rr.below(2) ? op::sleeps : op::yields;
          t.p.n = static_cast<std::uint16_t>(1 + rr.below(3));
          t.p.sleep_us = static_cast<std::uint32_t>(rr.below(800));
          t.h = g.spawn(work(c, t.r, t.p, t.seed));
        }
        kids.push_back(std::move(t));
        if (rr.below(3) == 0) co_await weft::yield();
      }
      for (auto& t : kids) {
        if (t.when != running) continue;
        co_await await_state(t.r, task_state::suspended, 20);
        t.cancelled_ok = cancel_tracked(c, t.r, t.h, "group: cancel the shielding task");
      }
    } catch (const weft::cancelled_error&) {
      keep_own(c, self, &own, std::current_exception());
    }
    // join() even when we were cancelled: it waits for every child, and a
    // cancellation of ours meanwhile goes to the children (kind parent).
    try {
      co_await g.join();
      joined = true;
    } catch (const weft::task_group_error& e) {
      failures = e.size();
      joined = true;
    } catch (const weft::cancelled_error&) {
      keep_own(c, self, &own, std::current_exception());
      joined = true;  // join() waited for every child before it threw
    }
    if (joined) {
      for (auto& t : kids)
        if (!t.h.done()) c->violation(t.r, "a child was still running after task_group::join");
    }
  }
  std::size_t threw = 0;
  for (auto& t : kids) threw += t.r->threw.load(std::memory_order_relaxed) ? 1 : 0;
  if (joined && failures != threw) {
    c->violation(nullptr, "task_group_error held " + std::to_string(failures) +
                              " failure(s), but " + std::to_string(threw) + " children threw");
  }
  co_await take_all(c, self, &kids, &own);
  if (own) std::rethrow_exception(own);
}

weft::task<std::uint64_t> group_member(round_ctx* c, record* r, std::uint64_t seed, int depth) {
  body_guard g(c, r);
  co_await one_group(c, r, seed, depth);
  co_return mix(seed);
}

weft::task<void> group_runs(round_ctx* c, record* self, std::uint64_t seed,
                            std::vector<target>* ts) {
  rng rr(seed);
  const auto si = scenario_index(kGroup);
  // Groups side by side, until the round's share of group tasks is spawned.
  while (c->spawned[si].load(std::memory_order_relaxed) < c->cfg->tasks &&
         ts->size() < c->cfg->tasks / 8 + 1) {
    target t;
    t.seed = rr.next();
    t.p.kind = op::child;  // its value is not checked
    t.r = make_record(c, si, self);
    t.h = weft::spawn(group_member(c, t.r, t.seed, 2));
    ts->push_back(std::move(t));
    co_await weft::yield();
  }
}

weft::task<void> group_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<target> ts;
  std::exception_ptr own;
  try {
    co_await group_runs(c, self, seed, &ts);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  co_await take_all(c, self, &ts, &own);
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ cleanup

// Sets an event when destroyed: a destructor that wakes another task.
struct set_on_exit {
  weft::event* e;
  ~set_on_exit() { e->set(); }
};

weft::task<std::uint64_t> waits_for_cleanup(round_ctx* c, record* r, weft::event* e,
                                            std::uint64_t seed) {
  body_guard g(c, r);
  resume_meter m(r);
  m.before("wait for a cleanup");
  co_await e->wait();
  m.after();
  co_return mix(seed);
}

// On cancellation: spawns a follow-up from its catch block (taken right after),
// and its destructors wake the waiter.
weft::task<std::uint64_t> with_cleanup(round_ctx* c, record* r, weft::event* e,
                                       std::uint64_t seed) {
  body_guard g(c, r);
  set_on_exit wake{e};
  resume_meter m(r);
  std::exception_ptr cancel;
  record* fr = nullptr;
  weft::join_handle<std::uint64_t> follow;
  try {
    m.before("sleep until cancelled");
    co_await weft::sleep_for(std::chrono::microseconds(100 + seed % 3000));
    m.after();
  } catch (const weft::cancelled_error&) {
    r->saw_cancel.store(true, std::memory_order_relaxed);
    cancel = std::current_exception();
    observe(c, r, cancel);
    fr = make_record(c, r->scenario_index, r);
    plan fp;
    fp.kind = op::yields;
    fp.n = 2;
    follow = weft::spawn(work(c, fr, fp, seed + 7));  // spawned by the cleanup
  }
  if (fr != nullptr) {
    std::exception_ptr own;
    m.before("take the follow-up");
    (void)co_await take(c, r, fr, &follow, &own);
    m.after();
  }
  if (cancel) std::rethrow_exception(cancel);
  co_return mix(seed);
}

weft::task<void> cleanup_pairs(round_ctx* c, record* self, std::uint64_t seed,
                               std::vector<target>* ts,
                               std::vector<std::unique_ptr<weft::event>>* events) {
  rng rr(seed);
  const auto si = scenario_index(kCleanup);
  for (unsigned i = 0; i < c->cfg->tasks / 2; ++i) {
    events->push_back(std::make_unique<weft::event>());
    weft::event* e = events->back().get();
    target w;
    w.seed = rr.next();
    w.r = make_record(c, si, self);
    w.p.kind = op::child;
    w.h = weft::spawn(waits_for_cleanup(c, w.r, e, w.seed));
    ts->push_back(std::move(w));
    target t;
    t.seed = rr.next();
    t.r = make_record(c, si, self);
    t.p.kind = op::child;
    t.when = rr.chance(std::min(1.0, c->cfg->cancel_rate * 2)) ? running : never;
    t.h = weft::spawn(with_cleanup(c, t.r, e, t.seed));
    ts->push_back(std::move(t));
    if (rr.below(2) == 0) co_await weft::yield();
    target& b = ts->back();
    if (b.when == running) b.cancelled_ok = cancel_tracked(c, b.r, b.h, "cleanup: cancel");
  }
}

weft::task<void> cleanup_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<target> ts;
  std::vector<std::unique_ptr<weft::event>> events;  // outlive every waiter (taken below)
  std::exception_ptr own;
  try {
    co_await cleanup_pairs(c, self, seed, &ts, &events);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  // A worker cancelled before it started never ran its cleanup: wake its
  // waiter here, after taking the worker.  (ts: waiter, worker, waiter, ...;
  // a cancellation of ours may have left a waiter without its worker.)
  for (std::size_t i = 0; i < ts.size(); i += 2) {
    std::vector<target> one;
    if (i + 1 < ts.size()) {
      one.push_back(std::move(ts[i + 1]));
      co_await take_all(c, self, &one, &own);
      one.clear();
    }
    events[i / 2]->set();
    one.push_back(std::move(ts[i]));
    co_await take_all(c, self, &one, &own);
  }
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ compose
//
// Composed constructs, one tracked "case" task each, asserting the outcome
// rules of docs/cancellation.md as they go.  A rule that assumes nothing else
// cancels the tasks involved holds in quiet rounds only (no cancel_points
// delivery, no shutdown); one that needs the exact order of events holds in
// the simulation only (one thread: a check made in the same step as the
// decision it checks sees what the decision saw).

// In the order of --compose's names (engine.cpp).
enum class compose_case : std::uint8_t {
  nested_timeout,   // wait_until in a task under wait_until/wait_for, both deadlines passed
  group_fail,       // a task group whose owner is cancelled while a child fails
  when_all_fail,    // when_all with a failing child, the owner cancelled
  when_any_fail,    // when_any with a failing child, the owner cancelled
  shield_timeout,   // shield() inside wait_for: the outer times out, the shielded task runs on
  awaited_cancels,  // the awaited task cancels its awaiter, then returns
  self_cancel,      // a task cancels itself, then returns or reaches a cancellation point
};
static_assert(static_cast<std::uint32_t>(compose_case::self_cancel) + 1 == kComposeCaseCount);

constexpr std::uint64_t kAnswer = 0xA45E3;  // what a middle task that answers returns

// Where a case waits for its construct (the driver cancels it there), and
// where the awaiter of awaited_cancels waits: `record::at`, compared by
// address.
constexpr const char* kAtConstruct = "in the composed construct";
constexpr const char* kAtAwaitsChild = "awaits the child that cancels it";

struct compose_target {
  record* r = nullptr;
  compose_case kind = compose_case::nested_timeout;
  std::uint64_t seed = 0;
  std::uint32_t variant = 0;
  weft::join_handle<std::uint64_t> h;
  std::atomic<bool> h_ready{false};  // h is stored: the case may cancel itself through it
  bool cancel_it = false;            // the driver cancels it (at its construct, or earlier)
  bool must_cancel = false;          // its children may wait until it is cancelled
  // self_cancel: its cancel() of itself returned true and it returned at
  // once (read by the driver after taking it).
  std::atomic<bool> returned_after_self_cancel{false};
};

bool quiet(const round_ctx* c) noexcept { return c->cancel_at == 0 && !c->shutdown_round; }

std::chrono::steady_clock::time_point tp_at(std::int64_t ns) noexcept {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}

// Wait (yielding) until `r` is at `where`, or finished, at most `max` yields.
weft::task<void> await_at(record* r, const char* where, int max) {
  for (int i = 0; i < max; ++i) {
    // Relaxed: a hint for when to cancel; any moment is legal.
    if (r->at.load(std::memory_order_relaxed) == where) co_return;
    // Acquire: pairs with the body guard's release increment (it finished).
    if (r->cleanups.load(std::memory_order_acquire) != 0) co_return;
    co_await weft::yield();
  }
}

// The next cancellation point of a case after its construct: it must throw
// when a tracked request landed before `since` and the case has caught no
// cancellation since (the construct kept it pending: task_group::join's
// task_group_error, when_all's failure, when_any's winner).  Any cancellation
// it throws is kept in *own.
weft::task<void> next_point(round_ctx* c, record* r, resume_meter* m, std::uint64_t since,
                            std::exception_ptr* own, const char* construct) {
  const bool pending = expect_pending(c, r, since);
  bool threw = false;
  try {
    m->before("yield after the construct");
    co_await weft::yield();
    m->after();
  } catch (const weft::cancelled_error&) {
    m->after();
    threw = true;
    keep_own(c, r, own, std::current_exception());
  }
  if (pending && !threw)
    c->violation(r, std::string("the owner's cancellation was lost in ") + construct +
                        ": it was pending and the next cancellation point did not throw");
}

// ---- nested timeouts

struct nested_plan {
  std::uint64_t seed = 0;
  std::int64_t outer_deadline = 0;  // clock_ns(): exact for wait_until, and in a simulation
  std::int64_t inner_deadline = 0;
  bool outer_until = true;
  std::uint8_t middle = 0;  // 0 lets everything through, 1 answers kAnswer, 2 sleeps after an
                            // inner timeout
  bool inner_refuses = false;
  // What the middle task saw and did (read by the case after taking it).
  bool began_before_outer = false;  // its inner wait began before the outer deadline
  bool inner_timeout = false;       // the inner wait threw timeout_error
  bool inner_cancelled = false;     // ... cancelled_error
  bool threw_timeout = false;       // it let the inner timeout_error out
  std::uint64_t returned = 0;       // the value it returned
};

weft::task<std::uint64_t> nested_middle(round_ctx* c, record* r, nested_plan* np) {
  body_guard g(c, r);
  resume_meter m(r);
  record* ir = make_record(c, r->scenario_index, r);
  plan ip;
  ip.kind = op::forever_sleep;
  ip.refuse = np->inner_refuses;
  ir->infinite.store(true, std::memory_order_relaxed);  // Relaxed: for the dump; spawn publishes it
  auto hi = weft::spawn(work(c, ir, ip, np->seed));
  const std::int64_t entry = clock_ns();
  np->began_before_outer = entry < np->outer_deadline;
  std::exception_ptr inner_error;
  std::uint64_t v = 0;
  bool inner_value = false;
  got ikind = got::value;
  m.before("inner wait_until");
  try {
    v = co_await weft::wait_until(hi, tp_at(np->inner_deadline));
    inner_value = true;
  } catch (const weft::timeout_error&) {
    np->inner_timeout = true;
    ikind = got::cancelled;
  } catch (const weft::cancelled_error&) {
    inner_error = std::current_exception();
  } catch (...) {
    ikind = got::error;
    c->violation(ir, "the inner wait threw what the task never throws");
  }
  m.after();
  const std::int64_t now = clock_ns();
  std::exception_ptr own;  // ours (delivered at the inner join), or the inner task's cancellation
  if (inner_error) {
    np->inner_cancelled = true;
    m.before("take the inner task");
    auto t = co_await take(c, r, ir, &hi, &own, inner_error, /*forwarded_is_own=*/false);
    m.after();
    if (!own && t.kind == got::cancelled) own = t.error;  // let it through, as asyncio does
  } else {
    record_taken(c, ir, ikind, hi);
  }
  if (np->inner_timeout) {
    if (!hi.cancelled() || hi.cancellation()->kind() != weft::cancel_kind::timeout)
      c->violation(ir, "wait_until timed out, yet the task did not end by a timeout cancellation");
    if (now < np->inner_deadline)
      c->violation(ir, "the inner wait_until timed out before its deadline");
    // (Same step as the decision: exact in a simulation.)
    if (c->sim && np->began_before_outer && now >= np->outer_deadline)
      c->violation(r,
                   "the inner wait reported timeout_error although the outer deadline had "
                   "passed during it: only the outermost expired wait reports the timeout");
    if (c->sim && weft::this_task::cancelling() != 0)
      c->violation(r, "the inner wait reported timeout_error although its waiter was cancelled");
  }
  if (inner_value) {
    // Relaxed: written by the inner task before it returned; the join orders it.
    if (ir->refused.load(std::memory_order_relaxed)) {
      if (v != kRefused) c->violation(ir, "the inner wait returned another value than the task's");
    } else if (quiet(c)) {
      c->violation(ir, "the inner wait returned the value of a task that sleeps an hour");
    }
  }
  switch (np->middle) {
    case 1:  // answers whatever happened (a cancellation of its own included: refused)
      np->returned = kAnswer;
      co_return kAnswer;
    case 2:
      if (!own && np->inner_timeout) {
        try {
          m.before("sleep after the inner timeout");
          co_await weft::sleep_for(std::chrono::hours(1));
          m.after();
        } catch (const weft::cancelled_error&) {
          m.after();
          own = std::current_exception();
          observe(c, r, own);
        }
        if (!own && quiet(c))
          c->violation(r,
                       "the outer deadline passed, yet its cancellation never reached the "
                       "middle task's sleep");
        if (own) std::rethrow_exception(own);
        np->returned = v;
        co_return v;
      }
      [[fallthrough]];
    default:  // lets everything through
      if (own) std::rethrow_exception(own);
      if (np->inner_timeout) {
        np->threw_timeout = true;
        throw weft::timeout_error();
      }
      np->returned = v;
      co_return v;
  }
}

weft::task<std::uint64_t> nested_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  nested_plan np;
  np.seed = rr.next();
  const std::int64_t d = 50'000 + static_cast<std::int64_t>(rr.below(2'000'000));
  const std::uint32_t shape = t->variant % 3;  // inner deadline: equal, earlier, later
  np.middle = static_cast<std::uint8_t>((t->variant / 3) % 3);
  np.inner_refuses = (t->variant / 9) % 4 == 0;
  np.outer_until = shape == 0 || (t->variant / 36) % 2 == 0;
  np.outer_deadline = clock_ns() + d;
  const std::int64_t delta = 1 + static_cast<std::int64_t>(rr.below(static_cast<std::uint64_t>(d)));
  np.inner_deadline = shape == 0   ? np.outer_deadline
                      : shape == 1 ? np.outer_deadline - delta
                                   : np.outer_deadline + delta;
  record* mr = make_record(c, r->scenario_index, r);
  auto hm = weft::spawn(nested_middle(c, mr, &np));
  std::exception_ptr own, ex;
  bool outer_timeout = false, outer_value = false;
  std::uint64_t v = 0;
  m.before(kAtConstruct);
  try {
    if (np.outer_until) {
      v = co_await weft::wait_until(hm, tp_at(np.outer_deadline));
    } else {
      // (The deadline is now + d: the same instant in a simulation, a little
      // later on a real runtime.)
      v = co_await weft::wait_for(hm, std::chrono::nanoseconds(np.outer_deadline - clock_ns()));
    }
    outer_value = true;
  } catch (const weft::timeout_error&) {
    outer_timeout = true;
  } catch (const weft::cancelled_error&) {
    ex = std::current_exception();
  } catch (...) {
    c->violation(mr, "the outer wait threw what the middle task never throws");
  }
  m.after();
  const std::int64_t now = clock_ns();
  const unsigned cancelling = weft::this_task::cancelling();
  if (ex) {
    m.before("take the middle task");
    auto tm = co_await take(c, r, mr, &hm, &own, ex, /*forwarded_is_own=*/false);
    m.after();
    if (!own && tm.kind == got::cancelled) own = tm.error;
    if (quiet(c) && cancelling == 0)
      c->violation(r,
                   "the outer wait threw cancelled_error although nothing cancelled its "
                   "waiter: the outermost expired wait reports timeout_error");
  } else if (outer_timeout) {
    add(global_figures().per[r->scenario_index].timeouts);
    record_taken(c, mr, hm.cancelled() ? got::cancelled : got::error, hm);
    if (hm.cancelled()) {
      if (hm.cancellation()->kind() != weft::cancel_kind::timeout)
        c->violation(mr,
                     "the outer wait reported timeout_error, but the task ended by a "
                     "cancellation of another kind");
      if (now < np.outer_deadline) c->violation(mr, "the outer wait timed out before its deadline");
      if (c->sim && cancelling != 0)
        c->violation(r, "the outer wait reported timeout_error although its waiter was cancelled");
    } else if (!np.threw_timeout) {
      c->violation(mr,
                   "the outer wait threw a timeout_error that is neither its own nor the "
                   "middle task's");
    }
  } else if (outer_value) {
    record_taken(c, mr, got::value, hm);
    if (v != np.returned) c->violation(mr, "the outer wait returned another value than the task's");
  } else {
    record_taken(c, mr, got::error, hm);
  }
  // The outcome rules of nested waits whose deadlines both passed (CPython's
  // test_nested_timeouts): with nothing else cancelling, a middle task that
  // lets the cancellation through or sleeps after an inner timeout, and an
  // inner task that does not refuse, the outer reports timeout_error; when the
  // inner deadline is not earlier than the outer one, that is the outer's own
  // timeout (the inner let the cancellation through).  A middle task that
  // answers gives its answer.  (Exact in a simulation: whether the middle
  // task's wait began before the outer deadline decides it.)
  // (Relaxed: the middle task finished; taking its outcome ordered its writes.)
  if (c->sim && quiet(c) && cancelling == 0 && mr->bodies.load(std::memory_order_relaxed) != 0 &&
      np.began_before_outer) {
    if (np.middle == 1) {
      if (!outer_value || v != kAnswer)
        c->violation(r, "the middle task answered, yet the outer wait did not return its answer");
    } else if (!np.inner_refuses) {
      if (!outer_timeout)
        c->violation(r, "both deadlines passed, yet the outer wait did not report timeout_error");
      if (shape != 1 && (np.inner_timeout || !np.inner_cancelled || !hm.cancelled()))
        c->violation(r,
                     "both deadlines passed (the inner not earlier): the inner wait must let "
                     "the cancellation through and the outer report the timeout");
    }
  }
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- a group whose owner is cancelled while a child fails

// The children of group_fail, when_all_fail and when_any_fail: a child that
// fails only when cancelled (while the construct cancels it), one that fails
// on its own after a few yields, tasks that answer after a few yields, and
// tasks that sleep an hour (some refuse their cancellation).
struct kid_mix {
  bool fails_on_cancel = false;
  bool fails_on_its_own = false;
  int answers = 1;
  bool sleeper = false;
};

kid_mix mix_for(rng& rr, bool need_an_answer) {
  kid_mix k;
  k.fails_on_cancel = rr.below(2) == 0;
  k.fails_on_its_own = rr.below(2) == 0;
  k.answers = static_cast<int>(rr.below(3)) + (need_an_answer ? 1 : 0);
  k.sleeper = rr.below(2) == 0;
  return k;
}

// Children that wait forever end when another child fails (or, for when_any,
// answers) -- unless the simulation's cancel_points delivery ends that child
// before it started -- or when the owner is cancelled: the driver makes sure
// the owner of such children is cancelled in the end.
bool waits_for_a_cancel(const kid_mix& k) { return k.fails_on_cancel || k.sleeper; }

std::vector<plan> plans_for(const kid_mix& k, rng& rr) {
  std::vector<plan> ps;
  if (k.fails_on_cancel) ps.push_back(plan{op::fail_on_cancel, 0, 0, false});
  if (k.fails_on_its_own) ps.push_back(plan{op::fail, 0, 0, false});
  for (int i = 0; i < k.answers; ++i)
    ps.push_back(plan{op::yields, static_cast<std::uint16_t>(1 + rr.below(3)), 0, false});
  if (k.sleeper) ps.push_back(plan{op::forever_sleep, 0, 0, rr.below(3) == 0});
  // Shuffle: the order decides which child is spawned (and starts) first.
  for (std::size_t i = ps.size(); i > 1; --i) std::swap(ps[i - 1], ps[rr.below(i)]);
  return ps;
}

weft::task<std::uint64_t> group_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  const kid_mix km = mix_for(rr, false);
  const std::vector<plan> ps = plans_for(km, rr);
  std::vector<target> kids;
  std::exception_ptr own;
  std::size_t failures = 0;
  bool group_error = false, join_cancelled = false;
  std::uint64_t join_end = 0;
  {
    weft::task_group tg;
    try {
      for (const plan& p : ps) {
        target k;
        k.seed = rr.next();
        k.p = p;
        k.r = make_record(c, r->scenario_index, r);
        // Relaxed: for the dump; the spawn publishes it to the child.
        k.r->infinite.store(is_infinite(p.kind), std::memory_order_relaxed);
        k.h = tg.spawn(work(c, k.r, k.p, k.seed));
        kids.push_back(std::move(k));
        if (rr.below(2) == 0) {
          m.before("yield between spawns");
          co_await weft::yield();
          m.after();
        }
      }
    } catch (const weft::cancelled_error&) {
      m.after();
      keep_own(c, r, &own, std::current_exception());
    }
    // Cancelled before join: end the children that wait forever ourselves
    // (asyncio's TaskGroup does the same when its body raises).
    if (own) tg.cancel("compose: the owner was cancelled before join");
    m.before(kAtConstruct);
    try {
      co_await tg.join();
    } catch (const weft::task_group_error& e) {
      failures = e.size();
      group_error = true;
    } catch (const weft::cancelled_error&) {
      keep_own(c, r, &own, std::current_exception());
      join_cancelled = true;
    }
    m.after();
    join_end = ledger_tick(c);
    for (auto& k : kids)
      if (!k.h.done()) c->violation(k.r, "a child was still running after task_group::join");
  }
  std::size_t threw = 0;
  // Relaxed, here and below: join() ordered every child's writes before us.
  for (auto& k : kids) threw += k.r->threw.load(std::memory_order_relaxed) ? 1 : 0;
  if (failures != threw)
    c->violation(r, "task_group_error held " + std::to_string(failures) + " failure(s), but " +
                        std::to_string(threw) + " children threw");
  if (join_cancelled && threw != 0)
    c->violation(r,
                 "join() threw the owner's cancellation although a child failed: the "
                 "task_group_error comes first and the cancellation stays pending");
  (void)group_error;
  co_await next_point(c, r, &m, join_end, &own, "task_group::join");
  co_await take_all(c, r, &kids, &own);
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- when_all / when_any whose owner is cancelled while a child fails

// A child of when_all / when_any: the construct takes its outcome, so the
// child reports it to the registry itself, and the ledger tick it finished at.
weft::task<std::uint64_t> construct_child(round_ctx* c, record* r, plan p, std::uint64_t seed,
                                          std::uint64_t* finished_at) {
  got kind = got::value;
  std::exception_ptr err;
  std::uint64_t v = 0;
  try {
    v = co_await work(c, r, p, seed);
  } catch (const weft::cancelled_error&) {
    kind = got::cancelled;
    err = std::current_exception();
  } catch (...) {
    kind = got::error;
    err = std::current_exception();
  }
  *finished_at = ledger_tick(c);
  record_taken(c, r, kind, kind == got::cancelled, false);
  if (kind == got::cancelled) note_outcome(c, r, err);
  if (err) std::rethrow_exception(err);
  co_return v;
}

struct construct_kids {
  std::vector<plan> plans;
  std::vector<std::uint64_t> seeds;
  std::vector<record*> rs;
  std::vector<std::uint64_t> finished_at;  // 0: never finished (or never ran)
};

std::vector<weft::task<std::uint64_t>> make_kids(round_ctx* c, record* r, rng& rr,
                                                 construct_kids* ks) {
  std::vector<weft::task<std::uint64_t>> ts;
  ks->finished_at.assign(ks->plans.size(), 0);
  for (std::size_t i = 0; i < ks->plans.size(); ++i) {
    ks->seeds.push_back(rr.next());
    ks->rs.push_back(make_record(c, r->scenario_index, r));
    // Relaxed: for the dump; the construct's spawn publishes it to the child.
    ks->rs.back()->infinite.store(is_infinite(ks->plans[i].kind), std::memory_order_relaxed);
    ts.push_back(construct_child(c, ks->rs[i], ks->plans[i], ks->seeds[i], &ks->finished_at[i]));
  }
  return ts;
}

// What a child that returned must have returned.
// (Read after the construct returned, which ordered the children's writes:
// relaxed loads here and in the construct cases below.)
std::uint64_t kid_value(const construct_kids& ks, std::size_t i) {
  if (ks.rs[i]->refused.load(std::memory_order_relaxed)) return kRefused;
  std::uint64_t v = 0;
  (void)expected_value(ks.plans[i], ks.seeds[i], &v);
  return v;
}

// After the construct returned or threw, every child has finished: a child the
// construct cancelled before its body began never ran, and its outcome was
// dropped with it -- it is taken here, on its behalf.
void settle_kids(round_ctx* c, const construct_kids& ks) {
  for (record* k : ks.rs) {
    // Acquire: pairs with the body guard's acq_rel / release increments.
    const auto bodies = k->bodies.load(std::memory_order_acquire);
    if (bodies != k->cleanups.load(std::memory_order_acquire))
      c->violation(k, "a child was still running after the construct returned");
    if (bodies == 0 && k->taken.load(std::memory_order_relaxed) == 0)
      record_taken(c, k, got::cancelled, true, false);
  }
}

weft::task<std::uint64_t> when_all_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  construct_kids ks;
  ks.plans = plans_for(mix_for(rr, false), rr);
  std::exception_ptr own;
  bool failed = false, cancelled = false, returned = false;
  std::vector<std::uint64_t> values;
  {
    auto ts = make_kids(c, r, rr, &ks);
    m.before(kAtConstruct);
    try {
      values = co_await weft::when_all(std::move(ts));
      returned = true;
    } catch (const planned_failure&) {
      failed = true;
    } catch (const weft::cancelled_error&) {
      cancelled = true;
      keep_own(c, r, &own, std::current_exception());
    } catch (...) {
      c->violation(r, "when_all threw what no child throws");
    }
    m.after();
  }
  const std::uint64_t end = ledger_tick(c);
  settle_kids(c, ks);
  std::size_t threw = 0;
  for (record* k : ks.rs) threw += k->threw.load(std::memory_order_relaxed) ? 1 : 0;
  if (threw != 0 && !failed)
    c->violation(r, "a child of when_all failed, yet when_all did not rethrow its failure");
  if (failed && threw == 0) c->violation(r, "when_all rethrew a failure no child threw");
  if (cancelled && threw != 0)
    c->violation(r,
                 "when_all threw a cancellation although a child failed: the failure comes "
                 "first and the owner's cancellation stays pending");
  if (returned) {
    if (values.size() != ks.rs.size()) {
      c->violation(r, "when_all returned the wrong number of values");
    } else {
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (ks.rs[i]->outcome.load(std::memory_order_relaxed) != 1)
          c->violation(ks.rs[i], "when_all returned although this child gave no value");
        else if (values[i] != kid_value(ks, i))
          c->violation(ks.rs[i], "when_all returned another value than this child's");
      }
    }
  }
  co_await next_point(c, r, &m, end, &own, "when_all");
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

weft::task<std::uint64_t> when_any_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  construct_kids ks;
  ks.plans = plans_for(mix_for(rr, true), rr);
  std::exception_ptr own;
  bool failed = false, cancelled = false, returned = false;
  std::size_t index = 0;
  std::uint64_t value = 0;
  {
    auto ts = make_kids(c, r, rr, &ks);
    m.before(kAtConstruct);
    try {
      auto w = co_await weft::when_any(std::move(ts));
      index = w.index;
      value = w.value;
      returned = true;
    } catch (const planned_failure&) {
      failed = true;
    } catch (const weft::cancelled_error&) {
      cancelled = true;
      keep_own(c, r, &own, std::current_exception());
    } catch (...) {
      c->violation(r, "when_any threw what no child throws");
    }
    m.after();
  }
  const std::uint64_t end = ledger_tick(c);
  const unsigned cancelling = weft::this_task::cancelling();
  settle_kids(c, ks);
  // The first child to finish (exact in a simulation, where a child's end and
  // when_any's "first?" exchange happen in one step).
  std::size_t first = ks.rs.size();
  for (std::size_t i = 0; i < ks.rs.size(); ++i)
    if (ks.finished_at[i] != 0 &&
        (first == ks.rs.size() || ks.finished_at[i] < ks.finished_at[first]))
      first = i;
  if (returned) {
    if (index >= ks.rs.size()) {
      c->violation(r, "when_any returned an index out of range");
    } else if (ks.rs[index]->outcome.load(std::memory_order_relaxed) != 1) {
      c->violation(ks.rs[index],
                   "when_any returned this child as the winner, yet it gave no value");
    } else {
      if (value != kid_value(ks, index))
        c->violation(ks.rs[index], "when_any returned another value than the winner's");
      if (c->sim && first != index)
        c->violation(ks.rs[index], "when_any returned this child, but another finished first");
    }
  }
  if (failed) {
    std::size_t threw = 0;
    for (record* k : ks.rs) threw += k->threw.load(std::memory_order_relaxed) ? 1 : 0;
    if (threw == 0) c->violation(r, "when_any rethrew a failure no child threw");
    if (c->sim && (first == ks.rs.size() || !ks.rs[first]->threw.load(std::memory_order_relaxed)))
      c->violation(r, "when_any rethrew a failure, but the first child to finish did not fail");
  }
  if (cancelled) {
    bool a_child_cancelled = false;
    for (record* k : ks.rs)
      a_child_cancelled = a_child_cancelled || k->outcome.load(std::memory_order_relaxed) == 2;
    if (cancelling == 0 && !a_child_cancelled)
      c->violation(r,
                   "when_any threw cancelled_error, yet neither its owner nor a child was "
                   "cancelled");
  }
  co_await next_point(c, r, &m, end, &own, "when_any");
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- shield inside wait_for

struct shield_scene {
  weft::join_handle<std::uint64_t>* shielded = nullptr;
  record* lr = nullptr;
  std::atomic<bool> taken{false};  // the waiter's shield() took the shielded task's outcome
};

// Waits for the shielded task through shield(): a cancellation (the outer
// wait_for's timeout, or its waiter's) ends only this wait.
weft::task<std::uint64_t> shield_waiter(round_ctx* c, record* r, shield_scene* s) {
  body_guard g(c, r);
  resume_meter m(r);
  std::uint64_t v = 0;
  try {
    m.before("shield");
    v = co_await weft::shield(*s->shielded);
    m.after();
  } catch (const weft::cancelled_error&) {
    m.after();
    const std::exception_ptr e = std::current_exception();
    if (s->shielded->done() && same_cancellation(e, s->shielded->cancellation())) {
      // The shielded task's own cancellation: shield() took it as the outcome.
      note_outcome(c, s->lr, e);
      record_taken(c, s->lr, got::cancelled, *s->shielded);
      // Release: pairs with the case's acquire load after it took this task.
      s->taken.store(true, std::memory_order_release);
    } else {
      observe(c, r, e);  // ours: the shielded task's outcome is still in its handle
    }
    throw;
  }
  record_taken(c, s->lr, got::value, *s->shielded);
  // Release: pairs with the case's acquire load after it took this task.
  s->taken.store(true, std::memory_order_release);
  co_return v;
}

weft::task<std::uint64_t> shield_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  const std::int64_t d = 20'000 + static_cast<std::int64_t>(rr.below(1'000'000));
  shield_scene s;
  plan lp;
  lp.kind = t->variant % 2 == 0 ? op::sleeps : op::yields;
  lp.n = static_cast<std::uint16_t>(1 + rr.below(3));
  lp.sleep_us = static_cast<std::uint32_t>(rr.below(static_cast<std::uint64_t>(d) / 500 + 1));
  const std::uint64_t lseed = rr.next();
  s.lr = make_record(c, r->scenario_index, r);
  auto hl = weft::spawn(work(c, s.lr, lp, lseed));
  s.shielded = &hl;
  record* sr = make_record(c, r->scenario_index, r);
  auto hs = weft::spawn(shield_waiter(c, sr, &s));
  std::exception_ptr own, ex;
  bool timed_out = false, returned = false;
  std::uint64_t v = 0;
  const std::int64_t t0 = clock_ns();
  m.before(kAtConstruct);
  try {
    v = co_await weft::wait_for(hs, std::chrono::nanoseconds(d));
    returned = true;
  } catch (const weft::timeout_error&) {
    timed_out = true;
  } catch (const weft::cancelled_error&) {
    ex = std::current_exception();
  } catch (...) {
    c->violation(sr, "wait_for(shield) threw what the shielded task never throws");
  }
  m.after();
  const std::int64_t took = clock_ns() - t0;
  if (ex) {
    m.before("take the shield waiter");
    auto ts = co_await take(c, r, sr, &hs, &own, ex, /*forwarded_is_own=*/false);
    m.after();
    if (!own && ts.kind == got::cancelled) own = ts.error;
  } else {
    record_taken(c, sr, returned ? got::value : timed_out ? got::cancelled : got::error, hs);
  }
  std::uint64_t want = 0;
  (void)expected_value(lp, lseed, &want);
  if (returned && v != want) c->violation(sr, "wait_for(shield) returned another value");
  if (timed_out) {
    add(global_figures().per[r->scenario_index].timeouts);
    if (took < d) c->violation(sr, "wait_for(shield) timed out before its deadline");
    // Acquire: pairs with the waiter's release store (the join ordered it anyway).
    if (s.taken.load(std::memory_order_acquire))
      c->violation(sr, "wait_for timed out, yet the shield had taken the task's outcome");
  }
  // The shield let nothing through: nobody else cancels the shielded task.
  if (quiet(c) && hl.cancelling() != 0)
    c->violation(s.lr, "a cancellation went through shield() to the shielded task");
  // Acquire: as above.
  if (!s.taken.load(std::memory_order_acquire)) {
    // It ran on; its value can still be taken.
    m.before("take the shielded task");
    auto tl = co_await take(c, r, s.lr, &hl, &own);
    m.after();
    // (Unless a cancellation of ours reached it through this last join.)
    if (quiet(c) && hl.cancelling() == 0 && (tl.kind != got::value || *tl.value != want))
      c->violation(s.lr, "the shielded task did not run on to its value after the shield ended");
  }
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- the awaited task cancels its awaiter

struct awaiter_scene {
  compose_target* t = nullptr;  // the awaiter's own handle
  record* awaiter = nullptr;
  bool point_after = false;            // the child reaches a cancellation point after its cancel
  std::atomic<bool> cancelled{false};  // its cancel() of the awaiter returned true
};

weft::task<std::uint64_t> awaiter_canceller(round_ctx* c, record* r, awaiter_scene* s,
                                            std::uint64_t seed, bool refuse) {
  body_guard g(c, r);
  resume_meter m(r);
  std::exception_ptr cancel;
  try {
    for (int i = 0; i < 400; ++i) {
      // Acquire: pairs with the driver's release store after storing the
      // handle.  Relaxed `at`: a hint for when to cancel.
      if (s->t->h_ready.load(std::memory_order_acquire) &&
          s->awaiter->at.load(std::memory_order_relaxed) == kAtAwaitsChild)
        break;
      m.before("yield until the awaiter waits");
      co_await weft::yield();
      m.after();
    }
    // Acquire: as above.
    if (s->t->h_ready.load(std::memory_order_acquire)) {
      const bool ok =
          cancel_tracked(c, s->awaiter, s->t->h, "compose: the awaited task cancels its awaiter");
      // Release: pairs with the awaiter's acquire load after it took us.
      s->cancelled.store(ok, std::memory_order_release);
    }
    if (s->point_after) {
      m.before("yield after cancelling the awaiter");
      co_await weft::yield();
      m.after();
    }
  } catch (const weft::cancelled_error&) {
    m.after();
    // Relaxed: read by the awaiter after it took us (the join orders it).
    r->saw_cancel.store(true, std::memory_order_relaxed);
    cancel = std::current_exception();
    observe(c, r, cancel);
  }
  if (cancel) {
    if (refuse) {
      r->refused.store(true, std::memory_order_relaxed);  // Relaxed: as saw_cancel
      co_return kRefused;
    }
    std::rethrow_exception(cancel);
  }
  co_return mix(seed);  // no cancellation point after the cancel (unless point_after)
}

weft::task<std::uint64_t> awaited_cancels_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  rng rr(t->seed);
  awaiter_scene s;
  s.t = t;
  s.awaiter = r;
  s.point_after = t->variant % 2 == 1;
  const bool refuse = (t->variant / 2) % 2 == 1;
  const std::uint64_t useed = rr.next();
  record* ur = make_record(c, r->scenario_index, r);
  auto hu = weft::spawn(awaiter_canceller(c, ur, &s, useed, refuse));
  std::exception_ptr own;
  if (rr.below(2) == 0) {  // let it start elsewhere first (not run inline by our join)
    try {
      m.before("yield before the join");
      co_await weft::yield();
      m.after();
    } catch (const weft::cancelled_error&) {
      m.after();
      keep_own(c, r, &own, std::current_exception());
    }
  }
  m.before(kAtAwaitsChild);
  auto tu = co_await take(c, r, ur, &hu, &own, nullptr, /*forwarded_is_own=*/false);
  m.after();
  // Acquire: pairs with the child's release store (take() joined it anyway).
  const bool made = s.cancelled.load(std::memory_order_acquire);
  const bool child_saw = ur->saw_cancel.load(std::memory_order_relaxed);  // Relaxed: as above
  if (made && !s.point_after && !child_saw) {
    // (c) for the child, then back to us: our own request, forwarded to the
    // child we await, was never taken there; it comes back and is delivered
    // at this join, while the child's value stays in its handle.
    if (!own)
      c->violation(r,
                   "the awaiter's cancellation, forwarded to the awaited task that finished "
                   "without a cancellation point, did not come back to the awaiter's join");
    if (tu.kind != got::value || *tu.value != mix(useed))
      c->violation(ur,
                   "the awaited task's value was lost when its awaiter's cancellation came "
                   "back");
  }
  if (made && s.point_after && quiet(c)) {
    // (b): the child's cancellation point took our request.  If it refused
    // and returned a value, we get that value and are not cancelled again.
    // (On a real runtime the cancel may land before the awaiter's join
    // began, and the join takes it back: exact in a simulation only.)
    if (c->sim && !child_saw)
      c->violation(ur,
                   "the awaiter's cancellation, forwarded to the awaited task, was not "
                   "delivered at its next cancellation point");
    if (refuse && child_saw) {
      if (own)
        c->violation(r,
                     "the awaited task refused the forwarded cancellation and answered, yet "
                     "its awaiter was cancelled again");
      if (tu.kind != got::value || *tu.value != kRefused)
        c->violation(ur, "the awaiter did not get the value of the task that refused");
    }
  }
  if (!own && tu.kind == got::cancelled) own = tu.error;
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- a task cancels itself

weft::task<std::uint64_t> self_cancel_case(round_ctx* c, record* r, compose_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  const bool return_at_once = t->variant % 2 == 0;
  std::exception_ptr own;
  try {
    // Acquire: pairs with the driver's release store after storing the handle.
    for (int i = 0; i < 400 && !t->h_ready.load(std::memory_order_acquire); ++i) {
      m.before("yield until the handle is stored");
      co_await weft::yield();
      m.after();
    }
    if (t->h_ready.load(std::memory_order_acquire)) {  // Acquire: as above
      const bool ok = cancel_tracked(c, r, t->h, "compose: the task cancels itself");
      if (!ok) c->violation(r, "cancel() of the running task returned false");
      if (return_at_once) {
        // (c): no cancellation point after the request; the driver checks
        // that the handle reports completed_despite_cancel().
        // Relaxed: read by the driver after it took us (the join orders it).
        t->returned_after_self_cancel.store(ok, std::memory_order_relaxed);
        co_return mix(t->seed);
      }
      m.before("yield after cancelling itself");
      co_await weft::yield();
      m.after();
      if (ok)
        c->violation(r,
                     "a request made on the running task was not delivered at its next "
                     "cancellation point");
    }
  } catch (const weft::cancelled_error&) {
    m.after();
    keep_own(c, r, &own, std::current_exception());
  }
  if (own) std::rethrow_exception(own);
  co_return mix(t->seed);
}

// ---- the driver

weft::task<std::uint64_t> run_case(round_ctx* c, record* r, compose_target* t) {
  switch (t->kind) {
    case compose_case::nested_timeout:
      return nested_case(c, r, t);
    case compose_case::group_fail:
      return group_case(c, r, t);
    case compose_case::when_all_fail:
      return when_all_case(c, r, t);
    case compose_case::when_any_fail:
      return when_any_case(c, r, t);
    case compose_case::shield_timeout:
      return shield_case(c, r, t);
    case compose_case::awaited_cancels:
      return awaited_cancels_case(c, r, t);
    case compose_case::self_cancel:
      break;
  }
  return self_cancel_case(c, r, t);
}

weft::task<void> compose_cases(round_ctx* c, record* self, std::uint64_t seed,
                               std::vector<std::unique_ptr<compose_target>>* ts) {
  rng rr(seed);
  const auto si = scenario_index(kCompose);
  std::vector<compose_case> kinds;  // the cases selected (--compose)
  for (std::uint32_t i = 0; i < kComposeCaseCount; ++i)
    if (c->cfg->compose_cases & (1u << i)) kinds.push_back(static_cast<compose_case>(i));
  std::vector<compose_target*> to_cancel;
  while (c->spawned[si].load(std::memory_order_relaxed) < c->cfg->tasks &&
         ts->size() < c->cfg->tasks) {
    auto t = std::make_unique<compose_target>();
    t->seed = rr.next();
    t->kind = kinds[rr.below(kinds.size())];
    t->variant = static_cast<std::uint32_t>(rr.below(1u << 16));
    switch (t->kind) {
      case compose_case::group_fail:
      case compose_case::when_all_fail: {
        // (The case draws the same mix from its seed.)
        rng peek(t->seed);
        const kid_mix km = mix_for(peek, false);
        t->must_cancel = waits_for_a_cancel(km);
        // Without a child that fails on its own, only the owner's
        // cancellation ends them: cancel it now rather than in the wind-down.
        t->cancel_it = (t->must_cancel && !km.fails_on_its_own) ||
                       rr.chance(std::min(1.0, c->cfg->cancel_rate * 2));
        break;
      }
      case compose_case::when_any_fail: {
        rng peek(t->seed);
        t->must_cancel = waits_for_a_cancel(mix_for(peek, true));
        t->cancel_it = rr.chance(c->cfg->cancel_rate);
        break;
      }
      case compose_case::nested_timeout:
      case compose_case::shield_timeout:
        t->cancel_it = rr.chance(c->cfg->cancel_rate);
        break;
      default:
        break;  // they cancel themselves
    }
    t->r = make_record(c, si, self);
    t->h = weft::spawn(run_case(c, t->r, t.get()));
    // Release: publishes the stored handle to the case (self_cancel,
    // awaited_cancels), which loads the flag with acquire.
    t->h_ready.store(true, std::memory_order_release);
    if (t->cancel_it) to_cancel.push_back(t.get());
    ts->push_back(std::move(t));
    if (rr.below(3) == 0) co_await weft::yield();
    if (to_cancel.size() >= 3 || ts->size() % 8 == 0) {
      for (compose_target* x : to_cancel) {
        // Mostly at the construct; sometimes at once, maybe before it started.
        if (rr.below(4) != 0) co_await await_at(x->r, kAtConstruct, 200);
        cancel_tracked(c, x->r, x->h, "compose: cancel the case");
      }
      to_cancel.clear();
    }
  }
  for (compose_target* x : to_cancel) {
    co_await await_at(x->r, kAtConstruct, 200);
    cancel_tracked(c, x->r, x->h, "compose: cancel the case");
  }
}

weft::task<void> compose_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<std::unique_ptr<compose_target>> ts;  // stable addresses: the cases hold them
  std::exception_ptr own;
  try {
    co_await compose_cases(c, self, seed, &ts);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  // The wind-down: a case that waits for a cancel gets one.
  // (Relaxed: cancel_sent is written by this task only.)
  for (auto& t : ts)
    if (t->must_cancel && !t->r->cancel_sent.load(std::memory_order_relaxed))
      cancel_tracked(c, t->r, t->h, "compose: wind-down");
  for (auto& t : ts) {
    auto got_it = co_await take(c, self, t->r, &t->h, &own);
    if (got_it.kind == got::value && *got_it.value != mix(t->seed))
      c->violation(t->r, "a case returned another value than its own");
    // Relaxed: written by the case before it returned; the join orders it.
    if (t->returned_after_self_cancel.load(std::memory_order_relaxed) &&
        (got_it.kind != got::value || !t->r->despite.load(std::memory_order_relaxed)))
      c->violation(t->r,
                   "a task that cancelled itself and returned without a cancellation "
                   "point did not complete despite the cancel (completed_despite_cancel())");
  }
  if (own) std::rethrow_exception(own);
}

// ------------------------------------------------------------ fork

// Tasks that await a fork tree (weft/fork.hpp): fib-like trees with a
// checkpoint() in every frame (one between fork and call, where the forked
// child may still run) and a yield() in some, trees where one frame throws,
// and trees where one frame spins until cancelled; each task is cancelled
// (or not) before it starts, while it awaits its tree -- by the driver or by
// canceller tasks on other workers -- or by the round's shutdown.  Checked:
// a completed tree's value is exact; a frame sees the task's cancellation as
// kind parent with the request's reason, the task sees the request itself
// (never kind parent); a frame's exception reaches the task unless a
// cancellation came first; a tree that caught its cancellation leaves the
// request to the task's next cancellation point; no frame of a tree is alive
// once its task ended.

constexpr std::uint64_t kAbsorbed = 0xAB50'12BEDull;  // a root that caught its cancellation

enum class fork_kind : std::uint8_t {
  fib,     // the value is checked
  throws,  // the frame at `path` throws planned_failure
  spin,    // the frame at `path` loops on checkpoint() until cancelled
};

// What every frame of one tree shares (stable: held by unique_ptr).
struct fork_target {
  record* r = nullptr;
  weft::join_handle<std::uint64_t> h;
  std::uint64_t seed = 0;
  fork_kind kind = fork_kind::fib;
  int n = 0;               // fib(n)
  std::uint64_t path = 1;  // the frame that throws or spins (1: the root call)
  bool throw_after_join = false;
  bool root_forks = false;  // the root forks the tree (else calls it)
  bool absorb = false;      // the root catches the tree's cancellation
  std::uint8_t when = never;
  round_ctx* c = nullptr;
  std::atomic<int> live{0};  // frame bodies entered and not yet left
  std::atomic<bool> threw{false};
};

std::uint64_t fib_ref(int n) noexcept {
  std::uint64_t a = 0, b = 1;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t s = a + b;
    a = b;
    b = s;
  }
  return a;
}

// A random frame of the tree of fib(n): a walk from the root call (path 1),
// each step to the forked child (n - 1, path * 2) or the called one (n - 2,
// path * 2 + 1).
std::uint64_t pick_frame(rng& rr, int n) {
  std::uint64_t path = 1;
  while (n >= 2 && rr.below(4) != 0) {
    const bool call = rr.below(2) != 0;
    path = path * 2 + (call ? 1 : 0);
    n -= call ? 2 : 1;
  }
  return path;
}

struct frame_count {
  explicit frame_count(fork_target* t) noexcept : t_(t) {
    t_->live.fetch_add(1, std::memory_order_relaxed);  // Relaxed: read after the task's join
  }
  ~frame_count() { t_->live.fetch_sub(1, std::memory_order_relaxed); }  // Relaxed: as above
  frame_count(const frame_count&) = delete;
  frame_count& operator=(const frame_count&) = delete;

 private:
  fork_target* t_;
};

// Is `who` the record `r` or one above it (a request forwarded down)?
bool is_self_or_above(const record* who, const record* r) noexcept {
  for (; r != nullptr; r = r->parent)
    if (r == who) return true;
  return false;
}

// A cancelled_error caught in a frame of t's tree: kind parent, and the
// reason of a request made for t's task (or forwarded to it).
void frame_saw_cancel(fork_target* t, const weft::cancelled_error& e) {
  round_ctx* c = t->c;
  if (e.kind() != weft::cancel_kind::parent)
    c->violation(t->r, "a frame of a fork tree got a cancelled_error of kind " +
                           std::string(weft::to_string(e.kind())) + ", not parent");
  const std::uint64_t n = request_of(e.reason());
  if (n == 0) return;
  std::lock_guard lk(c->ledger.mu);
  const auto& reqs = c->ledger.requests;
  if (n > reqs.size() || !is_self_or_above(reqs[n - 1].target, t->r))
    c->violation(t->r, "a frame of a fork tree got the reason of request #" + std::to_string(n) +
                           ", made for another task");
}

// fib(n), with cancellation points in every frame.
weft::fork_task<std::uint64_t> fork_fib(fork_target* t, int n, std::uint64_t path) {
  frame_count fc(t);
  const bool marked = path == t->path;
  if (marked && t->kind == fork_kind::throws && !t->throw_after_join) {
    t->threw.store(true, std::memory_order_relaxed);  // Relaxed: read after the task's join
    throw planned_failure(t->r->id);
  }
  try {
    co_await weft::checkpoint();
  } catch (const weft::cancelled_error& e) {
    frame_saw_cancel(t, e);
    throw;
  }
  if (marked && t->kind == fork_kind::spin) {
    std::uint64_t acc = path;
    for (;;) {
      acc = spin(acc, 16);
      try {
        co_await weft::checkpoint();
      } catch (const weft::cancelled_error& e) {
        frame_saw_cancel(t, e);
        throw;
      }
    }
  }
  std::uint64_t v = static_cast<std::uint64_t>(n);
  if (n >= 2) {
    std::uint64_t a = 0;
    co_await weft::fork(a, fork_fib(t, n - 1, path * 2));
    try {
      // The forked child may still run elsewhere: this does not throw then.
      co_await weft::checkpoint();
    } catch (const weft::cancelled_error& e) {
      frame_saw_cancel(t, e);
      throw;
    }
    const std::uint64_t b = co_await fork_fib(t, n - 2, path * 2 + 1);
    if (mix(t->seed ^ path) % 8 == 0) co_await weft::yield();
    try {
      co_await weft::join();
    } catch (const weft::cancelled_error& e) {
      frame_saw_cancel(t, e);
      throw;
    }
    v = a + b;
  } else if (mix(t->seed ^ path) % 8 == 0) {
    co_await weft::yield();
  }
  if (marked && t->kind == fork_kind::throws) {
    t->threw.store(true, std::memory_order_relaxed);  // Relaxed: as above
    throw planned_failure(t->r->id);
  }
  co_return v;
}

// The tree's root: calls or forks fib, and (absorb) catches its cancellation.
weft::fork_task<std::uint64_t> fork_root(fork_target* t) {
  frame_count fc(t);
  std::uint64_t v = 0;
  bool absorbed = false;
  try {
    if (t->root_forks) {
      co_await weft::fork(v, fork_fib(t, t->n, 1));
      co_await weft::join();
    } else {
      v = co_await fork_fib(t, t->n, 1);
    }
  } catch (const weft::cancelled_error& e) {
    frame_saw_cancel(t, e);
    if (!t->absorb) throw;
    absorbed = true;
  }
  if (absorbed) co_return kAbsorbed;
  co_return mix(t->seed) + v;
}

// A tracked task that awaits one tree.
weft::task<std::uint64_t> fork_holder(round_ctx* c, record* r, fork_target* t) {
  body_guard g(c, r);
  resume_meter m(r);
  std::exception_ptr cancel;
  std::uint64_t v = 0;
  try {
    m.before("fork tree");
    v = co_await fork_root(t);
    m.after();
  } catch (const weft::cancelled_error& e) {
    m.after();
    if (e.kind() == weft::cancel_kind::parent)
      c->violation(r, "the task awaiting a fork tree got a cancelled_error of kind parent");
    r->saw_cancel.store(true, std::memory_order_relaxed);
    cancel = std::current_exception();
    observe(c, r, cancel);
  }
  if (cancel) std::rethrow_exception(cancel);
  if (v != kAbsorbed) co_return v;
  // The tree caught the cancellation and returned: the request stays with
  // the task, for its next cancellation point.
  bool delivered = false;
  try {
    m.before("checkpoint after the tree caught the cancellation");
    co_await weft::checkpoint();
    m.after();
  } catch (const weft::cancelled_error& e) {
    m.after();
    if (e.kind() == weft::cancel_kind::parent)
      c->violation(r, "the task awaiting a fork tree got a cancelled_error of kind parent");
    delivered = true;
    cancel = std::current_exception();
    observe(c, r, cancel);
  }
  if (!delivered)
    c->violation(r,
                 "a fork tree caught its cancellation, yet the task's next cancellation point "
                 "did not deliver the request");
  if (cancel) std::rethrow_exception(cancel);
  co_return kAbsorbed;
}

// A task on another worker that cancels its share of the targets, each after
// a few yields (or once it awaits its tree).
weft::task<std::uint64_t> fork_canceller(round_ctx* c, record* r, std::vector<fork_target*> ts,
                                         std::uint64_t seed) {
  body_guard g(c, r);
  rng rr(seed);
  std::exception_ptr own;
  try {
    for (fork_target* t : ts) {
      if (rr.below(2) == 0) {
        co_await await_state(t->r, task_state::suspended, 100);
      } else {
        for (auto k = rr.below(6); k > 0; --k) co_await weft::yield();
      }
      cancel_tracked(c, t->r, t->h, "fork: from a canceller task");
    }
  } catch (const weft::cancelled_error&) {
    keep_own(c, r, &own, std::current_exception());
  }
  if (own) std::rethrow_exception(own);
  co_return mix(seed);
}

void check_fork_outcome(round_ctx* c, fork_target& t, const taken_value<std::uint64_t>& got_it,
                        bool driver_cancelled);

weft::task<void> fork_spawns(round_ctx* c, record* self, std::uint64_t seed,
                             std::vector<std::unique_ptr<fork_target>>* ts,
                             std::vector<target>* cancellers, std::exception_ptr* own) {
  rng rr(seed);
  const auto si = scenario_index(kFork);
  // Smaller trees in a simulation: every frame is a resume point there.
  const int min_n = c->sim ? 3 : 8;
  const int span = c->sim ? 5 : 14;
  std::vector<fork_target*> batch;  // for the next canceller
  const unsigned n = std::max(2u, c->cfg->tasks / 2);
  for (unsigned i = 0; i < n; ++i) {
    auto t = std::make_unique<fork_target>();
    t->c = c;
    t->seed = rr.next();
    const auto k = rr.below(4);
    t->kind = k < 2 ? fork_kind::fib : k == 2 ? fork_kind::throws : fork_kind::spin;
    t->n = min_n + static_cast<int>(rr.below(span));
    t->path = pick_frame(rr, t->n);
    t->throw_after_join = rr.below(2) != 0;
    t->root_forks = rr.below(2) != 0;
    t->absorb = rr.below(5) == 0;
    if (t->kind == fork_kind::spin || rr.chance(c->cfg->cancel_rate))
      t->when = static_cast<std::uint8_t>(1 + rr.below(3));  // before start, suspended, running
    t->r = make_record(c, si, self);
    t->r->infinite.store(t->kind == fork_kind::spin, std::memory_order_relaxed);
    t->h = weft::spawn(fork_holder(c, t->r, t.get()));
    fork_target* x = t.get();
    ts->push_back(std::move(t));
    if (x->when == before_start) {
      cancel_tracked(c, x->r, x->h, "fork: before start");
    } else if (x->when == suspended) {
      co_await await_state(x->r, task_state::suspended, 50);
      cancel_tracked(c, x->r, x->h, "fork: while it awaits its tree");
    } else if (x->when == running) {
      batch.push_back(x);  // "running": by a canceller task, at its own moment
    }
    if (x->when != running && rr.below(c->sim ? 8 : 4) == 0) {
      // Alone: the driver waits for it at once, so that idle workers have
      // nothing to steal but the tree's continuations.
      auto got_it = co_await take(c, self, x->r, &x->h, own);
      check_fork_outcome(c, *x, got_it, *own != nullptr);
      if (*own) break;
    }
    if (batch.size() >= 4 || (i + 1 == n && !batch.empty())) {
      target k2;
      k2.seed = rr.next();
      k2.r = make_record(c, si, self);
      k2.h = weft::spawn(fork_canceller(c, k2.r, batch, k2.seed));
      cancellers->push_back(std::move(k2));
      batch.clear();
    }
    if (rr.below(3) == 0) co_await weft::yield();
  }
  // (A batch not handed to a canceller -- the driver was cancelled -- goes
  // to the wind-down.)
}

// The outcome of one tree's task against what its tree does.
void check_fork_outcome(round_ctx* c, fork_target& t, const taken_value<std::uint64_t>& got_it,
                        bool driver_cancelled) {
  // Relaxed: written by the frames and the cancellers before their tasks
  // ended, which the joins order before this.
  if (const int live = t.live.load(std::memory_order_relaxed); live != 0)
    c->violation(t.r, std::to_string(live) +
                          " frame(s) of its fork tree still alive after the "
                          "task ended (a frame leaked or ran on)");
  const bool any_cancel = t.r->cancel_sent.load(std::memory_order_relaxed) || c->shutdown_round ||
                          c->cancel_at != 0 || driver_cancelled;
  switch (got_it.kind) {
    case got::value:
      if (t.kind == fork_kind::fib && *got_it.value != mix(t.seed) + fib_ref(t.n) &&
          *got_it.value != kAbsorbed)
        c->violation(t.r, "a fork tree's value is wrong: fib(" + std::to_string(t.n) + ")");
      if (t.kind == fork_kind::throws)
        c->violation(t.r, "a frame of the fork tree threw, yet the task returned a value");
      if (t.kind == fork_kind::spin)
        c->violation(t.r, "a fork tree that spins until cancelled gave a value");
      break;
    case got::error: {
      std::string what = "?";
      try {
        std::rethrow_exception(got_it.error);
      } catch (const planned_failure& e) {
        what = e.what();
      } catch (...) {
        what = weft::describe(std::current_exception());
      }
      if (t.kind != fork_kind::throws || what != planned_failure(t.r->id).what())
        c->violation(t.r,
                     "the task awaiting a fork tree ended with an unexpected exception: " + what);
      if (!t.threw.load(std::memory_order_relaxed))
        c->violation(t.r, "a fork tree's task failed, but no frame threw");
      break;
    }
    case got::cancelled:
      if (!any_cancel)
        c->violation(
            t.r,
            "a task awaiting a fork tree ended cancelled, yet nobody cancelled it" +
                std::string(t.kind == fork_kind::throws ? " (a frame's exception was lost)" : ""));
      try {
        std::rethrow_exception(got_it.error);
      } catch (const weft::cancelled_error& e) {
        // The request itself: its kind, and the reason of a request made
        // for this task or for one that forwarded it down.
        const auto kind = e.kind();
        const std::uint64_t n = request_of(e.reason());
        std::string wrong;
        if (kind == weft::cancel_kind::parent) {
          wrong = "kind parent";
        } else if (kind == weft::cancel_kind::shutdown) {
          if (!c->shutdown_round) wrong = "kind shutdown outside a shutdown round";
        } else if (c->cancel_at == 0) {
          if (kind != weft::cancel_kind::explicit_request) {
            wrong = "kind " + std::string(weft::to_string(kind)) + ", which nobody requested";
          } else if (n == 0) {
            wrong = "a reason that names no request";
          } else {
            std::lock_guard lk(c->ledger.mu);
            const auto& reqs = c->ledger.requests;
            if (n > reqs.size() || !is_self_or_above(reqs[n - 1].target, t.r))
              wrong = "the reason of request #" + std::to_string(n) + ", made for another task";
          }
        }
        if (!wrong.empty())
          c->violation(t.r, "a task awaiting a fork tree ended cancelled with " + wrong);
      } catch (...) {
      }
      break;
  }
}

weft::task<void> fork_scenario(round_ctx* c, record* self, std::uint64_t seed) {
  std::vector<std::unique_ptr<fork_target>> ts;  // stable addresses: the frames hold them
  std::vector<target> cancellers;
  std::exception_ptr own;
  try {
    co_await fork_spawns(c, self, seed, &ts, &cancellers, &own);
  } catch (const weft::cancelled_error&) {
    keep_own(c, self, &own, std::current_exception());
  }
  // The cancellers first: they hold the targets' handles.
  for (auto& k : cancellers) {
    auto got_it = co_await take(c, self, k.r, &k.h, &own);
    if (got_it.kind == got::value && *got_it.value != mix(k.seed))
      c->violation(k.r, "a canceller returned another value than its own");
  }
  // The wind-down: a spinning tree ends only by a cancel.  (Relaxed:
  // cancel_sent was written by this task or by a canceller it joined.)
  for (auto& t : ts)
    if (t->kind == fork_kind::spin && !t->r->cancel_sent.load(std::memory_order_relaxed))
      cancel_tracked(c, t->r, t->h, "fork: wind-down");
  for (auto& t : ts) {
    if (t->r->taken.load(std::memory_order_relaxed) != 0) continue;  // taken alone
    auto got_it = co_await take(c, self, t->r, &t->h, &own);
    check_fork_outcome(c, *t, got_it, own != nullptr);
  }
  if (own) std::rethrow_exception(own);
}

}  // namespace

// ------------------------------------------------------------ the round

weft::task<std::uint64_t> scenario_driver(round_ctx* c, record* r, std::uint32_t bit,
                                          std::uint64_t seed) {
  body_guard g(c, r);
  switch (bit) {
    case kStorm:
      co_await storm(c, r, seed);
      break;
    case kCancel:
      co_await cancel_scenario(c, r, seed);
      break;
    case kTimeout:
      co_await timeout_scenario(c, r, seed);
      break;
    case kCheckpoint:
      co_await checkpoint_scenario(c, r, seed);
      break;
    case kGroup:
      co_await group_scenario(c, r, seed);
      break;
    case kCleanup:
      co_await cleanup_scenario(c, r, seed);
      break;
    case kCompose:
      co_await compose_scenario(c, r, seed);
      break;
    case kFork:
      co_await fork_scenario(c, r, seed);
      break;
    default:
      break;
  }
  co_return bit;
}

// A user scenario's task (weft/stress.hpp): its `run`, whose cancellation is
// its outcome and any other exception a violation.
weft::task<std::uint64_t> user_driver(round_ctx* c, record* r, std::uint32_t i) {
  body_guard g(c, r);
  const weft::stress::scenario* s = c->cfg->user[i];
  r->at.store(s->name.c_str(), std::memory_order_relaxed);  // a dump names the scenario
  std::exception_ptr failed;
  try {
    co_await s->run(*c->user[i]);
  } catch (const weft::cancelled_error&) {
    throw;  // the round was cut short: the outcome, taken by the root
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) c->violation(nullptr, s->name + ": its task threw " + weft::describe(failed));
  co_return i;
}

weft::task<void> round_root(round_ctx* c) {
  struct driver {
    record* r;
    weft::join_handle<std::uint64_t> h;
  };
  std::vector<driver> drivers;
  std::exception_ptr own;
  rng rr(c->seed);
  // shutdown (and outside) shape the round; alone, they put every core
  // scenario under load.
  std::uint32_t selected = c->cfg->scenarios & ~(kShutdown | kOutside);
  if (selected == 0 && c->cfg->user.empty()) selected = kCoreScenarios & ~kShutdown;
  try {
    for (std::uint32_t i = 0; i < kScenarioCount; ++i) {
      const std::uint32_t bit = 1u << i;
      if ((selected & bit) == 0) continue;
      record* r = make_record(c, kScenarioCount, nullptr);
      drivers.push_back({r, weft::spawn(scenario_driver(c, r, bit, rr.next() ^ bit))});
    }
    for (std::uint32_t i = 0; i < c->cfg->user.size(); ++i) {
      record* r = make_record(c, kScenarioCount, nullptr);
      drivers.push_back({r, weft::spawn(user_driver(c, r, i))});
    }
  } catch (const weft::cancelled_error&) {
    keep_own(c, nullptr, &own, std::current_exception());
  }
  for (auto& d : drivers) (void)co_await take(c, nullptr, d.r, &d.h, &own);
  if (own) std::rethrow_exception(own);
}

weft::task<std::uint64_t> outside_work(round_ctx* c, record* r, std::uint64_t seed) {
  rng rr(seed);
  plan p;
  const op kinds[] = {op::quick, op::yields, op::sleeps, op::checkpoints, op::forever_sleep};
  p.kind = kinds[rr.below(5)];
  p.n = static_cast<std::uint16_t>(1 + rr.below(3));
  p.sleep_us = static_cast<std::uint32_t>(rr.below(1000));
  r->infinite.store(is_infinite(p.kind), std::memory_order_relaxed);
  return work(c, r, p, seed);
}

}  // namespace weft_stress
