// SPDX-License-Identifier: MIT
// weft/detail/task_core.hpp -- the state every spawned task carries, the wait nodes
// a suspended task sits in, and the inline halves of the seam (seam.hpp).
//
// Not part of the public API: names here may change without notice.  The
// protocols are explained in docs/architecture.md and every atomic has a row in
// docs/memory-model.md.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <source_location>
#include <stop_token>
#include <string>
#include <type_traits>

#include "weft/detail/deque.hpp"
#include "weft/detail/fork_stack.hpp"
#include "weft/detail/intrusive_list.hpp"
#include "weft/detail/seam.hpp"
#include "weft/errors.hpp"

namespace weft::detail {

struct runtime_impl;
struct task_core;

// One cancellation request: what cancel(reason) hands to the task.  Owned by
// whoever holds the pointer (the pending slot, then the delivering task) --
// unless `interned`: a request with no reason is shared by every cancel() of
// the same call site and kind, is never written after it was made, and is
// never freed (interned_request in runtime/core.cpp), so that cancelling many
// tasks allocates nothing.  Free a request with free_request, never delete.
struct cancel_request {
  std::string reason;
  cancel_kind kind;
  std::source_location where;
  bool interned = false;
};

inline void free_request(cancel_request* r) noexcept {
  if (r != nullptr && !r->interned) delete r;
}

// A worker's cache of coroutine frames, by 16-byte size class (owner only).
// The header's operator new/delete pop and push here inline; alloc_frame and
// free_frame (runtime/alloc.cpp) refill, spill, and serve everything else.
// Every frame below kMaxCached bytes is allocated rounded up to its class, on
// every thread, so that any cached block fits any frame of its class.
struct frame_cache {
  static constexpr std::size_t kGranule = 16;
  static constexpr std::size_t kClasses = 64;  // frames up to 1008 bytes
  static constexpr std::size_t kMaxCached = (kClasses - 1) * kGranule;
  struct free_node {
    free_node* next;
  };
  static constexpr std::size_t size_class(std::size_t n) noexcept {
    return (n + kGranule - 1) / kGranule;
  }
  free_node* heads[kClasses] = {};
  std::uint32_t counts[kClasses] = {};
  // Blocks a class may hold; 0 (set by the runtime in sanitizer and tbbmalloc
  // builds) turns the cache off, so every frame goes to alloc_frame/free_frame.
  std::uint32_t limit = 0;
  // Frames allocated minus freed on this worker (diagnostics::live_frames);
  // flushed to a process-wide counter when the worker exits.
  std::int64_t live = 0;
};

// The fields of a worker that task code touches on the hot path (spawn, join,
// checkpoint).  The rest of the worker is private to runtime/.  Written only by
// the worker's own thread, except slice_expired and stopping (see each), and
// the deque's top (thieves).
struct worker_hot {
  chase_lev_deque<task_core*> deque{256};
  // The runtime's count of parked workers: a spawn reads it (relaxed) to decide
  // whether to wake one.  Points into runtime_impl.
  const std::atomic<std::uint32_t>* sleepers = nullptr;
  task_core* current = nullptr;  // the task chain this worker is running
  // current->where, or empty when current is null: what the shutdown report
  // names as running here.  Written with `current` (set_current); read by
  // the thread in shutdown(), which may not follow `current` itself (the
  // task may end and be freed meanwhile), but may read a site: static data.
  std::atomic<std::source_location> running_site{};
  // `current`, as a pointer to compare, never to follow: the watchdog (timer
  // thread) and dump() tell a running task by it.  Written with `current`.
  std::atomic<task_core*> running_task{nullptr};
  std::uint32_t transfers = 0;       // symmetric transfers since the loop's last resume()
  task_core* resume_next = nullptr;  // trampoline slot (see kMaxTransfers)
  // Tasks spawned here and tasks finished here (runtime::stats; spawned -
  // finished: the shutdown report's live count).  Owner only: bump_owned (a
  // relaxed load and store, no RMW); read by stats() from any thread.
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::uint64_t> finished{0};
  frame_cache frames;  // owner only
  fork_stack forks;    // owner only: fork-join frames (weft/fork.hpp)
  // Set by the timer thread when the running task has used up its time slice;
  // cleared by the worker when checkpoint() acts on it.
  std::atomic<bool> slice_expired{false};
  // Set once by shutdown(); resume checks then produce the "shutdown" request.
  std::atomic<bool> stopping{false};
  // Set with `stopping`, or from the start under runtime_options::track_tasks:
  // spawn() on this worker takes the out-of-line path (submit_spawn).
  std::atomic<bool> spawn_slow{false};
  runtime_impl* rt = nullptr;
  // Non-null while tracing (runtime_options::trace): this worker's event
  // ring, written by the worker only.  Set before the worker starts.
  trace_ring* trace = nullptr;
};

// +1 on a counter that only its owner thread writes (worker_hot::spawned,
// the runtime's statistics): a relaxed load and store, no locked RMW; readers
// on other threads load it relaxed and see a recent value.
[[gnu::always_inline]] inline void bump_owned(std::atomic<std::uint64_t>& n) noexcept {
  // Relaxed: owner-only writes; stats() reads a recent value (no ordering).
  n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// A queue item (a worker's deque, the injection queue, the trampoline slot)
// is a task_core*, or a fork_frame* with the low bit set: a fork-join frame to
// resume (weft/fork.hpp), which is no task of its own.
struct fork_frame;
inline bool is_fork_item(const task_core* item) noexcept {
  return (reinterpret_cast<std::uintptr_t>(item) & 1u) != 0;
}
inline task_core* fork_item(fork_frame* f) noexcept {
  return reinterpret_cast<task_core*>(reinterpret_cast<std::uintptr_t>(f) | 1u);
}
inline fork_frame* fork_of(task_core* item) noexcept {
  return reinterpret_cast<fork_frame*>(reinterpret_cast<std::uintptr_t>(item) & ~std::uintptr_t{1});
}

// Past this many symmetric transfers since the worker loop last called
// resume(), a transfer goes through the worker loop instead (a trampoline).
// g++ 12 does not turn symmetric transfer into a tail call at -O0/-O1 or under
// sanitizers, so every transfer may be a nested call; 64 nested resumes keep
// the stack well under 1 MiB even with ASan's larger frames.
inline constexpr std::uint32_t kMaxTransfers = 64;
// clang lowers symmetric transfer to a guaranteed tail call (musttail) on every
// target weft supports, in every build mode; only g++ needs the count.
#if defined(__clang__)
inline constexpr bool kCountTransfers = false;
#else
inline constexpr bool kCountTransfers = true;
#endif

// A blocking wait (timer, event) a task is suspended in.  cancel() calls
// interrupt() with the task's hook lock held; the wait must then make sure the
// task is resumed exactly once (whoever wins its own claim resumes it).
struct wait_node {
  virtual void interrupt() noexcept = 0;

 protected:
  ~wait_node() = default;
};

struct list_wait;
struct wait_list;

// What a list wait waits for.  Both functions run under the list's lock.
struct list_resource {
  // Whether the wait can end at once.
  bool (*ready)(void* obj) noexcept;
  // Takes the resource (a permit) for the waiter, once its node's claim is
  // won; null when waiting consumes nothing (an event, a task's completion).
  void (*take)(void* obj) noexcept;
  void* obj;
};

// A task suspended on a wait_list.  Same claim + latch protocol as timer_node:
// the party that wins `claim` (kArmed -> kFired by the list's owner, or
// kCancelled by interrupt()) ends the wait, and the task resumes when `latch`
// reaches 0 (the suspending task and the claimant count one each).
struct list_wait final : wait_node {
  static constexpr std::uint8_t kArmed = 0, kFired = 1, kCancelled = 2, kRefused = 3;
  std::atomic<std::uint8_t> claim{kArmed};
  std::atomic<std::uint8_t> latch{2};
  bool linked = false;  // guarded by owner->lock
  task_core* core = nullptr;
  wait_list* owner = nullptr;
  list_wait* next = nullptr;      // guarded by owner->lock
  list_wait* prev = nullptr;      // guarded by owner->lock
  list_wait* reg_next = nullptr;  // runtime's registry of blocked waits (shutdown),
  list_wait* reg_prev = nullptr;  // guarded by runtime_impl::blocked_mutex
  bool registered = false;        // likewise
  // The task had its "shutdown" delivered before this wait began: a stopping
  // runtime lets the wait really wait (shutdown waits for it) instead of
  // refusing or interrupting it.  Written by the task before it registers.
  bool after_shutdown = false;
  // Set: list_wake passes the claimed node to on_fire(node, fire_ctx), under
  // the list's lock, instead of resuming `core`.  For a node that is no task's
  // hook: an entry of weft::wait, which watches many tasks at once.
  void (*on_fire)(list_wait* node, void* ctx) noexcept = nullptr;
  void* fire_ctx = nullptr;
  void interrupt() noexcept override;
};

// An intrusive FIFO of suspended tasks (event, semaphore, watchers of a task),
// guarded by its own spin lock.  Never held together with a hook lock of the
// same task; a hook lock may be held while taking it (interrupt()).
struct wait_list : intrusive_list<list_wait, &list_wait::next, &list_wait::prev> {
  // head, tail: guarded by lock_flag.
  std::atomic<std::uint8_t> lock_flag{0};
  void lock() noexcept;
  void unlock() noexcept {
    // Release: pairs with lock()'s acquire exchange.
    lock_flag.store(0, std::memory_order_release);
  }
  void push_back(list_wait* n) noexcept;  // under lock
  void erase(list_wait* n) noexcept;      // under lock; n must be linked
};

// A callback to run once when a task finishes (join_handle::add_done_callback).
// Linked into its task's extras under the extras' lock; run and deleted by the
// thread that completes the task (or by the registering thread when the task
// had finished already).
struct done_callback {
  done_callback* next = nullptr;
  virtual void run() noexcept = 0;
  virtual ~done_callback() = default;
};

// What a task carries only when someone asked for it: the tasks watching it
// (shield, done waits: the wait_list base), its done callbacks, its name.
// Made at spawn when the task is named, else by the first watcher or callback
// (watch_list); freed with the frame.
struct task_extras : wait_list {
  // Set before the task is published (spawn) or before the extras are
  // (watch_list's CAS); never written after: read without the lock.
  std::string name;
  // Guarded by the list's lock; taken whole (and run) by the completion.
  done_callback* callbacks = nullptr;
  done_callback* callbacks_tail = nullptr;
  // ---- task registry (runtime_options::track_tasks; runtime/dump.cpp) ----
  // Guarded by the lock of registry `reg_index`; all set before the task is
  // published except the links.
  task_extras* reg_next = nullptr;
  task_extras* reg_prev = nullptr;
  task_core* reg_core = nullptr;  // the task these extras belong to
  std::uint64_t id = 0;
  std::uint64_t parent_id = 0;
  std::uint64_t spawned_ns = 0;
  unsigned reg_index = 0;
  // The last cancel request made on the task (note_cancel), guarded by
  // note_lock: a leaf lock (nothing is taken under it), so that a canceller
  // holding the task's hook lock and dump() holding a registry lock may both
  // take it.
  std::atomic<std::uint8_t> note_lock{0};
  std::string cancel_reason;
  std::source_location cancel_where;
  std::uint64_t cancel_ns = 0;  // 0: none
  cancel_kind cancel_kind_noted = cancel_kind::explicit_request;
  task_extras() = default;
  task_extras(const task_extras&) = delete;
  task_extras& operator=(const task_extras&) = delete;
  ~task_extras() {
    while (done_callback* c = callbacks) {  // never ran: the task never finished
      callbacks = c->next;
      delete c;
    }
  }
};

// The shared state of a spawned task.  It lives inside the coroutine frame (in
// the promise), so one allocation serves both.
//
// Invariants:
//   refs(state) = (handle alive) + (task not yet completed) + (temporary refs
//                 taken by cancel forwarding, and by a wait_for deadline task);
//                 the frame is destroyed when it reaches 0, by whoever brings
//                 it there.  With kWatched set, completion keeps its reference
//                 until the watchers were woken (mark_done in core.cpp).
//   DONE is set exactly once, after the outcome is written (release).
//   At most one joiner (JOINER or THREAD_JOINER) is ever registered: a thread
//   joiner claims with a CAS that fails when either flag is set, a coroutine
//   joiner with one that fails when THREAD_JOINER is set (the loser gets
//   usage_error).  With THREAD_JOINER set, completion keeps its reference
//   until it has notified the joiner (it waits on `state` itself).
struct task_core {
  static constexpr std::uint32_t kDone = 1;          // outcome written
  static constexpr std::uint32_t kJoiner = 2;        // continuation registered
  static constexpr std::uint32_t kThreadJoiner = 4;  // a thread's join() claimed the outcome
  static constexpr std::uint32_t kWatched = 8;  // extras' watchers / callbacks may be non-empty
  static constexpr std::uint32_t kRefOne = 1u << 8;

  // The fields with an initializer come first and together, so that building
  // a core at spawn is a few wide stores.

  // ---- shared between threads (atomics) ----
  // Flags + reference count, see the constants above.
  std::atomic<std::uint32_t> state{0};
  // asyncio's cancelling(): requests made minus uncancel() calls.
  std::atomic<std::uint32_t> cancel_count{0};
  // The undelivered cancellation request, or null.  Exchanged in by cancel(),
  // exchanged out (one-shot) by the task at a resume point.
  std::atomic<cancel_request*> pending{nullptr};
  // Spin lock guarding `hook` (and the decision "forward or mark pending").
  std::atomic<std::uint8_t> hook_lock{0};

  // ---- touched only by whoever currently runs the task chain ----
  bool started = false;        // the worker (or an inline joiner) has begun running it
  bool hooked = false;         // cancel forwarding may hold a temporary ref
  bool shutdown_seen = false;  // the one "shutdown" delivery happened
  bool observed = false;       // someone took the outcome
  // The handle's owner read the outcome without taking it (result(),
  // exception()): an exception it saw is not reported as unhandled.
  bool retrieved = false;
  // In the runtime's task registry (track_tasks): written once before the
  // task is published, read when it finishes (count_finish).
  bool tracked = false;

  // ---- guarded by hook_lock ----
  // A request forwarded to this task by its waiter came back to the waiter
  // (reclaim_forwarded): the task finished without taking it.
  bool returned_request = false;
  // 0; or a wait_node* (the task is in a blocking wait); or a task_core* | 1
  // (the task waits on that task: cancel() is forwarded there).
  std::uintptr_t hook = 0;

  // ---- touched only by whoever currently runs the task chain ----
  // The joiner that took this task back from its deque and runs it inline
  // (then `continuation` is where the joiner resumes); null otherwise.
  task_core* inline_joiner = nullptr;
  cancel_request* final_cancel = nullptr;  // request that ended it before it started

  // Tasks waiting for this one to finish without joining it (shield()), its
  // done callbacks and its name (task_extras, with the watchers' lock):
  // created at a named spawn or by the first watcher or callback
  // (watch_list()) and freed with the task; null until then.  The watchers
  // and callbacks are fired by complete_task when kWatched is set.
  std::atomic<task_extras*> extras{nullptr};

  // ---- touched only by whoever currently runs the task chain ----
  // (Fields without an initializer are written before they are first read:
  // spawn sets frame/resume_point/where/rt, the worker or inline joiner sets
  // w, a coroutine joiner sets continuation* before its RMW publishes
  // kJoiner.  A thread joiner publishes nothing: it waits on `state`.)
  std::coroutine_handle<> frame;         // the spawned coroutine itself
  std::coroutine_handle<> resume_point;  // innermost suspended frame of the chain
  std::coroutine_handle<> continuation;  // joiner (coroutine) to resume on completion
  task_core* continuation_core;          // the joiner's core (kJoiner)
  // (The promise this core lives in is owner_of(core): the core sits at a
  // fixed offset inside it.)
  // The runtime the task was spawned on.  A join_handle may outlive it: code
  // reached from a handle reads it only for a task that is not done (a
  // runtime that leaves unfinished tasks behind keeps its structures alive,
  // see ~runtime), or compares the pointer without reading through it.
  runtime_impl* rt;
  worker_hot* w;  // worker currently running the chain
  // Where the task was spawned (the spawn call's default argument): one
  // pointer to static data, written once before the task is published; the
  // shutdown report names tasks by it.
  std::source_location where;

  task_core() noexcept {}  // leaves the fields above without initializers alone

  static std::uint32_t refs(std::uint32_t s) noexcept { return s >> 8; }

  void lock_hook() noexcept;
  void unlock_hook() noexcept {
    // Pairs with the acquire exchange in lock_hook(): publishes hook writes.
    hook_lock.store(0, std::memory_order_release);
  }
};

// Make `c` (non-null) the task `w` runs.
[[gnu::always_inline]] inline void set_current(worker_hot* w, task_core* c) noexcept {
  w->current = c;
  // Relaxed: a sample for the shutdown report (see running_site); nothing
  // is read through it but static data.
  w->running_site.store(c->where, std::memory_order_relaxed);
  // Relaxed: a sample for the watchdog and dump(), compared, never followed.
  w->running_task.store(c, std::memory_order_relaxed);
}

enum class outcome : std::uint8_t { none, value, exception, cancelled };

// What every weft coroutine promise starts with.  A frame that is awaited
// directly (co_await some_task()) runs as part of its awaiter's task: `core`
// points at that task's core.  A spawned frame constructs its own core in
// `core_storage` and points `core` at it.
struct promise_base {
  task_core* core = nullptr;
  // A task is either awaited directly or spawned, never both, so the two
  // share a slot and every frame stays as small as before stop tokens:
  union {
    // !spawned: the direct awaiter (set by task_awaiter).
    std::coroutine_handle<> parent{};
    // spawned (made the active member by prepare_spawn): the task's
    // this_task::stop_token() source, made on its first call; null until
    // then.  Written by the task under its core's hook lock, read by cancel()
    // under that lock (hand_over); freed with the frame.
    std::stop_source* stop;
  };
  std::exception_ptr error;  // exception outcome (cancelled_error too)
  outcome result = outcome::none;
  bool spawned = false;
  // Every parameter of the coroutine is trivially destructible (set by the
  // promise's constructor, which sees them): destroying the finished frame
  // then runs no code that could destroy other tasks (join_handle::reset).
  bool plain_params = false;
  // spawned: when the pending cancellation request reached this task, in
  // microseconds of now_ns() (mod 2^32; 0: none), for runtime::stats()'s
  // cancellation latency.  Set to 0 by prepare_spawn; then written under the
  // core's hook lock before a request is stored into an empty `pending`, and
  // exchanged to 0 by the taker.  Accessed through std::atomic_ref (relaxed):
  // the pending slot's release/acquire orders it.  Fills padding: the
  // promise does not grow.
  std::uint32_t cancel_stamp_us;
  alignas(task_core) unsigned char core_storage[sizeof(task_core)];

  promise_base() noexcept {}
  promise_base(const promise_base&) = delete;
  promise_base& operator=(const promise_base&) = delete;
  ~promise_base() {
    if (spawned) delete stop;
  }

  task_core& own_core() noexcept { return *reinterpret_cast<task_core*>(core_storage); }
};

static_assert(std::is_standard_layout_v<promise_base>,
              "owner_of() computes the promise from the core with offsetof");

// The promise a spawned task's core lives in (promise_base::core_storage).
// promise_base is standard-layout, so offsetof is well defined.
inline promise_base* owner_of(task_core* core) noexcept {
  return reinterpret_cast<promise_base*>(reinterpret_cast<unsigned char*>(core) -
                                         offsetof(promise_base, core_storage));
}
inline const promise_base* owner_of(const task_core* core) noexcept {
  return owner_of(const_cast<task_core*>(core));
}

// A task suspended in sleep_for/sleep_until.  Lives in the sleeping frame.
// Two parties may end the wait: the timer thread (deadline reached) and
// cancel()/shutdown (interrupt).  Each must win `claim` (kArmed -> kFired or
// kCancelled) to act; the task is resumed by whoever brings `latch` from 2 (the
// suspending task and the claimant each count one) to 0, so it is never resumed
// while the suspending thread or the timer still touches the node.
struct timer_node final : wait_node {
  static constexpr std::uint8_t kArmed = 0, kFired = 1, kCancelled = 2, kRefused = 3;
  static constexpr std::uint32_t kNoIndex = ~std::uint32_t{0};
  std::uint64_t deadline = 0;  // now_ns() clock
  task_core* core = nullptr;
  // Position in the timer heap, guarded by the timer lock.  32 bits: 2^32 - 1
  // pending sleeps would take hundreds of GiB of frames first.
  std::uint32_t heap_index = kNoIndex;
  std::atomic<std::uint8_t> claim{kArmed};
  std::atomic<std::uint8_t> latch{2};
  // As list_wait::after_shutdown: the sleep really sleeps during shutdown.
  // Counted in runtime_impl::sleeps_unfinished by timer_arm; set under the
  // timer lock, read by the sleeping task in sleep_resume (after the latch).
  bool counted = false;
  // Written by the task before it arms the timer (under the timer lock).
  bool after_shutdown = false;
  void interrupt() noexcept override;
};

// ---- inline halves of the seam (the slow halves are in seam.hpp) ----

inline void* alloc_frame_fast(std::size_t size) {
  if (worker_hot* w = current_worker()) {
    std::size_t cls = frame_cache::size_class(size);
    if (cls < frame_cache::kClasses) {
      if (frame_cache::free_node* n = w->frames.heads[cls]) {
        w->frames.heads[cls] = n->next;
        --w->frames.counts[cls];
        ++w->frames.live;
        return n;
      }
    }
  }
  return alloc_frame(size);
}

inline void free_frame_fast(void* p, std::size_t size) noexcept {
  if (worker_hot* w = current_worker()) {
    std::size_t cls = frame_cache::size_class(size);
    if (cls < frame_cache::kClasses && w->frames.counts[cls] < w->frames.limit) {
      auto* n = static_cast<frame_cache::free_node*>(p);
      n->next = w->frames.heads[cls];
      w->frames.heads[cls] = n;
      ++w->frames.counts[cls];
      --w->frames.live;
      return;
    }
  }
  free_frame(p, size);
}

// The end of now_ns()'s range, steady_clock::time_point::max() (292 years
// after the clock's epoch): deadlines computed from a duration saturate here.
inline constexpr std::uint64_t kEndOfTime = 0x7fff'ffff'ffff'ffff;

// Cancellation points throw the request's cancelled_error with throw_taken,
// inline, so that the unwinder starts in the task's own frame, where the
// catch usually is (see cancelled_error_of).
[[noreturn, gnu::always_inline]] inline void throw_taken(cancel_request* req) {
  throw cancelled_error_of(req);  // constructed in place (guaranteed elision)
}

}  // namespace weft::detail
