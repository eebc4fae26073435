// runtime/core.cpp -- task completion, cancellation delivery, blocking waits.
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
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "weft/task.hpp"

namespace weft::detail {

namespace {

// Runtimes alive, for the unhandled-exception hook of a task destroyed after
// its runtime (a handle dropped late).
std::mutex g_runtimes_mutex;
std::set<const runtime_impl*>& live_runtimes() {
  static std::set<const runtime_impl*> s;
  return s;
}

[[gnu::noinline]] void report_unhandled(runtime_impl* rt, std::exception_ptr e) noexcept {
  std::function<void(std::exception_ptr)> hook;
  {
    std::lock_guard lk(g_runtimes_mutex);
    if (rt != nullptr && live_runtimes().count(rt) != 0) hook = rt->options.unhandled_exception;
  }
  if (hook) {
    try {
      hook(e);
    } catch (...) {
      std::fputs("weft: the unhandled-exception hook threw; ignored\n", stderr);
    }
    return;
  }
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "weft: exception in a task nobody awaited: %s\n", ex.what());
  } catch (...) {
    std::fputs("weft: non-std exception in a task nobody awaited\n", stderr);
  }
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Lock a task and every task joining it inline: descendant first, then
// ancestors.  hand_over waits for these locks the other way round (a waiting
// task, then the task it waits on), so here every ancestor is only *tried*:
// when one is held, everything taken so far is let go and the walk starts
// again.  Nothing ever waits for a waiter's lock while holding the lock of a
// task it waits on, so the two orders cannot deadlock, and hand_over finishes
// as soon as it gets the lock it waits for.
bool try_lock_hook(task_core* c) noexcept {
  // Relaxed look first; the exchange acquires, pairing with unlock_hook()'s
  // release store.
  return c->hook_lock.load(std::memory_order_relaxed) == 0 &&
         c->hook_lock.exchange(1, std::memory_order_acquire) == 0;
}
void lock_chain(task_core* core) noexcept {
  for (unsigned attempt = 0;; ++attempt) {
    core->lock_hook();
    task_core* held = core;  // the chain is locked from `core` up to `held`
    while (held->inline_joiner != nullptr && try_lock_hook(held->inline_joiner)) {
      held = held->inline_joiner;
    }
    if (held->inline_joiner == nullptr) return;
    for (task_core* c = core;; c = c->inline_joiner) {
      c->unlock_hook();
      if (c == held) break;
    }
    if (attempt > 64) {
      std::this_thread::yield();
    } else {
      cpu_relax();
    }
  }
}
void unlock_chain_ancestors(task_core* core) noexcept {
  for (task_core* c = core->inline_joiner; c != nullptr; c = c->inline_joiner) c->unlock_hook();
}

// A request in a `pending` slot carries a tag in its three lowest bits
// (requests are at least 8-byte aligned): how many awaits down it was
// forwarded to reach this task -- 0 when it was made on this task directly.
// A forwarded request this task never took goes back one level to its waiter
// when the wait ends (reclaim_forwarded), tag minus one, and so on up to the
// task it was made for; a direct one stays with the task ("completed despite
// the cancel").  A delivered request keeps its tag in the cancelled_error
// (cancel_route), so that a construct that catches it and puts it back
// (park_cancellation) keeps it too.  Every reader of `pending` outside this
// file only compares it with null, which the tag does not change.  Deeper
// than 7 levels the tag saturates: such a request may come back up further
// than it went down, never less far.
constexpr std::uintptr_t kTagMask = 7;

}  // namespace

struct cancel_route {
  static unsigned depth(const cancelled_error& e) noexcept { return e.forwarded_; }
  static void set_depth(cancelled_error& e, unsigned d) noexcept {
    e.forwarded_ = static_cast<std::uint8_t>(d);
  }
};

namespace {

cancel_request* tagged(cancel_request* r, unsigned depth) noexcept {
  return reinterpret_cast<cancel_request*>(reinterpret_cast<std::uintptr_t>(r) |
                                           (depth < kTagMask ? depth : kTagMask));
}
unsigned depth_of(const cancel_request* r) noexcept {
  return static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(r) & kTagMask);
}
cancel_request* untagged(cancel_request* r) noexcept {
  return reinterpret_cast<cancel_request*>(reinterpret_cast<std::uintptr_t>(r) & ~kTagMask);
}

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
    // A request of an inline joiner reaches us forwarded `up` levels further.
    r = tagged(untagged(r), depth_of(r) + up);
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
    core->shutdown_seen = true;
    return shutdown_request(core->rt);
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
    if (core->pending.compare_exchange_weak(old, tagged(req, keep),
                                            std::memory_order_acq_rel,
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
bool hand_over(task_core* core, cancel_request* req, unsigned depth = 0) {
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
  cancel_request* old = store_request_locked(core, req, depth);
  WEFT_CHAOS_POINT();
#if !WEFT_MUTANT_IS(no_wake_on_cancel)  // broken variant (tests only): the wait is not ended
  if (hook != 0 && (hook & 1) == 0) reinterpret_cast<wait_node*>(hook)->interrupt();
#endif
  core->unlock_hook();
  refs.finish();
  free_request(untagged(old));
  return true;
}

bool grant_all(void*) noexcept { return true; }

// Wake the tasks watching `core` (shield).  The caller still holds its own
// reference (see mark_done), so the list outlives this call.
void fire_watchers(task_core* core) noexcept {
  // Acquire: pairs with watch_list's release CAS; kWatched is set only by
  // watch_op under the list's lock, so the list exists.
  wait_list* l = core->watchers.load(std::memory_order_acquire);
  l->lock();
  list_wake(l, grant_all, nullptr);
  l->unlock();
}

// What completion must do besides setting kDone when one of these is set: keep
// the running reference while it fires the watchers or notifies the thread
// joiner, then drop it (release_ref).
constexpr std::uint32_t kKeepRef = task_core::kWatched | task_core::kThreadJoiner;

// The completion step: set kDone and drop the running reference in one RMW --
// unless a watcher (kWatched) or a thread joiner (kThreadJoiner) is
// registered, then keep the reference (the caller fires the watchers /
// notifies the joiner and drops it afterwards, so the core it touches is
// alive).  A CAS, so that the decision and kDone are one atomic step:
// watch_op's fetch_or and join_blocking's CAS either come before it (we see
// the flag) or after it (they see kDone and never wait).  `inline_taken`: an
// inline joiner takes the outcome; a thread that claimed it meanwhile (the
// one-owner rule broken) is told by kJoiner, set here, and gets usage_error.
// Returns the previous state.
std::uint32_t mark_done(task_core* core, bool inline_taken = false) noexcept {
  // Relaxed: the CAS below re-reads it.
  std::uint32_t s = core->state.load(std::memory_order_relaxed);
  WEFT_CHAOS_POINT();
  for (;;) {
    std::uint32_t next =
        (s & kKeepRef) != 0 ? (s | task_core::kDone) : (s + task_core::kDone - task_core::kRefOne);
    if (inline_taken && (s & task_core::kThreadJoiner) != 0) next |= task_core::kJoiner;
    // acq_rel: release publishes the outcome to the joiner / handle / watchers;
    // acquire makes a joiner's continuation (written before its kJoiner RMW)
    // visible here.
    if (core->state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
      return s;
  }
}

void wake_joiner_from_loop(task_core* core, std::uint32_t prev) noexcept {
  if (prev & task_core::kJoiner) {
    task_core* j = core->continuation_core;
    j->resume_point = core->continuation;
    schedule_wake(j);
  } else if (task_core::refs(prev) == 1) {
    destroy_task(core);
  }
}

// After mark_done kept the running reference (kKeepRef): fire the watchers
// and wake a thread joiner.  The core is alive: we still hold the reference.
void wake_kept(task_core* core, std::uint32_t prev) noexcept {
  if (prev & task_core::kWatched) fire_watchers(core);
  // The joiner waits on `state` for kDone (join_blocking).
  if (prev & task_core::kThreadJoiner) core->state.notify_all();
}

}  // namespace

void register_runtime(const runtime_impl* rt) {
  std::lock_guard lk(g_runtimes_mutex);
  live_runtimes().insert(rt);
}
void unregister_runtime(const runtime_impl* rt) {
  std::lock_guard lk(g_runtimes_mutex);
  live_runtimes().erase(rt);
}

void task_core::lock_hook() noexcept {
  for (unsigned spins = 0;; ++spins) {
    // Acquire: pairs with unlock_hook()'s release store; the previous holder's
    // writes to `hook` (and pending) are visible.
    if (hook_lock.exchange(1, std::memory_order_acquire) == 0) return;
    // Relaxed: spinning read; the exchange above is what acquires.
    while (hook_lock.load(std::memory_order_relaxed) != 0) {
      if (++spins > 64) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
  }
}

std::coroutine_handle<> complete_task(task_core* core) noexcept {
  worker_hot* w = core->w;
  count_finish(core);
  // One RMW sets kDone and (without watchers or a thread joiner) drops the
  // running reference.
  std::uint32_t prev = mark_done(core);
  if (prev & kKeepRef) [[unlikely]] {
    wake_kept(core, prev);  // we still hold the running reference
    std::coroutine_handle<> next = std::noop_coroutine();
    if (prev & task_core::kJoiner) {
      task_core* j = core->continuation_core;
      j->w = w;
      set_current(w, j);
      next = transfer(j, core->continuation);
    }
    release_ref(core);  // the running reference (may be the last)
    return next;
  }
  if (prev & task_core::kJoiner) {
    // The joiner holds its handle (a reference) and is suspended until we
    // resume it: the core is alive.
    task_core* j = core->continuation_core;
    j->w = w;
    set_current(w, j);
    return transfer(j, core->continuation);
  }
  if (task_core::refs(prev) == 1) destroy_task(core);  // detached: we were the last
  return std::noop_coroutine();
}

void complete_unstarted(task_core* core, cancel_request* req) noexcept {
  core->final_cancel = req;
  owner_of(core)->result = outcome::cancelled;
  count_finish(core);
  std::uint32_t prev = mark_done(core);
  if (prev & kKeepRef) [[unlikely]] {
    wake_kept(core, prev);  // we still hold the running reference
    wake_joiner_from_loop(core, prev & (task_core::kRefOne - 1));  // flags only: never "last"
    release_ref(core);  // the running reference (may be the last)
    return;
  }
  wake_joiner_from_loop(core, prev);
}

bool cancel_before_start(task_core* core) noexcept {
  cancel_request* r = take_pending(core);
  if (r == nullptr) return false;
  complete_unstarted(core, untagged(r));
  return true;
}

void finish_inline_atomic(task_core* core) noexcept {
  // As complete_task: a forwarded cancel may hold a reference, or a watcher
  // may be registered.  (A simulation marks the tasks it names `hooked`, so
  // that their inline finish comes here and it can forget the name.)
  sim_hook::finished(core);
  std::uint32_t prev = mark_done(core, /*inline_taken=*/true);
  if (prev & kKeepRef) {
    wake_kept(core, prev);  // we still hold the running reference
    release_ref(core);
  }
}

wait_list* watch_list(task_core* core) {
  // Acquire: pairs with the release CAS below (another watcher's list).
  if (wait_list* l = core->watchers.load(std::memory_order_acquire)) return l;
  auto* mine = new wait_list;
  wait_list* expected = nullptr;
  // acq_rel: release publishes the new list; acquire (on failure) makes the
  // winner's list visible.  The caller holds a handle: the core is alive.
  if (core->watchers.compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
    return mine;
  delete mine;
  return expected;
}

bool watch_op(void* obj, bool take) noexcept {
  if (take) return true;  // nothing to take: finishing is not a resource
  auto* core = static_cast<task_core*>(obj);
  // acq_rel, under the watchers' lock: either mark_done's CAS comes first (we
  // see kDone and do not wait) or ours does (it sees kWatched, keeps its
  // reference, and fires the list after we linked, since it needs this lock).
  return (core->state.fetch_or(task_core::kWatched, std::memory_order_acq_rel) &
          task_core::kDone) != 0;
}

void release_ref(task_core* core) noexcept {
  // acq_rel: release orders our use of the task before a destroyer's; acquire
  // (when we are last) makes every other holder's writes visible before we
  // destroy the frame.
  std::uint32_t prev = core->state.fetch_sub(task_core::kRefOne, std::memory_order_acq_rel);
  if (task_core::refs(prev) == 1) destroy_task(core);
}

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
  if (p->result == outcome::exception && !core->observed) report_unhandled(core->rt, p->error);
  // Relaxed: the last reference is gone; the list was published to us by the
  // reference count's acq_rel RMWs.
  delete core->watchers.load(std::memory_order_relaxed);
  // Acquire: pairs with hand_over's exchange; we own a request left there.
  // No RMW needed: with the last reference gone nobody can hand over another.
  free_request(untagged(core->pending.load(std::memory_order_acquire)));
  free_request(core->final_cancel);
}

inline void destroy_one(task_core* core) noexcept {
  // Relaxed: a look only; destroy_extras loads it again with acquire when it
  // is not null.  Nobody can store to it any more (the last reference is gone).
  if ((owner_of(core)->result == outcome::exception && !core->observed) ||
      core->pending.load(std::memory_order_relaxed) != nullptr ||
      core->final_cancel != nullptr ||
      core->watchers.load(std::memory_order_relaxed) != nullptr) [[unlikely]] {
    destroy_extras(core);
  }
  std::coroutine_handle<> frame = core->frame;
  core->~task_core();
  frame.destroy();
}
}  // namespace

namespace {
// Interned requests: one per (call site, kind), made on first use and kept
// for the life of the process (a program has finitely many cancel() call
// sites).  Looked up in a small per-thread cache first, so that a loop that
// cancels many tasks from one line takes no lock and allocates nothing.
struct intern_key {
  const char* file;
  const char* function;
  std::uint_least32_t line;
  std::uint_least32_t column;
  cancel_kind kind;
  bool operator==(const intern_key&) const = default;
};
intern_key key_of(cancel_kind kind, const std::source_location& where) noexcept {
  return {where.file_name(), where.function_name(), where.line(), where.column(), kind};
}
struct intern_hash {
  std::size_t operator()(const intern_key& k) const noexcept {
    std::size_t h = std::hash<const void*>()(k.file) ^ (std::hash<const void*>()(k.function) << 1);
    return h ^ (std::size_t{k.line} << 20) ^ (std::size_t{k.column} << 8) ^
           static_cast<std::size_t>(k.kind);
  }
};
struct intern_table {
  std::mutex mu;
  std::unordered_map<intern_key, cancel_request*, intern_hash> map;  // guarded by mu
};
intern_table& interned() {
  // Never destroyed: requests may be read by threads that outlive static
  // destruction (detached handles of a runtime that is never shut down).
  static intern_table* t = new intern_table;
  return *t;
}
constexpr std::size_t kInternCacheSlots = 8;
struct intern_cache_slot {
  intern_key key{};
  cancel_request* req = nullptr;
};
thread_local intern_cache_slot t_intern_cache[kInternCacheSlots];

cancel_request* interned_request(cancel_kind kind, std::source_location where) {
  const intern_key k = key_of(kind, where);
  intern_cache_slot& slot = t_intern_cache[intern_hash()(k) % kInternCacheSlots];
  if (slot.req != nullptr && slot.key == k) return slot.req;
  intern_table& t = interned();
  cancel_request* r;
  {
    std::lock_guard lk(t.mu);
    auto [it, fresh] = t.map.try_emplace(k, nullptr);
    if (fresh) it->second = new cancel_request{std::string(), kind, where, true};
    r = it->second;
  }
  slot = {k, r};
  return r;
}

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
  return hand_over(core, new cancel_request{std::move(reason), kind, where});
}

bool request_cancel_plain(task_core* core, cancel_kind kind, std::source_location where) {
  if (!accepts_cancel(core)) return false;
  return hand_over(core, interned_request(kind, where));
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
  free_request(req);
  cancelled_error e(std::move(reason), kind, where);
  cancel_route::set_depth(e, depth);
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
      park_request(w->current,
                   tagged(new cancel_request{std::string(e.reason()), e.kind(), e.where()},
                          cancel_route::depth(e)));
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
  const bool r = core->pending.load(std::memory_order_relaxed) != nullptr ||
                 core->returned_request;
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
    // Acquire: pairs with stop()'s release store of `exiting`, made once every
    // task that could still finish had finished (the drain).
    if (rt->exiting.load(std::memory_order_acquire)) {
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

std::coroutine_handle<> join_slow(task_core* ctx, task_core* target,
                                  std::coroutine_handle<> self) noexcept {
  if (target == ctx) return self;  // await_resume reports the misuse
  // asyncio: a cancel pending on the joiner when it starts waiting goes to the
  // awaited task instead (Task.__step cancels its new _fut_waiter).
  for (;;) {
    cancel_request* r = register_wait(ctx, reinterpret_cast<std::uintptr_t>(target) | 1);
    if (r == nullptr) break;
    // Acquire: pairs with complete_task's release RMW (kDone).
    if (untagged(r)->kind == cancel_kind::shutdown ||
        (target->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
      // Nothing to forward to (finished), or the one shutdown delivery: keep it
      // for ourselves and resume now; await_resume delivers it.
      park_request(ctx, r);
      return self;
    }
    // Forwarded, tagged: if the target finishes without taking it, the
    // request comes back to us when the join ends (reclaim_forwarded).
    hand_over(target, untagged(r), depth_of(r) + 1);
  }
  target->continuation = self;
  target->continuation_core = ctx;
  ctx->resume_point = self;
  WEFT_CHAOS_POINT();
  // Relaxed: the CAS below re-reads it.
  std::uint32_t prev = target->state.load(std::memory_order_relaxed);
  do {
    // A thread's join() claimed the outcome: do not register; await_resume
    // throws usage_error.  (Our continuation fields are only read with kJoiner.)
    if ((prev & task_core::kThreadJoiner) != 0) [[unlikely]] return self;
    // acq_rel: release publishes continuation to the completer's acquire RMW;
    // acquire (if kDone is already set) makes the outcome visible.  This is
    // the publish: the target may resume us (on another thread) right after.
  } while (!target->state.compare_exchange_weak(
      prev, prev | task_core::kJoiner, std::memory_order_acq_rel, std::memory_order_relaxed));
  if (prev & task_core::kDone) return self;  // finished meanwhile; await_resume unregisters
  return std::noop_coroutine();
}

bool sleep_suspend(task_core* ctx, timer_node* node, std::coroutine_handle<> self) noexcept {
  node->core = ctx;
  ctx->resume_point = self;
  if (cancel_request* r = register_wait(ctx, reinterpret_cast<std::uintptr_t>(node))) {
    park_request(ctx, r);  // await_resume delivers it
    node->claim.store(timer_node::kCancelled, std::memory_order_relaxed);  // never armed
    return false;
  }
  // A task that already had its one "shutdown" sleeps for real during the
  // shutdown: refusing its sleeps would make a task that catches every
  // cancellation spin (each refusal throws at once).
  node->after_shutdown = ctx->shutdown_seen;
  if (!arm_timer(ctx->rt, node)) {
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

cancel_request* sleep_resume(task_core* ctx, timer_node* node) {
  // acq_rel: pairs with timer_arm's increment and the shutdown drain's
  // acquire load: the sleep is over only now that its task runs again.
  if (node->counted) ctx->rt->sleeps_unfinished.fetch_sub(1, std::memory_order_acq_rel);
  unregister_wait(ctx);
  cancel_request* r = take_pending(ctx);
  // Relaxed: written by this thread (refusal) before.
  if (r == nullptr && node->claim.load(std::memory_order_relaxed) == timer_node::kRefused) {
    ctx->shutdown_seen = true;  // this is its delivery
    throw shutdown_error(ctx->rt);
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

cancel_request* shutdown_request(const runtime_impl* rt) {
  return new cancel_request{"shutdown", cancel_kind::shutdown, shutdown_site(rt)};
}

cancelled_error shutdown_error(const runtime_impl* rt) {
  return cancelled_error("shutdown", cancel_kind::shutdown, shutdown_site(rt));
}

bool arm_timer(runtime_impl* rt, timer_node* node) noexcept { return rt->timer_arm(node); }


}  // namespace weft::detail
