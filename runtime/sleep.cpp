// SPDX-License-Identifier: MIT
// runtime/sleep.cpp -- the task's side of sleep_for/sleep_until: register
// the timer node as the task's wait (so cancel() interrupts it), arm it, and
// take what ended the sleep.  The timer thread's side is timer.cpp.
#include "cancel_delivery.hpp"

namespace weft::detail {

bool sleep_suspend(task_core* core, timer_node* node, std::coroutine_handle<> self) noexcept {
  node->core = core;
  return sleep_arm(core, node, self);
}

bool sleep_arm(task_core* core, timer_node* node, std::coroutine_handle<> self) noexcept {
  core->resume_point = self;
  if (cancel_request* r = register_wait(core, reinterpret_cast<std::uintptr_t>(node))) {
    park_request(core, r);  // await_resume delivers it
    node->claim.store(timer_node::kCancelled, std::memory_order_relaxed);  // never armed
    return false;
  }
  // A task that already had its one "shutdown" sleeps for real during the
  // shutdown: refusing its sleeps would make a task that catches every
  // cancellation spin (each refusal throws at once).
  node->after_shutdown = core->shutdown_seen;
  if (!core->rt->timer_arm(node)) {
    // The runtime is stopping and the task has not had its "shutdown" yet:
    // the sleep is refused; await_resume delivers it.
    // Relaxed: the node was never armed; an interrupt() racing this store can
    // only fail its CAS (claim is not kArmed) or win it first, harmlessly.
    node->claim.store(timer_node::kRefused, std::memory_order_relaxed);
    return false;
  }
  WEFT_CHAOS_POINT();
  // acq_rel: whoever brings the latch to zero resumes the task; release orders
  // our last use of the node before it, acquire makes the other side's visible.
  return node->latch.fetch_sub(1, std::memory_order_acq_rel) != 1;
}

cancel_request* sleep_resume(task_core* core, timer_node* node) {
  // acq_rel: pairs with timer_arm's increment and the shutdown drain's
  // acquire load: the sleep is over only now that its task runs again.
  if (node->counted) core->rt->sleeps_unfinished.fetch_sub(1, std::memory_order_acq_rel);
  unregister_wait(core);
  cancel_request* r = take_pending(core);
  // Relaxed: written by this thread (refusal) before.
  if (r == nullptr && node->claim.load(std::memory_order_relaxed) == timer_node::kRefused) {
    core->shutdown_seen = true;  // this is its delivery
    throw shutdown_cancellation(core->rt);
  }
  return r;
}

void timer_node::interrupt() noexcept {
  std::uint8_t expected = kArmed;
  // acq_rel: the claim decides between the timer thread and us; see timer.cpp.
  if (!claim.compare_exchange_strong(expected, kCancelled, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
    return;  // fired first (or never armed): the other side resumes the task
  WEFT_CHAOS_POINT();
  task_core* c = core;
  c->rt->timer_remove(this);  // after this the timer thread cannot see the node
  // acq_rel: see sleep_suspend.
  if (latch.fetch_sub(1, std::memory_order_acq_rel) == 1) schedule_wake(c);
}

}  // namespace weft::detail
