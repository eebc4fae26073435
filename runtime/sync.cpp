// SPDX-License-Identifier: MIT
// runtime/sync.cpp -- waits on lists: events, semaphores, watchers of a task.
//
// A task that waits on a wait_list suspends with a list_wait node in its frame:
//   register:  register_wait() installs the node as the task's hook (so cancel()
//              interrupts it) unless a request is already pending;
//   registry:  the node joins the runtime's registry of blocked waits, which
//              shutdown walks to interrupt every one of them;
//   arm:       under the list's lock, either the wait can end at once (the
//              node claims itself and takes the resource) or it is linked;
//   latch:     the task counts its share of the latch down; whoever brings it
//              to zero (the task itself, or the party that claimed the node)
//              resumes it.
// The owner (set/release/completion) claims nodes with kArmed -> kFired under
// the list's lock; interrupt() claims with kArmed -> kCancelled and unlinks
// under the same lock.  A node is never resumed while the list still holds it.
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

#include "runtime_impl.hpp"
#include "spin.hpp"
#include "weft/sync.hpp"
#include "weft/task.hpp"

namespace weft::detail {

void wait_list::lock() noexcept { spin_lock(lock_flag); }

void wait_list::push_back(list_wait* n) noexcept {
  intrusive_list::push_back(n);
  n->linked = true;
}

void wait_list::erase(list_wait* n) noexcept {
  intrusive_list::erase(n);
  n->linked = false;
}

void list_wait::interrupt() noexcept {
  std::uint8_t expected = kArmed;
  // acq_rel: decides against the list owner's claim (list_wake).
  if (!claim.compare_exchange_strong(expected, kCancelled, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
    return;
  WEFT_CHAOS_POINT();
  task_core* c = core;
  owner->lock();
  if (linked) owner->erase(this);
  owner->unlock();
  // acq_rel: the latch, as for timer_node.
  if (latch.fetch_sub(1, std::memory_order_acq_rel) == 1) schedule_wake(c);
}

void list_wake(wait_list* list, bool (*grant)(void*), void* obj) noexcept {
  // Caller holds list->lock.
  list_wait* n = list->head;
  while (n != nullptr) {
    list_wait* next = n->next;
    std::uint8_t expected = list_wait::kArmed;
    // acq_rel: decides against interrupt().
    if (n->claim.compare_exchange_strong(expected, list_wait::kFired, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      bool more = grant(obj);
      list->erase(n);
      if (n->on_fire != nullptr) {
        n->on_fire(n, n->fire_ctx);  // an entry of weft::wait: no task to resume here
      } else {
        task_core* c = n->core;
        // acq_rel: the latch.  Last touch of the node.
        if (n->latch.fetch_sub(1, std::memory_order_acq_rel) == 1) schedule_wake(c);
      }
      if (!more) return;
    }
    // A node that lost to interrupt() is unlinked by interrupt() itself.
    n = next;
  }
}

bool list_wait_suspend(task_core* core, list_wait* node, std::coroutine_handle<> self,
                       wait_list* list, const list_resource& what) noexcept {
  node->core = core;
  node->owner = list;
  core->resume_point = self;
  if (cancel_request* r = register_wait(core, reinterpret_cast<std::uintptr_t>(node))) {
    park_request(core, r);  // await_resume delivers it
    // Relaxed: nobody else can see a node that was never armed.
    node->claim.store(list_wait::kCancelled, std::memory_order_relaxed);
    return false;
  }
  // As for sleeps (sleep_suspend): after its "shutdown" the task waits for
  // real, and shutdown waits for it.
  node->after_shutdown = core->shutdown_seen;
  if (!core->rt->register_blocked(node)) {
    // The runtime is stopping and the task has not had its "shutdown" yet:
    // the wait is refused.  Relaxed: as above.
    node->claim.store(list_wait::kRefused, std::memory_order_relaxed);
    return false;
  }
  bool claimed_now = false;
  WEFT_CHAOS_POINT();
  list->lock();
  if (what.ready(what.obj)) {
    std::uint8_t expected = list_wait::kArmed;
    // acq_rel: decides against interrupt().  Only after winning the claim is
    // the resource taken, so an interrupted wait leaves it where it was.
    if (node->claim.compare_exchange_strong(expected, list_wait::kFired, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
      if (what.take != nullptr) what.take(what.obj);
      claimed_now = true;
    }
  } else if (node->claim.load(std::memory_order_acquire) == list_wait::kArmed) {
    // Acquire: pairs with interrupt()'s CAS; if it already claimed the node we
    // do not link it (interrupt() unlinks only under this lock, after us).
    list->push_back(node);
  }
  list->unlock();
  WEFT_CHAOS_POINT();
  // acq_rel: the latch.  The claimant's share, when we claimed ourselves.
  if (claimed_now) node->latch.fetch_sub(1, std::memory_order_acq_rel);
  // acq_rel: our own share; true (suspend) unless we were last.
  return node->latch.fetch_sub(1, std::memory_order_acq_rel) != 1;
}

bool list_wait_resume(task_core* core, list_wait* node, cancel_request*& deliver) {
  // Relaxed: our own node; its last writer resumed us (latch acq_rel).
  std::uint8_t how = node->claim.load(std::memory_order_relaxed);
  core->rt->unregister_blocked(node);  // no-op when it never registered
  unregister_wait(core);
  if (how == list_wait::kFired) return true;
  deliver = take_pending(core);
  if (deliver != nullptr) return false;
  if (how == list_wait::kRefused) {
    core->shutdown_seen = true;  // this is its delivery
    throw shutdown_cancellation(core->rt);
  }
  return false;  // interrupted, but the request was withdrawn (uncancel) meanwhile
}

// ---- the registry of blocked list waits (shutdown interrupts them) ----

bool runtime_impl::register_blocked(list_wait* node) noexcept {
  std::lock_guard lk(blocked_mutex);
  // Relaxed: stopping is set before cancel_blocked() takes blocked_mutex, so a
  // registration that misses it is interrupted by that walk.
  if (stopping.load(std::memory_order_relaxed) && !node->after_shutdown) return false;
  blocked.push_front(node);
  node->registered = true;
  return true;
}

void runtime_impl::unregister_blocked(list_wait* node) noexcept {
  std::lock_guard lk(blocked_mutex);
  if (!node->registered) return;
  blocked.erase(node);
  node->registered = false;
}

void runtime_impl::cancel_blocked() noexcept {
  std::lock_guard lk(blocked_mutex);
  // The nodes stay alive while registered: their tasks unregister (under this
  // mutex) only after they resumed.  A wait begun after the task's "shutdown"
  // delivery is left to wait.
  for (list_wait* n = blocked.head; n != nullptr; n = n->reg_next) {
    if (!n->after_shutdown) n->interrupt();
  }
}

bool runtime_impl::blocked_empty() noexcept {
  std::lock_guard lk(blocked_mutex);
  return blocked.empty();
}

}  // namespace weft::detail

// ---- event, semaphore ----

namespace weft {

namespace {
bool grant_every(void*) noexcept { return true; }
[[noreturn]] void die_with_waiters(const char* what) noexcept {
  std::fprintf(stderr, "weft: %s destroyed while tasks still wait on it\n", what);
  std::abort();
}
}  // namespace

event::~event() {
  list_.lock();
  bool waiting = list_.head != nullptr;
  list_.unlock();
  if (waiting) die_with_waiters("weft::event");
}

bool event::is_set_locked(void* self) noexcept {
  // Relaxed: under the list lock, which set()/reset() hold when they write it.
  return static_cast<event*>(self)->set_.load(std::memory_order_relaxed);
}

void event::set() noexcept {
  list_.lock();
  // Release: pairs with is_set()'s acquire load.
  set_.store(true, std::memory_order_release);
  detail::list_wake(&list_, grant_every, nullptr);
  list_.unlock();
}

void event::reset() noexcept {
  list_.lock();
  // Relaxed: waiters read it under the list lock.
  set_.store(false, std::memory_order_relaxed);
  list_.unlock();
}

task<void> event::wait() {
  for (;;) {
    // A named awaiter: it holds atomics and must not be moved (g++ 12 moves an
    // awaiter returned by reference from await_transform).
    detail::list_wait_once once{&list_, {&event::is_set_locked, nullptr, this}};
    if (co_await once) co_return;
  }
}

semaphore::semaphore(std::ptrdiff_t initial) : count_(initial) {
  if (initial < 0) {
    throw std::invalid_argument("weft::semaphore: negative initial count " +
                                std::to_string(initial));
  }
}

semaphore::~semaphore() {
  list_.lock();
  bool waiting = list_.head != nullptr;
  list_.unlock();
  if (waiting) die_with_waiters("weft::semaphore");
}

namespace {
// Is a waiter still waiting (armed) in `list`?  A node whose wait was already
// claimed by interrupt() may still be linked for a moment (interrupt() unlinks
// it under this lock right after its CAS): it does not count, or a newcomer
// would queue behind a waiter that is gone while permits are free -- a lost
// wake-up.  Caller holds the list's lock.
bool has_armed_waiter(const detail::wait_list& list) noexcept {
  for (const detail::list_wait* n = list.head; n != nullptr; n = n->next) {
    // Acquire: pairs with interrupt()'s CAS.
    if (n->claim.load(std::memory_order_acquire) == detail::list_wait::kArmed) return true;
  }
  return false;
}
}  // namespace

bool semaphore::can_take(void* self) noexcept {
  auto* s = static_cast<semaphore*>(self);
  return s->count_ > 0 && !has_armed_waiter(s->list_);  // FIFO: no overtaking waiters
}

void semaphore::take_permit(void* self) noexcept { --static_cast<semaphore*>(self)->count_; }

bool semaphore::grant(void* self) noexcept {
  auto* s = static_cast<semaphore*>(self);
  --s->count_;
  return s->count_ > 0;
}

task<void> semaphore::acquire() {
  for (;;) {
    detail::list_wait_once once{
        &list_, {&semaphore::can_take, &semaphore::take_permit, this}};  // named: see event::wait
    if (co_await once) co_return;
  }
}

bool semaphore::try_acquire() noexcept {
  list_.lock();
  bool ok = count_ > 0 && !has_armed_waiter(list_);
  if (ok) --count_;
  list_.unlock();
  return ok;
}

void semaphore::release(std::ptrdiff_t n) {
  if (n < 0) {
    throw std::invalid_argument("weft::semaphore::release: negative count " + std::to_string(n));
  }
  list_.lock();
  // count_ >= 0 always, so the subtraction cannot overflow.
  if (n > std::numeric_limits<std::ptrdiff_t>::max() - count_) {
    const std::ptrdiff_t have = count_;
    list_.unlock();
    throw std::overflow_error("weft::semaphore::release: " + std::to_string(have) + " + " +
                              std::to_string(n) + " permits exceed PTRDIFF_MAX");
  }
  count_ += n;
  if (count_ > 0) detail::list_wake(&list_, &semaphore::grant, this);
  list_.unlock();
}

std::ptrdiff_t semaphore::available() const noexcept {
  list_.lock();
  std::ptrdiff_t c = count_;
  list_.unlock();
  return c;
}

}  // namespace weft
