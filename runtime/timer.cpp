// SPDX-License-Identifier: MIT
// runtime/timer.cpp -- the timer thread: sleeping tasks and time slices.
//
// One thread per runtime keeps a binary min-heap of timer_node* (in the
// sleeping frames) under timer_mutex.  Each node records its heap index so a
// cancelled sleep is removed in O(log n) at once: memory goes back as soon as
// the task ends, and no node is touched after its frame resumed.
//
// Ending a sleep (claim protocol, see timer_node in task_core.hpp):
//   timer thread (under timer_mutex): pop the node, CAS claim kArmed->kFired;
//     if it won, count down the latch and, if last, schedule the task.
//   interrupt (cancel/shutdown): CAS claim kArmed->kCancelled; if it won,
//     remove the node under timer_mutex, count down the latch, schedule if last.
//   the sleeping task itself counts down the latch once after arming.
// The task runs again only after both of its counters reached zero, so the
// node outlives every access by the timer or the canceller.
// The heap's slots are given back as it shrinks (release_spare_slots), so the
// memory of a burst of timers returns once they are gone.
//
// The same thread watches time slices: a worker whose `resumes` counter has
// not moved for a whole slice gets `slice_expired` set, and its next
// checkpoint() reschedules.  While every worker is parked it does not tick.
//
// A simulation (sim.cpp) has no timer thread: its driver pops due timers with
// the same timer_pop_due_locked, and now_ns() on the driving thread is the
// simulation's virtual clock.
#include <algorithm>
#include <chrono>
#include <limits>

#include "dump_impl.hpp"
#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "threads.hpp"
#include "trace.hpp"
#include "weft/task.hpp"

namespace weft::detail {

std::uint64_t now_ns() noexcept {
  if (std::uint64_t ns = 0; sim_hook::virtual_now(&ns)) [[unlikely]]
    return ns;
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

namespace {

constexpr std::uint32_t kNoIndex = timer_node::kNoIndex;

void sift_up(std::vector<timer_node*>& h, std::size_t i) noexcept {
  timer_node* n = h[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 2;
    if (h[parent]->deadline <= n->deadline) break;
    h[i] = h[parent];
    h[i]->heap_index = static_cast<std::uint32_t>(i);
    i = parent;
  }
  h[i] = n;
  n->heap_index = static_cast<std::uint32_t>(i);
}

void sift_down(std::vector<timer_node*>& h, std::size_t i) noexcept {
  timer_node* n = h[i];
  const std::size_t size = h.size();
  for (;;) {
    std::size_t l = 2 * i + 1;
    if (l >= size) break;
    std::size_t m = (l + 1 < size && h[l + 1]->deadline < h[l]->deadline) ? l + 1 : l;
    if (n->deadline <= h[m]->deadline) break;
    h[i] = h[m];
    h[i]->heap_index = static_cast<std::uint32_t>(i);
    i = m;
  }
  h[i] = n;
  n->heap_index = static_cast<std::uint32_t>(i);
}

// Give memory back once the heap has shrunk to a quarter of its capacity (to
// twice its size; never below kKeepSlots): after a burst of 10^6 timers the
// runtime does not keep 8 MB of slots for good.  Amortised O(1) per erase.  The
// copy may fail for lack of memory: then the slots are simply kept.
constexpr std::size_t kKeepSlots = 1024;

void release_spare_slots(std::vector<timer_node*>& h) noexcept {
  if (h.capacity() <= kKeepSlots || h.size() >= h.capacity() / 4) return;
  try {
    std::vector<timer_node*> smaller;
    smaller.reserve(std::max(2 * h.size(), kKeepSlots));
    smaller.assign(h.begin(), h.end());  // heap_index values stay valid: same positions
    h.swap(smaller);
  } catch (...) {
  }
}

void heap_erase(std::vector<timer_node*>& h, std::size_t i) noexcept {
  timer_node* gone = h[i];
  timer_node* last = h.back();
  h.pop_back();
  gone->heap_index = kNoIndex;
  if (i < h.size()) {
    h[i] = last;
    last->heap_index = static_cast<std::uint32_t>(i);
    sift_down(h, i);
    sift_up(h, last->heap_index);
  }
  release_spare_slots(h);
}

// The longest single wait of the timer thread: far below any clock's range,
// and long enough that waking up for a far deadline costs nothing.
constexpr std::uint64_t kMaxTimerWaitNs = std::uint64_t{3600} * 1'000'000'000;  // one hour

// a + d (d <= 0 counts as 0), capped at kEndOfTime.
std::uint64_t saturating_add(std::uint64_t a, std::int64_t d) noexcept {
  return d <= 0 ? a : add_saturating(a, static_cast<std::uint64_t>(d));
}

}  // namespace

bool runtime_impl::timer_arm(timer_node* node) noexcept {
  std::lock_guard lk(timer_mutex);
  // Relaxed: stopping is re-read under timer_mutex, which timer_cancel_all
  // holds after setting it; a sleep armed after that walk is refused here --
  // unless its task already had its "shutdown": that one sleeps.
  if (stopping.load(std::memory_order_relaxed) && !node->after_shutdown) return false;
  // acq_rel: pairs with sleep_resume's decrement and the drain's acquire load
  // (stop()); the task's worker is running, so the drain, which needs every
  // worker parked, reads it afterwards.
  sleeps_unfinished.fetch_add(1, std::memory_order_acq_rel);
  node->counted = true;
  // Relaxed: claim is only raced under timer_mutex or by interrupt(), which
  // leaves kArmed only by its own CAS; a node cancelled before arming stays out.
  if (node->claim.load(std::memory_order_relaxed) != timer_node::kArmed) return true;
  bool new_min = heap.empty() || node->deadline < heap.front()->deadline;
  heap.push_back(node);
  sift_up(heap, heap.size() - 1);
  if (new_min) {
    timer_cv.notify_one();
    // A driven runtime's timer_fd is armed when its driver parks; a timer
    // armed by another thread meanwhile must reach the owner's loop.
    if (loop != nullptr && tls_worker != workers[0].get()) [[unlikely]]
      loop_signal(this);
  }
  return true;
}

void runtime_impl::timer_remove(timer_node* node) noexcept {
  std::lock_guard lk(timer_mutex);
  if (node->heap_index != kNoIndex) heap_erase(heap, node->heap_index);
}

void runtime_impl::timer_cancel_all() noexcept {
  std::lock_guard lk(timer_mutex);
  // Sleeps begun after their task's "shutdown" delivery stay armed (the task
  // refused the shutdown and sleeps for real): they are moved to the front,
  // in place, and made a heap again.
  std::size_t kept = 0;
  for (std::size_t i = 0; i < heap.size(); ++i) {
    timer_node* n = heap[i];
    if (n->after_shutdown) {
      heap[kept++] = n;
      continue;
    }
    n->heap_index = kNoIndex;
    std::uint8_t expected = timer_node::kArmed;
    // acq_rel: decides against interrupt(); see the file comment.
    if (n->claim.compare_exchange_strong(expected, timer_node::kCancelled,
                                         std::memory_order_acq_rel, std::memory_order_relaxed)) {
      task_core* c = n->core;
      // acq_rel: the latch; see sleep_suspend.
      if (n->latch.fetch_sub(1, std::memory_order_acq_rel) == 1) schedule_wake(c);
    }
  }
  heap.resize(kept);  // shrinks: allocates nothing
  for (std::size_t i = 0; i < kept; ++i) sift_up(heap, i);
  release_spare_slots(heap);
}

bool runtime_impl::timer_pop_due_locked(std::uint64_t now, task_core** woken) noexcept {
  *woken = nullptr;
  if (heap.empty() || heap.front()->deadline > now) return false;
  timer_node* due = heap.front();
  heap_erase(heap, 0);
  WEFT_CHAOS_POINT();
  std::uint8_t expected = timer_node::kArmed;
  // acq_rel: decides against interrupt().
  if (due->claim.compare_exchange_strong(expected, timer_node::kFired, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
    task_core* c = due->core;
    *woken = c;
    // acq_rel: the latch; see sleep_suspend.
    if (due->latch.fetch_sub(1, std::memory_order_acq_rel) == 1) schedule_wake(c);
  }
  return true;
}

bool runtime_impl::timer_next_deadline(std::uint64_t* deadline) noexcept {
  std::lock_guard lk(timer_mutex);
  if (heap.empty()) return false;
  *deadline = heap.front()->deadline;
  return true;
}

bool runtime_impl::timer_empty() noexcept {
  std::lock_guard lk(timer_mutex);
  return heap.empty();
}

void runtime_impl::timer_notify_busy() noexcept {
  std::lock_guard lk(timer_mutex);
  if (timer_idle) timer_cv.notify_one();
}

void runtime_impl::timer_main() {
  name_this_thread("weft-timer");
  trace_name_thread("weft-timer");
  std::unique_lock lk(timer_mutex);
  while (!timer_exit) {
    std::uint64_t now = now_ns();
    // Fire what is due.  Scheduling happens under timer_mutex so that a task
    // is never "in flight" between the heap and the injection queue (the
    // shutdown drain looks at both).
    task_core* woken = nullptr;
    while (timer_pop_due_locked(now, &woken)) {
    }
    // The watchdog (dump.cpp): may unlock `lk` around its hook, so it comes
    // before `next` is read from the heap below.
    if (num_sleepers.load(std::memory_order_relaxed) < worker_count) {
      // Relaxed: a hint, as `busy` below.
      watchdog_tick(this, now, lk);
      if (timer_exit) break;
    }
    // Time slices: a worker that resumed nothing for a whole slice is told.
    // Relaxed: num_sleepers is a hint here; a missed tick only delays a
    // reschedule by one tick.
    bool busy = num_sleepers.load(std::memory_order_relaxed) < worker_count;
    std::uint64_t next =
        heap.empty() ? std::numeric_limits<std::uint64_t>::max() : heap.front()->deadline;
    if (busy) {
      for (auto& wp : workers) {
        worker* w = wp.get();
        // Relaxed: a sample of a counter; staleness costs one tick.
        std::uint64_t r = w->resumes.load(std::memory_order_relaxed);
        meter_timer_sample(w, r, now);  // runtime::stats: longest_run
        if (r != w->seen_resumes) {
          w->seen_resumes = r;
          w->seen_since_ns = now;
        } else if (now - w->seen_since_ns >= slice_ns) {
          // Relaxed: a request to reschedule, read by checkpoint().
          w->slice_expired.store(true, std::memory_order_relaxed);
          w->seen_since_ns = now;
        }
      }
      next = std::min(next, saturating_add(now, static_cast<std::int64_t>(std::max<std::uint64_t>(
                                                    slice_ns / 4, 50'000))));
    }
    timer_idle = !busy;
    if (next == std::numeric_limits<std::uint64_t>::max()) {
      timer_cv.wait(lk);
    } else if (next > now) {
      // One wait lasts at most kMaxTimerWaitNs; the loop then looks again.
      // condition_variable::wait_for adds its duration to steady_clock::now():
      // a deadline centuries away (a sleep of "forever" saturates to one)
      // would overflow there, the wait would return at once, and this thread
      // would spin holding timer_mutex between rounds.
      timer_cv.wait_for(lk, std::chrono::nanoseconds(std::min(next - now, kMaxTimerWaitNs)));
    }
  }
}

}  // namespace weft::detail

namespace weft {

detail::sleep_tag sleep_for(std::chrono::nanoseconds d) noexcept {
  if (d.count() <= 0) return {0, true};
  return {detail::saturating_add(detail::now_ns(), d.count()), false};
}

detail::sleep_tag sleep_until(std::chrono::steady_clock::time_point tp) noexcept {
  auto since = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
  std::uint64_t now = detail::now_ns();
  if (since <= 0 || static_cast<std::uint64_t>(since) <= now) return {0, true};
  return {static_cast<std::uint64_t>(since), false};
}

}  // namespace weft
