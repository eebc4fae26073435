// SPDX-License-Identifier: MIT
// weft/runtime.hpp -- the runtime: worker threads, their deques, the timer.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/detail/task_core.hpp"
#include "weft/dump.hpp"
#include "weft/sim.hpp"
#include "weft/stats.hpp"
#include "weft/task.hpp"
#include "weft/trace.hpp"

namespace weft {

// What shutdown() still waits for, after runtime_options::shutdown_report_after
// (and again each time that much more passes): the tasks it could find, each
// with the place it was spawned (the spawn call's `where`).
struct shutdown_report {
  enum class task_state : std::uint8_t {
    running,   // on a worker (a loop without a cancellation point, or blocking its thread)
    queued,    // ready, waiting for a worker
    sleeping,  // in sleep_for / sleep_until
    blocked,   // in a list wait: event::wait, semaphore::acquire, shield, weft::blocking
    awaiting,  // awaiting (co_await) the task named by `awaits`
  };
  struct task_entry {
    std::source_location spawned_at;
    task_state state = task_state::running;
    unsigned worker = 0;          // running: which worker
    std::source_location awaits;  // awaiting: where the awaited task was spawned
    // The names given at spawn (spawn_options::name), "" for none.  A running
    // task is named by its spawn site only: the report never reads the
    // memory of a task that may finish while it looks.
    std::string name;
    std::string awaits_name;  // awaiting: the awaited task's name
  };
  std::chrono::milliseconds waited{0};  // since shutdown began
  // Running, queued, sleeping and blocked tasks, each followed by the tasks
  // awaiting it (if it is not running).  Tasks awaiting a running task are
  // not found: a running task may finish at any moment.
  std::vector<task_entry> tasks;

  // A heading and one line per task, e.g.
  //   weft: shutdown has waited 5.0 s for 2 task(s):
  //     task "poller" spawned at src/app.cpp:42 (in void app::poll()): sleeping
  //     task spawned at src/app.cpp:17 (in int main()): awaiting the task "poller" spawned at
  //     src/app.cpp:42
  std::string to_string() const;
};

std::string_view to_string(shutdown_report::task_state s) noexcept;

struct runtime_options {
  // The largest worker count a runtime accepts (real or simulated).
  static constexpr unsigned max_workers = 4096;
  // Worker threads.  0: the WEFT_WORKERS environment variable if set, else the
  // number of CPUs this process may run on (its affinity mask), lowered to
  // what its cgroup CPU quota allows (cgroup v2 cpu.max, or v1
  // cpu.cfs_quota_us: a container started with --cpus=2 gets 2 workers), at
  // most max_workers (runtime::default_workers()).  In a simulation: virtual
  // workers, 0 meaning 4 (never taken from the machine, so that a seed
  // replays anywhere).  Above max_workers the runtime's constructor throws
  // std::invalid_argument.
  unsigned workers = 0;
  // Threads of the pool that runs weft::blocking calls (weft/blocking.hpp):
  // started when a call finds no idle one, leaving after 10 s idle; calls
  // beyond the bound queue (FIFO).  0: default_blocking_threads (64: blocking
  // calls mostly wait on I/O rather than use a core, so the bound is there
  // to cap threads and their stacks, not CPU use; asyncio's default executor
  // allows min(32, CPUs + 4), Tokio 512).  Above max_blocking_threads the
  // runtime's constructor throws std::invalid_argument.
  static constexpr unsigned default_blocking_threads = 64;
  static constexpr unsigned max_blocking_threads = 4096;
  unsigned blocking_threads = 0;
  // How long a task may run before checkpoint() reschedules it.  A pending
  // cancellation does not wait for the slice: the next checkpoint() takes it.
  // 0 means the default (2 ms); negative throws std::invalid_argument from the
  // runtime's constructor; huge values saturate (microseconds::max(): the
  // slice never expires).  time_slice() reports the value given.
  std::chrono::microseconds time_slice{2000};
  // How long a worker that ran out of work keeps looking for more (spinning,
  // yielding its core to other threads between looks) before it parks.  A
  // task woken (e.g. by cancel()) while its worker still spins starts within
  // about a microsecond; waking a parked worker costs a futex wake and the
  // kernel's wake-up of the thread, 10-30 us on a 2-vCPU VM.  Spinning
  // burns up to that much CPU each time a worker runs dry (oneTBB's workers
  // spin 1-3 ms); 0 parks at once (after a few dozen looks), for programs
  // that value idle CPU over wake-up latency.  Negative throws
  // std::invalid_argument from the runtime's constructor; huge values
  // saturate (microseconds::max(): an idle worker never parks, except during
  // shutdown).  See docs/architecture.md, "Parking".
  std::chrono::microseconds idle_spin{1000};
  // Called with an exception that escaped a task nobody awaited or joined
  // (its handle was dropped).  Runs on a worker; must not throw.  Default:
  // print it on stderr.
  std::function<void(std::exception_ptr)> unhandled_exception;
  // Called on each worker thread (with its index, 0 .. workers-1) when it
  // starts, before it runs any task, and when it stops, after its last task
  // and before the thread ends (during shutdown): to pin it to a CPU, set its
  // priority, attach a profiler's or a tracer's thread state.  The threads are
  // named "weft-w0", "weft-w1", ... before on_worker_start runs (it may rename
  // them).  The constructor does not wait for the start hooks, so tasks may
  // be spawned before every one has run; the stop hooks have all returned
  // when shutdown() returns.  An exception from a hook is reported on stderr
  // and ignored.  Neither runs on a simulation or a driven runtime (no
  // thread of their own).
  std::function<void(unsigned worker)> on_worker_start;
  std::function<void(unsigned worker)> on_worker_stop;
  // shutdown() (and the destructor) waits for every task to end, including
  // one that refuses its "shutdown" cancellation or loops without a
  // cancellation point.  Once it has waited this long, and again each time
  // this much longer passes, it reports what it still waits for: to
  // on_shutdown_report if set, else on stderr (shutdown_report::to_string).
  // 0, or a value beyond the clock's range (milliseconds::max()): never
  // report.  Negative: the runtime's constructor throws
  // std::invalid_argument.  Not used by a simulation.
  std::chrono::milliseconds shutdown_report_after{5000};
  // Receives the report, on the thread that called shutdown() (or destroys
  // the runtime), holding no lock of the runtime.  Must not shut the runtime
  // down or destroy it (it would wait for itself); an exception it throws is
  // reported on stderr and ignored.
  std::function<void(const shutdown_report&)> on_shutdown_report;
  // Set: a deterministic simulation instead of worker threads (weft/sim.hpp).
  // time_slice does not apply then (the generator decides slice expiry).
  std::optional<sim::options> simulation;
  // True: a driven runtime, for a program that has its own event loop
  // (poll, epoll, io_uring, a GUI toolkit's).  It starts no thread at all:
  // no worker, no timer thread.  Its tasks run on the thread that drives it:
  // runtime::run_ready() from the loop, or a blocking call (block_on, join,
  // shutdown, the destructor), which drives until it is done.  Everything
  // else is the threaded runtime's API, from any thread: spawn, cancel, the
  // sync primitives, sleeps and timeouts (in real time).  One worker:
  // `workers` must be 0 or 1, and a simulation cannot be driven (both throw
  // std::invalid_argument).  docs/integration.md, "A foreign event loop
  // drives weft".
  bool driven = false;
  // ---- task dump and watchdog ----
  // True: every live task is in a registry (one per worker, so spawns on
  // different workers take no shared lock), and runtime::dump() lists them
  // all with ids, parents, states and cancel requests.  Costs a clock read,
  // an id and a small allocation per spawn, and a lock per spawn and finish.
  // False (the default): only named tasks (spawn_options::name) are in the
  // registry, so that dump(), the watchdog and the shutdown report name a
  // running named task; an unnamed spawn and finish cost nothing more, and
  // dump() lists the unnamed tasks the runtime finds without a registry
  // (see task_dump).
  bool track_tasks = false;
  // Reports a task that runs too long without a resume point, or after a
  // cancel request (weft/dump.hpp).  Watched by the timer thread: not on a
  // simulated or driven runtime.
  watchdog_options watchdog;
  // ---- trace export ----
  // Set: record a Chrome trace-event JSON file (weft/trace.hpp) written at
  // shutdown.  Unset: the WEFT_TRACE environment variable, if set, gives the
  // path (with the default ring capacity).  A simulation traces in virtual
  // time; a driven runtime's worker is its driving thread.
  std::optional<trace_options> trace;
};

namespace detail {
struct runtime_access;
}

// A pool of worker threads running weft tasks.  Not copyable or movable.
//
// Thread safety: spawn(), block_on() (from non-worker threads) and shutdown()
// may be called from any thread concurrently -- except on a simulation
// runtime, which belongs to the thread that created it (weft/sim.hpp).
class runtime {
 public:
  // `where` (defaulted: the line that constructs the runtime) is the location
  // of the "shutdown" cancellations when the destructor shuts it down.
  // Throws std::invalid_argument for options it refuses (see runtime_options)
  // before starting anything, and std::system_error when a thread (a worker
  // or the timer thread) cannot be started: then the threads it had started
  // are stopped and joined and everything is freed before the error reaches
  // the caller.
  explicit runtime(runtime_options options = {},
                   std::source_location where = std::source_location::current());
  // Does shutdown().  Must not run on one of this runtime's workers (aborts
  // with a message: it would join itself).  Handles of its tasks may outlive
  // it (join_handle).  When the shutdown reported tasks that can never finish
  // (their frames are leaked), the runtime's bookkeeping is kept too, so that
  // their handles stay safe to use.
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // Spawn from any thread (asyncio.create_task).  The task starts promptly.
  // After shutdown() began, returns a handle that is already cancelled with
  // reason "shutdown" (the body never runs).  `where` (defaulted: the line
  // that spawns) names the task in the shutdown report.
  template <class T>
  join_handle<T> spawn(task<T> t, std::source_location where = std::source_location::current()) {
    return detail::spawn_on<T>(impl_, std::move(t), where);
  }
  // With options (spawn_options: a name).
  template <class T>
  join_handle<T> spawn(task<T> t, spawn_options opts,
                       std::source_location where = std::source_location::current()) {
    return detail::spawn_on<T>(impl_, std::move(t), where, &opts);
  }

  // Run `t` to completion and return its value, or rethrow its exception /
  // cancelled_error (asyncio.run).  From a thread that is not a weft worker;
  // throws usage_error on a worker.
  template <class T>
  T block_on(task<T> t, std::source_location where = std::source_location::current()) {
    detail::require_not_worker(impl_, "weft::runtime::block_on");
    join_handle<T> h = spawn(std::move(t), where);
    return h.join();
  }

  // Cancel every live task with reason "shutdown" (kind shutdown), let each
  // run its cleanup, then join the workers.  Steps, by name, in
  // docs/architecture.md.  Idempotent; throws usage_error on a worker.
  // The "shutdown" cancellations carry `where` (the line that calls
  // shutdown()) as their location; a second call changes nothing.
  void shutdown(std::source_location where = std::source_location::current());

  // ---- a driven runtime (runtime_options::driven) ----
  //
  // Runs what is ready on the calling thread: fires the timers that are due,
  // then resumes ready tasks until none is ready or `budget` has passed
  // (checked between resume points, so a task that runs without one, or a
  // checkpoint()'s time slice, can overstay it).  Returns the number of
  // tasks resumed.  Returns 0 at once while another thread drives the runtime
  // (a join() or shutdown() there).  Throws usage_error on a runtime that is
  // not driven, or inside one of its tasks.
  std::size_t run_ready(std::chrono::nanoseconds budget = std::chrono::nanoseconds::max());
  // A file descriptor that is readable while the runtime has work: a task is
  // ready, or a timer is due.  Register it for reading with poll, epoll or
  // io_uring and call run_ready() when it is; run_ready() makes it
  // unreadable again until more work comes (level-triggered, never consumed
  // by the caller: do not read it).  Owned by the runtime, valid until it is
  // destroyed.  -1 on a runtime that is not driven.
  int wakeup_fd() const noexcept;
  // The deadline of the earliest armed timer (a sleep, a timeout), if any:
  // for a loop that prefers a poll timeout to watching wakeup_fd() for
  // timers.  nullopt on a runtime that is not driven.
  std::optional<std::chrono::steady_clock::time_point> next_timer() const;
  bool driven() const noexcept;

  unsigned workers() const noexcept;
  std::chrono::microseconds time_slice() const noexcept;
  // The worker count that runtime_options::workers = 0 gives a threaded
  // runtime started now (WEFT_WORKERS, the affinity mask, the cgroup quota).
  static unsigned default_workers();

  // What the workers did and how long cancellations took (weft/stats.hpp):
  // per worker, outside the workers, in total.  From any thread, at any
  // time; exact once the runtime is quiet, recent values while tasks run.
  // Reads each worker's counters (relaxed loads) and allocates the result.
  runtime_stats stats() const;

  // The live tasks, now (weft/dump.hpp).  From any thread, a worker too;
  // on a simulation, from its owner thread only.  The environment variable
  // WEFT_DUMP_ON=SIGUSR1 (or another signal) prints it for every runtime.
  task_dump dump() const;

 private:
  friend struct detail::runtime_access;
  detail::runtime_impl* impl_;
};

namespace diagnostics {
// Coroutine frames allocated by weft and not yet freed, process-wide.  Exact
// only when no runtime is running tasks; tests use it to prove no frame leaks.
std::int64_t live_frames() noexcept;
}  // namespace diagnostics

}  // namespace weft
