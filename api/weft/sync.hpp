// SPDX-License-Identifier: MIT
// weft/sync.hpp -- asynchronous, cancellation-aware synchronisation:
// event, semaphore, and shield().
//
// Every wait here is a cancellation point: a task blocked in event::wait(),
// semaphore::acquire() or shield() is woken at once by cancel() (and by
// runtime shutdown) and sees cancelled_error there; an interrupted wait takes
// nothing (no permit is lost, an event stays as it was).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <coroutine>
#include <cstddef>

#include "weft/detail/task_core.hpp"
#include "weft/task.hpp"

namespace weft {

// A manual-reset event (asyncio.Event).  set() wakes every waiting task and
// the event stays set until reset().  set(), reset() and is_set() may be
// called from any thread; wait() from weft tasks.
// Destroying an event while tasks wait on it is a bug: it aborts with a
// message (their wait nodes would dangle).
class event {
 public:
  explicit event(bool initially_set = false) noexcept : set_(initially_set) {}
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  ~event();

  void set() noexcept;
  void reset() noexcept;
  bool is_set() const noexcept {
    // Acquire: pairs with set()'s release store; what the setter wrote before
    // set() is visible to a caller that sees true.
    return set_.load(std::memory_order_acquire);
  }
  // Suspends until the event is set.  A cancellation point.
  task<void> wait();

 private:
  static bool is_set_locked(void* self) noexcept;
  detail::wait_list list_;
  std::atomic<bool> set_;
};

// A counting semaphore (asyncio.Semaphore), FIFO among waiters.  release()
// and try_acquire() from any thread; acquire() from weft tasks.
//
// Counts are never negative and never above PTRDIFF_MAX.  Bad input is refused
// with an exception and changes nothing: a negative initial count or release
// count throws std::invalid_argument (asyncio raises ValueError for a negative
// initial value); a release that would take the count past PTRDIFF_MAX throws
// std::overflow_error (asyncio.BoundedSemaphore raises ValueError when released
// past its bound; here the bound is the type's), waking nobody.
class semaphore {
 public:
  // Throws std::invalid_argument when `initial` < 0.
  explicit semaphore(std::ptrdiff_t initial);
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;
  ~semaphore();

  // Takes a permit, suspending while there is none.  A cancellation point; a
  // cancelled acquire takes no permit.
  task<void> acquire();
  bool try_acquire() noexcept;
  // Adds `n` permits (0 is allowed: nothing happens) and wakes as many
  // waiters as they serve, in FIFO order.  Throws std::invalid_argument when
  // n < 0 and std::overflow_error when available() + n would exceed
  // PTRDIFF_MAX; the count is unchanged then.
  void release(std::ptrdiff_t n = 1);
  // Permits available now (a snapshot).
  std::ptrdiff_t available() const noexcept;

 private:
  static bool can_take(void* self) noexcept;
  static void take_permit(void* self) noexcept;
  static bool grant(void* self) noexcept;
  mutable detail::wait_list list_;
  std::ptrdiff_t count_;  // guarded by list_'s lock; 0 <= count_ <= PTRDIFF_MAX
};

// asyncio.shield: wait for the task behind `h` to finish, but let a
// cancellation of the *awaiting* task end only this wait: co_await shield(h)
// throws cancelled_error at once while the task behind h keeps running, and h
// can still be awaited or joined later.  On success, gives h's value (or
// rethrows its exception), like co_await h.
template <class T>
task<T> shield(join_handle<T>& h) {
  if (!h.valid()) detail::throw_invalid_handle();
  detail::task_core* target = &detail::access::core(h);
  for (;;) {
    detail::list_wait_once once{detail::watch_list(target),
                                {&detail::watch_ready, nullptr, target}};  // named: not movable
    if (co_await once) break;
  }
  co_return co_await h;  // finished: does not suspend
}

}  // namespace weft
