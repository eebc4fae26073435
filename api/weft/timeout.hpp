// SPDX-License-Identifier: MIT
// weft/timeout.hpp -- asyncio.wait_for, asyncio.timeout() / timeout_at().
//
//   T v = co_await weft::wait_for(h, 100ms);      // h: join_handle<T>&
//   T v = co_await weft::wait_for(some_task(), 100ms);
//   T v = co_await weft::timeout(100ms, [&](weft::timeout_scope& cm) -> weft::task<T> {
//     ...  // a block of awaits, run in the calling task; cm.reschedule(...)
//   });
//
// wait_for: if the task finishes within the time, its value (or exception).
// Otherwise it is cancelled (kind cancel_kind::timeout, reason "timeout"),
// weft waits until it has really finished its cleanup, and then throws
// timeout_error -- unless the task caught the cancellation and returned a
// value anyway: then that value is returned (nothing is lost).  A duration
// <= 0 (down to min() of any unit) or a time point at or before now means
// already expired (a task that is already done still gives its result); max()
// of any unit, or a duration or time point beyond nanoseconds' range, means
// "never" (every duration and time point saturates, none overflows); a
// deadline that is merely far (max() - 1s) arms a timer that waits without
// spinning.  Cancelling the waiting task cancels the awaited task too (the
// wait is a join).
//
// timeout / timeout_at: a deadline over a block (a scope), not over one
// awaited task.  The block is a callable returning a weft::task (taking the
// scope's timeout_scope&, or nothing), awaited directly by the calling task:
// no task is spawned for it, so the deadline cancels the calling task itself
// (kind timeout, reason "timeout", where() = the timeout call), at its next
// cancellation point inside the block.  When the block ends by that
// cancellation the scope throws timeout_error (chained from it, see
// errors.hpp); only the scope whose deadline made the request does, and only
// when no other request was made for the task since the scope began
// (asyncio's uncancel() bookkeeping): an enclosing scope's or an outside
// cancellation goes through as cancelled_error.  The deadline is disarmed when
// the block ends, also when it fires at that very moment: no request of the
// scope is left pending after it.  See docs/cancellation.md, "asyncio.timeout".
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <source_location>
#include <type_traits>
#include <utility>

#include "weft/detail/access.hpp"
#include "weft/detail/task_ref.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

namespace detail {

inline constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();

inline bool expired(std::uint64_t deadline) noexcept {
  return deadline != kNever && deadline <= now_ns();
}

// The deadlines of the waits in progress, by the task each waits on.  A wait
// whose deadline passed while the task it runs in is itself under a wait whose
// deadline passed too lets the cancellation through instead of reporting a
// timeout: the outermost expired wait reports it (asyncio's nested timeouts),
// whichever deadline task happened to run first.
class wait_registration {
 public:
  wait_registration(task_core* target, std::uint64_t deadline);
  ~wait_registration();
  wait_registration(const wait_registration&) = delete;
  wait_registration& operator=(const wait_registration&) = delete;

 private:
  task_core* target_;
};

// The outcome of a finished task, taken without a cancellation point.
template <class T>
T take_finished(join_handle<T>& h) {
  mark_taken(&access::core(h));
  return take_result(access::promise(h));
}

template <class T>
task<T> wait_until_core(join_handle<T>& h, std::uint64_t deadline, std::source_location where) {
  if (!h.valid()) throw_invalid_handle();
  if (deadline == kNever) co_return co_await h;  // never expires: a plain join
  task_core* target = &access::core(h);
  // The waiter's own cancellation, as it stood when the wait began: one
  // already pending is delivered at the join (and is never our timeout); one
  // made during the wait raises cancelling() and is not ours either.
  const bool pending_at_entry = this_task::cancel_requested();
  const unsigned count_at_entry = this_task::cancelling();
  // An enclosing wait that had already expired when this one began has had
  // its say (its cancellation came, or comes, as a request); only one that
  // expires during this wait outranks this wait's timeout.
  const bool enclosing_expired_at_entry = enclosing_wait_expired();
  wait_registration registered(target, deadline);
  join_handle<void> timer;
  if (deadline <= now_ns()) {
    // Already expired: a task that is done still gives its result.
    if (!h.done()) request_cancel(target, "timeout", cancel_kind::timeout, where);
  } else {
    timer = spawn(deadline_canceller(task_ref(target), deadline, where), where);
  }
  outcome_slot<T> joined;
  co_await capture(h, joined);  // a join: cancelling the waiter is forwarded to the task
  timer.cancel("wait_for: the task finished");  // no-op when it already fired
  const std::exception_ptr& err = joined.error;
  if (!err) co_return joined.take();
  if (!pending_at_entry && h.done() && !h.cancelled() && is_cancellation(err)) {
    // The task answered, and a cancellation of the waiter came in during the
    // wait (after the answer, or forwarded to the task, which finished
    // without taking it).  Nothing is dropped: the answer is returned and the
    // cancellation stays pending for the waiter's next cancellation point.
    park_cancellation(err);
    co_return take_finished(h);
  }
  rethrow_timeout_or(err, deadline,
                     !pending_at_entry && this_task::cancelling() == count_at_entry &&
                         (enclosing_expired_at_entry || !enclosing_wait_expired()));
}

}  // namespace detail

// Wait for `h` at most `d` (asyncio.wait_for).  See the file comment.  `d`
// may be of any integral unit; it saturates (detail::saturating_ns): max() of
// any unit never expires, min() of any unit is already expired.
template <class T>
task<T> wait_for(join_handle<T>& h, std::chrono::nanoseconds d,
                 std::source_location where = std::source_location::current()) {
  return detail::wait_until_core(h, detail::deadline_after(d), where);
}
template <class T, class Rep, class Period>
  requires std::is_integral_v<Rep>
task<T> wait_for(join_handle<T>& h, std::chrono::duration<Rep, Period> d,
                 std::source_location where = std::source_location::current()) {
  return detail::wait_until_core(h, detail::deadline_after(detail::saturating_ns(d)), where);
}

// Spawn `t` on the current runtime and wait for it at most `d`.  A deadline
// that has already passed when the wait begins never runs `t`: its frame is
// destroyed unstarted and timeout_error is thrown.  The spawned task (and the
// deadline task of either form) are named by `where` in the shutdown report.
template <class T>
task<T> wait_for(task<T> t, std::chrono::nanoseconds d,
                 std::source_location where = std::source_location::current()) {
  const std::uint64_t deadline = detail::deadline_after(d);
  if (detail::expired(deadline)) {
    t = task<T>();
    detail::throw_expired_unstarted(where);
  }
  join_handle<T> h = spawn(std::move(t), where);
  co_return co_await detail::wait_until_core(h, deadline, where);
}
template <class T, class Rep, class Period>
  requires std::is_integral_v<Rep>
task<T> wait_for(task<T> t, std::chrono::duration<Rep, Period> d,
                 std::source_location where = std::source_location::current()) {
  return wait_for(std::move(t), detail::saturating_ns(d), where);
}

// Wait for `h` until `tp` (steady_clock, any integral unit; saturates like
// wait_for: time_point::max() of any unit never expires, a time point at or
// before now is already expired).
template <class T>
task<T> wait_until(join_handle<T>& h, std::chrono::steady_clock::time_point tp,
                   std::source_location where = std::source_location::current()) {
  return detail::wait_until_core(h, detail::deadline_at(tp), where);
}
template <class T, class Duration>
  requires std::is_integral_v<typename Duration::rep>
task<T> wait_until(join_handle<T>& h,
                   std::chrono::time_point<std::chrono::steady_clock, Duration> tp,
                   std::source_location where = std::source_location::current()) {
  return detail::wait_until_core(h, detail::deadline_at(detail::saturating_steady(tp)), where);
}

// Spawn `t` and wait for it until `tp`.  As wait_for: a time point already
// passed never runs `t`.
template <class T>
task<T> wait_until(task<T> t, std::chrono::steady_clock::time_point tp,
                   std::source_location where = std::source_location::current()) {
  const std::uint64_t deadline = detail::deadline_at(tp);
  if (detail::expired(deadline)) {
    t = task<T>();
    detail::throw_expired_unstarted(where);
  }
  join_handle<T> h = spawn(std::move(t), where);
  co_return co_await detail::wait_until_core(h, deadline, where);
}
template <class T, class Duration>
  requires std::is_integral_v<typename Duration::rep>
task<T> wait_until(task<T> t, std::chrono::time_point<std::chrono::steady_clock, Duration> tp,
                   std::source_location where = std::source_location::current()) {
  return wait_until(std::move(t), detail::saturating_steady(tp), where);
}

// The scope a timeout / timeout_at block runs in (asyncio's Timeout object,
// the `cm` of `async with asyncio.timeout(d) as cm`).  A cheap shared handle:
// copy it out of the block to read expired() or when() afterwards, or to
// reschedule from another task or thread.  Default-constructed: a scope that
// was never entered.
//
// Thread safety: every member may be called from any thread, concurrently
// with the scope's task and its deadline.
class timeout_scope {
 public:
  timeout_scope() noexcept = default;

  // The deadline passed while the block ran (asyncio's expired()): its
  // request was made -- also when the block then caught the cancellation, or
  // ended before reaching a cancellation point -- or the block ended at or
  // after the deadline, before the deadline task could fire.  False for a
  // scope never entered.
  bool expired() const noexcept;
  // The deadline (steady_clock; sim::now()'s clock on a simulation), or
  // std::nullopt for "never" (asyncio's None) and for a scope never entered.
  // For a deadline given as a duration: now + d at the scope's start (in the
  // past for d <= 0).
  std::optional<std::chrono::steady_clock::time_point> when() const noexcept;

  // Move the deadline (asyncio's reschedule()).  std::nullopt or
  // time_point::max() (of any unit): never.  A time point at or before now:
  // the scope expires at once -- the request is made in this call and
  // delivered at the task's next cancellation point in the block.  Throws
  // usage_error when the scope is not running: never entered, already expired
  // or expiring (the deadline fired: expired() is true), or finished (the
  // block ended).  From another thread this races with the deadline: a
  // reschedule that loses to it throws.
  void reschedule(std::optional<std::chrono::steady_clock::time_point> when);
  template <class Duration>
    requires std::is_integral_v<typename Duration::rep>
  void reschedule(std::chrono::time_point<std::chrono::steady_clock, Duration> when) {
    reschedule(std::optional<std::chrono::steady_clock::time_point>(
        detail::saturating_steady(when)));  // the optional overload
  }

 private:
  friend struct detail::access;
  explicit timeout_scope(std::shared_ptr<detail::scope_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::scope_state> state_;
};

namespace detail {

// The scope of one timeout / timeout_at call, in that call's frame.
struct scope_guard {
  explicit scope_guard(timeout_scope s) noexcept : scope(std::move(s)) {}
  timeout_scope scope;
  bool left = false;
  bool leave() noexcept {
    left = true;
    return scope_leave(*access::state(scope));
  }
  scope_guard(const scope_guard&) = delete;
  scope_guard& operator=(const scope_guard&) = delete;
  ~scope_guard() {
    if (!left) scope_abandon(*access::state(scope));
  }
};

// The block's task: body(scope) or body().
template <class F>
auto call_scope_body(F& body, timeout_scope& scope) {
  if constexpr (std::is_invocable_v<F&, timeout_scope&>) {
    return body(scope);
  } else {
    return body();
  }
}
template <class F>
using scope_task_t = decltype(call_scope_body(std::declval<F&>(), std::declval<timeout_scope&>()));

template <class R>
struct scope_value {};  // not a weft::task: no value type, so timeout() is not viable
template <class T>
struct scope_value<task<T>> {
  using type = T;
};

// `body` lives in this frame while its task runs (a lambda coroutine refers
// to its closure).
template <class T, class F>
task<T> run_scope(F body, std::uint64_t deadline, std::source_location where) {
  scope_guard guard{access::make<timeout_scope>(scope_enter(deadline, where))};
  outcome_slot<T> slot;
  {
    task<T> block;
    try {
      block = call_scope_body(body, guard.scope);
    } catch (...) {
      slot.error = std::current_exception();  // the block never started: leave the scope anyway
    }
    // An empty block is usage_error, in the slot like any outcome.
    if (!slot.error) co_await capture(std::move(block), slot);
  }
  if (guard.leave() && slot.error) rethrow_scope_error(slot.error);
  co_return slot.take();
}

}  // namespace detail

// Run `body` (a callable returning weft::task<T>, taking timeout_scope& or
// nothing) in the calling task under a deadline `d` from now (asyncio.timeout).
// Its value, or its exception -- timeout_error when the scope's own deadline
// cancelled the block and nothing else cancelled the task meanwhile (see the
// file comment).  `d` of any integral unit, saturating: max() never expires;
// <= 0 expires at once (delivered at the block's first cancellation point; a
// block that reaches none ends normally, with expired() true).  Entering is a
// cancellation point: a request already pending on the task is delivered
// there, before the block runs.  `where` names the scope in the cancellation
// (cancelled_error::where()) and its deadline task.
//
// A lambda that captures owning state by value must be named first and moved
// in (docs/pitfalls.md, g++ 12); one capturing by reference [&] is fine.
template <class Rep, class Period, class F>
  requires std::is_integral_v<Rep>
task<typename detail::scope_value<detail::scope_task_t<std::decay_t<F>>>::type> timeout(
    std::chrono::duration<Rep, Period> d, F&& body,
    std::source_location where = std::source_location::current()) {
  using block_task = detail::scope_task_t<std::decay_t<F>>;
  using T = typename detail::scope_value<block_task>::type;
  return detail::run_scope<T>(std::forward<F>(body),
                              detail::scope_deadline_after(detail::saturating_ns(d)), where);
}

// As timeout, with a deadline at `tp` (asyncio.timeout_at): steady_clock, any
// integral unit, saturating; time_point::max() never expires, a time point at
// or before now expires at once.  On a simulation take `tp` from sim::now().
template <class Duration, class F>
  requires std::is_integral_v<typename Duration::rep>
task<typename detail::scope_value<detail::scope_task_t<std::decay_t<F>>>::type> timeout_at(
    std::chrono::time_point<std::chrono::steady_clock, Duration> tp, F&& body,
    std::source_location where = std::source_location::current()) {
  using block_task = detail::scope_task_t<std::decay_t<F>>;
  using T = typename detail::scope_value<block_task>::type;
  return detail::run_scope<T>(std::forward<F>(body),
                              detail::deadline_at(detail::saturating_steady(tp)), where);
}

}  // namespace weft
