// SPDX-License-Identifier: MIT
// runtime/threads.hpp -- the runtime's threads: how many workers by default,
// their names, their start and stop hooks.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace weft::detail {

// What runtime_options::workers = 0 means on a threaded runtime: the
// WEFT_WORKERS environment variable if it holds a valid count, else the CPUs
// this process may run on (its affinity mask), lowered to what the cgroup v2
// CPU quota allows, at most runtime_options::max_workers, at least 1.
unsigned default_worker_count();

// The CPUs the cgroup CPU quota allows this process: the smallest
// ceil(quota / period) over its cgroup and every ancestor, in the cgroup v2
// hierarchy (cpu.max) and in a v1 "cpu" hierarchy (cpu.cfs_quota_us and
// cpu.cfs_period_us), whichever are mounted.  `mountinfo` is the text of
// /proc/self/mountinfo (where the hierarchies are mounted, and which part of
// each a mount shows), `proc_self_cgroup` that of /proc/self/cgroup (the
// process's cgroup in each hierarchy).  0 when no quota applies.  A quota
// below one CPU counts as 1.  Takes the texts, not the files, so that a test
// can describe a machine of its own.
unsigned cgroup_cpu_limit(std::string_view mountinfo, std::string_view proc_self_cgroup);

// Names the calling thread (at most 15 characters are kept: the kernel's
// limit), as top, perf and debuggers show it.  Best effort: a failure
// changes nothing else.
void name_this_thread(const char* name) noexcept;
// The same for a thread that the caller started.
void name_thread(std::thread& t, const char* name) noexcept;

// Runs a worker start or stop hook (runtime_options::on_worker_start/stop)
// if set; an exception from it is reported on stderr (`which` names the
// hook) and swallowed, so a faulty hook cannot take a worker down with work
// still queued on it.
void run_worker_hook(const std::function<void(unsigned)>& hook, unsigned worker,
                     const char* which) noexcept;

}  // namespace weft::detail
