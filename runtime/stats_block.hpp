// SPDX-License-Identifier: MIT
// runtime/stats_block.hpp -- the counters behind runtime::stats() and the
// hooks that feed them (stats.cpp).  Internal to runtime/.
//
// Every figure of a worker is written by one thread at a time -- its owner
// (the worker's thread, the thread driving a driven runtime or a simulation)
// or, for longest_run_ns, the timer thread -- so a bump is a relaxed load and
// store (no locked RMW).  The runtime's `outside` block is written by any
// thread that is not a worker: RMW there (those paths take a lock anyway).
// stats() reads everything with relaxed loads from any thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "weft/stats.hpp"

namespace weft {
class cancelled_error;
}

namespace weft::detail {

struct worker;
struct runtime_impl;
struct task_core;
struct cancel_request;

struct stat_counter {
  std::atomic<std::uint64_t> v{0};
  // One writer at a time (see the file comment).
  void bump(std::uint64_t n = 1) noexcept {
    // Relaxed: a statistic; stats() reads a recent value, nothing else.
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Any thread (the outside block).
  void add(std::uint64_t n = 1) noexcept {
    // Relaxed: a statistic, as above.
    v.fetch_add(n, std::memory_order_relaxed);
  }
  std::uint64_t get() const noexcept {
    // Relaxed: a statistic, as above.
    return v.load(std::memory_order_relaxed);
  }
};

struct stat_histogram {
  stat_counter counts[latency_histogram::kBuckets];
  stat_counter sum_ns;
  stat_counter max_ns;
  // `shared`: the outside block (RMW); else one writer (bump).
  void record(std::uint64_t ns, bool shared) noexcept;
  void read_into(latency_histogram& out) const noexcept;
};

// A worker's figures (in `worker`), or the outside block (in runtime_impl).
struct stats_block {
  stat_counter spawned, completed;  // outside only: a worker counts in worker_hot
  stat_counter cancelled_by[kCancelKinds];
  stat_counter failed, steals, steal_attempts, injected, parks, wakeups;
  stat_counter busy_ns;         // finished active stretches (plus active_since's)
  stat_counter longest_run_ns;  // written by the timer thread / the driver
  stat_histogram to_delivery, delivery_to_finish, to_finish;
};

// What a worker keeps besides its figures.
struct worker_meter {
  stats_block counts;
  // now_ns() when the current active stretch began; 0 while idle.  Owner
  // writes (relaxed), stats() adds the stretch in progress.
  std::atomic<std::uint64_t> active_since{0};
  bool idle = true;  // owner only: the worker loop's state
  // Timer thread only: the resumes value it last saw while the worker ran a
  // task, and when it first saw it (0: not running then).
  std::uint64_t run_resumes = 0;
  std::uint64_t run_since_ns = 0;
  // Owner only: the latency stamps of the cancellation delivered last, until
  // its cancelled_error is made (cancelled_error_of) or the unstarted task
  // is completed: the request, and the task it was taken for.
  const cancel_request* stash_req = nullptr;
  const task_core* stash_task = nullptr;
  std::uint64_t stash_requested_ns = 0;
  std::uint64_t stash_delivered_ns = 0;
};

// ---- hooks (stats.cpp); each says where it is called from ----

// runtime_impl::inject, wake_one / wake_all (a sleeper was woken): on the
// calling thread's worker, or the outside block.
void meter_inject(runtime_impl* rt) noexcept;
void meter_wakes(runtime_impl* rt, std::uint64_t n) noexcept;
// The worker loop: found work after an idle stretch / begins an idle
// stretch (32 fruitless looks) at `now`, or leaves.
void meter_active(worker* w) noexcept;
void meter_idle(worker* w, std::uint64_t now) noexcept;
// The timer thread's tick, per worker: `resumes` as it just read it.
void meter_timer_sample(worker* w, std::uint64_t resumes, std::uint64_t now) noexcept;
// A driven runtime's or a simulation's resume that took `ns`: busy time and
// longest_run (exact there).
void meter_run(worker* w, std::uint64_t ns) noexcept;
// hand_over, under `core`'s hook lock, before it stores a request into an
// empty `pending`: the request time.
void meter_request(task_core* core) noexcept;
// reclaim_forwarded: the request left on `from` goes to `to`'s empty slot.
void meter_move_request(task_core* from, task_core* to) noexcept;
// A request was taken from `slot`'s pending slot for `running` (the task
// that receives it): the delivery.  Shutdown: the "shutdown" produced for
// `running`.  Both on the delivering thread.
void meter_delivery(task_core* slot, task_core* running, const cancel_request* r) noexcept;
void meter_shutdown_delivery(task_core* running, const cancel_request* r) noexcept;
// cancelled_error_of (task: null, the running task) and meter_unstarted:
// the stamps stashed for `req` taken for `task`, if they are on this thread.
void meter_unstash(const cancel_request* req, const task_core* task, std::uint64_t* requested,
                   std::uint64_t* delivered) noexcept;
// park_cancellation: the stamps of `e` come back with the request `req` a
// construct parks again for the running task.
void meter_restash(const cancelled_error& e, const cancel_request* req) noexcept;
// complete_unstarted: `core` finished cancelled by `req` without running.
void meter_unstarted(task_core* core, const cancel_request* req) noexcept;

}  // namespace weft::detail
