// SPDX-License-Identifier: MIT
// runtime/completion.cpp -- a task finishes: kDone, the joiner, the watchers
// (shield), and the running reference.
//
// complete:  the task wrote its outcome; mark_done sets kDone and drops the
//            running reference in one RMW, unless a watcher or a thread joiner
//            is registered (kKeepRef): then the reference is kept while they
//            are woken, and dropped after.
// hand off:  a coroutine joiner (kJoiner) is resumed by symmetric transfer, on
//            this worker; a finished task nobody holds is destroyed.
#include <utility>

#include "cancel_delivery.hpp"
#include "dump_impl.hpp"
#include "sim_driver.hpp"

namespace weft::detail {

namespace {

bool grant_all(void*) noexcept { return true; }

// Wake the tasks watching `core` (shield).  The caller still holds its own
// reference (see mark_done), so the list outlives this call.
void fire_watchers(task_core* core) noexcept {
  // Acquire: pairs with watch_list's release CAS; kWatched is set only by
  // watch_ready under the list's lock, so the list exists.
  task_extras* x = core->extras.load(std::memory_order_acquire);
  x->lock();
  list_wake(x, grant_all, nullptr);
  done_callback* callbacks = std::exchange(x->callbacks, nullptr);
  x->callbacks_tail = nullptr;
  x->unlock();
  run_done_callbacks(callbacks);
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
// watch_ready's fetch_or and join_blocking's CAS either come before it (we see
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

// A joiner that is a task of another runtime resumes there (on its workers,
// or its driver), never by a transfer on this worker: a task runs only on the
// threads of its own runtime, and weft::spawn in it spawns onto its own.
void wake_joiner_elsewhere(task_core* joiner, std::coroutine_handle<> continuation) noexcept {
  joiner->resume_point = continuation;
  schedule_wake(joiner);
}

void wake_joiner_from_loop(task_core* core, std::uint32_t prev) noexcept {
  if (prev & task_core::kJoiner) {
    wake_joiner_elsewhere(core->continuation_core, core->continuation);
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
      task_core* joiner = core->continuation_core;
      if (joiner->rt != core->rt) [[unlikely]] {
        wake_joiner_elsewhere(joiner, core->continuation);
      } else {
        joiner->w = w;
        set_current(w, joiner);
        next = transfer(joiner, core->continuation);
      }
    }
    release_ref(core);  // the running reference (may be the last)
    return next;
  }
  if (prev & task_core::kJoiner) {
    // The joiner holds its handle (a reference) and is suspended until we
    // resume it: the core is alive.
    task_core* joiner = core->continuation_core;
    if (joiner->rt != core->rt) [[unlikely]] {
      // The core may be gone once the joiner runs: nothing of it after this.
      wake_joiner_elsewhere(joiner, core->continuation);
      return std::noop_coroutine();
    }
    joiner->w = w;
    set_current(w, joiner);
    return transfer(joiner, core->continuation);
  }
  if (task_core::refs(prev) == 1) destroy_task(core);  // detached: we were the last
  return std::noop_coroutine();
}

void complete_unstarted(task_core* core, cancel_request* req) noexcept {
  meter_unstarted(core, req);  // runtime::stats: cancelled by kind, latency
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
  if (core->tracked) registry_remove(core);  // before it is marked done (dump.cpp)
  std::uint32_t prev = mark_done(core, /*inline_taken=*/true);
  if (prev & kKeepRef) {
    wake_kept(core, prev);  // we still hold the running reference
    release_ref(core);
  }
}

task_extras* watch_list(task_core* core) {
  // Acquire: pairs with the release CAS below (another watcher's list).
  if (task_extras* l = core->extras.load(std::memory_order_acquire)) return l;
  auto* mine = new task_extras;
  task_extras* expected = nullptr;
  // acq_rel: release publishes the new list; acquire (on failure) makes the
  // winner's list visible.  The caller holds a handle: the core is alive.
  if (core->extras.compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                           std::memory_order_acquire))
    return mine;
  delete mine;
  return expected;
}

bool watch_ready(void* obj) noexcept {
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

void run_done_callbacks(done_callback* list) noexcept {
  while (done_callback* c = list) {
    list = c->next;
    c->run();  // noexcept: the node catches what the user's callable throws
    delete c;
  }
}

void add_done_callback(task_core* core, done_callback* cb) noexcept {
  task_extras* x = nullptr;
  try {
    x = watch_list(core);
  } catch (...) {
    // No memory for the extras: the callback cannot be kept, and must not be
    // lost silently.  Run it now if the task is done, else report.
  }
  if (x == nullptr) {
    std::fputs("weft: add_done_callback: out of memory; the callback runs now\n", stderr);
    run_done_callbacks(cb);
    return;
  }
  x->lock();
  if (watch_ready(core)) {
    // Finished already (its completion fired before we set kWatched, or saw
    // it set by an earlier watcher and has run its callbacks): run it here.
    x->unlock();
    run_done_callbacks(cb);
    return;
  }
  cb->next = nullptr;
  if (x->callbacks_tail != nullptr) {
    x->callbacks_tail->next = cb;
  } else {
    x->callbacks = cb;
  }
  x->callbacks_tail = cb;
  x->unlock();
}

void attach_name(task_core* core, std::string name) {
  auto* x = new task_extras;
  x->name = std::move(name);
  // Relaxed: the task is not published yet; the deque push (release) or the
  // injection queue's mutex publishes the extras with it.
  core->extras.store(x, std::memory_order_relaxed);
}

std::string task_name(const task_core* core) {
  // Acquire: pairs with watch_list's release CAS (the extras a watcher made);
  // a name set at spawn was published with the task itself.
  const task_extras* x = core->extras.load(std::memory_order_acquire);
  return x != nullptr ? x->name : std::string();
}

void take_handle_ref(task_core* core) {
  task_extras* x = watch_list(core);  // may throw bad_alloc: before any change
  x->lock();
  (void)watch_ready(core);  // kWatched: see the declaration
  x->unlock();
  add_ref(core);
}

void add_ref(task_core* core) noexcept {
  // Relaxed: the caller's reference keeps the core alive while we add ours;
  // the count publishes nothing (release_ref's acq_rel orders the teardown).
  core->state.fetch_add(task_core::kRefOne, std::memory_order_relaxed);
}

}  // namespace weft::detail
