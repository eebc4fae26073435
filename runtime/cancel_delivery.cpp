// SPDX-License-Identifier: MIT
// runtime/cancel_delivery.cpp -- a cancel() reaches its task.
//
// The protocol, in short (docs/architecture.md has the long form):
//
// * A cancel request is a cancel_request: on the heap when it carries a
//   reason, else interned per call site (interned_request).  cancel() hands it to the task
//   under the task's hook lock: if the task is waiting on another task
//   (hook = target|1) the request is forwarded there (asyncio passes
//   cancellation down the await chain); otherwise it is exchanged into
//   `pending` and, if the task sits in a blocking wait (hook = wait_node*), the
//   wait is interrupted so the task wakes at once.
// * The task takes the request (exchange to null, one-shot) at its next
//   cancellation point and throws cancelled_error there.  Suspending points
//   also look at the tasks that are joining this one inline (`inline_joiner`
//   chain) and forward their requests down.
// * Blocking waits register under the hook locks of the task and of its
//   inline joiners (descendant first, then ancestors); the "is a request
//   pending?" check happens under the same locks, so a cancel() cannot slip
//   between the check and the suspension (no lost cancel).
#include <mutex>
#include <thread>

#include "cancel_delivery.hpp"
#include "dump_impl.hpp"
#include "sim_driver.hpp"
#include "spin.hpp"
#include "trace.hpp"
#include "weft/task.hpp"

namespace weft::detail {

namespace {

// Lock a task and every task joining it inline: descendant first, then
// ancestors.  hand_over waits for these locks the other way round (a waiting
// task, then the task it waits on), so here every ancestor is only *tried*:
// when one is held, everything taken so far is let go and the walk starts
// again.  Nothing ever waits for a waiter's lock while holding the lock of a
// task it waits on, so the two orders cannot deadlock, and hand_over finishes
// as soon as it gets the lock it waits for.
void lock_chain(task_core* core) noexcept {
  unsigned spins = 0;
  for (;;) {
    core->lock_hook();
    task_core* held = core;  // the chain is locked from `core` up to `held`
    while (held->inline_joiner != nullptr && spin_try_lock(held->inline_joiner->hook_lock)) {
      held = held->inline_joiner;
    }
    if (held->inline_joiner == nullptr) return;
    for (task_core* c = core;; c = c->inline_joiner) {
      c->unlock_hook();
      if (c == held) break;
    }
    spin_pause(spins);
  }
}
void unlock_chain_ancestors(task_core* core) noexcept {
  for (task_core* c = core->inline_joiner; c != nullptr; c = c->inline_joiner) c->unlock_hook();
}

}  // namespace

namespace {

std::source_location shutdown_site(const runtime_impl* rt) {
  // Acquire: pairs with stop()'s seq_cst store of `stopping`, made after
  // shutdown_at was written; every caller saw the runtime stopping already.
  (void)rt->stopping.load(std::memory_order_acquire);
  return rt->shutdown_at;
}

// cancelling() + 1.  The caller holds `core`'s hook lock: every update of
// cancel_count happens under it, so a load and a store do (no RMW needed).
void count_request_locked(task_core* core) noexcept {
  // Relaxed: serialised by hook_lock (the lock's acquire/release order them).
  core->cancel_count.store(core->cancel_count.load(std::memory_order_relaxed) + 1,
                           std::memory_order_relaxed);
}

// Take a pending request from the chain; the caller holds whatever locks it
// needs (`core_locked`: it holds `core`'s hook lock).  A request taken from an
// inline joiner counts as forwarded to `core` (cancelling() + 1, under
// `core`'s hook lock like every update of the count).
cancel_request* take_from_chain(task_core* core, bool core_locked) noexcept {
  unsigned up = 0;  // how many inline joins above `core` the slot is
  for (task_core* c = core; c != nullptr; c = c->inline_joiner, ++up) {
    // Relaxed: a hint; the exchange below is what takes it.
    if (c->pending.load(std::memory_order_relaxed) == nullptr) continue;
    // Acquire: pairs with hand_over's release store or exchange; the
    // request's fields are visible.
    cancel_request* r = c->pending.exchange(nullptr, std::memory_order_acquire);
    if (r == nullptr) continue;
    meter_delivery(c, core, untagged(r));  // runtime::stats: request -> delivered
    // A request of an inline joiner reaches us forwarded `up` levels further.
    r = tagged(untagged(r), depth_of(r) + up);
    if (core->rt->trace != nullptr) [[unlikely]]
      trace_delivery(core, untagged(r));
    if (c != core) {
      if (core_locked) {
        count_request_locked(core);
      } else {
        core->lock_hook();
        count_request_locked(core);
        core->unlock_hook();
      }
    }
    return r;
  }
  if (core->w != nullptr && core->w->stopping.load(std::memory_order_relaxed) &&
      !core->shutdown_seen) {
    // The "shutdown" reaches the task here: its stop token is requested now,
    // unless locks are held (register_wait), which hands the request back to
    // be produced again, unlocked, when the refused wait resumes.
    if (!core_locked) {
      if (std::stop_source* st = owner_of(core)->stop) st->request_stop();
    }
    core->shutdown_seen = true;
    cancel_request* r = shutdown_request(core->rt);
    // runtime::stats; with locks held the request is handed back and made
    // again (and counted then).
    if (!core_locked) meter_shutdown_delivery(core, r);
    if (core->rt->trace != nullptr) [[unlikely]]
      trace_delivery(core, r);
    return r;
  }
  return nullptr;
}

// Put `req` into `core`'s pending slot; the caller holds the hook lock.
// Returns the request it replaced (tagged), or null.  Every store of a
// request into `pending` happens under the hook lock; without the lock it
// only goes to null (a take).  So an empty slot stays empty until our store,
// and a plain store suffices (the common case: one locked instruction per
// cancel() instead of three).
cancel_request* store_request_locked(task_core* core, cancel_request* req,
                                     unsigned depth) noexcept {
  // Relaxed load: the CAS below re-reads the slot when it holds a request.
  cancel_request* old = core->pending.load(std::memory_order_relaxed);
  for (;;) {
    if (old == nullptr) {
      // Release: publishes the request's fields to the taker (acquire
      // exchange in take_from_chain / uncancel_core / reclaim_forwarded,
      // acquire load in destroy_extras).
      core->pending.store(tagged(req, depth), std::memory_order_release);
      return nullptr;
    }
    // A forwarded request keeps its way back when a later one replaces it
    // (the deeper tag wins): the waiter's cancel is then carried back with
    // the newer reason.  acq_rel: release as above; acquire makes the
    // replaced request's fields ours to free.  Fails only when a taker
    // emptied the slot meanwhile.
    const unsigned keep = depth_of(old) > depth ? depth_of(old) : depth;
    if (core->pending.compare_exchange_weak(old, tagged(req, keep), std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
      return old;
  }
}

// The references hand_over takes on the tasks it passes through.  Each is
// dropped as soon as the walk has moved past its task, so a chain of any
// length needs no memory; a drop that turns out to be the last one only
// queues the task, destroyed once the walk holds no lock (destroying a frame
// runs user destructors, which may cancel other tasks).  The queue links
// through continuation_core, unused once a task is finished.
struct passed_refs {
  task_core* current = nullptr;
  task_core* to_destroy = nullptr;
  void pass(task_core* next) noexcept {
    if (current != nullptr) {
      // acq_rel: as release_ref.
      std::uint32_t prev = current->state.fetch_sub(task_core::kRefOne, std::memory_order_acq_rel);
      if (task_core::refs(prev) == 1) {
        current->continuation_core = to_destroy;
        to_destroy = current;
      }
    }
    current = next;
  }
  // After the last unlock.
  void finish() noexcept {
    pass(nullptr);
    while (task_core* c = to_destroy) {
      to_destroy = c->continuation_core;
      destroy_task(c);
    }
  }
};

// The this_task::stop_token() sources of the task a request is made for and
// of the task it lands on, copied under their hook locks (the copy keeps the
// std state alive), requested once every lock is let go: request_stop runs
// the user's stop callbacks, which must not run under a spin lock (they may
// cancel tasks themselves).
struct task_stops {
  std::stop_source made{std::nostopstate};
  std::stop_source landed{std::nostopstate};
  static std::stop_source* of(task_core* c) noexcept { return owner_of(c)->stop; }
  void request() noexcept {
    made.request_stop();  // no-op without a state
    landed.request_stop();
  }
};

// Give `req` (owned) to `core`: forward it down the chain of tasks each
// waiting on the next (asyncio passes cancellation down the await chain), and
// make it pending on the last one that is not itself waiting on a running
// task, interrupting its blocking wait if it is in one.  Each task the request
// reaches counts it (cancelling() + 1) under its hook lock, so that uncancel()
// cannot interleave between the count and the pending slot.  (A request a
// refused wait hands back goes through park_request instead, uncounted.)
//
// The walk, step by step (a loop, never recursion: chains of a million tasks
// each awaiting the next are fine):
//   hold:    `core`'s hook lock is held; its hook says where it waits.
//   couple:  the next task's hook lock is taken while `core`'s is still held
//            (and a reference, so it outlives both locks).  Locks are always
//            waited for in this order, waiter before waited-on; lock_chain
//            goes the other way but only tries (see there).
//   skip:    a task that has finished (kDone) is not forwarded to; the
//            request stays with `core`, whose wait is about to end.
//   descend: the next task counts the request and becomes `core`; the old
//            one's lock goes.  Because the old lock is released only after
//            the new one is held, the waiter cannot end its wait and reclaim
//            what it forwarded (reclaim_forwarded) before the request landed.
//            The previous level's reference goes (passed_refs).
//   land:    the request goes into `pending`, tagged with how many levels
//            it came down (0: made for this task).
//
// Returns false when `core` (the task the request was made for) had finished
// already: nothing was handed over and `req` was freed.
}  // namespace

bool hand_over(task_core* core, cancel_request* req, unsigned depth) {
  passed_refs refs;
  core->lock_hook();
  if (depth == 0 && (core->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
    // Acquire: pairs with complete_task's release RMW.  Checked under the
    // hook lock so that the answer and the count agree for reclaim.
    core->unlock_hook();
    free_request(req);
    return false;
  }
  count_request_locked(core);
  task_stops stops;
  if (std::stop_source* st = task_stops::of(core)) stops.made = *st;
  task_core* const made_for = core;
  std::uintptr_t hook = core->hook;
  while ((hook & 1) != 0) {
    auto* target = reinterpret_cast<task_core*>(hook & ~std::uintptr_t{1});
    // couple: nobody waits for a waiter's lock while holding the lock of the
    // task it waits on (lock_chain only tries), so waiting here cannot
    // deadlock.
    target->lock_hook();
    // Acquire: pairs with complete_task's release RMW (kDone).
    if ((target->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
      target->unlock_hook();
      break;  // skip: it answered; the waiter takes the request at its resume
    }
    // Relaxed: `core`'s hook lock keeps `target` alive while we take the ref
    // (the waiter clears its hook under that lock before dropping its handle).
    target->state.fetch_add(task_core::kRefOne, std::memory_order_relaxed);
    count_request_locked(target);
    core->unlock_hook();
    refs.pass(target);  // drops the previous level's reference, keeps this one's
    core = target;
    ++depth;
    hook = core->hook;
  }
  // land.
  if (core != made_for) {
    if (std::stop_source* st = task_stops::of(core)) stops.landed = *st;
  }
  note_cancel(core, req);  // dump(), the watchdog (dump.cpp); before the task may take it
  // runtime::stats: the request time, unless one is pending already (its
  // stamp stays).  Relaxed: under the hook lock, which every store into the
  // slot holds; the stamp is written before the release store below.
  if (core->pending.load(std::memory_order_relaxed) == nullptr) meter_request(core);
  cancel_request* old = store_request_locked(core, req, depth);
  WEFT_CHAOS_POINT();
#if !WEFT_MUTANT_IS(no_wake_on_cancel)  // broken variant (tests only): the wait is not ended
  if (hook != 0 && (hook & 1) == 0) reinterpret_cast<wait_node*>(hook)->interrupt();
#endif
  core->unlock_hook();
  refs.finish();
  free_request(untagged(old));
  stops.request();  // stop: after every lock (see task_stops)
  return true;
}

void task_core::lock_hook() noexcept { spin_lock(hook_lock); }

namespace {
// Whether a cancel() of `core` is taken: false when the task has finished.
// In a simulation only the owner thread may cancel a task that is running.
bool accepts_cancel(task_core* core) {
  // Acquire: pairs with complete_task's release; a finished task says false.
  // First: the runtime of a finished task may be gone (its handle, or a
  // cancellation_source bound to it, may outlive it), and is not read then.
  if ((core->state.load(std::memory_order_acquire) & task_core::kDone) != 0) return false;
  // Not finished: its runtime is alive, or kept (~runtime keeps the
  // structures of a runtime that left unfinished tasks behind).
  sim_hook::require_owner(core->rt, "weft::join_handle::cancel");  // one thread only
  return true;
}
}  // namespace

bool request_cancel(task_core* core, std::string reason, cancel_kind kind,
                    std::source_location where) {
  if (reason.empty()) return request_cancel_plain(core, kind, where);
  if (!accepts_cancel(core)) return false;
  auto* req = new cancel_request{std::move(reason), kind, where};
  if (core->rt->trace != nullptr) [[unlikely]]
    trace_cancel_request(core, req);  // before another thread may take it
  return hand_over(core, req);
}

bool request_cancel_plain(task_core* core, cancel_kind kind, std::source_location where) {
  if (!accepts_cancel(core)) return false;
  cancel_request* req = interned_request(kind, where);
  if (core->rt->trace != nullptr) [[unlikely]]
    trace_cancel_request(core, req);
  return hand_over(core, req);
}

cancel_request* take_pending(task_core* core) noexcept { return take_from_chain(core, false); }

bool cancel_visible(const task_core* core) noexcept {
  for (const task_core* c = core; c != nullptr; c = c->inline_joiner) {
    // Relaxed: a look, not a take.
    if (c->pending.load(std::memory_order_relaxed) != nullptr) return true;
  }
  return core->w != nullptr && core->w->stopping.load(std::memory_order_relaxed) &&
         !core->shutdown_seen;
}

cancelled_error cancelled_error_of(cancel_request* req) {
  const unsigned depth = depth_of(req);
  req = untagged(req);
  // An interned request is shared: copy (its reason is empty), never move.
  std::string reason = req->interned ? std::string() : std::move(req->reason);
  const cancel_kind kind = req->kind;
  const std::source_location where = req->where;
  std::uint64_t requested = 0;
  std::uint64_t delivered = 0;
  meter_unstash(req, nullptr, &requested, &delivered);  // runtime::stats: before the free
  free_request(req);
  cancelled_error e(std::move(reason), kind, where);
  cancel_route::set_depth(e, depth);
  cancel_route::set_stamps(e, requested, delivered);
  return e;
}

unsigned uncancel_core(task_core* core) noexcept {
  // Under the hook lock: hand_over counts a new request and stores it under
  // the same lock, so "count reached zero, drop the pending request" cannot
  // throw away a request that arrived after the decrement.
  core->lock_hook();
  // Relaxed: every update of the count is made under the hook lock we hold.
  std::uint32_t c = core->cancel_count.load(std::memory_order_relaxed);
  // Relaxed: as above; never below zero.
  if (c > 0) core->cancel_count.store(c - 1, std::memory_order_relaxed);
  cancel_request* dropped = nullptr;
  if (c == 1) {
    // Count reached zero: an undelivered request is withdrawn too (asyncio
    // 3.13).  Acquire: we own the request we take out.
    dropped = untagged(core->pending.exchange(nullptr, std::memory_order_acquire));
  }
  core->unlock_hook();
  free_request(dropped);
  return c == 0 ? 0 : c - 1;
}

cancel_request* register_wait(task_core* core, std::uintptr_t hook) noexcept {
  lock_chain(core);
  cancel_request* req = take_from_chain(core, true);
  if (req == nullptr) {
    core->hook = hook;
    task_core* child = core;
    for (task_core* a = core->inline_joiner; a != nullptr; child = a, a = a->inline_joiner) {
      a->hook = reinterpret_cast<std::uintptr_t>(child) | 1;
      child->hooked = true;  // a cancel forwarded from `a` may take a ref on it
    }
  }
  unlock_chain_ancestors(core);
  core->unlock_hook();  // the publish: after this the wait may end at any time
  return req;
}

void park_request(task_core* core, cancel_request* req) noexcept {
  const unsigned depth = depth_of(req);  // kept: the way back (see the tag)
  req = untagged(req);
  if (req->kind == cancel_kind::shutdown) {
    core->shutdown_seen = false;  // take_pending produces it again
    free_request(req);
    return;
  }
  core->lock_hook();
  cancel_request* old = store_request_locked(core, req, depth);
  core->unlock_hook();
  free_request(untagged(old));
}

bool is_cancellation(const std::exception_ptr& err) noexcept {
  if (!err) return false;
  try {
    std::rethrow_exception(err);
  } catch (const cancelled_error&) {
    return true;
  } catch (...) {
    return false;
  }
}

void park_cancellation(const std::exception_ptr& err) noexcept {
  worker* w = tls_worker;
  if (w == nullptr || w->current == nullptr || !err) return;
  try {
    std::rethrow_exception(err);
  } catch (const cancelled_error& e) {
    try {
      auto* r = new cancel_request{std::string(e.reason()), e.kind(), e.where()};
      meter_restash(e, r);  // runtime::stats: its stamps come back with it
      park_request(w->current, tagged(r, cancel_route::depth(e)));
    } catch (...) {
      // Out of memory for the request: the cancellation is lost; the caller
      // still reports what it must.
    }
  } catch (...) {
  }
}

void reclaim_forwarded(task_core* waiter, task_core* target) noexcept {
#if WEFT_MUTANT_IS(no_reclaim)  // broken variant (tests only): the forwarded request stays behind
  (void)waiter;
  (void)target;
  return;
#endif
  target->lock_hook();
  // Relaxed: every store into the slot happens under the lock we hold, and
  // the target has finished, so nothing takes from it concurrently (uncancel
  // takes under the lock too).
  cancel_request* r = target->pending.load(std::memory_order_relaxed);
  if (r != nullptr && depth_of(r) != 0) {
    // Acquire: pairs with store_request_locked's release; the request's
    // fields are ours.
    r = target->pending.exchange(nullptr, std::memory_order_acquire);
    target->returned_request = true;
  } else {
    r = nullptr;
  }
  target->unlock_hook();
  if (r == nullptr) return;
  // Back to the task it was made for, uncounted (it was counted when made):
  // delivered at the waiter's resume, which is a cancellation point -- unless
  // uncancel() brought the waiter's count to zero meanwhile, which withdraws
  // an undelivered request (asyncio 3.13).
  waiter->lock_hook();
  cancel_request* old = nullptr;
  // Relaxed: every update of the count is made under the hook lock we hold.
  if (waiter->cancel_count.load(std::memory_order_relaxed) != 0) {
    // runtime::stats: the request time goes with it.  Relaxed: under the
    // waiter's hook lock, as the store below.
    if (waiter->pending.load(std::memory_order_relaxed) == nullptr)
      meter_move_request(target, waiter);
    // One level up: to the waiter it is forwarded one level less.
    old = store_request_locked(waiter, untagged(r), depth_of(r) - 1);
    r = nullptr;
  }
  waiter->unlock_hook();
  free_request(untagged(old));
  free_request(untagged(r));
}

bool completed_despite_cancel(task_core* core) noexcept {
  // Acquire: pairs with complete_task's release RMW; the outcome is readable.
  if ((core->state.load(std::memory_order_acquire) & task_core::kDone) == 0) return false;
  if (owner_of(core)->result == outcome::cancelled) return false;
  core->lock_hook();
  // Relaxed: under the hook lock, which every store into the slot holds.
  const bool r = core->pending.load(std::memory_order_relaxed) != nullptr || core->returned_request;
  core->unlock_hook();
  return r;
}

void unregister_wait(task_core* core) noexcept {
  for (task_core* c = core; c != nullptr; c = c->inline_joiner) {
    c->lock_hook();
    c->hook = 0;
    c->unlock_hook();
  }
}

cancel_request* shutdown_request(const runtime_impl* rt) {
  return new cancel_request{"shutdown", cancel_kind::shutdown, shutdown_site(rt)};
}

cancelled_error shutdown_cancellation(const runtime_impl* rt) {
  // A refused wait (or a group) delivers the "shutdown" on the running
  // task's thread: the task's stop token is requested, as in take_from_chain.
  if (worker* w = tls_worker; w != nullptr && w->current != nullptr) {
    if (std::stop_source* st = owner_of(w->current)->stop) st->request_stop();
  }
  return cancelled_error("shutdown", cancel_kind::shutdown, shutdown_site(rt));
}

}  // namespace weft::detail
