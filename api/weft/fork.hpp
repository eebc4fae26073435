// SPDX-License-Identifier: MIT
// weft/fork.hpp -- fork_task<T>: structured fork-join with continuation
// stealing, beside spawn.
//
//   weft::fork_task<long> fib(int n) {
//     if (n < 2) co_return n;
//     long a = 0;
//     co_await weft::fork(a, fib(n - 1));  // runs the child now; our continuation may be stolen
//     long b = co_await fib(n - 2);        // a call: runs the child now, nothing to steal
//     co_await weft::join();               // waits for the forked children; a cancellation point
//     co_return a + b;
//   }
//   // in a weft::task:  long r = co_await fib(30);
//
// The worker that forks runs the child at once; what thieves steal is the
// rest of the parent (its continuation), as in Cilk and libfork.  Frames come
// from per-worker stacks (detail/fork_stack.hpp), not the heap.  Where nothing
// is stolen, a fork and its join cost no allocation, no locked instruction and
// no shared counter.
//
// A fork tree belongs to the task that awaits it (the task's own cancellation
// reaches every frame of the tree), and it is no task itself: forked children
// have no handles, cannot be cancelled one by one, and do not appear in
// cancelling() or the shutdown report except as their task.  Inside a fork
// frame the cancellation points are join(), checkpoint() and yield(); once the
// task is cancelled, every one of them in the tree throws cancelled_error of
// kind `parent` (the tree is cancelled as a whole, like a Trio cancel scope),
// and the task's own co_await of the tree throws the request itself.  While a
// frame's forked children may still run (a steal happened), a cancellation
// point other than join() does not throw: the join does, after the children
// have finished.  Only join(), checkpoint(), yield(), fork() and calls of
// other fork_tasks may be awaited in a fork frame (use spawn and a task for
// anything that blocks).
//
// The rules of the form:
//   - fork(out, t) writes t's value into `out` when t finishes; read `out`
//     only after join().
//   - Every fork is joined: a frame that ends without join() waits for its
//     children before its parent resumes.  Do not throw from a fork frame
//     between fork() and join() (the children may write into locals that the
//     exception destroys); weft's own throwing points there -- calls, and the
//     cancellation points -- wait for the children first.
//   - The first exception of a forked child is rethrown by join(); the other
//     children still run to their end.
// See docs/fork-join.md for when to use fork_task and when spawn.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <coroutine>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

#include "weft/detail/task_core.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

template <class T = void>
class fork_task;

namespace detail {

// The state every fork-join frame carries (the base of its promise).
struct fork_frame {
  // joins starts here; each child that finished off the fast path takes one
  // away, and join() takes away kJoinBias - steals: the count reaches 0 when
  // the last of them is done.
  static constexpr std::uint32_t kJoinBias = 1u << 30;
  enum class role : std::uint8_t { root, forked, called };

  // (The fields without an initializer are written by whoever starts the
  // frame -- fork, call or the tree's root -- before it runs.)
  std::coroutine_handle<> self;  // this frame
  fork_frame* parent;            // who forked or called us (null: the root)
  fork_tree* tree;
  worker_hot* w;                   // the worker running this frame now
  std::exception_ptr* err_out;     // root, called: where our exception goes
  std::exception_ptr child_error;  // the first exception of a forked child
  std::exception_ptr call_error;   // the exception of the child we call (err_out)
  // Continuations of ours that ran from a queue since the last join: each
  // stands for one child that finishes off the fast path.  Read and written
  // by whoever runs this frame.
  std::uint32_t steals = 0;
  std::atomic<std::uint32_t> joins{kJoinBias};
  std::atomic<bool> has_child_error{false};
  role kind;
  bool plain_resume = false;  // the next run from a queue is a yield, not a steal
  bool finishing = false;     // the body ended while children still ran
  // Every parameter of the coroutine is trivially destructible (set by the
  // promise's constructor): a finished frame then needs no destroy() when
  // it is the top of its worker's stack, only a pop (fork_release).
  bool plain_params = false;

  fork_frame() noexcept {}  // leaves the fields above without initializers alone
};

// What the task that awaits a fork tree shares with every frame of it.
struct fork_tree {
  task_core* root = nullptr;       // the awaiting task
  std::coroutine_handle<> caller;  // its frame, resumed when the tree ends
  // Set once (release) when the tree is cancelled, after `origin` is written.
  std::atomic<bool> cancelled{false};
  std::atomic<std::uint8_t> lock{0};  // guards the decision to cancel
  cancel_request* origin = nullptr;   // the task's request the tree took
};

// ---- frame memory ----

inline void* fork_alloc(std::size_t n) {
  worker_hot* w = current_worker();
  if (w != nullptr) [[likely]] {
    fork_stack& s = w->forks;
    const std::size_t bytes = fork_block_bytes(n);
    if (static_cast<std::size_t>(s.limit - s.top) >= bytes) [[likely]]
      return fork_push_block(s, bytes);
  }
  return fork_alloc_slow(w, n);
}

inline void fork_free(void* p) noexcept {
  fork_block* b = static_cast<fork_block*>(p) - 1;
  // Relaxed: kHeap is written once, before the frame existed.
  if (b->state.load(std::memory_order_relaxed) == fork_block::kHeap) [[unlikely]] {
    fork_free_heap(b);
    return;
  }
  // Release: pairs with fork_collect's acquire load; the owner reuses the
  // memory only after our last touch of the frame.
  b->state.store(fork_block::kFreed, std::memory_order_release);
}

// ---- transfers and cancellation ----

// As transfer() (task.hpp): bounce through the worker loop past
// kMaxTransfers, for g++ builds without tail calls.
inline std::coroutine_handle<> fork_transfer(fork_frame* to) noexcept {
  if constexpr (!kCountTransfers) return to->self;
  worker_hot* w = to->w;
  if (++w->transfers > kMaxTransfers) [[unlikely]] {
    to->plain_resume = true;
    w->resume_next = fork_item(to);
    return std::noop_coroutine();
  }
  return to->self;
}

// Is a cancellation of the tree possible?  Relaxed looks; the request itself
// is taken under the tree's lock (fork_cancel_check).
inline bool fork_alarm(const fork_frame* f) noexcept {
  const fork_tree* t = f->tree;
  return t->cancelled.load(std::memory_order_relaxed) ||
         t->root->pending.load(std::memory_order_relaxed) != nullptr ||
         f->w->stopping.load(std::memory_order_relaxed);
}

// join(): false when children still run (the last of them resumes `f`).
inline bool fork_join_arrive(fork_frame* f) noexcept {
  const std::uint32_t take = fork_frame::kJoinBias - f->steals;
  // Acq_rel: acquires the children's releases (their outputs), releases our
  // writes to the child that brings the count to 0 and resumes us.
  return f->joins.fetch_sub(take, std::memory_order_acq_rel) == take;
}

// After a join that counted: ready for the next round.
inline void fork_join_reset(fork_frame* f) noexcept {
  f->steals = 0;
  // Relaxed: every child of the next round is forked after this, on this
  // strand (sequenced before its fork's deque push).
  f->joins.store(fork_frame::kJoinBias, std::memory_order_relaxed);
}

// A forked child's exception, for its parent's join.
inline void fork_record_error(fork_frame* parent, std::exception_ptr e) noexcept {
  // Acq_rel: one child wins the slot; its write below is published to the
  // join by the child's joins RMW (or by running on the same strand).
  if (!parent->has_child_error.exchange(true, std::memory_order_acq_rel))
    parent->child_error = std::move(e);
}

// A finished frame's outcome when forked children failed after its body
// ended (it never joined them): the first child exception becomes its own.
inline void fork_pass_errors(fork_frame* f) noexcept {
  // Relaxed: the frame's implicit join synchronised with the children.
  f->has_child_error.store(false, std::memory_order_relaxed);
  if (f->kind == fork_frame::role::forked)
    fork_record_error(f->parent, std::move(f->child_error));
  else if (!*f->err_out)
    *f->err_out = std::move(f->child_error);
}

// Free a finished frame.  Nothing in a frame with plain parameters needs
// destruction at its end (the promise's only non-trivial members, child_error
// and call_error, are empty by then: each error was taken where it was
// thrown), so when it is the top block of this worker's stack it is popped
// without running destroy().
[[gnu::always_inline]] inline void fork_release(fork_frame* f, worker_hot* w) noexcept {
  fork_stack& s = w->forks;
  fork_block* b = static_cast<fork_block*>(f->self.address()) - 1;
  if (f->plain_params && b == s.last) [[likely]] {
    s.last = b->prev;
    s.top = reinterpret_cast<char*>(b);
    if (s.top == s.cur->base() && s.last != nullptr) [[unlikely]]
      fork_stack_step_down(s);
  } else {
    f->self.destroy();
  }
  fork_collect(s);  // blocks below that others freed meanwhile
}

// Where a finished frame goes next: its parent, the task that awaited the
// tree, or (children still run elsewhere) back to the worker loop.  Frees the
// frame.
[[gnu::always_inline]] inline std::coroutine_handle<> fork_finish(fork_frame* f) noexcept {
  worker_hot* w = f->w;
  fork_frame* p = f->parent;
  // Relaxed: our own children's errors, synchronised by the join.
  if (f->has_child_error.load(std::memory_order_relaxed)) [[unlikely]]
    fork_pass_errors(f);
  if (f->kind == fork_frame::role::forked) [[likely]] {
    // The fast path: an item of our parent's is at the bottom of this
    // worker's deque.  Taking it means running that continuation here, once;
    // every child's end and every item's run are then still counted right
    // (docs/architecture.md, "Why any item of the parent will do").
    const bool fast = w->deque.take_if(fork_item(p));
    fork_release(f, w);
    if (fast) [[likely]]
      return fork_transfer(p);
    return fork_child_done_slow(p, w);
  }
  if (f->kind == fork_frame::role::called) {
    const bool failed = static_cast<bool>(*f->err_out);
    fork_release(f, w);
    p->w = w;
    // The caller will throw: its forked children must finish first.
    if (failed && p->steals != 0) [[unlikely]] {
      if (!fork_join_arrive(p)) return std::noop_coroutine();
    }
    return fork_transfer(p);
  }
  return fork_finish_root(f);
}

template <class T>
class fork_promise;

template <class T>
struct fork_out {
  T* out = nullptr;
  bool assign = false;  // fork(out, t): assign; a call: construct in place
  template <class U>
  void put(U&& v) {
    if (assign)
      *out = std::forward<U>(v);
    else
      ::new (static_cast<void*>(out)) T(std::forward<U>(v));
  }
};

template <class T>
struct fork_tag {
  std::coroutine_handle<fork_promise<T>> child;
  T* out;
};
template <>
struct fork_tag<void> {
  std::coroutine_handle<fork_promise<void>> child;
};
struct join_tag {};

template <class T, class P>
void fork_prepare(fork_promise<T>& c, P& p, fork_frame::role kind) noexcept {
  c.parent = &p;
  c.tree = p.tree;
  c.w = p.w;
  c.kind = kind;
}

template <class T>
struct fork_awaiter {
  fork_tag<T> tag;
  bool await_ready() const {
    if (!tag.child || tag.child.done()) [[unlikely]]
      throw_empty_task();
    return false;
  }
  // Forced inline, as the spawn form's push and join: g++ 12 outlines it.
  template <class P>
  [[gnu::always_inline]] std::coroutine_handle<> await_suspend(
      std::coroutine_handle<P> self) noexcept {
    fork_frame& p = self.promise();
    fork_promise<T>& c = tag.child.promise();
    worker_hot* w = p.w;
    fork_prepare(c, p, fork_frame::role::forked);
    if constexpr (!std::is_void_v<T>) c.result = {tag.out, true};
    fork_frame* child = &c;
    // Publishes our frame to thieves: touch nothing of it (this awaiter
    // lives in it) after the push.
    w->deque.push(fork_item(&p));
    // Relaxed: as spawn's (a missed sleeper costs parallelism, not progress).
    if (w->sleepers->load(std::memory_order_relaxed) != 0) [[unlikely]]
      wake_one(w->rt);
    return fork_transfer(child);
  }
  void await_resume() const noexcept {}
};

template <class T>
struct call_awaiter {
  explicit call_awaiter(std::coroutine_handle<fork_promise<T>> h) noexcept : child(h) {}
  std::coroutine_handle<fork_promise<T>> child;
  fork_frame* self = nullptr;
  [[no_unique_address]] std::conditional_t<
      std::is_void_v<T>, std::monostate, result_slot<std::conditional_t<std::is_void_v<T>, int, T>>>
      slot;

  bool await_ready() const {
    if (!child || child.done()) [[unlikely]]
      throw_empty_task();
    return false;
  }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
    fork_frame& p = h.promise();
    self = &p;
    fork_promise<T>& c = child.promise();
    fork_prepare(c, p, fork_frame::role::called);
    c.err_out = &p.call_error;
    if constexpr (!std::is_void_v<T>) c.result = {reinterpret_cast<T*>(slot.buf), false};
    return fork_transfer(&c);
  }
  T await_resume() {
    if (self->call_error) [[unlikely]] {
      // fork_finish waited for our stolen children before resuming us.
      if (self->steals != 0) fork_join_reset(self);
      std::rethrow_exception(std::exchange(self->call_error, nullptr));
    }
    if constexpr (!std::is_void_v<T>) {
      T v = std::move(slot.get());
      slot.get().~T();
      return v;
    }
  }
};

struct fork_join_awaiter {
  fork_frame* f;
  bool await_ready() const noexcept { return f->steals == 0; }
  bool await_suspend(std::coroutine_handle<>) noexcept { return !fork_join_arrive(f); }
  void await_resume() {
    if (f->steals != 0) fork_join_reset(f);
    // Relaxed: the join synchronised with every child (or they ran here).
    if (f->has_child_error.load(std::memory_order_relaxed)) [[unlikely]]
      fork_rethrow_child_error(f);
    if (fork_alarm(f)) [[unlikely]]
      fork_deliver(f);
  }
};

struct fork_yield_awaiter {
  fork_frame* f;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) noexcept {
    f->plain_resume = true;
    fork_requeue(f);  // publishes the frame: touch nothing after this
  }
  void await_resume() {
    if (f->steals == 0 && fork_alarm(f)) [[unlikely]]
      fork_deliver(f);
  }
};

struct fork_checkpoint_awaiter {
  fork_frame* f;
  bool slow = false;
  bool await_ready() const noexcept {
    // Relaxed: hints, as checkpoint()'s.
    return !f->w->slice_expired.load(std::memory_order_relaxed) && !fork_alarm(f);
  }
  bool await_suspend(std::coroutine_handle<>) noexcept {
    slow = true;
    if (f->steals == 0 && fork_alarm(f)) return false;  // deliver without rescheduling
    // Relaxed: as checkpoint()'s.
    f->w->slice_expired.store(false, std::memory_order_relaxed);
    f->plain_resume = true;
    fork_requeue(f);
    return true;
  }
  void await_resume() {
    if (slow && f->steals == 0 && fork_alarm(f)) [[unlikely]]
      fork_deliver(f);
  }
};

// Awaiting anything else in a fork frame is refused at compile time.
template <class A>
inline constexpr bool kForkAwaitable = false;

template <class Derived>
struct fork_promise_base : fork_frame {
  static void* operator new(std::size_t n) { return fork_alloc(n); }
  static void operator delete(void* p, std::size_t) noexcept { fork_free(p); }

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    [[gnu::always_inline]] std::coroutine_handle<> await_suspend(
        std::coroutine_handle<Derived> h) noexcept {
      fork_frame* f = &h.promise();
      if (f->steals != 0) {
        // Children of ours still run elsewhere: their last one finishes us.
        f->finishing = true;
        if (!fork_join_arrive(f)) return std::noop_coroutine();
      }
      return fork_finish(f);
    }
    void await_resume() const noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept {
    if (kind == role::forked)
      fork_record_error(parent, std::current_exception());
    else
      *err_out = std::current_exception();
  }

  template <class U>
  fork_awaiter<U> await_transform(fork_tag<U> t) noexcept {
    return {t};
  }
  fork_join_awaiter await_transform(join_tag) noexcept { return {this}; }
  fork_yield_awaiter await_transform(yield_tag) noexcept { return {this}; }
  fork_checkpoint_awaiter await_transform(checkpoint_tag) noexcept { return {this}; }
  template <class U>
  call_awaiter<U> await_transform(fork_task<U>&& t) noexcept;
  template <class A>
  A&& await_transform(A&& a) noexcept {
    static_assert(kForkAwaitable<std::remove_cvref_t<A>>,
                  "weft: a fork_task may co_await only fork(), join(), checkpoint(), yield() and "
                  "other fork_tasks; spawn a weft::task for anything that blocks");
    return static_cast<A&&>(a);
  }
};

template <class T>
class fork_promise final : public fork_promise_base<fork_promise<T>> {
 public:
  fork_promise() = default;
  // The coroutine's parameters (the compiler passes them when this is
  // viable); only their types are used.
  template <class... A>
  explicit fork_promise(const A&...) noexcept {
    this->plain_params = (trivially_destroyed<A>() && ...);
  }
  fork_task<T> get_return_object() noexcept;
  template <class U>
    requires std::convertible_to<U&&, T>
  void return_value(U&& v) {
    result.put(std::forward<U>(v));
  }
  fork_out<T> result;
};

template <>
class fork_promise<void> final : public fork_promise_base<fork_promise<void>> {
 public:
  fork_promise() = default;
  template <class... A>
  explicit fork_promise(const A&...) noexcept {  // as fork_promise<T>
    this->plain_params = (trivially_destroyed<A>() && ...);
  }
  fork_task<void> get_return_object() noexcept;
  void return_void() noexcept {}
};

// co_await of a fork tree from a weft::task (or a fork_task from a task).
template <class T>
struct fork_root_awaiter {
  std::coroutine_handle<fork_promise<T>> child;
  fork_tree tree;
  std::exception_ptr error;
  [[no_unique_address]] std::conditional_t<
      std::is_void_v<T>, std::monostate, result_slot<std::conditional_t<std::is_void_v<T>, int, T>>>
      slot;

  explicit fork_root_awaiter(std::coroutine_handle<fork_promise<T>> h) noexcept : child(h) {}
  fork_root_awaiter(fork_root_awaiter&& o) noexcept : child(std::exchange(o.child, {})) {}
  ~fork_root_awaiter() {
    if (child) child.destroy();  // never started (await_ready threw, or not awaited)
  }

  bool await_ready() const {
    if (!child || child.done()) [[unlikely]]
      throw_empty_task();
    return false;
  }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> caller) noexcept {
    task_core* core = caller.promise().core;
    tree.root = core;
    tree.caller = caller;
    fork_promise<T>& c = std::exchange(child, {}).promise();
    c.kind = fork_frame::role::root;
    c.parent = nullptr;
    c.tree = &tree;
    c.w = core->w;
    c.err_out = &error;
    if constexpr (!std::is_void_v<T>) c.result = {reinterpret_cast<T*>(slot.buf), false};
    return transfer(core, c.self);
  }
  T await_resume() {
    fork_tree_end(&tree, error);  // throws the tree's exception
    if constexpr (!std::is_void_v<T>) {
      T v = std::move(slot.get());
      slot.get().~T();
      return v;
    }
  }
};

}  // namespace detail

// A fork-join coroutine (see the top of this file).  Move-only and lazy:
// created by calling the coroutine, run by fork(), by a co_await from another
// fork_task (a call) or from a weft::task (the root of a tree).  Destroying
// one that never ran frees its frame.
template <class T>
class [[nodiscard]] fork_task {
 public:
  using promise_type = detail::fork_promise<T>;
  using value_type = T;

  fork_task() noexcept = default;
  fork_task(fork_task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  fork_task& operator=(fork_task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  fork_task(const fork_task&) = delete;
  fork_task& operator=(const fork_task&) = delete;
  ~fork_task() { reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }

  // From a weft::task: runs the tree on this worker (others steal from it)
  // and gives its value.
  detail::fork_root_awaiter<T> operator co_await() && noexcept {
    return detail::fork_root_awaiter<T>(release());
  }

  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }

 private:
  friend class detail::fork_promise<T>;
  explicit fork_task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  void reset() noexcept {
    if (h_) std::exchange(h_, {}).destroy();
  }
  std::coroutine_handle<promise_type> h_;
};

// Fork `t`: it runs now, on this worker; the rest of the calling fork frame
// may be stolen meanwhile.  Its value goes to `out` (read it after join()).
template <class T, class U>
  requires std::is_assignable_v<U&, T&&>
[[nodiscard]] detail::fork_tag<T> fork(U& out, fork_task<T>&& t) noexcept {
  static_assert(std::is_same_v<U, T>, "weft::fork: `out` must have the task's value type");
  return {t.release(), &out};
}
[[nodiscard]] inline detail::fork_tag<void> fork(fork_task<void>&& t) noexcept {
  return {t.release()};
}

// Wait for every child forked since the last join; rethrows the first
// exception of one of them.  A cancellation point.
[[nodiscard]] inline detail::join_tag join() noexcept { return {}; }

// A weft::task that runs a fork tree: for runtime::spawn / block_on.
template <class T>
task<T> as_task(fork_task<T> t) {
  co_return co_await std::move(t);
}

namespace detail {

template <class T>
fork_task<T> fork_promise<T>::get_return_object() noexcept {
  auto h = std::coroutine_handle<fork_promise<T>>::from_promise(*this);
  this->self = h;
  return fork_task<T>(h);
}
inline fork_task<void> fork_promise<void>::get_return_object() noexcept {
  auto h = std::coroutine_handle<fork_promise<void>>::from_promise(*this);
  this->self = h;
  return fork_task<void>(h);
}

template <class D>
template <class U>
call_awaiter<U> fork_promise_base<D>::await_transform(fork_task<U>&& t) noexcept {
  return call_awaiter<U>(t.release());
}

}  // namespace detail

}  // namespace weft
