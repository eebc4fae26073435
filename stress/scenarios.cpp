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
#include <stdexcept>
#include <string>
#include <vector>

#include "internal.hpp"
#include "scenarios.hpp"

namespace weft_stress {

namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kRefused = 0x5EF05ED;  // what a task that refuses its cancel returns

// ------------------------------------------------------------ work bodies

enum class op : std::uint8_t {
  quick,          // returns at once
  yields,         // n yields
  checkpoints,    // n iterations of a little CPU work and a checkpoint()
  sleeps,         // n sleeps of sleep_us
  child,          // spawns a child and takes its outcome
  fail,           // yields, then throws planned_failure
  forever_sleep,  // sleeps an hour: only a cancel ends it in time
  forever_loop,   // checkpoint() loop until cancelled
  forever_event,  // waits on an event nobody sets
};

bool is_infinite(op k) noexcept {
  return k == op::forever_sleep || k == op::forever_loop || k == op::forever_event;
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
        b.r->bodies.load(std::memory_order_relaxed) != 0 &&
        !b.h.cancelled())
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
    default:
      break;
  }
  co_return bit;
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
  if (selected == 0) selected = kCoreScenarios & ~kShutdown;
  try {
    for (std::uint32_t i = 0; i < kScenarioCount; ++i) {
      const std::uint32_t bit = 1u << i;
      if ((selected & bit) == 0) continue;
      record* r = make_record(c, kScenarioCount, nullptr);
      drivers.push_back({r, weft::spawn(scenario_driver(c, r, bit, rr.next() ^ bit))});
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
