// weft/runtime.hpp -- the runtime: worker threads, their deques, the timer.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <source_location>
#include <optional>
#include <utility>

#include "weft/detail/core.hpp"
#include "weft/sim.hpp"
#include "weft/task.hpp"

namespace weft {

struct runtime_options {
  // The largest worker count a runtime accepts (real or simulated).
  static constexpr unsigned max_workers = 4096;
  // Worker threads.  0: the WEFT_WORKERS environment variable if set, else the
  // number of CPUs this process may run on (its affinity mask), at most
  // max_workers.  In a simulation: virtual workers, 0 meaning 4 (never taken
  // from the machine, so that a seed replays anywhere).  Above max_workers the
  // runtime's constructor throws std::invalid_argument.
  unsigned workers = 0;
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
  // kernel's wake-up of the thread, 10-30 us on the project's VM.  Spinning
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
  // Set: a deterministic simulation instead of worker threads (weft/sim.hpp).
  // time_slice does not apply then (the generator decides slice expiry).
  std::optional<sim::options> simulation;
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
  // with a message: it would join itself).
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // Spawn from any thread (asyncio.create_task).  The task starts promptly.
  // After shutdown() began, returns a handle that is already cancelled with
  // reason "shutdown" (the body never runs).
  template <class T>
  join_handle<T> spawn(task<T> t) {
    return detail::spawn_on<T>(impl_, std::move(t));
  }

  // Run `t` to completion and return its value, or rethrow its exception /
  // cancelled_error (asyncio.run).  From a thread that is not a weft worker;
  // throws usage_error on a worker.
  template <class T>
  T block_on(task<T> t) {
    detail::require_not_worker(impl_, "weft::runtime::block_on");
    join_handle<T> h = spawn(std::move(t));
    return h.join();
  }

  // Cancel every live task with reason "shutdown" (kind shutdown), let each
  // run its cleanup, then join the workers.  Steps, by name, in
  // docs/architecture.md.  Idempotent; throws usage_error on a worker.
  // The "shutdown" cancellations carry `where` (the line that calls
  // shutdown()) as their location; a second call changes nothing.
  void shutdown(std::source_location where = std::source_location::current());

  unsigned workers() const noexcept;
  std::chrono::microseconds time_slice() const noexcept;

  // Counters, summed over the workers; approximate while tasks run.
  struct counters {
    std::uint64_t steals = 0;     // successful steals
    std::uint64_t parks = 0;      // times a worker went to sleep
    std::uint64_t injected = 0;   // tasks submitted from outside the workers
  };
  counters stats() const noexcept;

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
