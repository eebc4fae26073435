// SPDX-License-Identifier: MIT
// runtime/dump_impl.hpp -- the task dump, the task registry, the watchdog and
// WEFT_DUMP_ON (dump.cpp): what the rest of the runtime calls.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <source_location>
#include <string>
#include <vector>

#include "runtime_impl.hpp"

namespace weft::detail {

// What the walk of the runtime's own structures found (walk_tasks): the walk
// the shutdown report and dump() share.
struct found_task {
  // The task.  For a running one only a pointer to compare (it may finish
  // and be freed at any moment): never followed.
  const task_core* core = nullptr;
  shutdown_report::task_state state = shutdown_report::task_state::running;
  unsigned worker = 0;  // running
  std::source_location site;
  std::string name;                   // "" for a running task (not readable)
  std::uint64_t deadline = 0;         // sleeping: now_ns() clock
  const task_core* awaits = nullptr;  // awaiting: the awaited task (compare only)
  std::source_location awaits_site;
  std::string awaits_name;
};

// The tasks running on workers not parked (`parked[i]`), on the injection
// queue, in the timer heap and in the blocked list, and the tasks awaiting
// the latter (in that order).  Takes inject_mutex, timer_mutex and
// blocked_mutex in turn.  With `registries_locked` (the caller holds every
// registry lock), a running task found in the registry is named.
std::vector<found_task> walk_tasks(runtime_impl* rt, const std::vector<char>& parked,
                                   bool registries_locked);

// Every registry lock, in index order (dump(), the shutdown report).  Empty
// when the registry is off.
std::vector<std::unique_lock<std::mutex>> lock_registries(runtime_impl* rt);

// start(): the registry, the watchdog's thresholds, WEFT_DUMP_ON.
void dump_start(runtime_impl* rt);
// The runtime's constructor / destructor: the runtimes WEFT_DUMP_ON dumps.
// Unregistering waits for a dump of this runtime in progress.
void dump_register_runtime(runtime_impl* rt) noexcept;
void dump_unregister_runtime(runtime_impl* rt) noexcept;

// submit_spawn with the registry on: track `core` (not yet published),
// spawned by worker `w` (null: from another thread).  Without memory for the
// extras the task stays untracked.
void registry_add(runtime_impl* rt, worker* w, task_core* core) noexcept;
// count_finish of a tracked task (core->tracked), before it is marked done.
void registry_remove(task_core* core) noexcept;

// hand_over, under `core`'s hook lock, before the request is stored (after
// that the task may take and free it): remember it for dump() (tracked
// tasks) and for the watchdog (when `core` runs now).
void note_cancel(task_core* core, const cancel_request* req) noexcept;

// The timer thread, every tick while a worker is busy, holding timer_mutex
// as `lk` (unlocked around the hook calls).
void watchdog_tick(runtime_impl* rt, std::uint64_t now, std::unique_lock<std::mutex>& lk);

// runtime::dump().
task_dump make_dump(runtime_impl* rt);

namespace testing {
// Where WEFT_DUMP_ON's thread writes its text (default: stderr); empty
// restores stderr.  For tests.
void set_dump_sink(std::function<void(const std::string&)> sink);
}  // namespace testing

}  // namespace weft::detail
