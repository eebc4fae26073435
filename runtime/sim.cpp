// SPDX-License-Identifier: MIT
// runtime/sim.cpp -- the deterministic simulation driver.
//
// The driver replaces the worker threads and the timer thread of a runtime by
// one loop on the thread that blocks on the runtime (block_on, join,
// shutdown, sim::run).  Each iteration takes ONE decision, always with the
// seeded generator `rng` and in an order that depends only on earlier
// decisions (never on addresses, hash order or wall time):
//
//   advance_once():
//     a timer is due (deadline <= virtual now)
//       and (no task is ready, or the generator says "timer first")
//                                   -> fire it (timer_pop_due_locked, as the timer thread)
//     a task is ready somewhere     -> step(): pick a worker; policy::random
//                                      lets it look for work with the real
//                                      policy (runtime_impl::find_work, with
//                                      sim_chooser: this generator), policy::pct
//                                      picks its task by priority; run it
//                                      (runtime_impl::run, then after_run) with
//                                      tls_worker = that worker, then charge a
//                                      random step cost to the virtual clock.
//                                      A look that finds nothing (every victim
//                                      it tried was empty) is no step.
//     a timer is armed (within the horizon)
//                                   -> jump the clock to its deadline, fire it
//     otherwise                     -> nothing can happen any more
//
// Slice expiry: before every step the driver sets the worker's slice_expired,
// so every checkpoint() that finds nothing pending takes its slow path, which
// clears the flag and calls schedule_yield.  schedule_yield hands over to
// sim_yield, which asks the generator: "slice spent" re-queues the task as a
// real worker would; "runs on" sets the flag again and puts the task in the
// worker's trampoline slot (resume_next), so run() resumes it at once -- the
// same effect as a checkpoint that did not suspend.  yield() and sleep_for(0)
// reach schedule_yield with the flag still set and are always re-queued.
//
// A resume point is a step or a checkpoint that runs on; options::cancel_at
// counts them (all of them, or with options::cancel_target those of one task)
// and delivers its cancellation just before the k-th one resumes.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "trace.hpp"
#include "weft/fork.hpp"
#include "weft/runtime.hpp"
#include "weft/sim.hpp"
#include "weft/task.hpp"

namespace weft::detail {

thread_local sim_driver* tls_sim = nullptr;

struct runtime_access {
  static runtime_impl* impl(const runtime& r) noexcept { return r.impl_; }
};

namespace {

// The simulation's chooser (runtime_impl.hpp, "Choosers"): find_work's
// victims come from the seeded generator, and the steal backoff's pauses are
// charged to the virtual clock (a pause is of the order of a nanosecond).
struct sim_chooser {
  sim_driver* s;
  unsigned victim(worker*, unsigned others) noexcept {
    return static_cast<unsigned>(s->rng.below(others));
  }
  void pause(std::uint32_t pauses) noexcept {
    s->now = std::min(s->now + pauses, sim_driver::kEnd);
  }
};

// A counter bump by its only writer (the driving thread).  Relaxed: the
// counters publish nothing; other threads only read them for reports.
void bump(std::atomic<std::uint64_t>& a, std::uint64_t d = 1) noexcept {
  a.store(a.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
}
std::uint64_t get(const std::atomic<std::uint64_t>& a) noexcept {
  // Relaxed: see bump.
  return a.load(std::memory_order_relaxed);
}

sim::options normalised(sim::options o) {
  o.slice_expiry_percent = std::clamp(o.slice_expiry_percent, 1u, 100u);  // 0 could spin forever
  o.timer_first_percent = std::min(o.timer_first_percent, 100u);
  if (o.max_step_cost.count() < 0) o.max_step_cost = std::chrono::nanoseconds(0);
  if (o.horizon.count() < 0) o.horizon = std::chrono::nanoseconds(0);
  o.pct_depth = std::max(o.pct_depth, 1u);
  o.pct_steps = std::max<std::uint64_t>(o.pct_steps, 1);
  return o;
}

// One drive on the calling thread: tls_sim names the simulation (now_ns()
// reads its clock), and tls_worker is null between steps.  Both are saved and
// restored, because the caller may itself be a task of another simulation.
class drive_scope {
 public:
  explicit drive_scope(sim_driver* s) : s_(s) {
    if (s->driving) {
      throw usage_error(
          "weft::sim: this simulation is already being driven (a task of another runtime "
          "blocks on it while it runs)");
    }
    s->driving = true;
    saved_worker_ = tls_worker;
    saved_sim_ = tls_sim;
    tls_worker = nullptr;
    tls_sim = s;
  }
  ~drive_scope() {
    tls_worker = saved_worker_;
    tls_sim = saved_sim_;
    s_->driving = false;
  }
  drive_scope(const drive_scope&) = delete;
  drive_scope& operator=(const drive_scope&) = delete;

 private:
  sim_driver* s_;
  worker* saved_worker_ = nullptr;
  sim_driver* saved_sim_ = nullptr;
};

}  // namespace

sim_driver::sim_driver(runtime_impl* r, const sim::options& o)
    : rt(r), opt(normalised(o)), owner(std::this_thread::get_id()), rng(o.seed) {
  if (opt.schedule == sim::policy::pct) {
    for (unsigned i = 1; i < opt.pct_depth; ++i)
      change_points.push_back(1 + rng.below(opt.pct_steps));
    std::sort(change_points.begin(), change_points.end());
  }
}

std::uint64_t sim_driver::id_of(task_core* c) {
  // A fork-join frame in a queue is part of the task that awaits its tree:
  // it runs, is traced and is cancelled as that task.
  c = owner_of_item(c);
  auto [it, fresh] = ids.try_emplace(c, 0);
  if (fresh) {
    it->second = next_id++;
    bump(tasks_seen);
    // An inline finish of a named task must tell us (sim_finished) so that the
    // name is dropped before the frame's memory can be reused: `hooked` sends
    // it through finish_inline_atomic, the conservative path that does the
    // same as the plain store plus an RMW.
    c->hooked = true;
  }
  return it->second;
}

void sim_driver::forget(const task_core* c) noexcept {
  auto it = ids.find(c);
  if (it == ids.end()) return;
  priority.erase(it->second);
  ids.erase(it);
}

void sim_driver::record(sim::event::kind what, std::uint32_t worker_index, std::uint64_t task,
                        std::int64_t arg, std::string text) {
  if (opt.trace == nullptr) return;
  sim::event e;
  e.what = what;
  e.worker = worker_index;
  e.step = get(resume_points);
  e.task = task;
  e.time_ns = now - kBase;
  e.arg = arg;
  e.text = std::move(text);
  opt.trace->push_back(std::move(e));
}

bool sim_driver::has_ready() noexcept {
  // Relaxed: single-threaded here; the count is exact.
  if (rt->injected_count.load(std::memory_order_relaxed) > 0) return true;
  for (auto& w : rt->workers) {
    if (w->deque.size_hint() > 0) return true;
  }
  return false;
}

bool sim_driver::advance_once() {
  const bool ready = has_ready();
  std::uint64_t deadline = 0;
  const bool armed = rt->timer_next_deadline(&deadline);
  const bool due = armed && deadline <= now;
  if (due && (!ready || rng.percent(opt.timer_first_percent))) {
    fire_timer();
    return true;
  }
  if (ready) {
    step();
    return true;
  }
  // horizon <= ~292 years: no overflow; the clock never passes kEnd.
  const std::uint64_t limit =
      std::min(kBase + static_cast<std::uint64_t>(opt.horizon.count()), kEnd);
  if (armed && deadline <= limit) {
    now = deadline;
    virtual_ns.store(now - kBase, std::memory_order_relaxed);  // Relaxed: see bump
    record(sim::event::kind::advance, 0, 0, 0);
    fire_timer();
    return true;
  }
  return false;
}

void sim_driver::fire_timer() {
  task_core* woken = nullptr;
  {
    std::lock_guard lk(rt->timer_mutex);
    rt->timer_pop_due_locked(now, &woken);
  }
  bump(timers_fired);
  // Single-threaded: the woken task sits in the injection queue, alive.
  if (woken != nullptr) record(sim::event::kind::timer, 0, id_of(woken), 0);
}

void sim_driver::check_step_limit() {
  if (get(resume_points) - drive_start < opt.max_steps) return;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "weft::sim: step limit reached: %" PRIu64
                " resume points ran in one blocking call (options::max_steps) -- a livelock, or a "
                "task that never "
                "stops yielding?",
                opt.max_steps);
  throw sim::step_limit_error(buf);
}

std::int64_t sim_driver::priority_of(task_core* c) {
  const std::uint64_t id = id_of(c);
  auto [it, fresh] = priority.try_emplace(id, 0);
  if (fresh) {
    // Above every demoted priority (at most pct_depth - 1) and distinct with
    // overwhelming probability.
    it->second =
        static_cast<std::int64_t>(opt.pct_depth) + 1 + static_cast<std::int64_t>(rng.next() >> 2);
  }
  return it->second;
}

void sim_driver::demote(task_core* c) {
  if (opt.schedule != sim::policy::pct) return;
  priority[id_of(c)] = --yield_floor;
}

void sim_driver::pick_pct(worker*& w, runtime_impl::found_work& f) {
  const unsigned n = rt->worker_count;
  struct reach {
    task_core* task;
    unsigned at;       // deque index, or n for the injection queue
    std::uint8_t how;  // 0 bottom (owner takes), 1 top (others steal), 2 injection queue
  };
  std::vector<reach> reachable;
  reachable.reserve(2 * n + 1);
  for (;;) {
    reachable.clear();
    for (unsigned i = 0; i < n; ++i) {
      auto& d = rt->workers[i]->deque;
      if (d.size_hint() <= 0) continue;
      reachable.push_back({d.peek_bottom(), i, 0});
      if (n > 1) reachable.push_back({d.peek_top(), i, 1});
    }
    {
      std::lock_guard lk(rt->inject_mutex);
      if (!rt->injected.empty()) reachable.push_back({rt->injected.front(), n, 2});
    }
    // The highest priority wins; ties (practically impossible) go to the lower id.
    task_core* best = nullptr;
    std::int64_t best_p = 0;
    for (const reach& r : reachable) {
      const std::int64_t p = priority_of(r.task);
      if (best == nullptr || p > best_p || (p == best_p && id_of(r.task) < id_of(best))) {
        best = r.task;
        best_p = p;
      }
    }
    // A change point at this step: the task about to run drops below all.
    const std::uint64_t this_step = get(steps) + 1;
    if (next_change < change_points.size() && change_points[next_change] <= this_step) {
      ++next_change;
      priority[id_of(best)] = static_cast<std::int64_t>(opt.pct_depth - next_change);
      continue;
    }
    // Every (worker, source) that reaches `best`.
    using found = runtime_impl::found_work;
    struct way {
      unsigned worker_index;
      std::uint32_t from;
    };
    std::vector<way> ways;
    for (const reach& r : reachable) {
      if (r.task != best) continue;
      if (r.how == 0) {
        ways.push_back({r.at, found::kOwn});
      } else if (r.how == 1) {
        for (unsigned j = 0; j < n; ++j)
          if (j != r.at) ways.push_back({j, found::kVictim + r.at});
      } else {
        for (unsigned j = 0; j < n; ++j) ways.push_back({j, found::kInjected});
      }
    }
    const way chosen = ways[rng.below(ways.size())];
    w = rt->workers[chosen.worker_index].get();
    f.from = chosen.from;
    if (f.from == found::kOwn) {
      f.task = w->deque.take();
    } else if (f.from == found::kInjected) {
      f.task = rt->pop_injected();
    } else {
      f.task = nullptr;
      rt->workers[f.from - found::kVictim]->deque.steal(f.task);  // single-threaded: cannot lose
      // runtime::stats, as in find_work.
      w->meter.counts.steal_attempts.bump();
      w->meter.counts.steals.bump();
    }
    return;
  }
}

void sim_driver::deliver_cancel(task_core* c, std::uint64_t id) {
  // Relaxed: see bump.
  cancel_delivered.store(true, std::memory_order_relaxed);
  cancel_task.store(id, std::memory_order_relaxed);
  record(sim::event::kind::cancel, 0, id, 0);
  std::string reason = "sim: cancel at resume point " + std::to_string(opt.cancel_at);
  if (opt.cancel_target != 0) reason += " of task " + std::to_string(opt.cancel_target);
  request_cancel(owner_of_item(c), std::move(reason), cancel_kind::explicit_request,
                 std::source_location::current());
}

void sim_driver::at_resume_point(task_core* c, std::uint64_t id) {
  if (opt.cancel_target != 0) {
    if (id != opt.cancel_target) return;
    bump(target_resume_points);
    if (get(target_resume_points) == opt.cancel_at) deliver_cancel(c, id);
    return;
  }
  if (opt.cancel_at != 0 && get(resume_points) == opt.cancel_at) deliver_cancel(c, id);
}

void sim_driver::step() {
  worker* w = nullptr;
  runtime_impl::found_work f;
  sim_chooser choose{this};
  if (opt.schedule == sim::policy::pct) {
    pick_pct(w, f);
  } else {
    // Which worker looks next is the simulation's decision; what it finds is
    // the real policy's.
    w = rt->workers[rng.below(rt->worker_count)].get();
    f = rt->find_work(w, choose);
    if (f.task == nullptr) return;
  }
  task_core* const c = f.task;
  bump(resume_points);
  bump(steps);
  if (f.stolen()) bump(steals);
  const std::uint64_t id = id_of(c);
  record(sim::event::kind::step, w->index, id, f.from);
  at_resume_point(c, id);
  // Every checkpoint of this step asks the generator (sim_yield).  Relaxed:
  // single-threaded.
  w->slice_expired.store(true, std::memory_order_relaxed);
  tls_worker = w;
  const bool ran = run_from_loop(rt, w, f);
  tls_worker = nullptr;
  rt->after_run(w, f, ran, choose);
  // Saturates at kEnd (now <= kEnd < 2^63 and the cost <= 2^63 - 1: the sum
  // cannot wrap).
  const std::uint64_t cost = rng.below(static_cast<std::uint64_t>(opt.max_step_cost.count()) + 1);
  meter_run(w, cost);  // runtime::stats: busy time and longest_run, in virtual time
  now = std::min(now + cost, kEnd);
  virtual_ns.store(now - kBase, std::memory_order_relaxed);  // Relaxed: see bump
}

std::string sim_driver::describe_stuck(task_core* target) {
  std::vector<std::uint64_t> live;
  live.reserve(ids.size());
  for (const auto& kv : ids) live.push_back(kv.second);
  std::sort(live.begin(), live.end());  // hash order must not leak into the text
  std::size_t blocked = 0;
  {
    std::lock_guard lk(rt->blocked_mutex);
    for (list_wait* n = rt->blocked.head; n != nullptr; n = n->reg_next) ++blocked;
  }
  std::uint64_t deadline = 0;
  const bool far_timer = rt->timer_next_deadline(&deadline);
  std::string s;
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "weft::sim: deadlock at resume point %" PRIu64 " (virtual time %" PRIu64
                " ns, seed %" PRIu64
                "): no task can run and no timer is armed, but the awaited task %" PRIu64
                " has not finished.  ",
                get(resume_points), now - kBase, opt.seed, id_of(target));
  s += buf;
  std::snprintf(buf, sizeof buf,
                "Blocked list waits (event, semaphore, shield): %zu.  %s"
                "Tasks seen and not finished (%zu):",
                blocked, far_timer ? "Timers beyond the horizon: yes.  " : "", live.size());
  s += buf;
  std::size_t shown = 0;
  for (std::uint64_t id : live) {
    if (++shown > 40) {
      s += " ...";
      break;
    }
    s += (shown == 1 ? " " : ", ") + std::to_string(id);
  }
  return s;
}

std::uint64_t sim_driver::drive(task_core* target, std::uint64_t budget) {
  drive_scope scope(this);
  const std::uint64_t start = get(resume_points);
  drive_start = start;
  for (;;) {
    // Acquire: pairs with the release that published kDone (single-threaded
    // here, but the same load as join_blocking's).
    if (target != nullptr && (target->state.load(std::memory_order_acquire) & task_core::kDone))
      break;
    if (get(resume_points) - start >= budget) break;
    check_step_limit();
    if (!advance_once()) {
      if (target == nullptr) break;
      record(sim::event::kind::deadlock, 0, id_of(target), 0);
      throw sim::deadlock_error(describe_stuck(target));
    }
  }
  return get(resume_points) - start;
}

// ---- hooks ----

void sim_create(runtime_impl* rt) {
  rt->sim = new sim_driver(rt, *rt->options.simulation);
  for (auto& w : rt->workers) w->sim = rt->sim;
}

void sim_destroy(runtime_impl* rt) noexcept {
  for (auto& w : rt->workers) w->sim = nullptr;
  delete rt->sim;
  rt->sim = nullptr;
}

void sim_require_owner(const runtime_impl* rt, const char* what) {
  if (std::this_thread::get_id() == rt->sim->owner) return;
  throw usage_error(std::string(what) +
                    " called on another thread than the one that created this simulation "
                    "runtime: a simulation runs on one OS thread (weft/sim.hpp)");
}

void sim_require_owner_or_abort(const runtime_impl* rt, const char* what) noexcept {
  if (std::this_thread::get_id() == rt->sim->owner) return;
  std::fprintf(stderr,
               "weft: %s of a simulation runtime's task from another thread than the one that "
               "created it: a simulation runs on one OS thread (weft/sim.hpp); aborting\n",
               what);
  std::abort();
}

void sim_join(task_core* core) {
  sim_require_owner(core->rt, "weft::join_handle::join");
  core->rt->sim->drive(core, ~std::uint64_t{0});
}

void sim_stop(runtime_impl* rt, std::source_location where, bool destructor) {
  sim_driver* s = rt->sim;
  if (std::this_thread::get_id() != s->owner) {
    if (destructor) {
      std::fputs(
          "weft: a simulation runtime is being destroyed on another thread than the one that "
          "created it (a simulation runs on one OS thread); aborting\n",
          stderr);
      std::abort();
    }
    sim_require_owner(rt, "weft::runtime::shutdown");
  }
  std::lock_guard guard(rt->shutdown_mutex);
  // Single-threaded: record the site unless a shutdown already began.
  // Relaxed: the simulation's only thread wrote it, if anyone did.
  if (!rt->stopping.load(std::memory_order_relaxed)) {
    rt->shutdown_at = where;
    rt->shutdown_began_ns = s->now;  // runtime::stats, in the virtual time of its deliveries
  }
  if (rt->shut_down) return;

  // stop_spawning, as runtime_impl::stop.  seq_cst: the same store as there
  // (single-threaded here).
  rt->stopping.store(true, std::memory_order_seq_cst);
  for (auto& w : rt->workers) {
    // Relaxed: single-threaded.
    w->stopping.store(true, std::memory_order_relaxed);
    w->spawn_slow.store(true, std::memory_order_relaxed);
    w->slice_expired.store(true, std::memory_order_relaxed);
  }
  s->record(sim::event::kind::stop, 0, 0, 0);
  // cancel_sleepers.
  rt->timer_cancel_all();
  rt->cancel_blocked();
  // drain: drive until nothing can happen (sleeps and list waits are refused
  // from here on, so no timer is left).
  try {
    s->drive(nullptr, ~std::uint64_t{0});
  } catch (const std::exception& e) {
    if (!destructor) throw;
    std::fprintf(stderr, "weft: %s; shutdown leaves the tasks still running\n", e.what());
  }
  {
    std::lock_guard lk(rt->inject_mutex);
    rt->closed = true;
  }
  rt->report_stuck();  // single-threaded
  // join_workers: the virtual workers "exit".
  for (auto& w : rt->workers) flush_frame_count(w.get());
  // Release: as in runtime_impl::stop (nobody waits for it here).
  rt->exiting.store(true, std::memory_order_release);
  rt->shut_down = true;
}

void sim_yield(task_core* core) noexcept {
  sim_driver* s = core->rt->sim;
  worker* w = tls_worker;
  // Relaxed: single-threaded.  The flag is clear only between a checkpoint's
  // slow path and this call (see the file comment).
  if (w != nullptr && w->rt == core->rt && core->w == w &&
      !w->slice_expired.load(std::memory_order_relaxed)) {
    const std::uint64_t id = s->id_of(core);
    const bool at_limit = get(s->resume_points) + 1 - s->drive_start >= s->opt.max_steps;
    if (at_limit || s->rng.percent(s->opt.slice_expiry_percent)) {
      bump(s->slices_expired);
      s->record(sim::event::kind::slice, w->index, id, 1);
      s->demote(core);
      core->rt->inject(core);
      return;
    }
    s->record(sim::event::kind::slice, w->index, id, 0);
    w->slice_expired.store(true, std::memory_order_relaxed);
    bump(s->resume_points);
    s->at_resume_point(core, id);
    w->resume_next = core;  // run() resumes it at once: the checkpoint "did not suspend"
    return;
  }
  s->demote(core);
  core->rt->inject(core);
}

void sim_fork_yield(worker* w, fork_frame* f) noexcept {
  sim_driver* s = w->rt->sim;
  task_core* owner = f->tree->root;
  // As sim_yield: a clear flag means a checkpoint whose slice may run on.
  // Relaxed: single-threaded.
  if (!w->slice_expired.load(std::memory_order_relaxed)) {
    const std::uint64_t id = s->id_of(owner);
    const bool at_limit = get(s->resume_points) + 1 - s->drive_start >= s->opt.max_steps;
    if (!at_limit && !s->rng.percent(s->opt.slice_expiry_percent)) {
      s->record(sim::event::kind::slice, w->index, id, 0);
      w->slice_expired.store(true, std::memory_order_relaxed);
      bump(s->resume_points);
      s->at_resume_point(owner, id);
      w->resume_next = fork_item(f);  // runs on at once (plain_resume is set)
      return;
    }
    bump(s->slices_expired);
    s->record(sim::event::kind::slice, w->index, id, 1);
  }
  s->demote(owner);
  w->rt->inject(fork_item(f));
}

void sim_finished(task_core* core) noexcept {
  sim_driver* s = core->rt->sim;
  auto it = s->ids.find(core);
  if (it == s->ids.end()) return;
  const bool cancelled = owner_of(core)->result == outcome::cancelled;
  s->record(sim::event::kind::finish, 0, it->second, cancelled ? 1 : 0);
  s->forget(core);
}

}  // namespace weft::detail

namespace weft::sim {

using detail::runtime_access;

bool is_simulation(const runtime& rt) noexcept { return runtime_access::impl(rt)->sim != nullptr; }

std::uint64_t run(runtime& rt, std::uint64_t max_resume_points) {
  detail::runtime_impl* impl = runtime_access::impl(rt);
  if (impl->sim == nullptr) throw usage_error("weft::sim::run: not a simulation runtime");
  detail::sim_require_owner(impl, "weft::sim::run");
  detail::worker* w = detail::tls_worker;
  if (w != nullptr && w->rt == impl) {
    throw usage_error("weft::sim::run called inside a task of the same simulation");
  }
  return impl->sim->drive(nullptr, max_resume_points);
}

statistics stats(const runtime& rt) noexcept {
  statistics st;
  const detail::sim_driver* s = runtime_access::impl(rt)->sim;
  if (s == nullptr) return st;
  using detail::get;
  st.resume_points = get(s->resume_points);
  st.steps = get(s->steps);
  st.steals = get(s->steals);
  st.timers_fired = get(s->timers_fired);
  st.slices_expired = get(s->slices_expired);
  st.tasks_seen = get(s->tasks_seen);
  st.virtual_ns = get(s->virtual_ns);
  // Relaxed: see bump.
  st.cancel_delivered = s->cancel_delivered.load(std::memory_order_relaxed);
  st.cancel_task = get(s->cancel_task);
  st.target_resume_points = get(s->target_resume_points);
  return st;
}

std::chrono::steady_clock::time_point now() noexcept {
  if (const detail::sim_driver* s = detail::tls_sim) {
    return std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(static_cast<std::int64_t>(s->now)));
  }
  return std::chrono::steady_clock::now();
}

void note(std::string text) {
  detail::sim_driver* s = detail::tls_sim;
  detail::worker* w = detail::tls_worker;
  if (s == nullptr || w == nullptr || w->rt != s->rt || w->current == nullptr) return;
  const std::uint64_t id = s->id_of(w->current);  // named whether or not a trace is kept
  s->record(event::kind::note, w->index, id, 0, std::move(text));
}

bool in_simulation() noexcept { return detail::tls_sim != nullptr; }

std::string event::to_string() const {
  char buf[160];
  const auto step_no = static_cast<unsigned long long>(step);
  const auto t = static_cast<unsigned long long>(time_ns);
  const auto id = static_cast<unsigned long long>(task);
  switch (what) {
    case kind::step: {
      char from[32];
      if (arg == 0) {
        std::snprintf(from, sizeof from, "own");
      } else if (arg == 1) {
        std::snprintf(from, sizeof from, "inject");
      } else {
        std::snprintf(from, sizeof from, "steal:w%lld", static_cast<long long>(arg - 2));
      }
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns step w%u task %llu from %s", step_no, t,
                    worker, id, from);
      break;
    }
    case kind::slice:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns slice w%u task %llu %s", step_no, t, worker,
                    id, arg != 0 ? "spent" : "runs-on");
      break;
    case kind::timer:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns timer task %llu", step_no, t, id);
      break;
    case kind::advance:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns advance", step_no, t);
      break;
    case kind::cancel:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns cancel task %llu", step_no, t, id);
      break;
    case kind::finish:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns finish task %llu %s", step_no, t, id,
                    arg != 0 ? "cancelled" : "done");
      break;
    case kind::note:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns note w%u task %llu: ", step_no, t, worker,
                    id);
      return buf + text;
    case kind::deadlock:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns deadlock awaiting task %llu", step_no, t, id);
      break;
    case kind::stop:
      std::snprintf(buf, sizeof buf, "[%llu] t=%lluns stop", step_no, t);
      break;
  }
  return buf;
}

}  // namespace weft::sim
