// SPDX-License-Identifier: MIT
// runtime/driven.cpp -- a driven runtime: no thread of its own, driven by its
// owner's event loop (runtime_options::driven).
//
// The runtime keeps its one worker (deque, frame cache, fork stack) but
// starts no thread.  Whoever drives it -- run_ready() from the owner's loop,
// or a blocking call: join, block_on, shutdown -- holds loop_driver::
// drive_mutex, sets tls_worker to the worker and runs the threaded worker's
// own code (find_work, run, after_run) on the calling thread.  The steps, by
// name (docs/architecture.md, "The driven runtime"):
//
//   unpark     take the worker off `sleepers` and empty both descriptors;
//   fire       pop the timers that are due (timer_pop_due_locked, as the
//              timer thread does); their tasks go to the worker's deque;
//   run        find_work + run, until nothing is ready or the budget is spent
//              (a due timer is looked for again before giving up);
//   park       put the worker back on `sleepers` (the seq_cst increment of
//              the parking Dekker pair), then look at the queues once more:
//              work that arrived meanwhile signals event_fd itself; then arm
//              timer_fd at the earliest timer.
//
// While parked, the worker is found by wake_one/wake_all like a parked worker
// thread, and they write event_fd instead of its wake token (loop_signal):
// the Dekker pair between inject() and park is the threaded runtime's.  So
// wakeup_fd() (an epoll instance over event_fd and timer_fd) is readable
// whenever a task became ready or a timer is due while nobody drives.
//
// Time slices: no timer thread watches them.  The worker's slice_expired
// flag stays set, so every checkpoint() takes its slow path; that clears the
// flag and re-queues through schedule_yield, which comes here (loop_yield):
// the flag goes back up, and unless the slice is spent (one clock read) the
// task runs on from the trampoline slot, as in the simulation.  yield()
// reaches loop_yield with the flag still set and is always re-queued.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <mutex>
#include <system_error>

#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "trace.hpp"
#include "weft/errors.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {

std::uint64_t now_ns() noexcept;  // timer.cpp

namespace {

// The driver's chooser (runtime_impl_hpp, "Choosers"): one worker, so no
// victim is ever chosen; the steal backoff never applies.
struct loop_chooser {
  unsigned victim(worker*, unsigned) noexcept { return 0; }
  void pause(std::uint32_t) noexcept {}
};

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void drain_fd(int fd) noexcept {
  std::uint64_t v = 0;
  // Non-blocking descriptors: EAGAIN when there is nothing to read.
  while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
  }
}

// Step park's timer half: timer_fd fires at the earliest timer's deadline
// (CLOCK_MONOTONIC, steady_clock's clock and now_ns()'s), or never.
void arm_timer_fd(runtime_impl* rt) noexcept {
  loop_driver* d = rt->loop.get();
  std::uint64_t deadline = kEndOfTime;
  if (!rt->timer_next_deadline(&deadline)) deadline = kEndOfTime;
  if (deadline == d->armed_deadline) return;
  itimerspec spec{};
  if (deadline != kEndOfTime) {
    // 0 disarms: a deadline at 0 ns (never produced) is moved to 1 ns.
    const std::uint64_t at = std::max<std::uint64_t>(deadline, 1);
    spec.it_value.tv_sec = static_cast<time_t>(at / 1'000'000'000);
    spec.it_value.tv_nsec = static_cast<long>(at % 1'000'000'000);
  }
  if (::timerfd_settime(d->timer_fd, TFD_TIMER_ABSTIME, &spec, nullptr) == 0) {
    d->armed_deadline = deadline;
  } else {
    // Cannot happen with a valid descriptor and time; keep the loop awake
    // rather than lose a timer.
    loop_signal(rt);
  }
}

// Step fire: every due timer, under timer_mutex as on the timer thread.
void fire_due(runtime_impl* rt) noexcept {
  std::lock_guard lk(rt->timer_mutex);
  const std::uint64_t now = now_ns();
  task_core* woken = nullptr;
  while (rt->timer_pop_due_locked(now, &woken)) {
  }
}

// Steps unpark, fire, run and park, on the calling thread (which holds
// drive_mutex).  Stops when nothing is ready, `until` (now_ns time) passed,
// or `target` (if any) is done.  Returns the tasks resumed.
std::size_t drive(runtime_impl* rt, std::uint64_t until, const task_core* target) {
  loop_driver* d = rt->loop.get();
  worker* w = rt->workers[0].get();
  {  // Step unpark.
    std::lock_guard lk(rt->idle_mutex);
    auto it = std::find(rt->sleepers.begin(), rt->sleepers.end(), w);
    if (it != rt->sleepers.end()) {
      rt->sleepers.erase(it);
      // Relaxed: as in wake_one (under idle_mutex).
      rt->num_sleepers.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  drain_fd(d->event_fd);
  drain_fd(d->timer_fd);
  d->armed_deadline = 0;  // unknown after the read: re-armed at park

  // The caller may be a worker of another runtime, or drive a simulation
  // (whose virtual clock now_ns() would read): both are restored at the end.
  worker* const saved_worker = tls_worker;
  sim_driver* const saved_sim = tls_sim;
  tls_worker = w;
  tls_sim = nullptr;
  loop_chooser choose;
  std::size_t ran = 0;
  bool fired = false;
  for (;;) {
    runtime_impl::found_work f = rt->find_work(w, choose);
    if (f.task == nullptr) {
      if (fired) break;
      fire_due(rt);  // Step fire (again: a timer may have come due while tasks ran)
      fired = true;
      continue;
    }
    fired = false;
    const std::uint64_t now = now_ns();
    d->slice_began = now;
    rt->after_run(w, f, run_from_loop(rt, w, f), choose);
    ++ran;
    const std::uint64_t after = now_ns();
    meter_run(w, after - now);  // runtime::stats: busy time, longest_run (exact here)
    // Acquire: pairs with the completion's release; only a done bit is read.
    if (target != nullptr && (target->state.load(std::memory_order_acquire) & task_core::kDone))
      break;
    if (after >= until) break;
  }
  tls_worker = saved_worker;
  tls_sim = saved_sim;
  flush_frame_count(w);  // diagnostics::live_frames() is exact between drives

  // runtime::stats; under drive_mutex (one writer).
  w->meter.counts.parks.bump();
  {  // Step park.
    std::lock_guard lk(rt->idle_mutex);
    rt->sleepers.push_back(w);
    // seq_cst: the parker's half of the Dekker pair (inject's load).
    rt->num_sleepers.fetch_add(1, std::memory_order_seq_cst);
    // Relaxed: read under idle_mutex.
    rt->wake_generation.fetch_add(1, std::memory_order_relaxed);
  }
  // Work left (the budget ran out) or arrived while no injector could see
  // the worker parked: the loop must come back.
  if (rt->has_visible_work()) loop_signal(rt);
  arm_timer_fd(rt);
  return ran;
}

// The longest a blocking call waits in poll() before it looks again.
constexpr std::uint64_t kSafetyNetNs = 50'000'000;

// Waits until wakeup_fd() is readable, at most `timeout_ns` (kEndOfTime:
// without bound).  poll's timeout is in milliseconds: round up, so that a
// wait for a timer is never a busy loop of zero-length waits.
void wait_for_work(runtime_impl* rt, std::uint64_t timeout_ns) noexcept {
  int ms = -1;
  if (timeout_ns != kEndOfTime) {
    const std::uint64_t r = (timeout_ns + 999'999) / 1'000'000;
    ms = static_cast<int>(std::min<std::uint64_t>(r, std::numeric_limits<int>::max()));
  }
  pollfd p{rt->loop->epoll_fd, POLLIN, 0};
  while (::poll(&p, 1, ms) < 0 && errno == EINTR) {
  }
}

}  // namespace

loop_driver::~loop_driver() {
  for (int fd : {epoll_fd, event_fd, timer_fd}) {
    if (fd >= 0) ::close(fd);
  }
}

void loop_create(runtime_impl* rt) {
  auto d = std::make_unique<loop_driver>();
  d->event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->event_fd < 0) throw_errno("weft::runtime: eventfd for a driven runtime");
  d->timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (d->timer_fd < 0) throw_errno("weft::runtime: timerfd for a driven runtime");
  d->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (d->epoll_fd < 0) throw_errno("weft::runtime: epoll for a driven runtime");
  for (int fd : {d->event_fd, d->timer_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
      throw_errno("weft::runtime: epoll_ctl for a driven runtime");
  }
  d->armed_deadline = kEndOfTime;
  worker* w = rt->workers[0].get();
  // Relaxed: nobody runs yet.  Every checkpoint() takes its slow path, which
  // reads the clock (loop_yield).
  w->slice_expired.store(true, std::memory_order_relaxed);
  // Parked until somebody drives: a spawn from outside signals event_fd.
  rt->sleepers.push_back(w);
  // Relaxed: nobody else can see the runtime yet (the constructor has not
  // returned).
  rt->num_sleepers.store(1, std::memory_order_relaxed);
  rt->loop = std::move(d);
}

void loop_signal(runtime_impl* rt) noexcept {
  const std::uint64_t one = 1;
  // Non-blocking: EAGAIN only when the counter is near its maximum, and then
  // it is readable anyway.
  [[maybe_unused]] ssize_t n = ::write(rt->loop->event_fd, &one, sizeof one);
}

void loop_yield(runtime_impl* rt, worker* w, task_core* item) noexcept {
  // Relaxed: the driving thread alone reads and writes the flag (a stop()
  // on another thread only sets it, which changes nothing here: it stays
  // set on a driven runtime).
  if (w != nullptr && w->rt == rt && !w->slice_expired.load(std::memory_order_relaxed)) {
    // A checkpoint's slow path cleared it: raise it again for the next one.
    w->slice_expired.store(true, std::memory_order_relaxed);
    if (now_ns() - rt->loop->slice_began < rt->slice_ns) {
      w->resume_next = item;  // run() resumes it at once: the checkpoint "did not suspend"
      return;
    }
  }
  rt->inject(item);  // drive()'s loop finds it (the worker is not parked)
}

void loop_join(task_core* core) {
  runtime_impl* rt = core->rt;
  std::lock_guard lk(rt->loop->drive_mutex);
  for (;;) {
    // Acquire: pairs with the completion's release.
    if (core->state.load(std::memory_order_acquire) & task_core::kDone) return;
    // Acquire: pairs with stop()'s release store; the task can never finish.
    if (rt->exiting.load(std::memory_order_acquire)) return;
    drive(rt, kEndOfTime, core);
    // Acquire: as above.
    if (core->state.load(std::memory_order_acquire) & task_core::kDone) return;
    // Nothing is ready: wait for a wake-up from another thread or a timer.
    // Every completion of a driven runtime's task happens on its driver, so
    // the bound is only a safety net, as the threaded drain's is.
    wait_for_work(rt, kSafetyNetNs);
  }
}

void loop_stop(runtime_impl* rt, std::source_location where) {
  std::lock_guard guard(rt->shutdown_mutex);
  if (rt->shut_down) return;
  const std::uint64_t began = now_ns();
  const std::uint64_t report_every =
      static_cast<std::uint64_t>(saturating_ns(rt->options.shutdown_report_after).count());
  std::uint64_t next_report = report_every == 0 ? kEndOfTime : add_saturating(began, report_every);

  // Steps stop_spawning and cancel_sleepers, as runtime_impl::stop (the
  // driven worker's slice_expired is set for good already).
  rt->begin_stop(where);

  // Step drain, driven here: run until nothing is ready, no timer is armed,
  // no list wait is registered and no sleep is unfinished; then close the
  // injection queue with the last look at it, as the threaded drain does.
  std::lock_guard drive_lock(rt->loop->drive_mutex);
  for (;;) {
    drive(rt, kEndOfTime, nullptr);
    const std::uint64_t now = now_ns();
    if (next_report != kEndOfTime && now >= next_report) {
      try {
        rt->deliver_report(rt->collect_report(now - began, std::vector<char>(1, 1)));
      } catch (...) {
        std::fputs("weft: shutdown is still waiting for tasks (no memory to list them)\n", stderr);
      }
      next_report = add_saturating(now_ns(), report_every);
      continue;
    }
    const bool work = rt->has_visible_work();
    // Acquire: as in runtime_impl::stop (timer_arm's / sleep_resume's RMWs).
    const bool waits = !rt->timer_empty() || !rt->blocked_empty() ||
                       rt->sleeps_unfinished.load(std::memory_order_acquire) != 0;
    if (!work && !waits) {
      std::lock_guard ilk(rt->inject_mutex);
      if (rt->injected.empty()) {
        rt->closed = true;
        break;
      }
      continue;
    }
    if (!work) {
      // Only waits are left (tasks that refused their "shutdown" and sleep or
      // wait for real): whoever ends one signals wakeup_fd(), and timer_fd
      // fires at the earliest sleep.
      wait_for_work(rt, next_report == kEndOfTime ? kEndOfTime : next_report - now);
    }
  }
  rt->report_stuck();   // the worker's counter was written on this thread
  rt->blocking.stop();  // step stop_blocking, as runtime_impl::stop
  // Release: pairs with loop_join's and join_blocking's acquire loads.
  rt->exiting.store(true, std::memory_order_release);
  rt->shut_down = true;
}

}  // namespace weft::detail

namespace weft {

std::size_t runtime::run_ready(std::chrono::nanoseconds budget) {
  detail::runtime_impl* rt = impl_;
  if (rt->loop == nullptr) {
    throw usage_error(
        "weft::runtime::run_ready: this runtime has worker threads; only a driven runtime "
        "(runtime_options::driven) is run by its owner");
  }
  detail::require_not_worker(rt, "weft::runtime::run_ready");
  std::unique_lock lk(rt->loop->drive_mutex, std::try_to_lock);
  if (!lk.owns_lock()) return 0;  // another thread drives (a join, a shutdown)
  // Acquire: pairs with loop_stop's release store: a shut-down runtime has
  // nothing to run.
  if (rt->exiting.load(std::memory_order_acquire)) return 0;
  const std::uint64_t until =
      budget.count() <= 0
          ? 0
          : detail::add_saturating(detail::now_ns(), static_cast<std::uint64_t>(budget.count()));
  return detail::drive(rt, until, nullptr);
}

int runtime::wakeup_fd() const noexcept {
  return impl_->loop != nullptr ? impl_->loop->epoll_fd : -1;
}

std::optional<std::chrono::steady_clock::time_point> runtime::next_timer() const {
  std::uint64_t deadline = 0;
  if (impl_->loop == nullptr || !impl_->timer_next_deadline(&deadline)) return std::nullopt;
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::nanoseconds(static_cast<std::int64_t>(
              std::min<std::uint64_t>(deadline, std::numeric_limits<std::int64_t>::max())))));
}

bool runtime::driven() const noexcept { return impl_->loop != nullptr; }

}  // namespace weft
