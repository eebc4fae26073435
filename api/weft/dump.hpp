// SPDX-License-Identifier: MIT
// weft/dump.hpp -- what a running weft is doing: runtime::dump()'s list of
// live tasks, and the watchdog's report of a task that overstays a worker
// (runtime_options::track_tasks, runtime_options::watchdog).  docs/observability.md.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <vector>

#include "weft/errors.hpp"

namespace weft {

// runtime::dump(): a snapshot of the runtime's live tasks.  Each part is
// sampled in turn, so a task may change state while the dump is taken; a task
// is never read after it may have finished.
//
// With runtime_options::track_tasks every live task is listed (`complete`),
// with an id, its parent and its state.  Without it the dump lists every
// named task (spawn_options::name: named tasks are always in the registry)
// and the unnamed tasks the runtime finds in its own structures, as the
// shutdown report does: tasks running on a worker (by spawn site: a running
// task may finish at any moment), on the injection queue, sleeping, blocked
// in a list wait, and the tasks awaiting those.  Unnamed tasks queued on a
// worker's deque and unnamed tasks awaiting a running task are then not
// found.
struct task_dump {
  enum class task_state : std::uint8_t {
    running,    // on worker `worker`
    queued,     // ready, waiting for a worker (the injection queue)
    sleeping,   // in sleep_for / sleep_until, until `sleeping_until`
    blocked,    // in a list wait: event::wait, semaphore::acquire, shield, weft::blocking
    awaiting,   // co_await-ing the task `awaits_*` (its join handle)
    suspended,  // none of the above (tracked tasks only): not started yet (queued on a
                // deque), or suspended elsewhere (a task group's join, a fork-join)
  };
  // The last cancel request made on a tracked task (the newest one wins).
  struct cancel_info {
    std::string reason;  // "" when none was given
    cancel_kind kind = cancel_kind::explicit_request;
    std::source_location where;  // the cancel() call
    std::chrono::nanoseconds ago{0};
    bool pending = false;  // not yet delivered (still in the task's slot)
  };
  struct task_info {
    std::uint64_t id = 0;  // 1, 2, ... in spawn order (tracked tasks); 0: not tracked
    std::string name;      // spawn_options::name; "" for none (or not readable: running)
    task_state state = task_state::suspended;
    unsigned worker = 0;  // running: which worker
    std::source_location spawned_at;
    std::uint64_t parent_id = 0;  // the task that spawned it (tracked); 0: spawned from outside
    std::optional<std::chrono::steady_clock::time_point> sleeping_until;  // sleeping
    std::uint64_t awaits_id = 0;                                          // awaiting (tracked)
    std::string awaits_name;                                              // awaiting
    std::source_location awaits_spawned_at;                               // awaiting
    std::optional<cancel_info> cancel;  // tracked tasks with a cancel request
    // running: since its last resume point, as the timer thread sampled it
    // (to a tick of time_slice / 4, at least 50 us; none on a simulated or
    // driven runtime, which have no timer thread).
    std::optional<std::chrono::nanoseconds> since_resume;
    std::optional<std::chrono::nanoseconds> age;  // tracked: since its spawn
  };
  bool complete = false;  // runtime_options::track_tasks: every live task is listed
  std::vector<task_info> tasks;

  // A heading and one line per task, e.g.
  //   weft: 2 live task(s) (all tracked):
  //     #1 "server" spawned at app.cpp:10 (in int main()): awaiting #2 "poller"
  //     #2 "poller" spawned at app.cpp:20 (in app::task<void> app::serve()), parent #1:
  //     running on worker 0 for 1.2 s
  std::string to_string() const;
};

std::string_view to_string(task_dump::task_state s) noexcept;

// What the watchdog saw (runtime_options::watchdog).
struct watchdog_report {
  enum class kind : std::uint8_t {
    slow_resume,  // ran longer than watchdog_options::slow_resume without a resume point
    slow_cancel,  // kept running longer than watchdog_options::slow_cancel after a cancel
  };
  kind what = kind::slow_resume;
  unsigned worker = 0;
  std::uint64_t id = 0;  // a task in the registry (track_tasks, or named); else 0
  std::string name;      // likewise (read under the registry's lock); else ""
  std::source_location spawned_at;
  std::chrono::nanoseconds running_for{0};  // since its last resume point
  // slow_cancel: the request.
  std::string cancel_reason;
  cancel_kind cancel = cancel_kind::explicit_request;
  std::source_location cancel_where;
  std::chrono::nanoseconds since_cancel{0};

  // One line (no newline), e.g.
  //   weft: watchdog: task "crunch" spawned at app.cpp:42 has run 1.0 s on worker 1
  //   without a resume point
  std::string to_string() const;
};

struct watchdog_options {
  // A task that runs this long without a resume point (co_await, checkpoint(),
  // a finished resume) is reported, once per such stretch, like asyncio's
  // slow-callback warning.  0 disables.  Default 1 s: a time slice is 2 ms,
  // so a task that runs a second without a resume point holds a worker back
  // for 500 slices, and its cancellation waits as long.
  std::chrono::milliseconds slow_resume{1000};
  // A running task that a cancel request reached and that keeps running this
  // long without taking it (no cancellation point) is reported, once per
  // request.  0 disables.  Default 1 s.
  std::chrono::milliseconds slow_cancel{1000};
  // Receives each report on the runtime's timer thread, holding no lock of
  // the runtime; it must not block for long (timers wait meanwhile) and must
  // not throw (an exception is reported on stderr and ignored).  Empty: one
  // line on stderr (watchdog_report::to_string).
  std::function<void(const watchdog_report&)> hook;
};

}  // namespace weft
