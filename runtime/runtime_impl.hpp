// SPDX-License-Identifier: MIT
// runtime/runtime_impl.hpp -- the compiled runtime's private structures.
//
// Ownership: runtime_impl owns the workers, the injection queue, the idle
// (parking) state and the timer.  Each field says who writes it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <thread>
#include <vector>

#include "blocking_pool.hpp"
#include "stats_block.hpp"
#include "weft/detail/deque.hpp"
#include "weft/detail/mutant.hpp"
#include "weft/detail/task_core.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {

inline constexpr std::size_t kCacheLine = 128;  // two lines: adjacent-line prefetch

struct sim_driver;  // sim_driver.hpp: the deterministic simulation

// A driven runtime's state (runtime_options::driven; driven.cpp): no thread
// of its own, one worker that the driving thread runs.
struct loop_driver {
  // wakeup_fd(): an epoll instance watching event_fd (written when work
  // arrives while nobody drives) and timer_fd (armed at the earliest timer).
  int epoll_fd = -1;
  int event_fd = -1;
  int timer_fd = -1;
  // Held by the thread that drives (run_ready, a join, shutdown): one at a
  // time, since the one worker's deque and caches have one owner.
  std::mutex drive_mutex;
  // Under drive_mutex: when the running task's slice began (checkpoint()),
  // and the deadline timer_fd is armed at (kEndOfTime: disarmed).
  std::uint64_t slice_began = 0;
  std::uint64_t armed_deadline = 0;
  ~loop_driver();
};

// Blocks a worker's frame cache keeps per size class (frame_cache::limit).
inline constexpr std::uint32_t kFramesPerClass = 4096;

// One list of the task registry (dump.cpp): tracked tasks' extras.
struct alignas(kCacheLine) task_registry {
  std::mutex mu;
  task_extras* head = nullptr;  // guarded by mu
};

struct worker;
void free_frame_cache(worker* w) noexcept;     // alloc.cpp; the worker is destroyed
void free_fork_stack(worker_hot* w) noexcept;  // fork.cpp; likewise
// fork.cpp: a fork-join frame taken from a queue (is_fork_item) resumes on
// `w`; what to resume.
std::coroutine_handle<> fork_resume_item(worker* w, task_core* item) noexcept;
// The task a queue item belongs to: itself, or the task that awaits the
// fork tree of a fork-join frame (fork.cpp).
task_core* owner_of_item(task_core* item) noexcept;

struct alignas(kCacheLine) worker : worker_hot {
  unsigned index = 0;
  // Set on the virtual workers of a simulation (never changes): count_finish
  // tells the driver about completions.  Null on real workers.
  sim_driver* sim = nullptr;
  // Non-null: a driven runtime (options.driven).  Set by start(), never
  // changes after; freed with the runtime.
  std::unique_ptr<loop_driver> loop;
  std::uint64_t rng = 0;   // victim choice of the threaded runtime (xorshift); owner only
  std::uint32_t tick = 0;  // owner only: when to look at the injection queue
  // Owner only.  Pauses before the next steal attempt after a steal that found
  // nothing to run (after_run); 0 again once find_work gives a task that
  // runs, or one from this worker's own deque or the injection queue.
  std::uint32_t steal_backoff = 0;

  // Written by the owner (relaxed), read by the timer thread: changes on every
  // resume from the worker loop; unchanged for a whole slice = overstaying.
  std::atomic<std::uint64_t> resumes{0};
  // Parking: 0 = parked / about to park, 1 = woken.  Written by wakers
  // (release) and the owner; the owner waits on it.
  std::atomic<std::uint32_t> wake_token{0};
  // ---- metrics (runtime::stats; stats_block.hpp, stats.cpp) ----
  worker_meter meter;

  // Timer-thread state for the slice check (timer thread only).
  std::uint64_t seen_resumes = 0;
  std::uint64_t seen_since_ns = 0;

  std::thread thread;

  // ---- task dump and watchdog (dump.cpp) ----
  // Timer thread only: the stretch the watchdog watches (the running task
  // and `resumes` when it began) and what it reported of it.
  task_core* wd_task = nullptr;
  std::uint64_t wd_resumes = 0;
  std::uint64_t wd_since_ns = 0;
  bool wd_slow_reported = false;
  bool wd_cancel_reported = false;
  // The last cancel request made on the task running here (note_cancel, on
  // the cancelling thread, when the watchdog watches cancels): guarded by
  // wd_mutex.  wd_cancel_task is compared, never followed.
  std::mutex wd_mutex;
  task_core* wd_cancel_task = nullptr;
  std::uint64_t wd_cancel_ns = 0;
  // `resumes` when the request was noted: the tick reports only while the
  // worker is still in that resume (the stretch the request reached).
  std::uint64_t wd_cancel_resumes = 0;
  std::string wd_cancel_reason;
  std::source_location wd_cancel_where;
  cancel_kind wd_cancel_kind = cancel_kind::explicit_request;
  // Relaxed sample of when the current stretch began (the watchdog writes
  // it; dump() reads it for since_resume).  0: not known.
  std::atomic<std::uint64_t> stretch_since_ns{0};

  ~worker() {
    free_frame_cache(this);
    free_fork_stack(this);
  }
};

// Trace export (trace.cpp, trace.hpp): the state behind runtime_impl::trace.
struct trace_state;
struct trace_state_deleter {
  void operator()(trace_state* s) const noexcept;
};

struct runtime_impl {
  runtime_options options;
  std::vector<std::unique_ptr<worker>> workers;
  unsigned worker_count = 0;
  std::uint64_t slice_ns = 0;
  std::uint64_t idle_spin_ns = 0;
  // Non-null: a simulation (options.simulation), driven by its owner thread;
  // no worker or timer thread runs.  Set by start(), never changes after.
  sim_driver* sim = nullptr;
  // Non-null: a driven runtime (options.driven).  Set by start(), never
  // changes after; freed with the runtime.
  std::unique_ptr<loop_driver> loop;

  // ---- injection queue: tasks from outside the workers, yields, wake-ups ----
  std::mutex inject_mutex;
  std::deque<task_core*> injected;  // guarded by inject_mutex
  // Set under inject_mutex by shutdown's drain once nothing is left: a spawn
  // from outside that comes later completes at once as cancelled instead of
  // being queued where no worker will ever look.
  bool closed = false;  // guarded by inject_mutex
  // Tasks spawned from outside the workers minus tasks finished outside them
  // (with the workers' spawned - finished: the shutdown report).  Relaxed counter.
  std::atomic<std::int64_t> outside_live{0};
  // Sleeps that timer_arm accepted and whose task has not yet resumed from
  // them (sleep_resume).  Unlike the timer heap, it still counts a sleep that
  // a cancel or the timer has ended but whose task is not queued yet, so the
  // shutdown drain cannot close the injection queue in that window.
  std::atomic<std::int64_t> sleeps_unfinished{0};
  // Number of tasks in `injected`; lets workers skip the mutex when empty.
  std::atomic<std::int64_t> injected_count{0};
  // inject() calls in flight from threads that are not this runtime's
  // workers; ~runtime waits for 0 before it frees the runtime.
  std::atomic<std::int64_t> foreign_injections{0};

  // ---- parking ----
  std::mutex idle_mutex;
  std::vector<worker*> sleepers;  // guarded by idle_mutex
  // Number of workers parked or about to park (announced).  The parking Dekker
  // pair: a worker increments it (seq_cst) then re-checks every queue; an
  // injector publishes work then reads it (seq_cst).
  std::atomic<std::uint32_t> num_sleepers{0};
  // Bumped on every wake; shutdown's drain uses it to see a stable idle state.
  std::atomic<std::uint64_t> wake_generation{0};
  std::condition_variable drain_cv;  // with idle_mutex: a worker parked while stopping

  // ---- lifecycle ----
  std::atomic<bool> stopping{false};  // shutdown began
  std::atomic<bool> exiting{false};   // workers leave their loop
  // Where the runtime was built, and where its shutdown was asked for: the
  // location of every "shutdown" cancellation.  created_at: set before the
  // workers start.  shutdown_at: written once by stop() (or the simulation's
  // stop) before `stopping` is stored; read only through shutdown_request()
  // and shutdown_cancellation(), which load `stopping` with acquire first.
  std::source_location created_at;
  std::source_location shutdown_at;
  std::mutex shutdown_mutex;  // serialises shutdown() callers
  bool shut_down = false;     // guarded by shutdown_mutex
  // Tasks the shutdown found that can never finish (report_stuck).  Then
  // ~runtime keeps this structure alive (keep_remains): their handles still
  // read `rt`.  Guarded by shutdown_mutex; read by ~runtime after stop().
  std::int64_t stuck_tasks = 0;

  // ---- metrics (runtime::stats; stats_block.hpp, stats.cpp) ----
  // What threads that are not workers did (RMW: any thread writes it).
  stats_block outside_meter;
  // now_ns() when shutdown began: the request time of every "shutdown"
  // cancellation.  Written by begin_stop before its seq_cst store of
  // `stopping`; read only after an acquire load of `stopping` saw true.
  std::uint64_t shutdown_began_ns = 0;

  // ---- timer (sleep_for, time slices) ----
  std::mutex timer_mutex;
  std::condition_variable timer_cv;
  std::vector<timer_node*> heap;  // guarded by timer_mutex; min-heap on deadline
  bool timer_exit = false;        // guarded by timer_mutex
  bool timer_idle = false;        // guarded by timer_mutex: waiting with no busy worker
  std::thread timer_thread;

  // ---- blocked list waits (event, semaphore, watchers): shutdown interrupts them ----
  std::mutex blocked_mutex;
  intrusive_list<list_wait, &list_wait::reg_next, &list_wait::reg_prev> blocked;  // blocked_mutex

  blocking_pool blocking;  // weft::blocking's threads (blocking.cpp); stopped by stop()

  // ---- task dump and watchdog (dump.cpp) ----
  // The task registry: every task under options.track_tasks, else the
  // named ones.  One list per worker, where the tasks that worker spawns
  // go, and one (index worker_count) for tasks spawned from other threads.
  // Set by start() (dump_start), before any task exists.
  std::unique_ptr<task_registry[]> registries;
  std::atomic<std::uint64_t> next_task_id{1};  // registry ids; relaxed counter
  // options.watchdog in ns (0: off).  Set by start(), never change after.
  std::uint64_t wd_slow_ns = 0;
  std::uint64_t wd_cancel_ns = 0;
  // ---- trace export (trace.cpp) ----
  // Non-null while tracing (runtime_options::trace or WEFT_TRACE): the
  // workers' rings (also in worker_hot::trace), the other threads' buffer and
  // the file.  Set by start() before any thread runs; never changes after.
  std::unique_ptr<trace_state, trace_state_deleter> trace;

  // ---- methods (runtime.cpp / timer.cpp / sync.cpp) ----
  bool register_blocked(list_wait* node) noexcept;  // false: stopping (refused)
  void unregister_blocked(list_wait* node) noexcept;
  void cancel_blocked() noexcept;
  bool blocked_empty() noexcept;
  // Creates the workers and starts their threads and the timer thread.  If
  // one fails to start, stops and joins those already started and rethrows
  // (abandon_start); the caller then frees the runtime.
  void start();
  void abandon_start() noexcept;
  void worker_main(worker* w);
  // What find_work found: the task (null: nothing) and where from: the
  // worker's own deque, the injection queue, or the deque of worker `v`
  // (kVictim + v; after_run backs off after stealing a task that turns out
  // cancelled before it started).  The simulation's traces show `from`.
  struct found_work {
    static constexpr std::uint32_t kOwn = 0;
    static constexpr std::uint32_t kInjected = 1;
    static constexpr std::uint32_t kVictim = 2;
    task_core* task = nullptr;
    std::uint32_t from = kOwn;
    bool stolen() const noexcept { return from >= kVictim; }
  };
  // THE scheduling seam: which task worker `w` runs next (below).  `choose`
  // supplies the random choices (see "Choosers" below); the threaded
  // runtime's worker_main and the simulation's driver both come here.
  template <class Chooser>
  found_work find_work(worker* w, Chooser& choose);
  // After run(): the steal backoff (below).  `ran`: what run() returned.
  template <class Chooser>
  void after_run(worker* w, const found_work& f, bool ran, Chooser& choose) noexcept;
  task_core* pop_injected() noexcept;  // front of the injection queue, or null
  // Runs `c`; false when it was cancelled before it started (no code of the
  // task ran: it was completed as cancelled instead).
  bool run(worker* w, task_core* c);
  // run()'s resumes: `c` (a task, or a fork-join frame: is_fork_item), then
  // whatever bounced through the trampoline slot (resume_next).
  void resume_loop(worker* w, task_core* c) noexcept;
  bool park(worker* w);
  bool has_visible_work() noexcept;
  void wake_one() noexcept;
  void wake_all() noexcept;
  // What a task comes to the injection queue for.  A spawn is refused once
  // shutdown's drain closed the queue (no worker would look again); a task
  // that was already running (a wake-up, a yield, the shutdown report's move
  // off a deque) is always queued.
  enum class injection : std::uint8_t { requeue, spawn };
  // Queues `c` and wakes a sleeper; false: a spawn, and the queue is closed.
  bool inject(task_core* c, injection why = injection::requeue);
  void push_local_or_inject(task_core* c);
  // ~runtime, before it frees the runtime: until no inject() from a thread
  // that is not one of its workers is still running (see inject).
  void wait_for_foreign_injections() noexcept;
  // Shutdown's first steps, stop_spawning and cancel_sleepers, shared by the
  // threaded and the driven stop; the caller holds shutdown_mutex.
  void begin_stop(std::source_location where) noexcept;
  // Step by step in runtime.cpp; `where` is the shutdown() call (or the
  // runtime's construction, when the destructor shuts it down).
  void stop(std::source_location where);
  // The shutdown report (runtime.cpp, stop's drain): what the drain still
  // waits for.  `parked[i]`: worker i was in `sleepers` (read under
  // idle_mutex, which the caller no longer holds).  Takes inject_mutex,
  // timer_mutex and blocked_mutex in turn; moves the tasks queued on the
  // workers' deques to the injection queue (see the definition).
  shutdown_report collect_report(std::uint64_t waited_ns, const std::vector<char>& parked);
  // Step report_stuck of every shutdown (threaded, simulated, driven): the
  // tasks that can never finish, counted into stuck_tasks and told on stderr.
  void report_stuck() noexcept;
  // To options.on_shutdown_report, or stderr.
  void deliver_report(const shutdown_report& r) noexcept;

  void timer_main();
  bool timer_arm(timer_node* node) noexcept;
  void timer_remove(timer_node* node) noexcept;
  void timer_cancel_all() noexcept;
  bool timer_empty() noexcept;
  void timer_notify_busy() noexcept;
  // Under timer_mutex: pop the earliest timer if it is due at `now` and end
  // its sleep.  False when none is due.  *woken: the task whose sleep it
  // ended, or null when interrupt() had claimed the node first; with other
  // threads running it may already be resumed (and gone), so only the
  // single-threaded simulation reads it.  (timer_main, the simulation.)
  bool timer_pop_due_locked(std::uint64_t now, task_core** woken) noexcept;
  // The earliest deadline, if a timer is armed.
  bool timer_next_deadline(std::uint64_t* deadline) noexcept;
};

// ---- the scheduling policy (find_work, after_run) ----
//
// Choosers.  find_work and after_run are the one policy of both schedulers;
// what is random in it comes from a chooser, a plain class passed by
// reference (a template parameter, so the threaded runtime's calls inline):
//   unsigned victim(worker* w, unsigned others)
//       which of the `others` other workers `w` tries to rob, in [0, others)
//   void pause(std::uint32_t pauses)
//       wait `pauses` pauses (the steal backoff)
// The threaded runtime's (runtime.cpp, fast_chooser): the worker's own
// xorshift64 (worker::rng) and cpu_relax.  The simulation's (sim.cpp,
// sim_chooser): its seeded generator, and pauses charged to the virtual clock.

// find_work looks at the injection queue first every kInjectedEvery-th time.
inline constexpr std::uint32_t kInjectedEvery = 61;
// Pauses after a steal that found nothing to run (after_run).
inline constexpr std::uint32_t kMinStealBackoff = 16;
inline constexpr std::uint32_t kMaxStealBackoff = 1024;

template <class Chooser>
runtime_impl::found_work runtime_impl::find_work(worker* w, Chooser& choose) {
  // Every 61st look goes to the injection queue first, so tasks from outside
  // and yielded tasks are not starved by a busy local deque.
  if (++w->tick % kInjectedEvery == 0) {
    if (task_core* c = pop_injected()) return {c, found_work::kInjected};
  }
  if (task_core* c = w->deque.take()) return {c, found_work::kOwn};
  if (task_core* c = pop_injected()) return {c, found_work::kInjected};
  if (worker_count > 1) {
    // Up to 2 * worker_count random victims.
    for (unsigned attempt = 0; attempt < 2 * worker_count; ++attempt) {
      unsigned v = choose.victim(w, worker_count - 1);
      if (v >= w->index) ++v;
      task_core* item = nullptr;
      WEFT_CHAOS_POINT();
      w->meter.counts.steal_attempts.bump();  // runtime::stats: an idle path
      if (workers[v]->deque.steal(item) == steal_result::success) {
        w->meter.counts.steals.bump();
        return {item, found_work::kVictim + v};
      }
    }
  }
  return {};
}

template <class Chooser>
void runtime_impl::after_run(worker* w, const found_work& f, bool ran, Chooser& choose) noexcept {
  if (ran || !f.stolen()) {
    w->steal_backoff = 0;
    return;
  }
  // Unproductive steal: the task had been cancelled before it started, so
  // the worker only completed it.  A thief that steals such tasks back to
  // back (a deque of cancelled tasks being drained) costs its victim a cache
  // line transfer on every take; see "Stealing cancelled tasks" in
  // docs/architecture.md.  Pause before the next attempt, doubling up to
  // kMaxStealBackoff pauses, until a steal finds a task to run.
  w->steal_backoff =
      w->steal_backoff == 0 ? kMinStealBackoff : std::min(2 * w->steal_backoff, kMaxStealBackoff);
  choose.pause(w->steal_backoff);
}

// ---- a driven runtime (driven.cpp) ----
// start(): the driver's descriptors; throws std::system_error when the
// system refuses one.
void loop_create(runtime_impl* rt);
// stop() of a driven runtime: shutdown's steps, with the drain driven on the
// calling thread.
void loop_stop(runtime_impl* rt, std::source_location where);
// join_blocking of an unfinished task: unless another thread drives, drive
// until `core` is done (or the runtime shut down).  The caller then claims
// the outcome as on a threaded runtime.
void loop_join(task_core* core);
// wake_one/wake_all found the driver parked: make wakeup_fd() readable.
void loop_signal(runtime_impl* rt) noexcept;
// schedule_yield / fork_requeue on a driven runtime: a checkpoint whose slice
// is not spent runs on (`item` goes to the trampoline slot); otherwise it is
// re-queued.  `item`: a task, or a fork-join frame (fork_item).
void loop_yield(runtime_impl* rt, worker* w, task_core* item) noexcept;

namespace testing {
// Test-only fault injection: after `n` more threads started by runtimes
// (workers and timer threads, counted process-wide), the next one fails as
// std::thread does when the system refuses a thread (std::system_error,
// resource_unavailable_try_again); that disarms it.  -1 disarms it at once.
// runtime.cpp.
void fail_thread_start_after(long n) noexcept;
}  // namespace testing

// a + d, capped at kEndOfTime.
inline std::uint64_t add_saturating(std::uint64_t a, std::uint64_t d) noexcept {
  return a >= kEndOfTime || d > kEndOfTime - a ? kEndOfTime : a + d;
}

// The worker running on this thread (null elsewhere).  runtime.cpp.
extern thread_local worker* tls_worker;

// The "shutdown" cancellation of a stopping runtime (kind shutdown, reason
// "shutdown", where = shutdown_at), as a request or as the error itself.
cancel_request* shutdown_request(const runtime_impl* rt);
cancelled_error shutdown_cancellation(const runtime_impl* rt);

// ~runtime of a runtime whose shutdown left tasks that can never finish: free
// what no task can reach (the frame caches), keep the rest for good (their
// handles read `rt`: cancel() a pending request, join() the usage_error).
void keep_remains(runtime_impl* rt) noexcept;

// sleep_suspend for a node whose `core` the caller set already, before another
// thread could reach the node (weft::wait publishes it first).  sleep.cpp.
bool sleep_arm(task_core* core, timer_node* node, std::coroutine_handle<> self) noexcept;

void init_frame_cache(worker* w) noexcept;    // before the worker thread starts
void flush_frame_count(worker* w) noexcept;   // the worker thread exits
void count_finish(task_core* core) noexcept;  // a spawned task finished on this thread
std::int64_t frames_outside_workers() noexcept;

}  // namespace weft::detail
