// SPDX-License-Identifier: MIT
// runtime/runtime.cpp -- workers, the worker loop, parking, the injection
// queue, and shutdown.
//
// Worker loop (worker_main): find_work -> run -> repeat; when find_work comes
// back empty a few times, park.  find_work (runtime_impl.hpp) is the one place
// that decides which task runs next and which victim is robbed (the
// scheduling seam); its random choices come from a chooser (fast_chooser here).
//
// Parking without lost wake-ups (the Dekker pair):
//   parker:   add itself to `sleepers` and increment num_sleepers (seq_cst RMW),
//             then re-check the injection queue and every deque (seq_cst loads);
//             only if all are empty does it wait on its wake_token.
//   injector: publish the task (injected_count seq_cst RMW), then load
//             num_sleepers (seq_cst); if non-zero, pop a sleeper and wake it.
// In the seq_cst total order one of the two sees the other.  A push to a
// worker's *own* deque reads num_sleepers relaxed: missing a sleeper there
// costs parallelism for a moment, never progress, because the owner runs its
// own deque.
//
// A simulation (runtime_options::simulation) uses the same structures without
// threads: start() creates the workers but no thread, and the driver in
// sim.cpp steps them through the same find_work and run; the sim_hook calls
// here (sim_driver.hpp lists them all) hand over to it when `sim` is set.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "dump_impl.hpp"
#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "spin.hpp"
#include "threads.hpp"
#include "trace.hpp"
#include "weft/runtime.hpp"
#include "weft/task.hpp"

namespace weft::detail {

thread_local worker* tls_worker = nullptr;

void register_runtime(const runtime_impl* rt);
void unregister_runtime(const runtime_impl* rt);

namespace {

// Tasks spawned and finished, per runtime, for the shutdown report and
// runtime::stats: a worker of the task's runtime counts in its spawned /
// finished (owner only), any other thread in runtime_impl::outside_live and
// the outside block.
void count_spawn(runtime_impl* rt, worker* w) noexcept {
  if (w != nullptr) {
    bump_owned(w->spawned);
  } else {
    // Relaxed: counter, read after the drain.
    rt->outside_live.fetch_add(1, std::memory_order_relaxed);
    rt->outside_meter.spawned.add();
  }
}

// Threads still to start before the injected failure; -1: none injected.
// Relaxed: a test knob; it publishes nothing.
std::atomic<long> g_thread_starts_before_failure{-1};

// std::thread(f), or the injected failure (testing::fail_thread_start_after).
template <class F>
std::thread start_thread(F f) {
  // Relaxed: see g_thread_starts_before_failure.
  long k = g_thread_starts_before_failure.load(std::memory_order_relaxed);
  while (k >= 0) {
    // Relaxed: as above; the CAS only keeps concurrent starts from both
    // taking the same count.
    if (g_thread_starts_before_failure.compare_exchange_weak(k, k - 1, std::memory_order_relaxed)) {
      if (k == 0) {
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                "weft: thread start failed (injected by a test)");
      }
      break;
    }
  }
  return std::thread(std::move(f));
}

// The threaded runtime's chooser (runtime_impl.hpp, "Choosers"): each worker's
// own xorshift64 picks its victims; the backoff spins.
struct fast_chooser {
  static unsigned victim(worker* w, unsigned others) noexcept {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return static_cast<unsigned>(w->rng % others);
  }
  static void pause(std::uint32_t pauses) noexcept {
    for (std::uint32_t i = 0; i < pauses; ++i) cpu_relax();
  }
};

}  // namespace

worker_hot* current_worker() noexcept { return tls_worker; }

void keep_remains(runtime_impl* rt) noexcept {
  // The workers have exited: no frame comes back to these caches.
  for (auto& w : rt->workers) free_frame_cache(w.get());
  // Reachable for good (LeakSanitizer does not report it).  At most one entry
  // per runtime that leaked tasks, whose frames stay allocated anyway.
  static std::mutex mu;
  // Out of memory for this one vector terminates, as in any noexcept path.
  static std::vector<runtime_impl*>* kept =
      new std::vector<runtime_impl*>;  // NOLINT(bugprone-unhandled-exception-at-new)
  std::lock_guard lk(mu);
  try {
    kept->push_back(rt);
  } catch (...) {
    // Out of memory: the structure stays allocated, unlisted.
  }
}

void require_not_worker(const runtime_impl* rt, const char* what) {
  worker* w = tls_worker;
  if (w != nullptr && (rt == nullptr || w->rt == rt)) {
    throw usage_error(std::string(what) +
                      " called on a worker thread of the same weft runtime: it would block "
                      "that worker and can deadlock; use co_await inside tasks");
  }
}

runtime_impl* resolve_runtime(runtime_impl* rt) {
  if (rt != nullptr) {
    sim_hook::require_owner(rt, "weft::runtime::spawn");
    return rt;
  }
  worker* w = tls_worker;
  if (w == nullptr) {
    throw usage_error(
        "weft::spawn called outside a weft task: use runtime::spawn from other threads");
  }
  return w->rt;
}

void submit_spawn(runtime_impl* rt, task_core* core) noexcept {
  core->rt = rt;
  worker* w = tls_worker;
  if (w != nullptr && w->rt != rt) w = nullptr;  // another runtime's worker: inject
  // Acquire: pairs with stop()'s seq_cst store; a spawn that sees it does not
  // enqueue.  A spawn that misses it is drained by shutdown like any task.
  count_spawn(rt, w);
  if (rt->stopping.load(std::memory_order_acquire)) {
    core->started = true;
    complete_unstarted(core, shutdown_request(rt));
    return;
  }
  // Every task under track_tasks, else the named ones (dump.cpp).  Relaxed:
  // the task is not published yet; only a named spawn attached extras.
  if (rt->options.track_tasks || core->extras.load(std::memory_order_relaxed) != nullptr)
      [[unlikely]]
    registry_add(rt, w, core);
  WEFT_CHAOS_POINT();
  if (rt->trace != nullptr) [[unlikely]]
    trace_spawn(rt, w, core);
  if (w != nullptr) {
    // A worker of this runtime is running a task: shutdown's drain cannot have
    // finished, and this deque is drained like any other.
    w->deque.push(core);
    // Relaxed: see the file comment (own deque: a missed sleeper costs only
    // parallelism).
    if (rt->num_sleepers.load(std::memory_order_relaxed) > 0) rt->wake_one();
  } else if (!rt->inject(core, runtime_impl::injection::spawn)) {
    // Shutdown finished draining between our check and the queue: no worker
    // will look again, so the task ends here, cancelled before it started.
    core->started = true;
    complete_unstarted(core, shutdown_request(rt));
  }
}

void count_finish(task_core* core) noexcept {
  if (core->tracked) [[unlikely]]
    registry_remove(core);  // track_tasks (dump.cpp)
  worker* w = tls_worker;
  if (w != nullptr && w->rt == core->rt) {
    bump_owned(w->finished);
    sim_hook::finished(w->sim, core);
  } else {
    // Relaxed: counter, read after the drain.
    core->rt->outside_live.fetch_sub(1, std::memory_order_relaxed);
    core->rt->outside_meter.completed.add();
    sim_hook::finished(core->rt->sim, core);
  }
}

void wake_one(runtime_impl* rt) noexcept { rt->wake_one(); }

void schedule_yield(task_core* core) noexcept {
  if (sim_hook::yield(core)) return;
  if (core->rt->loop != nullptr) [[unlikely]] {
    loop_yield(core->rt, tls_worker, core);
    return;
  }
  core->rt->inject(core);
}

void schedule_wake(task_core* core) noexcept { core->rt->push_local_or_inject(core); }

// ---------------------------------------------------------------------------

bool runtime_impl::inject(task_core* c, injection why) {
  sim_hook::require_owner_or_abort(this,
                                   why == injection::spawn ? "a spawn" : "a wake-up or re-queue");
  // A thread that is not one of our workers (a plain thread, a blocking-pool
  // thread, a worker of another runtime) may see the task it queues run,
  // finish, and the runtime shut down and be destroyed while it is still in
  // here: ~runtime waits until no such injection is in flight.
  const bool foreign = tls_worker == nullptr || tls_worker->rt != this;
  struct in_flight {
    std::atomic<std::int64_t>* count;
    explicit in_flight(std::atomic<std::int64_t>* n) noexcept : count(n) {
      // Relaxed: the queue's mutex (released after the push below) carries
      // it to whoever sees the task, and so to ~runtime's acquire load.
      if (count != nullptr) count->fetch_add(1, std::memory_order_relaxed);
    }
    ~in_flight() {
      // Release: our last access to the runtime; pairs with ~runtime's
      // acquire load (wait_for_foreign_injections).
      if (count != nullptr) count->fetch_sub(1, std::memory_order_release);
    }
  } guard(foreign ? &foreign_injections : nullptr);
  {
    std::lock_guard lk(inject_mutex);
    if (why == injection::spawn && closed) return false;
    injected.push_back(c);
    // seq_cst: the injector's half of the parking Dekker pair.
    injected_count.fetch_add(1, std::memory_order_seq_cst);
  }
  meter_inject(this);  // runtime::stats
  WEFT_CHAOS_POINT();
  // seq_cst: pairs with park()'s seq_cst increment of num_sleepers.
  if (num_sleepers.load(std::memory_order_seq_cst) > 0) wake_one();
  return true;
}

void runtime_impl::wait_for_foreign_injections() noexcept {
  // Acquire: pairs with inject's release decrement; its accesses to this
  // runtime happen before the caller frees it.  The task such an injection
  // queued has finished (the drain saw it), so the wait is the few
  // instructions from the queue's unlock to the end of inject.
  while (foreign_injections.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

void runtime_impl::push_local_or_inject(task_core* c) {
  worker* w = tls_worker;
  if (w != nullptr && w->rt == this) {
    w->deque.push(c);
    // Relaxed: own deque, see the file comment.
    if (num_sleepers.load(std::memory_order_relaxed) > 0) wake_one();
  } else {
    inject(c);
  }
}

bool runtime_impl::has_visible_work() noexcept {
  // seq_cst: the parker's half of the Dekker pair (after its seq_cst RMW).
  if (injected_count.load(std::memory_order_seq_cst) > 0) return true;
  for (auto& w : workers) {
    if (w->deque.size_hint() > 0) return true;
  }
  return false;
}

void runtime_impl::wake_one() noexcept {
  worker* w = nullptr;
  {
    std::lock_guard lk(idle_mutex);
    if (sleepers.empty()) return;
    w = sleepers.back();
    sleepers.pop_back();
    // Relaxed: the mutex orders it with park(); readers treat it as a hint
    // except for the seq_cst Dekker loads, which only need "non-zero while a
    // worker is in `sleepers`" (the increment happened under the mutex).
    num_sleepers.fetch_sub(1, std::memory_order_relaxed);
    // Relaxed: read under idle_mutex by the drain.
    wake_generation.fetch_add(1, std::memory_order_relaxed);
  }
  meter_wakes(this, 1);  // runtime::stats
  WEFT_CHAOS_POINT();
  // A driven runtime's one worker is parked when nobody drives it: its owner
  // waits on wakeup_fd(), not on the token.
  if (loop != nullptr) [[unlikely]] {
    loop_signal(this);
    return;
  }
  // Release: pairs with the parked worker's acquire load of its token.
  w->wake_token.store(1, std::memory_order_release);
  w->wake_token.notify_one();
}

void runtime_impl::wake_all() noexcept {
  std::vector<worker*> woken;
  {
    std::lock_guard lk(idle_mutex);
    woken.swap(sleepers);
    // Relaxed: as in wake_one.
    num_sleepers.fetch_sub(static_cast<std::uint32_t>(woken.size()), std::memory_order_relaxed);
    wake_generation.fetch_add(1, std::memory_order_relaxed);
  }
  if (!woken.empty()) meter_wakes(this, woken.size());  // runtime::stats
  if (loop != nullptr && !woken.empty()) [[unlikely]] {
    loop_signal(this);  // as in wake_one
    return;
  }
  for (worker* w : woken) {
    // Release: as in wake_one.
    w->wake_token.store(1, std::memory_order_release);
    w->wake_token.notify_one();
  }
}

task_core* runtime_impl::pop_injected() noexcept {
  // Relaxed: a hint to skip the mutex; the queue itself is read under it.
  if (injected_count.load(std::memory_order_relaxed) <= 0) return nullptr;
  std::lock_guard lk(inject_mutex);
  if (injected.empty()) return nullptr;
  task_core* c = injected.front();
  injected.pop_front();
  // Relaxed: guarded by inject_mutex for writers; readers use it as a hint
  // or in the seq_cst Dekker check (an over-count there only delays a park).
  injected_count.fetch_sub(1, std::memory_order_relaxed);
  return c;
}

bool runtime_impl::run(worker* w, task_core* c) {
  if (is_fork_item(c)) {
    resume_loop(w, c);
    return true;
  }
  c->w = w;
  if (!c->started) {
    c->started = true;
#if WEFT_MUTANT_IS(lost_cancel_before_start)
    // Deliberately broken variant (weft/detail/mutant.hpp): no
    // cancel-before-start check, so a task cancelled before it started runs
    // its body anyway.
#else
    if (maybe_cancel(c) && cancel_before_start(c)) return false;
#endif
  }
  resume_loop(w, c);
  return true;
}

void runtime_impl::resume_loop(worker* w, task_core* c) noexcept {
  // Relaxed: a sample for the timer thread's slice check; owner-written.
  w->resumes.store(w->resumes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  for (;;) {
    std::coroutine_handle<> h;
    if (is_fork_item(c)) {
      h = fork_resume_item(w, c);
    } else {
      set_current(w, c);
      h = c->resume_point;
    }
    w->transfers = 0;
    try {
      h.resume();
    } catch (...) {
      // Promises capture every exception; this is a weft bug if it happens.
      std::fputs("weft: an exception escaped a coroutine resume (weft bug); continuing\n", stderr);
    }
    c = w->resume_next;  // a transfer that bounced through the loop (kMaxTransfers)
    if (c == nullptr) break;
    w->resume_next = nullptr;
    if (!is_fork_item(c)) c->w = w;
  }
  w->current = nullptr;
  // Relaxed: see set_current.
  w->running_site.store(std::source_location{}, std::memory_order_relaxed);
  w->running_task.store(nullptr, std::memory_order_relaxed);
}

bool runtime_impl::park(worker* w) {
  {
    std::lock_guard lk(idle_mutex);
    // Acquire: pairs with stop()'s release store.
    if (exiting.load(std::memory_order_acquire)) return false;
    // Relaxed: the token is reset by its owner under idle_mutex, before the
    // worker becomes visible in `sleepers`.
    w->wake_token.store(0, std::memory_order_relaxed);
    sleepers.push_back(w);
    // seq_cst: the parker's half of the Dekker pair.
    num_sleepers.fetch_add(1, std::memory_order_seq_cst);
    // Relaxed: read under idle_mutex.
    if (stopping.load(std::memory_order_relaxed)) drain_cv.notify_all();
  }
  WEFT_CHAOS_POINT();  // between announcing the park and re-checking the queues
  if (has_visible_work()) {
    std::lock_guard lk(idle_mutex);
    auto it = std::find(sleepers.begin(), sleepers.end(), w);
    if (it != sleepers.end()) {
      sleepers.erase(it);
      // Relaxed: as in wake_one.
      num_sleepers.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    // A waker already took us off the list; its token is on the way.
  }
  WEFT_CHAOS_POINT();
  w->meter.counts.parks.bump();  // runtime::stats
  // Acquire: pairs with the waker's release store.
  while (w->wake_token.load(std::memory_order_acquire) == 0) {
    w->wake_token.wait(0, std::memory_order_acquire);
  }
  timer_notify_busy();
  return true;
}

void runtime_impl::worker_main(worker* w) {
  tls_worker = w;
  const std::string name = "weft-w" + std::to_string(w->index);
  name_this_thread(name.c_str());
  run_worker_hook(options.on_worker_start, w->index, "on_worker_start");
  fast_chooser choose;
  unsigned idle_rounds = 0;
  std::uint64_t idle_since = 0;
  for (;;) {
    if (const found_work f = find_work(w, choose); f.task != nullptr) {
      idle_rounds = 0;
      if (w->meter.idle) [[unlikely]]
        meter_active(w);  // runtime::stats: busy time, a clock read per idle stretch
      after_run(w, f, run_from_loop(this, w, f), choose);
      continue;
    }
    // Acquire: pairs with stop()'s release store; all tasks are done by then.
    if (exiting.load(std::memory_order_acquire)) break;
    // Look again before sleeping: parking and waking cost microseconds, a
    // steal attempt nanoseconds.  At least 64 looks (32 with a pause, then
    // yielding the core), and for idle_spin in all (the clock is read every
    // 16th look, yielding in between).
    ++idle_rounds;
    if (idle_rounds < 32) {
      cpu_relax();
      continue;
    }
    // Shutting down: skip the rest of the spin, since shutdown's drain waits
    // for every worker to park (otherwise every shutdown would last one
    // idle_spin longer).  Relaxed: a hint set by stop(); missing it only means spinning
    // out the idle_spin, and park() re-checks the queues either way.
    const bool stopping_now = w->stopping.load(std::memory_order_relaxed);
    if (idle_rounds == 32) {
      idle_since = now_ns();
      meter_idle(w, idle_since);  // runtime::stats: the active stretch ends
    }
    if (!stopping_now &&
        (idle_rounds < 64 || (idle_rounds % 16 != 0) || now_ns() - idle_since < idle_spin_ns)) {
      std::this_thread::yield();
      continue;
    }
    idle_rounds = 0;
    if (!park(w)) break;
  }
  meter_idle(w, now_ns());
  run_worker_hook(options.on_worker_stop, w->index, "on_worker_stop");
  flush_frame_count(w);
  tls_worker = nullptr;
}

void runtime_impl::start() {
  if (options.simulation) {
    // Virtual workers: never taken from the machine, so a seed replays anywhere.
    worker_count = options.workers != 0 ? options.workers : 4;
  } else if (options.driven) {
    worker_count = 1;  // its driving thread (validate_options refused more)
  } else {
    worker_count = options.workers != 0 ? options.workers : default_worker_count();
  }
  // validate_options() refused negative values.  Saturating: a huge slice
  // never expires, a huge idle spin never parks an idle worker (until
  // shutdown), instead of overflowing.
  if (options.time_slice.count() == 0) options.time_slice = std::chrono::microseconds(2000);
  slice_ns = static_cast<std::uint64_t>(saturating_ns(options.time_slice).count());
  idle_spin_ns = static_cast<std::uint64_t>(saturating_ns(options.idle_spin).count());
  workers.reserve(worker_count);
  for (unsigned i = 0; i < worker_count; ++i) {
    auto w = std::make_unique<worker>();
    w->index = i;
    w->rt = this;
    w->sleepers = &num_sleepers;
    w->rng = 0x9E3779B97F4A7C15ull * (i + 1) | 1;
    init_frame_cache(w.get());
    workers.push_back(std::move(w));
  }
  dump_start(this);                   // the task registry, the watchdog (dump.cpp)
  trace_setup(this);                  // before any thread runs: the workers' rings
  if (sim_hook::start(this)) return;  // no worker thread, no timer thread
  if (options.driven) {
    loop_create(this);  // likewise: its owner drives it
    return;
  }
  // Every deque exists before any thread can steal from it.
  try {
    for (auto& w : workers) {
      worker* wp = w.get();
      wp->thread = start_thread([this, wp] { worker_main(wp); });
    }
    timer_thread = start_thread([this] { timer_main(); });
    // Named by its creator too, so that it has its name when the
    // constructor returns (it names itself only once it gets to run).
    name_thread(timer_thread, "weft-timer");
  } catch (...) {
    abandon_start();
    throw;
  }
}

void runtime_impl::abandon_start() noexcept {
  // No task can exist yet (the constructor has not returned): the started
  // workers only look for work and park.  As stop()'s join_workers step.
  // Release: pairs with the workers' acquire loads; they leave their loops.
  exiting.store(true, std::memory_order_release);
  wake_all();
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  {
    std::lock_guard lk(timer_mutex);
    timer_exit = true;
    timer_cv.notify_all();
  }
  if (timer_thread.joinable()) timer_thread.join();
}

void runtime_impl::begin_stop(std::source_location where) noexcept {
  // Relaxed: under shutdown_mutex, which every writer of `stopping` holds.
  if (!stopping.load(std::memory_order_relaxed)) {
    shutdown_at = where;
    shutdown_began_ns = now_ns();  // runtime::stats: the "shutdown" request time
  }

  // Step stop_spawning: from here on, spawns complete at once as cancelled,
  // and every task's next resume point delivers the one "shutdown" request.
  // seq_cst: ordered before the drain's checks.
  stopping.store(true, std::memory_order_seq_cst);
  for (auto& w : workers) {
    // Relaxed: read at resume points as a hint; take_pending re-checks.
    w->stopping.store(true, std::memory_order_relaxed);
    w->spawn_slow.store(true, std::memory_order_relaxed);     // spawns see `stopping`
    w->slice_expired.store(true, std::memory_order_relaxed);  // checkpoint() takes the slow path
  }

  // Step cancel_sleepers: every armed sleep and every blocked list wait
  // (event, semaphore, shield, weft::blocking) ends now; new ones are
  // refused -- except those of a task that already had its "shutdown"
  // (after_shutdown): it refused the shutdown, and its waits really wait.
  timer_cancel_all();
  cancel_blocked();
}

void runtime_impl::stop(std::source_location where) {
  if (sim_hook::stop(this, where)) return;
  if (loop != nullptr) {
    loop_stop(this, where);
    return;
  }
  std::lock_guard guard(shutdown_mutex);
  if (shut_down) return;
  // When the drain has waited this long, and each time it waits this much
  // longer, it reports what it waits for (step report_waiting).
  const std::uint64_t began = now_ns();
  const std::uint64_t report_every =
      static_cast<std::uint64_t>(saturating_ns(options.shutdown_report_after).count());
  std::uint64_t next_report = report_every == 0 ? kEndOfTime : add_saturating(began, report_every);

  begin_stop(where);  // steps stop_spawning and cancel_sleepers

  // Step wake_workers: parked workers look at their queues again.
  wake_all();

  // Step drain: wait until every worker is parked with nothing queued, no
  // timer armed and no list wait registered -- every task that can still
  // make progress has finished.  The timers and list waits left are those of
  // tasks that refused their "shutdown" and wait again: shutdown waits for
  // them.
  {
    std::unique_lock lk(idle_mutex);
    for (;;) {
      // Step report_waiting: tasks that refuse their "shutdown", or loop
      // without a cancellation point, can hold the drain for good; say which
      // (at most once per report_every).  kEndOfTime: never.
      if (const std::uint64_t now = now_ns(); next_report != kEndOfTime && now >= next_report) {
        try {
          std::vector<char> parked(worker_count, 0);
          for (worker* w : sleepers) parked[w->index] = 1;
          lk.unlock();
          deliver_report(collect_report(now - began, parked));
        } catch (...) {
          std::fputs("weft: shutdown is still waiting for tasks (no memory to list them)\n",
                     stderr);
        }
        if (!lk.owns_lock()) lk.lock();
        next_report = add_saturating(now_ns(), report_every);
        continue;
      }
      if (sleepers.size() == worker_count) {
        // Relaxed: read and written under idle_mutex.
        std::uint64_t gen = wake_generation.load(std::memory_order_relaxed);
        lk.unlock();
        WEFT_CHAOS_POINT();
        const bool work = has_visible_work();
        // Acquire: pairs with timer_arm's / sleep_resume's acq_rel RMWs.  A
        // sleep that a cancel ended has left the heap before its task is
        // queued; the count still has it, so the queue is not closed under it.
        const bool waits = !timer_empty() || !blocked_empty() ||
                           sleeps_unfinished.load(std::memory_order_acquire) != 0;
        lk.lock();
        if (!work && !waits && sleepers.size() == worker_count &&
            gen == wake_generation.load(std::memory_order_relaxed)) {
          // Close the injection queue in the same breath as the last look at
          // it: a spawn from outside either got in before (and we would have
          // seen it) or sees `closed` (and completes cancelled by itself).
          std::lock_guard ilk(inject_mutex);
          if (injected.empty()) {
            closed = true;
            break;
          }
          continue;
        }
        if (work) {
          lk.unlock();
          wake_all();
          lk.lock();
          continue;
        }
        // Only waits are left: whoever ends one (the timer thread, an
        // event's set()) wakes a worker, which parks again afterwards and
        // signals drain_cv.  Waking the workers here would only spin them.
      }
      // Bounded wait as a safety net (and the report's clock); the normal
      // wake-up is a parking worker.
      drain_cv.wait_for(lk, std::chrono::milliseconds(20));
    }
    // Step report_stuck: the workers are parked (their counters were written
    // before they took idle_mutex, which we hold).
    report_stuck();
  }

  // Step join_workers.
  // Release: pairs with the workers' acquire loads; they leave their loops.
  exiting.store(true, std::memory_order_release);
  wake_all();
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  {
    std::lock_guard lk(timer_mutex);
    timer_exit = true;
    timer_cv.notify_all();
  }
  if (timer_thread.joinable()) timer_thread.join();
  blocking.stop();  // step stop_blocking: abandoned calls (docs/architecture.md)
  shut_down = true;
}

void runtime_impl::report_stuck() noexcept {
  // Relaxed: counter; the spawns and completions it counts happened before
  // the workers parked or the driver stopped (idle_mutex, or the driving
  // thread itself) or before `closed` (inject_mutex).
  std::int64_t live = outside_live.load(std::memory_order_relaxed);
  for (auto& w : workers) {
    // Relaxed: owner-written counters, read after the workers stopped (above).
    live += static_cast<std::int64_t>(w->spawned.load(std::memory_order_relaxed) -
                                      w->finished.load(std::memory_order_relaxed));
  }
  stuck_tasks = live;
  if (live > 0) {
    std::fprintf(stderr,
                 "weft: shutdown: %lld task(s) can never finish (blocked on each other?); "
                 "their frames are leaked\n",
                 static_cast<long long>(live));
  }
}

shutdown_report runtime_impl::collect_report(std::uint64_t waited_ns,
                                             const std::vector<char>& parked) {
  using st = shutdown_report::task_state;
  shutdown_report r;
  r.waited = std::chrono::milliseconds(waited_ns / 1'000'000);
  // The walk dump() shares (dump.cpp): running tasks (named when the
  // registry is on: its locks are held through the walk), the injection
  // queue, sleeping and blocked tasks and those awaiting them.
  std::vector<found_task> found;
  {
    auto locks = lock_registries(this);
    found = walk_tasks(this, parked, !locks.empty());
  }
  auto to_entry = [](found_task& f) {
    return shutdown_report::task_entry{f.site,        f.state,           f.worker,
                                       f.awaits_site, std::move(f.name), std::move(f.awaits_name)};
  };
  // Running and queued first; the deques' tasks join the queued ones.
  std::size_t i = 0;
  for (; i < found.size() && (found[i].state == st::running || found[i].state == st::queued); ++i) {
    r.tasks.push_back(to_entry(found[i]));
  }
  // Queued on a deque: only its owner or a thief may touch a task there, so
  // the report steals each one (as a thief would) and queues it again on the
  // injection queue, which any worker serves: the order of ready tasks does
  // not matter while the runtime stops, and a task stuck behind a worker in
  // a loop without a cancellation point gets a chance to run elsewhere.
  // (dump() does not: on a live runtime a task in flight here would be
  // invisible to a shutdown drain that began meanwhile.)
  for (auto& w : workers) {
    for (int lost = 0; lost < 64;) {
      task_core* c = nullptr;
      const steal_result got = w->deque.steal(c);
      if (got == steal_result::empty) break;
      if (got == steal_result::lost_race) {
        ++lost;
        continue;
      }
      try {
        task_core* o = owner_of_item(c);
        r.tasks.push_back({o->where, st::queued, 0, {}, task_name(o), {}});
      } catch (...) {
        // No memory: the report misses it; the task must not be lost.
      }
      inject(c);
    }
  }
  for (; i < found.size(); ++i) r.tasks.push_back(to_entry(found[i]));
  return r;
}

void runtime_impl::deliver_report(const shutdown_report& r) noexcept {
  if (options.on_shutdown_report) {
    try {
      options.on_shutdown_report(r);
    } catch (...) {
      std::fputs("weft: the shutdown report hook threw; ignored\n", stderr);
    }
    return;
  }
  try {
    const std::string text = r.to_string();
    std::fputs(text.c_str(), stderr);
  } catch (...) {
    std::fputs("weft: shutdown is still waiting for tasks (no memory to list them)\n", stderr);
  }
}

namespace testing {
void fail_thread_start_after(long n) noexcept {
  // Relaxed: see g_thread_starts_before_failure.
  g_thread_starts_before_failure.store(n < 0 ? -1 : n, std::memory_order_relaxed);
}
}  // namespace testing

}  // namespace weft::detail

namespace weft {

namespace {
// The options a runtime refuses (std::invalid_argument), checked before
// anything is allocated or started.
void validate_options(const runtime_options& o) {
  if (o.time_slice.count() < 0) {
    throw std::invalid_argument("weft::runtime: runtime_options::time_slice is negative (" +
                                std::to_string(o.time_slice.count()) + " us)");
  }
  if (o.idle_spin.count() < 0) {
    throw std::invalid_argument("weft::runtime: runtime_options::idle_spin is negative (" +
                                std::to_string(o.idle_spin.count()) + " us)");
  }
  if (o.shutdown_report_after.count() < 0) {
    throw std::invalid_argument(
        "weft::runtime: runtime_options::shutdown_report_after is negative (" +
        std::to_string(o.shutdown_report_after.count()) + " ms)");
  }
  if (o.driven && o.simulation) {
    throw std::invalid_argument(
        "weft::runtime: runtime_options::driven and runtime_options::simulation are both set; a "
        "simulation drives itself");
  }
  if (o.driven && o.workers > 1) {
    throw std::invalid_argument("weft::runtime: runtime_options::workers is " +
                                std::to_string(o.workers) +
                                " for a driven runtime, which has one worker (0 or 1)");
  }
  if (o.blocking_threads > runtime_options::max_blocking_threads) {
    throw std::invalid_argument("weft::runtime: runtime_options::blocking_threads is " +
                                std::to_string(o.blocking_threads) +
                                ", above max_blocking_threads (" +
                                std::to_string(runtime_options::max_blocking_threads) + ")");
  }
  if (o.trace && o.trace->ring_capacity > trace_options::max_ring_capacity) {
    throw std::invalid_argument(
        "weft::runtime: trace_options::ring_capacity is " + std::to_string(o.trace->ring_capacity) +
        ", above max_ring_capacity (" + std::to_string(trace_options::max_ring_capacity) + ")");
  }
  if (o.workers > runtime_options::max_workers) {
    throw std::invalid_argument("weft::runtime: runtime_options::workers is " +
                                std::to_string(o.workers) + ", above max_workers (" +
                                std::to_string(runtime_options::max_workers) + ")");
  }
}
}  // namespace

runtime::runtime(runtime_options options, std::source_location where) : impl_(nullptr) {
  validate_options(options);
  auto impl = std::make_unique<detail::runtime_impl>();
  impl->options = std::move(options);
  impl->created_at = where;
  detail::register_runtime(impl.get());
  try {
    impl->start();  // on failure its threads are joined already
  } catch (...) {
    detail::unregister_runtime(impl.get());
    throw;  // `impl` frees the workers and the rest
  }
  detail::dump_register_runtime(impl.get());  // WEFT_DUMP_ON (dump.cpp)
  impl_ = impl.release();
}

runtime::~runtime() {
  detail::worker* w = detail::tls_worker;
  if (w != nullptr && w->rt == impl_) {
    std::fputs(
        "weft: a runtime is being destroyed by one of its own worker threads; it cannot join "
        "itself. Destroy it from another thread.\n",
        stderr);
    std::abort();
  }
  detail::dump_unregister_runtime(impl_);  // waits for a WEFT_DUMP_ON dump of it
  // A shutdown the destructor starts names the runtime's construction as
  // its location (a destructor has no call site of its own to report).
  if (!detail::sim_hook::destroy(impl_)) impl_->stop(impl_->created_at);
  detail::trace_finish(impl_);
  detail::unregister_runtime(impl_);
  if (impl_->stuck_tasks > 0) {
    detail::keep_remains(impl_);  // their handles may still read it
  } else {
    impl_->wait_for_foreign_injections();
    delete impl_;  // every task is done: no handle reads it any more
  }
}

void runtime::shutdown(std::source_location where) {
  detail::require_not_worker(impl_, "weft::runtime::shutdown");
  impl_->stop(where);
  detail::trace_finish(impl_);
}

unsigned runtime::workers() const noexcept { return impl_->worker_count; }

std::chrono::microseconds runtime::time_slice() const noexcept { return impl_->options.time_slice; }

namespace diagnostics {
std::int64_t live_frames() noexcept { return detail::frames_outside_workers(); }
}  // namespace diagnostics

std::string_view to_string(shutdown_report::task_state s) noexcept {
  switch (s) {
    case shutdown_report::task_state::running:
      return "running";
    case shutdown_report::task_state::queued:
      return "queued";
    case shutdown_report::task_state::sleeping:
      return "sleeping";
    case shutdown_report::task_state::blocked:
      return "blocked";
    case shutdown_report::task_state::awaiting:
      return "awaiting";
  }
  return "?";
}

namespace {
std::string site_text(const std::source_location& where) {
  return std::string(where.file_name()) + ":" + std::to_string(where.line());
}
}  // namespace

std::string shutdown_report::to_string() const {
  char head[128];
  std::snprintf(head, sizeof head, "weft: shutdown has waited %.1f s for %zu task(s):\n",
                static_cast<double>(waited.count()) / 1000.0, tasks.size());
  std::string out = head;
  if (tasks.empty()) {
    out +=
        "  (none found running, queued, sleeping or blocked: the tasks left await one that "
        "was just finishing)\n";
  }
  for (const task_entry& t : tasks) {
    out += "  task ";
    if (!t.name.empty()) out += "\"" + t.name + "\" ";
    out += "spawned at " + site_text(t.spawned_at);
    if (t.spawned_at.function_name()[0] != '\0') {
      out += " (in ";
      out += t.spawned_at.function_name();
      out += ")";
    }
    out += ": ";
    out += weft::to_string(t.state);
    if (t.state == task_state::running) out += " on worker " + std::to_string(t.worker);
    if (t.state == task_state::awaiting) {
      out += " the task ";
      if (!t.awaits_name.empty()) out += "\"" + t.awaits_name + "\" ";
      out += "spawned at " + site_text(t.awaits);
    }
    out += "\n";
  }
  return out;
}

namespace this_task {

bool cancel_requested() noexcept {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return false;
  return detail::cancel_visible(w->current);
}

void throw_if_cancel_requested() {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return;
  if (detail::cancel_request* r = detail::take_pending(w->current)) detail::throw_taken(r);
}

unsigned cancelling() noexcept {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return 0;
  // Relaxed: counter.
  return w->current->cancel_count.load(std::memory_order_relaxed);
}

unsigned uncancel() noexcept {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return 0;
  return detail::uncancel_core(w->current);
}

task_handle current() {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return {};
  return detail::access::make<task_handle>(w->current);
}

bool cancel(std::string reason, std::source_location where) {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return false;
  if (reason.empty())
    return detail::request_cancel_plain(w->current, cancel_kind::explicit_request, where);
  return detail::request_cancel(w->current, std::move(reason), cancel_kind::explicit_request,
                                where);
}

std::string name() {
  detail::worker* w = detail::tls_worker;
  if (w == nullptr || w->current == nullptr) return {};
  return detail::task_name(w->current);
}

}  // namespace this_task
}  // namespace weft
