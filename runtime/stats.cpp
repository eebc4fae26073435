// SPDX-License-Identifier: MIT
// runtime/stats.cpp -- runtime::stats(): the per-worker counters, busy time,
// the longest run between resumes, and the cancellation-latency histograms.
//
// Costs (docs/observability.md, "Metrics"):
//   per task:    a spawn and a finish bump worker_hot::spawned / finished
//                (a relaxed load and store each; they replace the plain
//                counter the shutdown report used); nothing per resume.
//   idle paths:  a steal attempt, a park, an injection, a wake-up: one bump;
//                the worker loop reads the clock once more per idle stretch
//                (when it finds work again; the start of the stretch reuses
//                the idle spin's clock read).
//   timer tick:  one relaxed load per worker (the running site) for
//                longest_run, next to the time-slice check.
//   cancel:      a clock read where a request lands, where it is delivered
//                and where the task finishes by it, and a histogram bump
//                each: all on paths that take locks or throw already.
//
// Cancellation latency, step by step:
//   stamp:    hand_over, about to store a request into an empty pending
//             slot, writes the time (us, 32 bits) into the task's promise
//             (promise_base::cancel_stamp_us).  The "shutdown" is stamped
//             once per runtime (shutdown_began_ns): it is produced at each
//             task's resume point, never stored in a slot.
//   deliver:  whoever takes the request out of the slot for the task that
//             receives it (take_from_chain, a fork tree's first strand)
//             exchanges the stamp to 0, records request -> delivered and
//             stashes both times on its worker, keyed by the request and the
//             task.  A request parked back into a slot (a refused wait, a
//             construct that re-raises later) is not stamped again, so it
//             is sampled once.
//   carry:    cancelled_error_of, making the error for that request on the
//             same thread, moves the stashed times into the error.
//   finish:   the spawned task that the error ends (its promise's
//             unhandled_exception) records delivered -> finished and
//             request -> finished and clears the error's times, so that a
//             task that ends by rethrowing it does not count it again.  An
//             unstarted task: complete_unstarted, right after the delivery.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "cancel_delivery.hpp"
#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "stats_block.hpp"
#include "weft/runtime.hpp"
#include "weft/stats.hpp"

namespace weft {

// ---- latency_histogram ----

std::size_t latency_histogram::bucket_of(std::uint64_t ns) noexcept {
  if (ns == 0) return 0;
  const auto b = static_cast<std::size_t>(64 - __builtin_clzll(ns));  // ns in [2^(b-1), 2^b)
  return std::min(b, kBuckets - 1);
}

std::uint64_t latency_histogram::count() const noexcept {
  std::uint64_t n = 0;
  for (std::uint64_t c : counts) n += c;
  return n;
}

std::chrono::nanoseconds latency_histogram::mean() const noexcept {
  const std::uint64_t n = count();
  return std::chrono::nanoseconds(n == 0 ? 0 : static_cast<std::int64_t>(sum_ns / n));
}

std::chrono::nanoseconds latency_histogram::quantile(double q) const noexcept {
  const std::uint64_t n = count();
  if (n == 0) return std::chrono::nanoseconds(0);
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::clamp<std::uint64_t>(rank, 1, n);
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    seen += counts[b];
    if (seen < rank) continue;
    if (b == 0) return std::chrono::nanoseconds(0);
    const std::uint64_t upper = b + 1 < kBuckets ? std::uint64_t{1} << b : max_ns;
    return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(upper, max_ns)));
  }
  return max();
}

latency_histogram& latency_histogram::operator+=(const latency_histogram& o) noexcept {
  for (std::size_t b = 0; b < kBuckets; ++b) counts[b] += o.counts[b];
  sum_ns += o.sum_ns;
  max_ns = std::max(max_ns, o.max_ns);
  return *this;
}

namespace {

// "850ns", "12.3us", "4.56ms", "1.20s".
std::string format_ns(std::uint64_t ns) {
  char buf[32];
  const auto d = static_cast<double>(ns);
  if (ns < 1'000) {
    std::snprintf(buf, sizeof buf, "%lluns", static_cast<unsigned long long>(ns));
  } else if (ns < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.3gus", d / 1e3);
  } else if (ns < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.3gms", d / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.3gs", d / 1e9);
  }
  return buf;
}

std::string format_ns(std::chrono::nanoseconds d) {
  return format_ns(static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0)));
}

}  // namespace

std::string latency_histogram::summary() const {
  const std::uint64_t n = count();
  std::string s = "n=" + std::to_string(n);
  if (n == 0) return s;
  s += " p50<=" + format_ns(p50()) + " p99<=" + format_ns(p99()) + " max=" + format_ns(max()) +
       " mean=" + format_ns(mean());
  return s;
}

worker_stats& worker_stats::operator+=(const worker_stats& o) noexcept {
  spawned += o.spawned;
  completed += o.completed;
  cancelled += o.cancelled;
  for (std::size_t k = 0; k < kCancelKinds; ++k) cancelled_by[k] += o.cancelled_by[k];
  failed += o.failed;
  steals += o.steals;
  steal_attempts += o.steal_attempts;
  injected += o.injected;
  parks += o.parks;
  wakeups += o.wakeups;
  busy += o.busy;
  longest_run = std::max(longest_run, o.longest_run);
  return *this;
}

std::string runtime_stats::to_string() const {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-8s %10s %10s %9s %7s %9s %9s %9s %7s %8s %9s %9s\n", "worker",
                "spawned", "completed", "cancelled", "failed", "steals", "attempts", "injected",
                "parks", "wakeups", "busy", "longest");
  out += line;
  auto row = [&](const std::string& name, const worker_stats& w) {
    std::snprintf(
        line, sizeof line, "%-8s %10llu %10llu %9llu %7llu %9llu %9llu %9llu %7llu %8llu %9s %9s\n",
        name.c_str(), static_cast<unsigned long long>(w.spawned),
        static_cast<unsigned long long>(w.completed), static_cast<unsigned long long>(w.cancelled),
        static_cast<unsigned long long>(w.failed), static_cast<unsigned long long>(w.steals),
        static_cast<unsigned long long>(w.steal_attempts),
        static_cast<unsigned long long>(w.injected), static_cast<unsigned long long>(w.parks),
        static_cast<unsigned long long>(w.wakeups), format_ns(w.busy).c_str(),
        format_ns(w.longest_run).c_str());
    out += line;
  };
  for (std::size_t i = 0; i < workers.size(); ++i) row(std::to_string(i), workers[i]);
  row("outside", outside);
  row("total", total);
  out += "cancelled by kind:";
  for (std::size_t k = 0; k < kCancelKinds; ++k) {
    out += ' ';
    out += weft::to_string(static_cast<cancel_kind>(k));
    out += '=';
    out += std::to_string(total.cancelled_by[k]);
  }
  out += "\ncancel -> delivered:     " + cancel_to_delivery.summary();
  out += "\ndelivered -> finished:   " + delivery_to_finish.summary();
  out += "\ncancel -> finished:      " + cancel_to_finish.summary();
  out += '\n';
  return out;
}

}  // namespace weft

namespace weft::detail {

static_assert(static_cast<std::size_t>(cancel_kind::shutdown) + 1 == kCancelKinds,
              "kCancelKinds counts every cancel_kind");

void stat_histogram::record(std::uint64_t ns, bool shared) noexcept {
  stat_counter& bucket = counts[latency_histogram::bucket_of(ns)];
  if (shared) {
    bucket.add();
    sum_ns.add(ns);
    // Relaxed: a statistic; the CAS only keeps the largest of racing samples.
    std::uint64_t m = max_ns.v.load(std::memory_order_relaxed);
    while (ns > m && !max_ns.v.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
    }
    return;
  }
  bucket.bump();
  sum_ns.bump(ns);
  // Relaxed: one writer (see stat_counter::bump).
  if (ns > max_ns.get()) max_ns.v.store(ns, std::memory_order_relaxed);
}

void stat_histogram::read_into(latency_histogram& out) const noexcept {
  latency_histogram h;
  for (std::size_t b = 0; b < latency_histogram::kBuckets; ++b) h.counts[b] = counts[b].get();
  h.sum_ns = sum_ns.get();
  h.max_ns = max_ns.get();
  out += h;
}

namespace {

// The clock of a runtime's latency stamps: a simulation's virtual clock (its
// owner thread is the only one that touches it, inside a drive or not), else
// steady_clock (a driven runtime may be driven from inside a simulation's
// task, where now_ns() would read the virtual clock).
std::uint64_t clock_ns(const runtime_impl* rt) noexcept {
  if (rt->sim != nullptr) return rt->sim->now;
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

std::uint32_t stamp_us(std::uint64_t ns) noexcept {
  const auto us = static_cast<std::uint32_t>(ns / 1000);  // mod 2^32
  return us == 0 ? 1 : us;                                // 0 means "no stamp"
}

std::atomic_ref<std::uint32_t> stamp_of(task_core* core) noexcept {
  return std::atomic_ref<std::uint32_t>(owner_of(core)->cancel_stamp_us);
}

// This runtime's worker on the calling thread, or null.
worker* here(const runtime_impl* rt) noexcept {
  worker* w = tls_worker;
  return w != nullptr && w->rt == rt ? w : nullptr;
}

// Where the calling thread counts: its worker's block (one writer), or the
// outside block (shared: RMW).
struct meter_target {
  stats_block* block;
  bool shared;
  void bump(stat_counter& c, std::uint64_t n = 1) const noexcept {
    if (shared) {
      c.add(n);
    } else {
      c.bump(n);
    }
  }
};
meter_target target_of(runtime_impl* rt) noexcept {
  if (worker* w = here(rt)) return {&w->meter.counts, false};
  return {&rt->outside_meter, true};
}

void stash(runtime_impl* rt, task_core* running, const cancel_request* r, std::uint64_t requested,
           std::uint64_t delivered) noexcept {
  worker* w = here(rt);
  if (w == nullptr) return;
  w->meter.stash_req = r;
  w->meter.stash_task = running;
  w->meter.stash_requested_ns = requested;
  w->meter.stash_delivered_ns = delivered;
}

// The finish of a cancellation delivered at `delivered` and requested at
// `requested` (0: unknown).
void record_finish(runtime_impl* rt, const meter_target& t, std::uint64_t requested,
                   std::uint64_t delivered) noexcept {
  if (delivered == 0) return;
  const std::uint64_t now = clock_ns(rt);
  t.block->delivery_to_finish.record(now > delivered ? now - delivered : 0, t.shared);
  if (requested != 0) t.block->to_finish.record(now > requested ? now - requested : 0, t.shared);
}

void count_cancelled(const meter_target& t, cancel_kind kind) noexcept {
  const auto k = static_cast<std::size_t>(kind);
  if (k < kCancelKinds) t.bump(t.block->cancelled_by[k]);
}

}  // namespace

void meter_inject(runtime_impl* rt) noexcept {
  const meter_target t = target_of(rt);
  t.bump(t.block->injected);
}

void meter_wakes(runtime_impl* rt, std::uint64_t n) noexcept {
  const meter_target t = target_of(rt);
  t.bump(t.block->wakeups, n);
}

void meter_active(worker* w) noexcept {
  const std::uint64_t now = now_ns();
  // Relaxed: a statistic (stats() adds the stretch in progress).
  w->meter.active_since.store(now == 0 ? 1 : now, std::memory_order_relaxed);
  w->meter.idle = false;
}

void meter_idle(worker* w, std::uint64_t now) noexcept {
  if (w->meter.idle) return;
  w->meter.idle = true;
  // Relaxed: our own store (meter_active).
  const std::uint64_t since = w->meter.active_since.load(std::memory_order_relaxed);
  // Relaxed: a statistic.  Cleared first: a stats() in between misses the
  // stretch for a moment rather than counting it twice.
  w->meter.active_since.store(0, std::memory_order_relaxed);
  w->meter.counts.busy_ns.bump(now > since ? now - since : 0);
}

void meter_timer_sample(worker* w, std::uint64_t resumes, std::uint64_t now) noexcept {
  worker_meter& m = w->meter;
  // Relaxed: a sample (see set_current); a site with line 0 is no task.
  if (w->running_site.load(std::memory_order_relaxed).line() == 0) {
    m.run_since_ns = 0;  // idle: a run seen next begins then
    return;
  }
  if (m.run_since_ns == 0 || resumes != m.run_resumes) {
    m.run_resumes = resumes;
    m.run_since_ns = now;
    return;
  }
  // Still in the resume first seen at run_since_ns: at least this long.
  const std::uint64_t stretch = now - m.run_since_ns;
  if (stretch > m.counts.longest_run_ns.get())
    m.counts.longest_run_ns.v.store(stretch, std::memory_order_relaxed);
}

void meter_run(worker* w, std::uint64_t ns) noexcept {
  w->meter.counts.busy_ns.bump(ns);
  // Relaxed: one writer (the driver).
  if (ns > w->meter.counts.longest_run_ns.get())
    w->meter.counts.longest_run_ns.v.store(ns, std::memory_order_relaxed);
}

void meter_request(task_core* core) noexcept {
  // Relaxed: the caller's release store of the request publishes it.
  stamp_of(core).store(stamp_us(clock_ns(core->rt)), std::memory_order_relaxed);
}

void meter_move_request(task_core* from, task_core* to) noexcept {
  // Relaxed: under the hook locks of the slots they go with.
  const std::uint32_t s = stamp_of(from).exchange(0, std::memory_order_relaxed);
  if (s != 0) stamp_of(to).store(s, std::memory_order_relaxed);
}

void meter_delivery(task_core* slot, task_core* running, const cancel_request* r) noexcept {
  // Relaxed: the acquire exchange that took the request ordered the stamp
  // written before its release store; an exchange, so that one request is
  // sampled once even if a new one lands meanwhile.
  const std::uint32_t s = stamp_of(slot).exchange(0, std::memory_order_relaxed);
  if (s == 0) return;  // parked back after an earlier delivery, or moved
  runtime_impl* rt = running->rt;
  const std::uint64_t now = clock_ns(rt);
  const std::uint64_t latency = std::uint64_t{static_cast<std::uint32_t>(stamp_us(now) - s)} * 1000;
  const meter_target t = target_of(rt);
  t.block->to_delivery.record(latency, t.shared);
  stash(rt, running, r, now > latency ? now - latency : 1, now);
}

void meter_shutdown_delivery(task_core* running, const cancel_request* r) noexcept {
  runtime_impl* rt = running->rt;
  // Acquire: pairs with begin_stop's seq_cst store of `stopping`, made after
  // shutdown_began_ns was written (every caller saw the runtime stopping).
  (void)rt->stopping.load(std::memory_order_acquire);
  const std::uint64_t began = rt->shutdown_began_ns;
  const std::uint64_t now = clock_ns(rt);
  const meter_target t = target_of(rt);
  t.block->to_delivery.record(now > began ? now - began : 0, t.shared);
  stash(rt, running, r, began == 0 ? 1 : began, now);
}

void meter_unstash(const cancel_request* req, const task_core* task, std::uint64_t* requested,
                   std::uint64_t* delivered) noexcept {
  worker* w = tls_worker;
  if (w == nullptr || w->meter.stash_req != req) return;
  if (task == nullptr) task = w->current;
  if (w->meter.stash_task != task) return;
  *requested = w->meter.stash_requested_ns;
  *delivered = w->meter.stash_delivered_ns;
  w->meter.stash_req = nullptr;
  w->meter.stash_task = nullptr;
}

void meter_restash(const cancelled_error& e, const cancel_request* req) noexcept {
  worker* w = tls_worker;
  const std::uint64_t delivered = cancel_route::delivered_ns(e);
  if (w == nullptr || w->current == nullptr || delivered == 0) return;
  stash(w->rt, w->current, req, cancel_route::requested_ns(e), delivered);
}

void meter_unstarted(task_core* core, const cancel_request* req) noexcept {
  runtime_impl* rt = core->rt;
  const meter_target t = target_of(rt);
  count_cancelled(t, req->kind);
  std::uint64_t requested = 0;
  std::uint64_t delivered = 0;
  meter_unstash(req, core, &requested, &delivered);
  record_finish(rt, t, requested, delivered);
}

void meter_cancelled(task_core* core, const cancelled_error& e) noexcept {
  runtime_impl* rt = core->rt;
  const meter_target t = target_of(rt);
  count_cancelled(t, e.kind());
  const std::uint64_t delivered = cancel_route::delivered_ns(e);
  if (delivered == 0) return;
  record_finish(rt, t, cancel_route::requested_ns(e), delivered);
  // The error object is not const (an exception object); the task that ends
  // by it owns it until its outcome is published (kDone, release), so later
  // readers see the cleared stamps.
  cancel_route::set_stamps(const_cast<cancelled_error&>(e), 0, 0);
}

void meter_failed(task_core* core) noexcept {
  const meter_target t = target_of(core->rt);
  t.bump(t.block->failed);
}

namespace {

void read_block(const stats_block& b, worker_stats& s) noexcept {
  for (std::size_t k = 0; k < kCancelKinds; ++k) {
    s.cancelled_by[k] = b.cancelled_by[k].get();
    s.cancelled += s.cancelled_by[k];
  }
  s.failed = b.failed.get();
  s.steals = b.steals.get();
  s.steal_attempts = b.steal_attempts.get();
  s.injected = b.injected.get();
  s.parks = b.parks.get();
  s.wakeups = b.wakeups.get();
  s.busy = std::chrono::nanoseconds(static_cast<std::int64_t>(b.busy_ns.get()));
  s.longest_run = std::chrono::nanoseconds(static_cast<std::int64_t>(b.longest_run_ns.get()));
}

void read_histograms(const stats_block& b, runtime_stats& st) noexcept {
  b.to_delivery.read_into(st.cancel_to_delivery);
  b.delivery_to_finish.read_into(st.delivery_to_finish);
  b.to_finish.read_into(st.cancel_to_finish);
}

}  // namespace

}  // namespace weft::detail

namespace weft {

runtime_stats runtime::stats() const {
  using namespace detail;
  runtime_stats st;
  st.workers.resize(impl_->workers.size());
  const std::uint64_t now = now_ns();
  for (std::size_t i = 0; i < impl_->workers.size(); ++i) {
    const worker& w = *impl_->workers[i];
    worker_stats& s = st.workers[i];
    // Relaxed: owner-written counters (bump_owned); a recent value.
    s.spawned = w.spawned.load(std::memory_order_relaxed);
    s.completed = w.finished.load(std::memory_order_relaxed);
    read_block(w.meter.counts, s);
    // Relaxed: a statistic; the active stretch in progress counts too.
    const std::uint64_t since = w.meter.active_since.load(std::memory_order_relaxed);
    if (since != 0 && now > since) s.busy += std::chrono::nanoseconds(now - since);
    read_histograms(w.meter.counts, st);
    st.total += s;
  }
  st.outside.spawned = impl_->outside_meter.spawned.get();
  st.outside.completed = impl_->outside_meter.completed.get();
  read_block(impl_->outside_meter, st.outside);
  read_histograms(impl_->outside_meter, st);
  st.total += st.outside;
  return st;
}

}  // namespace weft
