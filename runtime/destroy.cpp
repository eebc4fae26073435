// SPDX-License-Identifier: MIT
// runtime/destroy.cpp -- the end of a task's frame: the last reference went,
// so report what nobody observed, free what the frame still owns, destroy it.
#include "cancel_delivery.hpp"

namespace weft::detail {

namespace {
// Destroying a frame can drop the last reference to another task (a handle
// held in the frame), and so on down a chain of any length.  Nested
// destructions are queued on this thread and run by the outermost one, so the
// stack does not grow with the chain.
thread_local bool t_destroying = false;
thread_local task_core* t_destroy_queue = nullptr;  // linked through continuation_core

void destroy_one(task_core* core) noexcept;
}  // namespace

void destroy_task(task_core* core) noexcept {
  if (t_destroying) {
    core->continuation_core = t_destroy_queue;  // unused once the task is gone
    t_destroy_queue = core;
    return;
  }
  t_destroying = true;
  destroy_one(core);
  while (task_core* next = t_destroy_queue) {
    t_destroy_queue = next->continuation_core;
    destroy_one(next);
  }
  t_destroying = false;
}

namespace {
// What a frame may own besides itself: an unobserved exception to report, an
// undelivered request, the request that ended it before it started.
[[gnu::noinline]] void destroy_extras(task_core* core) noexcept {
  promise_base* p = owner_of(core);
  if (p->result == outcome::exception && !core->observed && !core->retrieved)
    report_unhandled(core->rt, p->error, core);
  // Relaxed: the last reference is gone; the list was published to us by the
  // reference count's acq_rel RMWs.
  delete core->extras.load(std::memory_order_relaxed);
  // Acquire: pairs with hand_over's exchange; we own a request left there.
  // No RMW needed: with the last reference gone nobody can hand over another.
  free_request(untagged(core->pending.load(std::memory_order_acquire)));
  free_request(core->final_cancel);
}

inline void destroy_one(task_core* core) noexcept {
  // Relaxed: a look only; destroy_extras loads it again with acquire when it
  // is not null.  Nobody can store to it any more (the last reference is gone).
  if ((owner_of(core)->result == outcome::exception && !core->observed && !core->retrieved) ||
      core->pending.load(std::memory_order_relaxed) != nullptr || core->final_cancel != nullptr ||
      core->extras.load(std::memory_order_relaxed) != nullptr) [[unlikely]] {
    destroy_extras(core);
  }
  std::coroutine_handle<> frame = core->frame;
  core->~task_core();
  frame.destroy();
}
}  // namespace
}  // namespace weft::detail
