// SPDX-License-Identifier: MIT
// weft/task.hpp -- task<T>, join_handle<T>, spawn, and the awaitables that are
// cancellation points: yield(), checkpoint(), sleep_for(), sleep_until().
//
// A task<T> is a lazy coroutine.  `co_await t` runs it as part of the awaiting
// task (a function call that may suspend); `spawn(t)` makes it a task of its own
// with a join_handle that can await, join or cancel it.  A task runs once:
// co_await or spawn() of an empty task (default-constructed, moved from,
// spawned) or of one that was already awaited throws usage_error.
//
// Cancellation points (where a pending cancel request is delivered as
// weft::cancelled_error): co_await of a join_handle, yield(), checkpoint(),
// sleep_for()/sleep_until(), this_task::throw_if_cancel_requested(), and the
// start of a spawned task (a task cancelled before it starts never runs its
// body).  `co_await some_task()` itself is not one: it is a call.
// See docs/cancellation.md.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <cassert>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <ratio>
#include <source_location>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "weft/detail/access.hpp"
#include "weft/detail/task_core.hpp"
#include "weft/errors.hpp"

namespace weft {

template <class T = void>
class task;
template <class T = void>
class join_handle;
class task_handle;

// What spawn() may be told besides the task (asyncio create_task's name=).
struct spawn_options {
  // Shown by every report that names the task (the unhandled-exception and
  // shutdown reports) and by name().  Fixed at spawn: there is no set_name(),
  // so that reports read it without a lock.  Empty: no name (nothing is
  // allocated for it).
  std::string name;
};

namespace detail {

struct yield_tag {};
struct checkpoint_tag {};
struct sleep_tag {
  std::uint64_t deadline;  // now_ns() clock; saturated
  bool immediate;          // duration <= 0: behaves as yield()
};

// `d` in nanoseconds, saturated: a duration outside nanoseconds' range
// (hours::max(), seconds::min(), ...) becomes nanoseconds::max() or min()
// instead of overflowing as duration_cast (and the implicit conversion) does.
template <class Rep, class Period>
  requires std::is_integral_v<Rep>
constexpr std::chrono::nanoseconds saturating_ns(std::chrono::duration<Rep, Period> d) noexcept {
  using ns = std::chrono::nanoseconds;
  using per_ns = std::ratio_divide<Period, std::nano>;  // reduced: nanoseconds per unit
  const Rep c = d.count();
  if constexpr (per_ns::den == 1) {
    // A whole number of nanoseconds per unit (ns, us, ms, s, min, h, ...):
    // the product fits exactly when |c| <= kLim.
    constexpr std::intmax_t kLim = std::numeric_limits<ns::rep>::max() / per_ns::num;
    if (std::cmp_greater(c, kLim)) return ns::max();
    if (std::cmp_less(c, -kLim)) return ns::min();
    return ns(static_cast<ns::rep>(c) * static_cast<ns::rep>(per_ns::num));
  } else {
    // Finer than a nanosecond, or a fractional ratio: rare; long double has
    // a 64-bit mantissa here, exact enough at the bounds.
    const long double v = static_cast<long double>(c) * per_ns::num / per_ns::den;
    if (v >= 0x1p63L) return ns::max();
    if (v <= -0x1p63L) return ns::min();
    return ns(static_cast<ns::rep>(v));
  }
}

// A steady_clock time point of any (integral) unit as steady_clock's own,
// saturated like saturating_ns.
template <class Duration>
constexpr std::chrono::steady_clock::time_point saturating_steady(
    std::chrono::time_point<std::chrono::steady_clock, Duration> tp) noexcept {
  static_assert(std::is_same_v<std::chrono::steady_clock::duration, std::chrono::nanoseconds>);
  return std::chrono::steady_clock::time_point(saturating_ns(tp.time_since_epoch()));
}

// Count one symmetric transfer; past kMaxTransfers, bounce through the worker
// loop so the stack cannot grow without bound (g++ 12 does not emit these
// transfers as tail calls in -O0 and sanitizer builds).
inline std::coroutine_handle<> transfer(task_core* core, std::coroutine_handle<> to) noexcept {
  if constexpr (!kCountTransfers) return to;
  worker_hot* w = core->w;
  if (++w->transfers > kMaxTransfers) [[unlikely]] {
    core->resume_point = to;
    w->resume_next = core;
    return std::noop_coroutine();
  }
  return to;
}

// The fast resume check: a relaxed load of the task's own pending slot and of
// the worker's stop flag.  Relaxed is enough: the request itself is taken with
// an acquire exchange in take_pending().
inline bool maybe_cancel(const task_core* core) noexcept {
  return core->pending.load(std::memory_order_relaxed) != nullptr ||
         core->w->stopping.load(std::memory_order_relaxed);
}

// Inline, throw included: see throw_taken.
[[gnu::always_inline]] inline void deliver_if_pending(task_core* core) {
  if (cancel_request* r = take_pending(core)) [[unlikely]]
    throw_taken(r);
}

inline void mark_taken(task_core* core) {
  if (core->observed) [[unlikely]]
    throw_already_taken();
  core->observed = true;
}

template <class T>
struct result_slot {
  alignas(T) unsigned char buf[sizeof(T)];
  T& get() noexcept { return *std::launder(reinterpret_cast<T*>(buf)); }
};

template <class T>
class promise;

template <class T>
struct task_awaiter;
template <class T>
struct handle_awaiter;
template <class Source, class T>
struct capture_tag;

struct yield_awaiter {
  task_core* core;
  // Always reschedules (also while the runtime stops: a task that refuses the
  // shutdown and yields in a loop must still let the others run).
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    core->resume_point = h;
    schedule_yield(core);  // publishes the frame: touch nothing after this
  }
  void await_resume() { deliver_if_pending(core); }
};

struct checkpoint_awaiter {
  task_core* core;
  bool slow = false;
  bool await_ready() const noexcept {
    // Relaxed: a hint; the request is taken with acquire in await_resume.
    return core->pending.load(std::memory_order_relaxed) == nullptr &&
           !core->w->slice_expired.load(std::memory_order_relaxed);
  }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    // Slice spent or something pending.  A pending request (ours, or one of a
    // task joining us inline) is delivered without rescheduling; otherwise the
    // task goes to the back of the line.
    slow = true;
    if (cancel_visible(core)) return false;
    // Relaxed: the flag only asks for a reschedule; the timer thread sets it
    // again if the next run also overstays.
    core->w->slice_expired.store(false, std::memory_order_relaxed);
    core->resume_point = h;
    schedule_yield(core);
    return true;
  }
  void await_resume() {
    if (slow || maybe_cancel(core)) [[unlikely]]
      deliver_if_pending(core);
  }
};

struct sleep_awaiter {
  sleep_awaiter(task_core* c, sleep_tag s) noexcept : core(c), immediate(s.immediate) {
    node.deadline = s.deadline;
  }
  task_core* core;
  timer_node node;
  bool immediate;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    if (immediate) {
      if (cancel_visible(core)) return false;
      core->resume_point = h;
      schedule_yield(core);
      return true;
    }
    return sleep_suspend(core, &node, h);
  }
  void await_resume() {
    if (immediate) {
      deliver_if_pending(core);
      return;
    }
    if (cancel_request* r = sleep_resume(core, &node)) [[unlikely]]
      throw_taken(r);
  }
};

// One attempt at a list wait; co_await gives true when the wait ended by the
// list's owner (the resource is ours), false when a cancellation that woke it
// was withdrawn meanwhile (uncancel): the caller waits again.
struct list_wait_once {
  list_wait_once(wait_list* l, list_resource r) noexcept : list(l), what(r) {}
  wait_list* list;
  list_resource what;
  task_core* core = nullptr;
  list_wait node;

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    core = h.promise().core;
    return list_wait_suspend(core, &node, h, list, what);
  }
  bool await_resume() {
    cancel_request* r = nullptr;
    const bool ours = list_wait_resume(core, &node, r);
    if (r != nullptr) [[unlikely]]
      throw_taken(r);
    return ours;
  }
};

// What co_await of a named list_wait_once goes through: a copyable proxy (g++
// 12 copies an awaiter that await_transform returns by reference).
struct list_wait_ref {
  list_wait_once* w;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    return w->await_suspend(h);
  }
  bool await_resume() { return w->await_resume(); }
};

// Everything a weft promise shares: frame allocation, the await_transform that
// binds weft awaitables to the running task, exception capture.
template <class Derived>
struct promise_common : promise_base {
  static void* operator new(std::size_t n) { return alloc_frame_fast(n); }
  static void operator delete(void* p, std::size_t n) noexcept { free_frame_fast(p, n); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Derived> h) noexcept {
      promise_base& p = h.promise();
      if (!p.spawned) return transfer(p.core, p.parent);  // back to the direct awaiter
      task_core* c = p.core;
      if (task_core* joiner = c->inline_joiner) {
        // Taken back and run inline by its joiner: hand back with plain
        // stores; the joiner finishes the bookkeeping in
        // handle_awaiter::await_resume.
        joiner->w = c->w;
        set_current(c->w, joiner);
        return transfer(joiner, c->continuation);
      }
      return complete_task(c);
    }
    void await_resume() const noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept {
    error = std::current_exception();
    try {
      throw;
    } catch (const cancelled_error& e) {
      result = outcome::cancelled;
      if (spawned) meter_cancelled(core, e);  // runtime::stats: off the hot path
    } catch (...) {
      result = outcome::exception;
      if (spawned) meter_failed(core);
    }
  }

  yield_awaiter await_transform(yield_tag) noexcept { return {core}; }
  checkpoint_awaiter await_transform(checkpoint_tag) noexcept { return {core}; }
  sleep_awaiter await_transform(sleep_tag s) noexcept { return sleep_awaiter(core, s); }
  template <class U>
  task_awaiter<U> await_transform(task<U>&& t) noexcept;
  template <class U>
  task_awaiter<U> await_transform(task<U>& t) noexcept;
  template <class U>
  handle_awaiter<U> await_transform(join_handle<U>& h) noexcept;
  template <class U>
  handle_awaiter<U> await_transform(join_handle<U>&& h) noexcept;
  list_wait_ref await_transform(list_wait_once& w) noexcept { return {&w}; }
  template <class S, class U>
  auto await_transform(capture_tag<S, U> c) noexcept;
  // Any other awaitable passes through unchanged.
  template <class A>
  A&& await_transform(A&& a) noexcept {
    return static_cast<A&&>(a);
  }
};

// For promise_base::plain_params.  A reference parameter to an incomplete type
// (or a function) is taken to need destruction: conservative, and it keeps
// such coroutines compiling.
template <class A>
constexpr bool trivially_destroyed() noexcept {
  // A completeness probe: A may be a pointer, whose size is not the question.
  if constexpr (requires { sizeof(A); }) {  // NOLINT(bugprone-sizeof-expression)
    return std::is_trivially_destructible_v<A>;
  } else {
    return false;
  }
}

template <class T>
class promise final : public promise_common<promise<T>> {
 public:
  promise() = default;
  // The coroutine's parameters (the compiler passes them when this is
  // viable); only their types are used.
  template <class... A>
  explicit promise(const A&...) noexcept {
    this->plain_params = (trivially_destroyed<A>() && ...);
  }
  promise(const promise&) = delete;
  // The value is destroyed here when nobody took it -- also when the result
  // became an exception after co_return built it (a local's destructor threw
  // while the frame unwound to its final suspend).
  ~promise() {
    if (has_value_) slot_.get().~T();
  }
  task<T> get_return_object() noexcept;
  template <class U>
    requires std::convertible_to<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    ::new (static_cast<void*>(slot_.buf)) T(std::forward<U>(v));
    has_value_ = true;
    this->result = outcome::value;
  }
  const T& peek_value() noexcept { return slot_.get(); }
  T take_value() {
    has_value_ = false;
    T v = std::move(slot_.get());
    slot_.get().~T();
    return v;
  }

 private:
  result_slot<T> slot_;
  bool has_value_ = false;  // slot_ holds a live T
};

template <>
class promise<void> final : public promise_common<promise<void>> {
 public:
  promise() = default;
  template <class... A>
  explicit promise(const A&...) noexcept {  // as promise<T>
    this->plain_params = (trivially_destroyed<A>() && ...);
  }
  promise(const promise&) = delete;
  task<void> get_return_object() noexcept;
  void return_void() noexcept { this->result = outcome::value; }
  void take_value() noexcept {}
  void peek_value() noexcept {}
};

template <class T>
T take_result(promise<T>& p) {
  if (p.result != outcome::value) rethrow_outcome(p);
  return p.take_value();
}

// co_await of a task.  An empty task (default-constructed, moved from,
// spawned) throws usage_error before anything suspends; so does a task that
// was already awaited: its frame is at its final suspend point (done()), and
// resuming it again would be undefined.  await_ready throws: the exception
// leaves the co_await expression like any other.  The checks are a null test
// and one load of the child's frame, which the transfer touches next anyway
// (no instruction more per co_await of a temporary: docs/architecture.md,
// "A task runs once").
template <class T>
struct task_awaiter {
  std::coroutine_handle<promise<T>> child;
  task_core* core;
  bool await_ready() const {
    if (!child || child.done()) [[unlikely]]
      throw_empty_task();
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> self) noexcept {
    promise<T>& p = child.promise();
    p.core = core;
    p.parent = self;
    return transfer(core, child);
  }
  T await_resume() { return take_result(child.promise()); }
};

template <class T>
struct handle_awaiter {
  std::coroutine_handle<promise<T>> target;
  task_core* core;
  bool inline_run = false;
  bool slow = false;

  bool await_ready() const noexcept {
    if (!target) return true;  // await_resume reports the misuse
    // Acquire: pairs with the release half of complete_task's RMW that sets
    // kDone after the outcome was written.
    return (target.promise().own_core().state.load(std::memory_order_acquire) & task_core::kDone) !=
           0;
  }
  // The fast path (our own child, still at the bottom of our deque) is forced
  // inline: it is most of a fork-join's cost, and compilers judged it too big.
  [[gnu::always_inline]] std::coroutine_handle<> await_suspend(
      std::coroutine_handle<> self) noexcept {
    task_core* child = &target.promise().own_core();
    worker_hot* w = core->w;
    // Relaxed: a hint; a request that arrives later is handled like any other
    // request to a task that is running a child inline.
    if (core->pending.load(std::memory_order_relaxed) == nullptr && w->deque.take_if(child))
        [[likely]] {
      // Our own child, taken back from the bottom of our deque: run it right
      // here.  Either it never started, or it started, suspended and was woken
      // onto this deque (a deque push happens-after its earlier run, so
      // `started` is ours to read now that we took it).
      child->w = w;
      if (!child->started) [[likely]] {
        child->started = true;
        if (maybe_cancel(child) && cancel_before_start(child)) [[unlikely]]
          return self;
      }
      inline_run = true;
      child->inline_joiner = core;  // also tells final_suspend to hand back to us
      child->continuation = self;
      set_current(w, child);
      return transfer(child, child->resume_point);
    }
    slow = true;
    return join_slow(core, child, self);
  }
  [[gnu::always_inline]] T await_resume() {
    if (inline_run) [[likely]] {
      task_core* child = &target.promise().own_core();
      bump_owned(core->w->finished);  // counted by the spawn; the loop never saw it finish
      // The child ran on this thread and handed back with plain stores; only a
      // forwarded cancel (t->hooked) can hold a reference besides our handle.
      // Relaxed: see below; a concurrent RMW is only possible when `hooked`
      // (or when a thread's join() of the same handle breaks the one-owner
      // rule: seen here, it is woken with usage_error by the atomic path).
      std::uint32_t s = child->state.load(std::memory_order_relaxed);
      if (child->hooked || (s & (task_core::kWatched | task_core::kThreadJoiner)) != 0)
          [[unlikely]] {
        // A cancel of ours may have been forwarded to it while it waited:
        // what it did not take comes back to us first.
        if (child->hooked) reclaim_forwarded(core, child);
        finish_inline_atomic(child);
      } else {
        // No RMW needed: no cancel forwarding ever pointed at it and no
        // watcher is registered, so no other thread modifies the word.
        // Release: done()/cancelled() may be read from another thread; pairs
        // with their acquire loads (a plain mov on x86-64).
        child->state.store((s | task_core::kDone) - task_core::kRefOne, std::memory_order_release);
      }
    } else {
      if (!target) throw_invalid_handle();
      if (slow) {
        task_core* child = &target.promise().own_core();
        if (child == core) [[unlikely]]
          throw_self_join();
        unregister_wait(core);
        reclaim_forwarded(core, child);
      }
      // A thread's join() claimed the outcome first (join_slow then did not
      // register).  Relaxed: kThreadJoiner is never set once kJoiner is, and
      // join_slow's CAS already read this word; a join() that claims a
      // finished task at this very moment is the one race left to the
      // one-owner rule (docs/architecture.md, "Joiners").
      if ((target.promise().own_core().state.load(std::memory_order_relaxed) &
           task_core::kThreadJoiner) != 0) [[unlikely]]
        throw_joined_by_thread();
    }
    if (maybe_cancel(core)) [[unlikely]]
      deliver_if_pending(core);
    mark_taken(&target.promise().own_core());
    return take_result(target.promise());
  }
};

// The outcome of one awaited task or handle, kept instead of thrown: its
// value (std::monostate for void) or its exception.  Filled by
// `co_await capture(x, slot)`; read by whoever owns the slot afterwards.
template <class T>
struct outcome_slot {
  using value_type = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  std::optional<value_type> value;
  std::exception_ptr error;

  // The value, or the exception rethrown.
  T take() {
    if (error) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return std::move(*value);
  }
};

// What co_await capture(x, slot) hands to the promise's await_transform, which
// binds `x` as a plain co_await would (task_awaiter or handle_awaiter).
template <class Source, class T>
struct capture_tag {
  Source* source;
  outcome_slot<T>* slot;
};

// co_await of `x` that stores the value or the exception in the slot instead
// of returning or throwing it.  The same cancellation point and the same join
// as co_await x; forced inline like handle_awaiter's fast path, which it wraps.
template <class Inner, class T>
struct capture_awaiter {
  Inner inner;
  outcome_slot<T>* slot;
  bool refused = false;  // await_ready threw (an empty or finished task)

  bool await_ready() noexcept {
    try {
      return inner.await_ready();
    } catch (...) {
      slot->error = std::current_exception();
      refused = true;
      return true;
    }
  }
  [[gnu::always_inline]] std::coroutine_handle<> await_suspend(
      std::coroutine_handle<> self) noexcept {
    return inner.await_suspend(self);
  }
  [[gnu::always_inline]] void await_resume() noexcept {
    if (refused) return;
    try {
      if constexpr (std::is_void_v<T>) {
        inner.await_resume();
        slot->value.emplace();
      } else {
        slot->value.emplace(inner.await_resume());
      }
    } catch (...) {
      slot->error = std::current_exception();
    }
  }
};

// `co_await capture(std::move(t), slot)` / `co_await capture(h, slot)`: never
// throws; afterwards the slot holds the value or the exception.
template <class T>
capture_tag<task<T>, T> capture(task<T>&& t, outcome_slot<T>& slot) noexcept {
  return {&t, &slot};
}
template <class T>
capture_tag<join_handle<T>, T> capture(join_handle<T>& h, outcome_slot<T>& slot) noexcept {
  return {&h, &slot};
}

}  // namespace detail

// A lazy coroutine task.  Move-only.  Not started until awaited or spawned;
// runs once (awaiting or spawning it again throws usage_error).  Destroying
// the task destroys its frame: never started, or finished by a co_await of it.
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { reset(); }

  // False for a moved-from or default-constructed task.
  bool valid() const noexcept { return static_cast<bool>(h_); }
  explicit operator bool() const noexcept { return valid(); }

 private:
  friend class detail::promise<T>;
  friend struct detail::access;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  void reset() noexcept {
    if (h_) std::exchange(h_, {}).destroy();
  }
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
// A done callback that owns the user's callable.
template <class F>
struct done_callback_of final : done_callback {
  F fn;
  task_core* core;  // alive while the callback runs (see fire_watchers)
  template <class G>
  done_callback_of(task_core* c, G&& g) : fn(std::forward<G>(g)), core(c) {}
  void run() noexcept override {
    try {
      fn();
    } catch (...) {
      report_callback_error(core, std::current_exception());
    }
  }
};
template <class F>
done_callback* make_done_callback(task_core* c, F&& fn) {
  return new done_callback_of<std::decay_t<F>>(c, std::forward<F>(fn));
}
}  // namespace detail

// A spawned task (asyncio.Task).  Move-only.  Dropping it detaches the task:
// it runs on to completion; an exception nobody observed goes to the runtime's
// unhandled-exception hook.
//
// Thread safety: cancel(), done(), cancelled(), cancelling() may be called from
// any thread concurrently with the task.  join() and co_await take the result
// and must be used by one owner: a second joiner that would have to wait (a
// join() while another join() or a co_await waits, a co_await while a join()
// waits) gets usage_error at once, as does taking the outcome twice.
//
// A handle may outlive its runtime (declare it before the runtime).  The
// runtime's destructor finishes every task, so afterwards done() is true,
// cancel() returns false, and join() (or co_await from another runtime) gives
// the outcome -- for a task still running then, cancelled_error "shutdown".
// A task the shutdown reported as one that can never finish stays not done;
// join() of it throws usage_error.
template <class T>
class [[nodiscard]] join_handle {
 public:
  using value_type = T;
  join_handle() noexcept = default;
  join_handle(join_handle&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  join_handle& operator=(join_handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  join_handle(const join_handle&) = delete;
  join_handle& operator=(const join_handle&) = delete;
  ~join_handle() { reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }

  // Request cancellation (asyncio Task.cancel(msg)).  Returns false when the
  // task has already finished (nothing changes); otherwise true.  The request
  // is delivered once, at the task's next cancellation point; a task blocked
  // in a weft await is woken at once.  Calling it again adds a request
  // (cancelling() counts them) but delivers at most one per resume point.
  bool cancel(std::string reason = {},
              std::source_location where = std::source_location::current()) {
    if (!h_) return false;
    if (reason.empty())
      return detail::request_cancel_plain(&core(), cancel_kind::explicit_request, where);
    return detail::request_cancel(&core(), std::move(reason), cancel_kind::explicit_request, where);
  }
  // cancel() with another kind than explicit_request: what weft's own
  // constructs use (timeouts, groups, shutdown); also for code that builds
  // such constructs itself.
  bool cancel_as(cancel_kind kind, std::string reason,
                 std::source_location where = std::source_location::current()) {
    if (!h_) return false;
    if (reason.empty()) return detail::request_cancel_plain(&core(), kind, where);
    return detail::request_cancel(&core(), std::move(reason), kind, where);
  }

  // The task has finished (value, exception or cancellation).
  bool done() const noexcept {
    if (!h_) return false;
    // Acquire: pairs with the release in complete_task's RMW (kDone).
    return (core().state.load(std::memory_order_acquire) & detail::task_core::kDone) != 0;
  }
  // The task finished by cancellation (cancelled_error escaped it, or it was
  // cancelled before it started).
  bool cancelled() const noexcept {
    return done() && h_.promise().result == detail::outcome::cancelled;
  }
  // When the task finished by cancellation: the cancelled_error it ended with
  // (kind, reason, and the location of the cancel() call that caused it --
  // also when it travelled through nested awaits or a task group), without
  // taking the outcome.  Empty otherwise.
  std::optional<cancelled_error> cancellation() const {
    if (!cancelled()) return std::nullopt;
    return detail::cancellation_of(h_.promise());
  }

  // The task finished with a value or an exception although a cancel request
  // was made for it (or forwarded to it by the task awaiting it) and never
  // delivered: it reached no cancellation point after the request.  A request
  // forwarded to it has gone back to the task that awaited it, which receives
  // it at that join.  False while running, after a cancellation, or when
  // uncancel() withdrew the request.
  bool completed_despite_cancel() const noexcept {
    return h_ && detail::completed_despite_cancel(&core());
  }

  // Cancel requests made and not withdrawn by uncancel() (asyncio).
  unsigned cancelling() const noexcept {
    if (!h_) return 0;
    // Relaxed: a counter read for information; no data is published with it.
    return core().cancel_count.load(std::memory_order_relaxed);
  }
  // Withdraw one cancel request (asyncio Task.uncancel()); when the count
  // reaches zero an undelivered request is dropped too.  Returns the new count.
  unsigned uncancel() noexcept;

  // The name given at spawn (spawn_options::name); "" when none.
  std::string name() const {
    if (!h_) return {};
    return detail::task_name(&core());
  }

  // asyncio Task.add_done_callback: `fn()` runs once when the task finishes
  // (value, exception or cancellation) -- on the thread that completes it (a
  // worker, or the thread that drives a driven runtime or a simulation),
  // after the task's outcome is written and before a joiner suspended on it resumes (an await that
  // finds the task done may run meanwhile); or at once, on this thread, when it has finished
  // already.  Callbacks run in the order they were added.  Keep them short and non-blocking: they
  // run on a worker.  What `fn` throws goes to the runtime's unhandled-exception hook. The callback
  // may use the handle's task through a task_handle it captured (this join_handle may be gone by
  // then).
  template <class F>
    requires std::is_invocable_v<std::decay_t<F>&>
  void add_done_callback(F&& fn) const {
    if (!h_) detail::throw_invalid_handle();
    detail::add_done_callback(&core(), detail::make_done_callback(&core(), std::forward<F>(fn)));
  }

  // asyncio Task.result(): the outcome of a finished task, read without taking
  // it, as often as you like: a const reference to the value (nothing for
  // task<void>), or the task's exception or cancelled_error rethrown.
  // co_await / join() still take the outcome afterwards; once they did,
  // result() throws usage_error, as it does while the task has not finished
  // (asyncio's InvalidStateError).  The one-owner rule holds: result() is for
  // the handle's owner, like join().  An exception read here is not reported
  // as unhandled when the handle is dropped.
  decltype(auto) result() const {
    detail::promise<T>& p = settled();
    if (p.result != detail::outcome::value) detail::rethrow_outcome(p);
    if constexpr (!std::is_void_v<T>) return static_cast<const T&>(p.peek_value());
  }
  // asyncio Task.exception(): the exception a finished task ended with, null
  // when it returned a value; a task that ended by cancellation throws its
  // cancelled_error (as asyncio raises CancelledError).  Same rules as result().
  std::exception_ptr exception() const {
    detail::promise<T>& p = settled();
    if (p.result == detail::outcome::cancelled) detail::rethrow_outcome(p);
    return p.result == detail::outcome::exception ? p.error : nullptr;
  }

  // A copyable, non-owning handle to the same task (cancel, done, name,
  // callbacks; not its outcome).
  task_handle ref() const;

  // Wait for the task from a thread that is not a weft worker; returns its
  // value or rethrows its exception / cancelled_error.  Throws usage_error
  // when called from a worker (it would block that worker; use co_await),
  // when another join() or a co_await of this handle is waiting or took the
  // outcome already (without waiting), and when the task can never finish
  // (its runtime shut down and reported it stuck).
  T join() {
    if (!h_) detail::throw_invalid_handle();
    detail::task_core* c = &core();
    detail::join_blocking(c);
    detail::mark_taken(c);
    return detail::take_result(h_.promise());
  }

 private:
  friend struct detail::access;
  explicit join_handle(std::coroutine_handle<detail::promise<T>> h) noexcept : h_(h) {}
  detail::task_core& core() const noexcept { return h_.promise().own_core(); }
  detail::promise<T>& settled() const {
    if (!h_) detail::throw_invalid_handle();
    detail::check_settled(&core());
    return h_.promise();
  }
  // Forced inline: every join ends here (g++ 12 outlines it in large
  // translation units).
  [[gnu::always_inline]] void reset() noexcept {
    if (!h_) return;
    std::coroutine_handle<detail::promise<T>> h = std::exchange(h_, {});
    detail::task_core* c = &h.promise().own_core();
    // Acquire: pairs with complete_task's release RMW.  When the task is done
    // and ours is the only reference, nobody else can reach the core any more
    // (temporary refs are only taken while a joiner's hook points here).
    std::uint32_t s = c->state.load(std::memory_order_acquire);
    if ((s & detail::task_core::kDone) && detail::task_core::refs(s) == 1) {
      // Sole owner: no RMW needed.  The common case -- a value that was
      // taken, no request left over, no watcher list, parameters with nothing
      // to destroy -- frees the frame right here: its destruction runs no code
      // that could reach another task (destroy_task's queue is for that).
      // The list, not kWatched: shield() of a finished task makes the list
      // and never sets the flag, so checking the flag would leak the list.
      // Relaxed: nobody can store to `pending` or `watchers` any more (last
      // reference); a list was made by a shield() that borrowed a handle to
      // this task, which happens-before that handle's last reset (this one).
      detail::promise<T>& p = h.promise();
      if (p.plain_params && c->observed && p.result == detail::outcome::value &&
          c->extras.load(std::memory_order_relaxed) == nullptr &&
          c->pending.load(std::memory_order_relaxed) == nullptr) [[likely]] {
        h.destroy();
        return;
      }
      detail::destroy_task(c);
      return;
    }
    detail::release_ref(c);
  }
  std::coroutine_handle<detail::promise<T>> h_;
};

// A copyable, non-owning handle to a spawned task (asyncio's Task object as
// current_task() returns it): cancel it, ask whether it is done, read its
// name, add done callbacks.  It does not give the outcome: that stays with
// the task's one join_handle.  It keeps the task's frame (not the task's
// run) alive, so it may outlive both the join_handle and the runtime, like a
// join_handle.  Empty (valid() false) when default-constructed or moved from.
// Thread safety: any thread, concurrently.
class task_handle {
 public:
  task_handle() noexcept = default;
  task_handle(const task_handle& o) noexcept : c_(o.c_) {
    if (c_ != nullptr) detail::add_ref(c_);
  }
  task_handle(task_handle&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  task_handle& operator=(task_handle o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  ~task_handle() {
    if (c_ != nullptr) detail::release_ref(c_);
  }

  bool valid() const noexcept { return c_ != nullptr; }
  // As join_handle::cancel / cancel_as.
  bool cancel(std::string reason = {},
              std::source_location where = std::source_location::current()) const {
    return cancel_as(cancel_kind::explicit_request, std::move(reason), where);
  }
  bool cancel_as(cancel_kind kind, std::string reason,
                 std::source_location where = std::source_location::current()) const {
    if (c_ == nullptr) return false;
    if (reason.empty()) return detail::request_cancel_plain(c_, kind, where);
    return detail::request_cancel(c_, std::move(reason), kind, where);
  }
  bool done() const noexcept {
    // Acquire: pairs with the release in complete_task's RMW (kDone).
    return c_ != nullptr &&
           (c_->state.load(std::memory_order_acquire) & detail::task_core::kDone) != 0;
  }
  bool cancelled() const noexcept {
    return done() && detail::owner_of(c_)->result == detail::outcome::cancelled;
  }
  std::optional<cancelled_error> cancellation() const {
    if (!cancelled()) return std::nullopt;
    return detail::cancellation_of(*detail::owner_of(c_));
  }
  unsigned cancelling() const noexcept {
    // Relaxed: a counter read for information.
    return c_ != nullptr ? c_->cancel_count.load(std::memory_order_relaxed) : 0;
  }
  std::string name() const { return c_ != nullptr ? detail::task_name(c_) : std::string(); }
  // Where the task was spawned.
  std::source_location spawned_at() const noexcept {
    return c_ != nullptr ? c_->where : std::source_location();
  }
  // As join_handle::add_done_callback.
  template <class F>
    requires std::is_invocable_v<std::decay_t<F>&>
  void add_done_callback(F&& fn) const {
    if (c_ == nullptr) detail::throw_invalid_handle();
    detail::add_done_callback(c_, detail::make_done_callback(c_, std::forward<F>(fn)));
  }
  // The same task.
  friend bool operator==(const task_handle& a, const task_handle& b) noexcept {
    return a.c_ == b.c_;
  }

 private:
  friend struct detail::access;
  // Takes a reference of its own; the caller keeps `c` alive meanwhile.
  explicit task_handle(detail::task_core* c) : c_(c) { detail::take_handle_ref(c); }
  detail::task_core* c_ = nullptr;
};

template <class T>
task_handle join_handle<T>::ref() const {
  if (!h_) return {};
  return detail::access::make<task_handle>(&core());
}

namespace detail {

template <class T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}

template <class D>
template <class U>
task_awaiter<U> promise_common<D>::await_transform(task<U>&& t) noexcept {
  // The task object is a temporary of the co_await full-expression: it stays
  // alive (and destroys the child frame) after await_resume.
  return {access::handle(t), core};
}
template <class D>
template <class U>
task_awaiter<U> promise_common<D>::await_transform(task<U>& t) noexcept {
  return {access::handle(t), core};
}
template <class D>
template <class U>
handle_awaiter<U> promise_common<D>::await_transform(join_handle<U>& h) noexcept {
  return {access::handle(h), core};
}
template <class D>
template <class U>
handle_awaiter<U> promise_common<D>::await_transform(join_handle<U>&& h) noexcept {
  return {access::handle(h), core};
}

template <class D>
template <class S, class U>
auto promise_common<D>::await_transform(capture_tag<S, U> c) noexcept {
  using inner = decltype(await_transform(*c.source));
  return capture_awaiter<inner, U>{await_transform(*c.source), c.slot};
}

// Build the core of a task that is about to be spawned at `where`.
template <class T>
task_core* prepare_spawn(std::coroutine_handle<promise<T>> h, std::source_location where) {
  promise<T>& p = h.promise();
  task_core* c = ::new (static_cast<void*>(p.core_storage)) task_core;
  p.spawned = true;
  p.cancel_stamp_us = 0;  // no request yet (runtime::stats)
  p.stop = nullptr;       // the union's member for a spawned task (promise_base)
  p.core = c;
  c->frame = h;
  c->resume_point = h;
  c->where = where;
  // Relaxed: the core is published to other threads by the deque push
  // (release) or the injection queue's mutex.
  c->state.store(2 * task_core::kRefOne, std::memory_order_relaxed);
  return c;
}

// A task can be spawned once, and only before it ran: an empty task, or one
// whose frame already finished (it was awaited), throws usage_error.
template <class T>
bool spawnable(const task<T>& t) noexcept {
  return t.valid() && !access::handle(t).done();
}

// The extras of a named spawn, made before the spawn owns anything (it may
// throw); null for no name.
inline task_extras* named_extras(spawn_options* o) {
  if (o == nullptr || o->name.empty()) return nullptr;
  auto* x = new task_extras;
  x->name = std::move(o->name);
  return x;
}
inline void attach_extras(task_core* c, task_extras* x) noexcept {
  // Relaxed: the task is not published yet; the deque push (release) or the
  // injection queue's mutex publishes the extras with it.
  if (x != nullptr) c->extras.store(x, std::memory_order_relaxed);
}

template <class T>
join_handle<T> spawn_on(runtime_impl* rt, task<T> t, std::source_location where,
                        spawn_options* opts = nullptr) {
  if (!spawnable(t)) throw_empty_task();
  runtime_impl* target = resolve_runtime(rt);  // may throw: before we own the frame
  std::unique_ptr<task_extras> x(named_extras(opts));
  auto h = access::release(t);
  task_core* c = prepare_spawn(h, where);
  attach_extras(c, x.release());
  submit_spawn(target, c);
  return access::make<join_handle<T>>(h);
}

// spawn() from inside a task: straight onto the calling worker's deque.
// `x`: the extras of a named spawn (named_extras), owned by the task from
// here on; the caller made it after the checks that may throw (spawnable, a
// worker), so nothing below can leak it.
template <class T>
[[gnu::always_inline]] inline join_handle<T> spawn_here(task<T> t, std::source_location where,
                                                        task_extras* x = nullptr) {
  if (!spawnable(t)) [[unlikely]]
    throw_empty_task();
  worker_hot* w = current_worker();
  if (w == nullptr) resolve_runtime(nullptr);  // throws usage_error
  auto h = access::release(t);
  task_core* c = prepare_spawn(h, where);
  attach_extras(c, x);
  // Relaxed: a spawn that misses the stop flag is drained by shutdown like any
  // queued task; submit_spawn handles the one that sees it.
  // spawn_slow: stopping, or the task registry is on (track_tasks).  A named
  // spawn (x) goes to the registry too (constant null, so gone, otherwise).
  if (w->spawn_slow.load(std::memory_order_relaxed) || x != nullptr) [[unlikely]] {
    submit_spawn(w->rt, c);
  } else {
    c->rt = w->rt;
    bump_owned(w->spawned);
    if (w->trace != nullptr) [[unlikely]]
      trace_spawn(w->rt, w, c);
    w->deque.push(c);
    // Relaxed: a missed sleeper costs a moment of parallelism, never progress:
    // this worker runs its own deque (docs/architecture.md, "Parking").
    if (w->sleepers->load(std::memory_order_relaxed) != 0) [[unlikely]]
      wake_one(w->rt);
  }
  return access::make<join_handle<T>>(h);
}

}  // namespace detail

template <class T>
unsigned join_handle<T>::uncancel() noexcept {
  return h_ ? detail::uncancel_core(&core()) : 0;
}

// Spawn a task on the runtime of the calling worker (asyncio.create_task).
// The task starts promptly, on this worker or a thief.  Throws usage_error on a
// thread that is not a weft worker (use runtime::spawn there).  During
// shutdown the handle comes back already cancelled (reason "shutdown").
// `where` (defaulted: the line that spawns) names the task in the shutdown
// report (runtime_options::shutdown_report_after).
template <class T>
[[gnu::always_inline]] inline join_handle<T> spawn(
    task<T> t, std::source_location where = std::source_location::current()) {
  return detail::spawn_here<T>(std::move(t), where);
}
// spawn() with options: `weft::spawn(fetch(url), {.name = "fetch " + url})`.
template <class T>
join_handle<T> spawn(task<T> t, spawn_options opts,
                     std::source_location where = std::source_location::current()) {
  if (!detail::spawnable(t)) detail::throw_empty_task();
  if (detail::current_worker() == nullptr) detail::resolve_runtime(nullptr);  // usage_error
  return detail::spawn_here<T>(std::move(t), where, detail::named_extras(&opts));
}

// Always reschedules the task behind the others that are ready, like
// asyncio.sleep(0).  A cancellation point.
inline detail::yield_tag yield() noexcept { return {}; }

// Suspends only when the task's time slice is spent (runtime_options::
// time_slice), or to deliver a pending cancellation.  A few instructions
// otherwise: put it in CPU-bound loops.
inline detail::checkpoint_tag checkpoint() noexcept { return {}; }

// Suspends the task for at least `d` (a timer; the worker runs other tasks
// meanwhile).  A cancellation point: cancel() and shutdown wake it at once.
// d <= 0 (down to min() of any unit) behaves as yield().  Every duration
// saturates instead of overflowing: a unit coarser than nanoseconds is
// converted saturating (hours::max() is nanoseconds::max()), and now + d is
// capped at the end of the clock's range (about 292 years after its epoch),
// so max() of any unit sleeps until cancelled.
detail::sleep_tag sleep_for(std::chrono::nanoseconds d) noexcept;
template <class Rep, class Period>
  requires std::is_integral_v<Rep>
detail::sleep_tag sleep_for(std::chrono::duration<Rep, Period> d) noexcept {
  return sleep_for(detail::saturating_ns(d));  // the nanoseconds overload
}

// Suspends the task until `tp` (steady_clock, any integral unit).  As
// sleep_for: a time point at or before now (down to time_point::min())
// behaves as yield(); a time point beyond nanoseconds' range saturates
// (time_point::max() of any unit sleeps until cancelled).
detail::sleep_tag sleep_until(std::chrono::steady_clock::time_point tp) noexcept;
template <class Duration>
  requires std::is_integral_v<typename Duration::rep>
detail::sleep_tag sleep_until(
    std::chrono::time_point<std::chrono::steady_clock, Duration> tp) noexcept {
  return sleep_until(detail::saturating_steady(tp));  // the steady_clock::time_point overload
}

namespace this_task {
// Is a cancellation request pending for the running task (or for a task that
// is joining it inline)?  Consumes nothing.  False outside a task.
bool cancel_requested() noexcept;
// Deliver a pending request now: throws cancelled_error if there is one.
void throw_if_cancel_requested();
// asyncio's current_task().cancelling() / .uncancel() for the running task.
unsigned cancelling() noexcept;
unsigned uncancel() noexcept;
// asyncio.current_task(): a handle to the running task (the task whose code
// calls it; inside a task awaited inline, that task), empty outside a task.
task_handle current();
// Cancel the running task: the request is delivered at its next
// cancellation point, as any cancel().  False outside a task.  asyncio:
// current_task().cancel(msg).
bool cancel(std::string reason = {}, std::source_location where = std::source_location::current());
// The running task's name ("" when it has none, or outside a task).
std::string name();
}  // namespace this_task

}  // namespace weft
