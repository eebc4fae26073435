// SPDX-License-Identifier: MIT
// runtime/fork.cpp -- the slow halves of the fork-join form (weft/fork.hpp):
// worker stack segments, children that finish after a steal, the end of a
// tree, yields, and the tree's cancellation.
//
// The protocols are in docs/architecture.md, "Fork-join: continuation
// stealing" and "Fork-join frames on worker stacks".
#include <cstdio>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "cancel_delivery.hpp"
#include "runtime_impl.hpp"
#include "sim_driver.hpp"
#include "spin.hpp"
#include "weft/fork.hpp"

namespace weft::detail {

namespace {

// Under AddressSanitizer every fork frame comes from the system allocator,
// so that ASan sees each one (a use after the frame ended is reported); the
// worker never gets a segment, and fork_alloc always takes the slow path.
// ThreadSanitizer builds keep the stacks: their free/pop protocol is part of
// what it checks.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kHeapFrames = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kHeapFrames = true;
#else
constexpr bool kHeapFrames = false;
#endif
#else
constexpr bool kHeapFrames = false;
#endif

// A segment holds this much, header line included; a frame larger than a
// quarter of it goes to the system allocator instead.
constexpr std::size_t kSegmentBytes = std::size_t{64} << 10;
constexpr std::size_t kLargestStackFrame = kSegmentBytes / 4;

stacklet* new_segment(std::size_t bytes) {
  void* mem = ::operator new(bytes, std::align_val_t{kForkLine});
  auto* s = static_cast<stacklet*>(mem);
  s->prev = nullptr;
  s->limit = static_cast<char*>(mem) + bytes;
  return s;
}

void free_segment(stacklet* s) noexcept { ::operator delete(s, std::align_val_t{kForkLine}); }

// Does segment `s` hold address `p`?
bool holds(stacklet* s, const void* p) noexcept {
  const char* c = static_cast<const char*>(p);
  return c >= s->base() && c < s->limit;
}

}  // namespace

void* fork_alloc_slow(worker_hot* w, std::size_t size) {
  const std::size_t bytes = fork_block_bytes(size);
  if (w == nullptr || size > kLargestStackFrame || kHeapFrames) {
    auto* b = static_cast<fork_block*>(::operator new(bytes, std::align_val_t{kForkLine}));
    b->prev = nullptr;
    b->bytes = static_cast<std::uint32_t>(bytes);
    // Relaxed: written before the frame exists; never changes.
    b->state.store(fork_block::kHeap, std::memory_order_relaxed);
    return b + 1;
  }
  // The current segment is full (or there is none yet): the next one.
  fork_stack& s = w->forks;
  stacklet* next = std::exchange(s.spare, nullptr);
  if (next == nullptr) next = new_segment(kSegmentBytes);
  next->prev = s.cur;
  s.cur = next;
  s.top = next->base();
  s.limit = next->limit;
  return fork_push_block(s, bytes);
}

void fork_free_heap(fork_block* b) noexcept {
  ::operator delete(static_cast<void*>(b), std::align_val_t{kForkLine});
}

void fork_stack_step_down(fork_stack& s) noexcept {
  // s.top is at the base of s.cur, and the newest live block (s.last) is in
  // a segment below.  Keep one emptied segment for the next growth.
  while (!holds(s.cur, s.last)) {
    stacklet* empty = s.cur;
    s.cur = empty->prev;
    if (s.spare == nullptr) {
      s.spare = empty;
    } else {
      free_segment(empty);
    }
  }
  s.limit = s.cur->limit;
  s.top = reinterpret_cast<char*>(s.last) + s.last->bytes;
}

void free_fork_stack(worker_hot* w) noexcept {
  fork_stack& s = w->forks;
  // The worker's thread has exited (joined): every free made on any thread
  // before the runtime's destruction is visible.
  if (s.cur != nullptr) fork_collect(s);
  if (s.last != nullptr) {
    // A frame made on this worker is still alive: a fork_task created in a
    // task and moved out of the runtime, not yet run or destroyed.  It lives
    // in these segments, so they stay allocated for good (reachable from
    // here: no leak report); the frame runs or ends later like any other.
    static std::mutex mu;
    // Out of memory for this one vector terminates, as in any noexcept path.
    static auto* kept = new std::vector<stacklet*>;  // NOLINT(bugprone-unhandled-exception-at-new)
    std::lock_guard lk(mu);
    try {
      kept->push_back(s.cur);
    } catch (...) {
      // Out of memory: the segments stay allocated, unlisted.
    }
    if (s.spare != nullptr) free_segment(s.spare);
    s = fork_stack{};
    return;
  }
  for (stacklet* seg = s.cur; seg != nullptr;) {
    stacklet* below = seg->prev;
    free_segment(seg);
    seg = below;
  }
  if (s.spare != nullptr) free_segment(s.spare);
  s = fork_stack{};
}

std::coroutine_handle<> fork_child_done_slow(fork_frame* parent, worker_hot* w) noexcept {
  // Acq_rel: releases this child's output (and what it recorded) to whoever
  // brings the count to 0; the last one acquires everybody's.
  if (parent->joins.fetch_sub(1, std::memory_order_acq_rel) != 1) return std::noop_coroutine();
  parent->w = w;
  if (parent->finishing) return fork_finish(parent);
  return fork_transfer(parent);
}

std::coroutine_handle<> fork_finish_root(fork_frame* f) noexcept {
  worker_hot* w = f->w;
  fork_tree* t = f->tree;
  fork_release(f, w);
  // The task's chain resumes on this worker, whichever started the tree.
  task_core* core = t->root;
  core->w = w;
  set_current(w, core);
  return transfer(core, t->caller);
}

std::coroutine_handle<> fork_resume_item(worker* w, task_core* item) noexcept {
  fork_frame* f = fork_of(item);
  f->w = w;
  if (f->plain_resume) {
    f->plain_resume = false;  // a yield or a trampoline bounce
  } else {
    ++f->steals;  // a continuation: its child finishes off the fast path
  }
  w->current = nullptr;  // a strand of the tree, not the task's own chain
  // Relaxed: see set_current.
  w->running_site.store(f->tree->root->where, std::memory_order_relaxed);
  w->running_task.store(f->tree->root, std::memory_order_relaxed);  // likewise
  return f->self;
}

task_core* owner_of_item(task_core* item) noexcept {
  return is_fork_item(item) ? fork_of(item)->tree->root : item;
}

void fork_requeue(fork_frame* f) noexcept {
  auto* w = static_cast<worker*>(f->w);
  if (sim_hook::fork_yield(w, f)) return;
  if (w->rt->loop != nullptr) [[unlikely]] {
    loop_yield(w->rt, w, fork_item(f));
    return;
  }
  w->rt->inject(fork_item(f));
}

namespace {

// Is the tree cancelled?  The first strand that finds the task's request
// (or the runtime's shutdown, once per task) takes it for the whole tree.
bool fork_cancel_check(fork_tree* t, worker_hot* w) noexcept {
  // Acquire: pairs with the release store below; `origin` is readable.
  if (t->cancelled.load(std::memory_order_acquire)) return true;
  spin_lock(t->lock);
  // Relaxed: under the lock, which every writer holds.
  if (!t->cancelled.load(std::memory_order_relaxed)) {
    task_core* root = t->root;
    // Acquire: pairs with hand_over's release store of the request.  A take
    // needs no hook lock (only stores of a request do).
    cancel_request* r = root->pending.exchange(nullptr, std::memory_order_acquire);
    if (r != nullptr) meter_delivery(root, root, untagged(r));  // runtime::stats
    // Relaxed: as maybe_cancel's look at the stop flag.  shutdown_seen is
    // guarded by the tree's lock while the tree runs.
    if (r == nullptr && w->stopping.load(std::memory_order_relaxed) && !root->shutdown_seen) {
      root->shutdown_seen = true;
      r = shutdown_request(root->rt);
      meter_shutdown_delivery(root, r);  // runtime::stats
    }
    if (r != nullptr) {
      t->origin = r;
      // Release: pairs with the acquire loads of `cancelled` (above, and
      // fork_tree_end): origin is written.
      t->cancelled.store(true, std::memory_order_release);
    }
  }
  // Pairs with spin_lock's acquire.
  t->lock.store(0, std::memory_order_release);
  // Relaxed: our own store, or one we read under the lock.
  return t->cancelled.load(std::memory_order_relaxed);
}

}  // namespace

void fork_deliver(fork_frame* f) {
  fork_tree* t = f->tree;
  if (!fork_cancel_check(t, f->w)) return;
  const cancel_request* r = untagged(t->origin);
  // The task's request, seen from a frame of its tree: kind parent, with the
  // reason and the place of the cancel() that caused it.
  throw cancelled_error(r->interned ? std::string() : r->reason, cancel_kind::parent, r->where);
}

void fork_rethrow_child_error(fork_frame* f) {
  // Relaxed: the join synchronised with the child that wrote it.
  f->has_child_error.store(false, std::memory_order_relaxed);
  std::rethrow_exception(std::exchange(f->child_error, nullptr));
}

void fork_tree_end(fork_tree* t, std::exception_ptr& error) {
  // Acquire: pairs with fork_cancel_check's release store.
  if (t->cancelled.load(std::memory_order_acquire)) {
    cancel_request* r = std::exchange(t->origin, nullptr);
    if (is_cancellation(error)) {
      // The tree ended by the task's cancellation: the task receives its own
      // request here, as at any cancellation point.
      error = nullptr;
      throw_taken(r);
    }
    // The tree caught it and went on, or failed otherwise: the request is
    // not lost, the task's next cancellation point delivers it.
    park_request(t->root, r);
  }
  if (error) std::rethrow_exception(std::exchange(error, nullptr));
}

}  // namespace weft::detail
