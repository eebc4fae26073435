// SPDX-License-Identifier: MIT
// runtime/join.cpp -- taking a task's outcome: a coroutine's co_await (slow
// path: register as the joiner, forwarding a pending cancel down first), a
// thread's join(), and the misuse errors of a join_handle.
#include "cancel_delivery.hpp"
#include "sim_driver.hpp"
#include "weft/task.hpp"

namespace weft::detail {

void throw_already_taken() {
  throw usage_error("weft: the result of this join_handle was already taken");
}

void rethrow_outcome(promise_base& p) {
  switch (p.result) {
    case outcome::exception:
      std::rethrow_exception(p.error);
    case outcome::cancelled: {
      if (p.error) std::rethrow_exception(p.error);
      const cancel_request* r = p.own_core().final_cancel;
      throw cancelled_error(r->reason, r->kind, r->where);
    }
    default:
      throw usage_error("weft: the task has no result (it was awaited while still running?)");
  }
}

cancelled_error cancellation_of(const promise_base& p) {
  if (p.error) {
    try {
      std::rethrow_exception(p.error);
    } catch (const cancelled_error& e) {
      return e;
    } catch (...) {
    }
  }
  const cancel_request* r = const_cast<promise_base&>(p).own_core().final_cancel;
  if (r != nullptr) return cancelled_error(r->reason, r->kind, r->where);
  return cancelled_error("", cancel_kind::explicit_request);
}

void check_settled(task_core* core) {
  // Acquire: pairs with the completion's release (kDone after the outcome).
  if ((core->state.load(std::memory_order_acquire) & task_core::kDone) == 0)
    throw usage_error(
        "weft: result() / exception() of a task that has not finished (await it, or check "
        "done() first)");
  if (core->observed) throw_already_taken();
  core->retrieved = true;
}

void throw_invalid_handle() {
  throw usage_error("weft: this join_handle is empty (moved from or default constructed)");
}
void throw_empty_task() {
  throw usage_error("weft: this task is empty (moved from, already awaited or spawned)");
}

void throw_joined_by_thread() {
  throw usage_error(
      "weft: co_await of a join_handle that a thread is joining (join()); the outcome of a "
      "handle is taken once, by its one owner");
}

void join_blocking(task_core* core) {
  // Compares the pointer only: the runtime may be gone (a finished task).
  require_not_worker(core->rt, "weft::join_handle::join");
  // Acquire: pairs with the completion's release (mark_done's CAS, or the
  // inline join's release store): a finished task's outcome is visible.
  std::uint32_t s = core->state.load(std::memory_order_acquire);
  if ((s & task_core::kDone) == 0) {
    // Not finished: its runtime is alive, or kept (see accepts_cancel).
    const runtime_impl* rt = core->rt;
    // A simulation has one thread: it drives the task here, no claim needed.
    if (sim_hook::join(core)) return;
    // A driven runtime has no worker thread: the joining thread drives it,
    // unless another thread does.
    if (rt->loop != nullptr) {
      loop_join(core);
      // Acquire: as above; a finished task's runtime may be gone by now.
      s = core->state.load(std::memory_order_acquire);
    }
    // Acquire: pairs with stop()'s release store of `exiting`, made once every
    // task that could still finish had finished (the drain).
    if ((s & task_core::kDone) == 0 && rt->exiting.load(std::memory_order_acquire)) {
      throw usage_error(
          "weft::join_handle::join: the task can never finish: its runtime shut down while it "
          "was blocked on something shutdown cannot end (reported at shutdown)");
    }
  }
  // Claim the outcome: the CAS sets kThreadJoiner only when no joiner is
  // registered, so of several threads (or a thread and a co_await) exactly
  // one wins; the others get usage_error at once and never wait.
  for (;;) {
    if ((s & task_core::kJoiner) != 0) {
      throw usage_error(
          "weft::join_handle::join: a task awaits this handle (co_await) and takes its outcome; "
          "the outcome of a handle is taken once, by its one owner");
    }
    if ((s & task_core::kThreadJoiner) != 0) {
      throw usage_error(
          "weft::join_handle::join: another join() of this handle is waiting or already took the "
          "outcome; the outcome of a handle is taken once, by its one owner");
    }
    // Acquire (success and failure): when kDone is set, the outcome is ours to
    // read.  No release: the flag publishes no data (the joiner waits on this
    // word; the completer keeps its reference while it notifies).
    if (core->state.compare_exchange_weak(s, s | task_core::kThreadJoiner,
                                          std::memory_order_acquire, std::memory_order_acquire))
      break;
  }
  s |= task_core::kThreadJoiner;
  // Either the completer's mark_done saw our flag (then it notifies after
  // setting kDone), or our CAS saw kDone: no lost wake-up.  wait() returns
  // when the word differs from `s` (a reference count may change meanwhile).
  while ((s & task_core::kDone) == 0) {
    // Acquire: pairs with the completion's release, as above.
    core->state.wait(s, std::memory_order_acquire);
    s = core->state.load(std::memory_order_acquire);
  }
  if ((s & task_core::kJoiner) != 0) {
    // The task's owner awaited it meanwhile and took the outcome inline.
    throw usage_error(
        "weft::join_handle::join: a task awaited this handle (co_await) and took its outcome; "
        "the outcome of a handle is taken once, by its one owner");
  }
}

void throw_self_join() {
  throw usage_error("weft: a task awaited its own join_handle (it would wait for itself forever)");
}

std::coroutine_handle<> join_slow(task_core* core, task_core* target,
                                  std::coroutine_handle<> self) noexcept {
  if (target == core) return self;  // await_resume reports the misuse
  // asyncio: a cancel pending on the joiner when it starts waiting goes to the
  // awaited task instead (Task.__step cancels its new _fut_waiter).
  for (;;) {
    cancel_request* r = register_wait(core, reinterpret_cast<std::uintptr_t>(target) | 1);
    if (r == nullptr) break;
    // Acquire: pairs with complete_task's release RMW (kDone).
    if (untagged(r)->kind == cancel_kind::shutdown ||
        (target->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
      // Nothing to forward to (finished), or the one shutdown delivery: keep it
      // for ourselves and resume now; await_resume delivers it.
      park_request(core, r);
      return self;
    }
    // Forwarded, tagged: if the target finishes without taking it, the
    // request comes back to us when the join ends (reclaim_forwarded).
    hand_over(target, untagged(r), depth_of(r) + 1);
  }
  target->continuation = self;
  target->continuation_core = core;
  core->resume_point = self;
  WEFT_CHAOS_POINT();
  // Relaxed: the CAS below re-reads it.
  std::uint32_t prev = target->state.load(std::memory_order_relaxed);
  do {
    // A thread's join() claimed the outcome: do not register; await_resume
    // throws usage_error.  (Our continuation fields are only read with kJoiner.)
    if ((prev & task_core::kThreadJoiner) != 0) [[unlikely]]
      return self;
    // acq_rel: release publishes continuation to the completer's acquire RMW;
    // acquire (if kDone is already set) makes the outcome visible.  This is
    // the publish: the target may resume us (on another thread) right after.
  } while (!target->state.compare_exchange_weak(
      prev, prev | task_core::kJoiner, std::memory_order_acq_rel, std::memory_order_relaxed));
  if (prev & task_core::kDone) return self;  // finished meanwhile; await_resume unregisters
  return std::noop_coroutine();
}
}  // namespace weft::detail
