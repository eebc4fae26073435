// SPDX-License-Identifier: MIT
// weft/timeout.hpp -- asyncio.wait_for / timeouts.
//
//   T v = co_await weft::wait_for(h, 100ms);      // h: join_handle<T>&
//   T v = co_await weft::wait_for(some_task(), 100ms);
//
// If the task finishes within the time, its value (or exception).  Otherwise
// it is cancelled (kind cancel_kind::timeout, reason "timeout"), weft waits
// until it has really finished its cleanup, and then throws timeout_error --
// unless the task caught the cancellation and returned a value anyway: then
// that value is returned (nothing is lost).  A duration <= 0 (down to min()
// of any unit) or a time point at or before now means already expired (a task
// that is already done still gives its result); max() of any unit, or a
// duration or time point beyond nanoseconds' range, means "never" (every
// duration and time point saturates, none overflows); a deadline that is
// merely far (max() - 1s) arms a timer that waits without spinning.
// Cancelling the waiting task cancels the awaited task too (the wait is a
// join).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <source_location>
#include <type_traits>
#include <utility>

#include "weft/detail/access.hpp"
#include "weft/detail/task_ref.hpp"
#include "weft/task.hpp"

namespace weft {

// Thrown by wait_for / wait_until when the deadline passed and the task
// finished by that cancellation.
class timeout_error : public std::exception {
 public:
  const char* what() const noexcept override { return "weft: timed out"; }
};

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
    throw timeout_error();
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
    throw timeout_error();
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

}  // namespace weft
