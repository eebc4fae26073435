// SPDX-License-Identifier: MIT
// weft/sim.hpp -- deterministic simulation: the same runtime API on N virtual
// workers driven by one OS thread, every decision taken from one seeded
// generator, time virtual.
//
//   weft::runtime_options o;
//   o.workers = 4;                        // virtual workers (0: 4)
//   o.simulation = weft::sim::options{};  // seed 1, random schedules
//   o.simulation->seed = 42;
//   weft::runtime rt(o);                  // no threads are started
//   int v = rt.block_on(my_task());       // drives the simulation on this thread
//
// What is simulated.  A simulation runtime has the same public API as a real
// one and runs the same task code unchanged: spawn, join handles, cancel,
// yield, checkpoint, sleeps, wait_for, task_group, shield, event, semaphore,
// cancellation sources.  It starts no worker thread and no timer thread.  The
// thread that blocks on it (block_on, join, shutdown, sim::run) drives it:
// each step it lets one virtual worker look for one task -- from its own
// deque, from the injection queue, or by stealing from a victim, with the
// real workers' policy -- and resumes it until it suspends, exactly as a real
// worker would (the same scheduling code, deques, injection queue, timer heap
// and resume code).  Which worker steps, which victims it tries, whether a
// due timer fires before the next step, whether a checkpoint() finds its time
// slice spent, and how much virtual time a step costs: every such choice
// comes from one generator seeded with options::seed.  So the same seed, the same worker
// count and the same task code give the same run, event for event (see
// `trace`).
//
// Time is virtual: now_ns() on the driving thread is the simulation's clock.
// It advances by a small random cost per step (options::max_step_cost) and,
// when no task can run, jumps straight to the next timer: sleep_for(5s)
// costs nothing, and a timeout fires exactly at its deadline.  Use durations
// (sleep_for, wait_for) or weft::sim::now() for absolute deadlines: a
// time_point taken from std::chrono::steady_clock::now() is real time.
//
// Failures the driver reports (as exceptions from the blocking call):
//   deadlock_error     no task can run and no timer is armed, but the awaited
//                      task has not finished (an await cycle, a lost wake-up);
//   step_limit_error   one blocking call ran options::max_steps resume points
//                      (a livelock?).
//
// Thread safety: a simulation runtime belongs to the thread that created it.
// spawn, block_on, join, cancel and shutdown from any other thread throw
// weft::usage_error (a wake-up from another thread, e.g. event::set() with
// waiters, aborts with a message: it cannot throw there) -- except join() and
// cancel() of a task that has finished, which touch only the handle: they
// give the outcome and return false, as on a real runtime.  stats() and
// sim::stats() may be read from any thread.  Tasks of a simulation must not
// await handles of another runtime, or the reverse.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace weft {

class runtime;

namespace sim {

// How the driver picks the next task.
enum class policy : std::uint8_t {
  // A uniform random worker looks for work with the real workers' policy: its
  // own deque first (every 61st look the injection queue first), then the
  // injection queue, then up to 2n random victims, whose choice comes from the
  // generator.  A look that finds nothing is no step.
  random,
  // Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): every
  // task gets a random priority when first seen and the reachable task with
  // the highest priority runs; at pct_depth - 1 steps drawn at random from
  // [1, pct_steps] the task that is about to run drops below every other.  A
  // task that yields (yield(), or a checkpoint whose slice expired) also drops
  // to the bottom, so that spin-yield loops cannot starve the others.
  pct,
};

// One decision or observation of a simulation.  Tasks are named by a
// deterministic id (1, 2, ... in the order the driver first saw them), never
// by address.
struct event {
  enum class kind : std::uint8_t {
    step,  // `worker` resumes `task`; arg: 0 own deque, 1 injection queue, 2 + v: stole from worker
           // v
    slice,     // a checkpoint() of `task`: arg 1 = slice spent (re-queued), 0 = it runs on
    timer,     // a timer of `task` fired (sleep, or wait_for's deadline task)
    advance,   // no task could run: virtual time jumped to `time_ns`
    cancel,    // options::cancel_at: a cancellation delivered to `task` at this resume point
    finish,    // `task` completed; arg: 1 when it completed cancelled
    note,      // weft::sim::note(`text`) from `task`
    deadlock,  // see deadlock_error; `task` is the awaited one
    stop,      // shutdown began
  };
  kind what = kind::step;
  std::uint32_t worker = 0;   // virtual worker (step, slice, note; else 0)
  std::uint64_t step = 0;     // resume points so far
  std::uint64_t task = 0;     // 0: none
  std::uint64_t time_ns = 0;  // virtual time since the simulation began
  std::int64_t arg = 0;
  std::string text;  // note only

  // One line, e.g. "#12 t=5000000ns step w1 task 7 from=steal:0".
  std::string to_string() const;
  friend bool operator==(const event&, const event&) = default;
};

struct options {
  std::uint64_t seed = 1;
  policy schedule = policy::random;
  unsigned pct_depth = 3;            // PCT's d: d - 1 priority change points
  std::uint64_t pct_steps = 10'000;  // change points are drawn from [1, pct_steps]
  // Chance (percent) that a checkpoint() finds its slice spent and re-queues
  // the task; otherwise it runs on.  Checkpoints with nothing pending ask the
  // generator every time (the slice of a simulated step is never "fresh").
  unsigned slice_expiry_percent = 50;
  // Chance (percent) that a due timer fires before the next step while tasks
  // are ready to run (when none is ready, a due timer always fires).
  unsigned timer_first_percent = 50;
  // Each step advances virtual time by a uniform cost in [0, max_step_cost].
  // Negative counts as 0.  The virtual clock saturates at the end of
  // steady_clock's range (time_point::max()): a huge cost never wraps it.
  std::chrono::nanoseconds max_step_cost{2000};
  // k > 0: deliver a cancellation (cancel_kind::explicit_request, reason
  // "sim: cancel at resume point k") to the task resumed at the k-th resume
  // point (a step, or a checkpoint that runs on), just before it resumes.
  std::uint64_t cancel_at = 0;
  // 0: cancel_at counts the resume points of the whole run (every task's).
  // t > 0: it counts only those of the task with deterministic id t (1 is the
  // first task the driver sees: the task a block_on awaits when it spawns no
  // other first), and the cancellation goes to that task at its own k-th
  // resume point.  A fork frame's resume points count as its owning task's.
  std::uint64_t cancel_target = 0;
  // Bound on the resume points of one driving call (block_on, join,
  // shutdown, sim::run): step_limit_error beyond it.
  std::uint64_t max_steps = 50'000'000;
  // Timers beyond this much virtual time are never fired (a sleep of "forever"
  // would otherwise end at the end of the clock's range, 292 years); if only
  // such timers remain while a blocking call waits, that is a deadlock.
  // Negative counts as 0; nanoseconds::max() reaches the end of the clock.
  std::chrono::nanoseconds horizon{std::chrono::hours(24) * 365};
  // When set, every event is appended here (the caller owns the vector and
  // must keep it alive while the runtime runs).
  std::vector<event>* trace = nullptr;
};

// What a simulation did so far.
struct statistics {
  std::uint64_t resume_points = 0;  // steps + checkpoints that ran on
  std::uint64_t steps = 0;          // tasks taken from a queue and resumed
  std::uint64_t steals = 0;
  std::uint64_t timers_fired = 0;
  std::uint64_t slices_expired = 0;
  std::uint64_t tasks_seen = 0;   // ids handed out
  std::uint64_t virtual_ns = 0;   // virtual time since the simulation began
  bool cancel_delivered = false;  // options::cancel_at was reached
  std::uint64_t cancel_task = 0;  // ... and the id of the task it hit
  // Resume points of the task options::cancel_target names (0 when it names
  // none): how many values of cancel_at can hit it.
  std::uint64_t target_resume_points = 0;
};

// The failures a driving call reports.
class failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class deadlock_error : public failure {
 public:
  using failure::failure;
};
class step_limit_error : public failure {
 public:
  using failure::failure;
};

// Is `rt` a simulation runtime?
bool is_simulation(const runtime& rt) noexcept;

// Drive `rt` for at most `max_resume_points` resume points, or until no task
// can run and no timer (within the horizon) is armed, whichever comes first.
// Returns the resume points run.  From the owning thread, outside tasks;
// usage_error on a real runtime, on another thread, or inside a task.
std::uint64_t run(runtime& rt, std::uint64_t max_resume_points);

// The simulation's figures so far (zeros for a real runtime).  Any thread.
statistics stats(const runtime& rt) noexcept;

// Virtual now on a thread that is driving a simulation (inside its tasks),
// std::chrono::steady_clock::now() elsewhere.
std::chrono::steady_clock::time_point now() noexcept;

// Append a note to the trace of the simulation running the calling task (with
// that task's id); nothing elsewhere, or when the simulation records no trace.
void note(std::string text);

// Is the calling thread inside a task of a simulation?  (Lets test code pick
// virtual or wall time.)
bool in_simulation() noexcept;

}  // namespace sim
}  // namespace weft
