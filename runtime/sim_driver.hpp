// SPDX-License-Identifier: MIT
// runtime/sim_driver.hpp -- the deterministic simulation driver (private).
//
// A simulation runtime is a runtime_impl with `sim` set: its workers exist
// (deques, frame caches, counters) but no thread runs them, and no timer
// thread runs.  The thread that owns the runtime drives it (sim.cpp): each
// step it picks a virtual worker with the seeded generator and lets it look
// for work with the real policy (runtime_impl::find_work, with the
// generator as its chooser), sets tls_worker to that worker and calls
// runtime_impl::run and after_run -- the same code a real worker runs.  The
// end of this file lists every point where the rest of the runtime hands over
// to the simulation (sim_hook).  See weft/sim.hpp for the user's view and
// docs/architecture.md ("The simulation driver") for the design.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime_impl.hpp"
#include "splitmix.hpp"
#include "weft/sim.hpp"

namespace weft::detail {

// The driver's generator: splitmix64 seeded with options::seed.
struct sim_rng : splitmix64 {
  using splitmix64::splitmix64;
  bool percent(unsigned p) noexcept { return below(100) < p; }
};

struct sim_driver {
  sim_driver(runtime_impl* rt, const sim::options& o);

  runtime_impl* const rt;
  const sim::options opt;
  const std::thread::id owner;  // the thread that created the runtime
  sim_rng rng;

  // Virtual clock (now_ns() on the driving thread).  Starts at kBase so that
  // deadlines computed from it never come near 0.
  static constexpr std::uint64_t kBase = std::uint64_t{1} << 50;
  // The clock saturates here, the end of steady_clock's range (sim::now()
  // converts it to a steady_clock time point): steps charge no more time, and
  // a timer beyond it is beyond the horizon.
  static constexpr std::uint64_t kEnd = kEndOfTime;
  std::uint64_t now = kBase;

  // Figures for sim::stats().  Written by the driving thread only; atomics so
  // that a progress reporter on another thread may read them.  Every access
  // is relaxed: counters that publish nothing.
  std::atomic<std::uint64_t> resume_points{0};
  std::atomic<std::uint64_t> steps{0};
  std::atomic<std::uint64_t> steals{0};
  std::atomic<std::uint64_t> timers_fired{0};
  std::atomic<std::uint64_t> slices_expired{0};
  std::atomic<std::uint64_t> tasks_seen{0};
  std::atomic<std::uint64_t> virtual_ns{0};
  std::atomic<bool> cancel_delivered{false};
  std::atomic<std::uint64_t> cancel_task{0};
  std::atomic<std::uint64_t> target_resume_points{0};  // of options::cancel_target

  // Deterministic task ids: handed out in the order the driver first sees a
  // task (picked from a queue, woken by a timer, named by a note), and
  // forgotten when the task completes (sim_finished), so that a frame whose
  // memory is reused later gets a fresh id.  Lookups only: never iterated in
  // an order that could leak into a decision.
  std::unordered_map<const task_core*, std::uint64_t> ids;
  std::uint64_t next_id = 1;

  // PCT (policy::pct): priority by task id; change points (sorted step
  // numbers); the next one to apply; the floor for tasks that yielded.
  std::unordered_map<std::uint64_t, std::int64_t> priority;
  std::vector<std::uint64_t> change_points;
  std::size_t next_change = 0;
  std::int64_t yield_floor = 0;

  bool driving = false;           // a drive_scope is active (re-entrance is refused)
  std::uint64_t drive_start = 0;  // resume_points when the current drive began

  // ---- operations (sim.cpp) ----
  std::uint64_t id_of(task_core* c);
  void forget(const task_core* c) noexcept;
  void record(sim::event::kind what, std::uint32_t worker, std::uint64_t task, std::int64_t arg,
              std::string text = {});
  bool has_ready() noexcept;
  // One decision: fire a timer, step a task, or jump time to the next timer.
  // False when nothing can happen any more.
  bool advance_once();
  void step();
  // policy::pct: the worker and the task it takes (always one; `from` as
  // find_work's).  policy::random asks find_work instead.
  void pick_pct(worker*& w, runtime_impl::found_work& f);
  std::int64_t priority_of(task_core* c);
  void demote(task_core* c);
  void fire_timer();
  void deliver_cancel(task_core* c, std::uint64_t id);
  // Called at each resume point (after it is counted) of the task with
  // deterministic id `id`: delivers options::cancel_at's cancellation when
  // this is the resume point it names.
  void at_resume_point(task_core* c, std::uint64_t id);
  void check_step_limit();
  // Drive until `target` is done (null: until nothing can happen) or `budget`
  // resume points ran.  Throws deadlock_error when `target` can never finish.
  std::uint64_t drive(task_core* target, std::uint64_t budget);
  std::string describe_stuck(task_core* target);
};

// The simulation the calling thread is driving right now (now_ns() reads its
// clock), or null.
extern thread_local sim_driver* tls_sim;

// ---- what the hooks below call (sim.cpp) ----
void sim_create(runtime_impl* rt);
void sim_destroy(runtime_impl* rt) noexcept;
// usage_error unless called on the simulation's own thread.
void sim_require_owner(const runtime_impl* rt, const char* what);
// For noexcept paths (wake-ups): abort with a message instead of throwing.
void sim_require_owner_or_abort(const runtime_impl* rt, const char* what) noexcept;
// join_handle::join / block_on: drive until `core` is done.
void sim_join(task_core* core);
// runtime_impl::stop for a simulation: records `where` as the shutdown's
// site unless one began already.  `destructor`: never throws (prints).
void sim_stop(runtime_impl* rt, std::source_location where, bool destructor);
// schedule_yield for a simulation: the slice decision of a checkpoint, or a
// plain re-queue (yield).
void sim_yield(task_core* core) noexcept;
// fork_requeue: the same decision for a fork-join frame's checkpoint or yield.
void sim_fork_yield(worker* w, fork_frame* f) noexcept;
// A spawned task completed (complete_task, complete_unstarted, inline finish).
void sim_finished(task_core* core) noexcept;

// ---- sim_hook: every point where the runtime hands over to a simulation ----
//
// The rest of the runtime runs its own code in a simulation too (find_work,
// run, the deques, the timer heap, the cancel and wait protocols); these are
// the only places where it asks whether it is one, each for the reason given.
// Outside a simulation each costs one test of a null pointer (none is in the
// inline fast paths of task.hpp).  A hook that returns bool returns true when
// the simulation did the work and the caller must not.
namespace sim_hook {

// runtime_impl::start: the workers exist; a simulation makes its driver
// instead of starting worker and timer threads (its owner thread drives).
inline bool start(runtime_impl* rt) {
  if (!rt->options.simulation) return false;
  sim_create(rt);
  return true;
}

// runtime_impl::stop (runtime::shutdown): shutdown's steps, with the drain
// done by driving on the calling thread.
inline bool stop(runtime_impl* rt, std::source_location where) {
  if (rt->sim == nullptr) return false;
  sim_stop(rt, where, false);
  return true;
}

// ~runtime: as stop, never throwing (sim_stop with destructor = true reports
// instead of throwing), then the driver is freed.
inline bool destroy(runtime_impl* rt) noexcept {  // NOLINT(bugprone-exception-escape)
  if (rt->sim == nullptr) return false;
  sim_stop(rt, rt->created_at, true);
  sim_destroy(rt);
  return true;
}

// A simulation runs on one OS thread: a call from another thread would race
// its driver.  resolve_runtime (runtime::spawn) and accepts_cancel
// (join_handle::cancel) throw usage_error there ...
inline void require_owner(const runtime_impl* rt, const char* what) {
  if (rt->sim != nullptr) [[unlikely]]
    sim_require_owner(rt, what);
}
// ... and inject, reached by wake-ups (event::set from another thread, ...)
// that cannot throw, aborts with a message.
inline void require_owner_or_abort(const runtime_impl* rt, const char* what) noexcept {
  if (rt->sim != nullptr) [[unlikely]]
    sim_require_owner_or_abort(rt, what);
}

// join_blocking (join_handle::join, block_on) of an unfinished task: no
// worker thread will finish it, so the joining thread drives until it is done.
inline bool join(task_core* core) {
  if (core->rt->sim == nullptr) return false;
  sim_join(core);
  return true;
}

// schedule_yield: a simulation decides there whether a checkpoint's slice is
// spent (sim_yield); a real runtime re-queues.
inline bool yield(task_core* core) noexcept {
  if (core->rt->sim == nullptr) [[likely]]
    return false;
  sim_yield(core);
  return true;
}

// fork_requeue: as yield, for a fork-join frame (weft/fork.hpp).
inline bool fork_yield(worker* w, fork_frame* f) noexcept {
  if (w->rt->sim == nullptr) [[likely]]
    return false;
  sim_fork_yield(w, f);
  return true;
}

// count_finish (`s`: the finishing worker's worker::sim, a field next to its
// counters, or the runtime's) and finish_inline_atomic: the driver forgets
// the task's trace id before its frame's memory can be reused.
inline void finished(const sim_driver* s, task_core* core) noexcept {
  if (s != nullptr) [[unlikely]]
    sim_finished(core);
}
inline void finished(task_core* core) noexcept { finished(core->rt->sim, core); }

// now_ns: the thread driving a simulation (inside its tasks too) reads the
// virtual clock.  A thread-local read; now_ns is not on a hot path.
inline bool virtual_now(std::uint64_t* ns) noexcept {
  if (const sim_driver* s = tls_sim) [[unlikely]] {
    *ns = s->now;
    return true;
  }
  return false;
}

// chaos_point: the driving thread is alone; a delay there would only cost
// time (and a yield would change nothing).
inline bool driving() noexcept { return tls_sim != nullptr; }

}  // namespace sim_hook

}  // namespace weft::detail
