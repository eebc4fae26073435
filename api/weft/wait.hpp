// SPDX-License-Identifier: MIT
// weft/wait.hpp -- waiting on many tasks without cancelling them:
// asyncio.wait, asyncio.as_completed and asyncio.gather(return_exceptions=True).
//
//   std::vector<weft::join_handle<int>> hs = ...;
//   auto [done, pending] = co_await weft::wait(hs, weft::return_when::first_completed, 1s);
//   for (weft::join_handle<int>* h : done) use(co_await *h);   // the outcome is still there
//
//   auto seq = weft::as_completed(hs);
//   while (weft::join_handle<int>* h = co_await seq.next()) use(co_await *h);
//
//   std::vector<weft::outcome<int>> all = co_await weft::gather_outcomes(hs);
//
// wait() and as_completed() only watch: neither takes an outcome (each handle
// is joined or awaited afterwards as usual, without suspending: it is done),
// and neither cancels anything -- not when the waiting task is cancelled, not
// when the timeout passes.  Both are cancellation points of the waiting task.
// gather_outcomes() takes every outcome, value or exception (cancelled_error
// included), and throws none of them; like asyncio.gather, cancelling the
// gathering task cancels the tasks it gathers (see gather_outcomes).
//
// The handles are given as a range (std::vector, std::array, std::span, ...)
// of join_handle<T>, or of join_handle<T>* (so that the `pending` of one wait
// can be the range of the next), and must stay where they are until the wait,
// the sequence or the gather has finished.  Empty handles, and handles whose
// outcome was already taken (joined or awaited), are refused with
// usage_error.  Must be awaited from a weft task.  docs/cancellation.md,
// "asyncio.wait", and docs/architecture.md, "Waiting on many tasks".
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "weft/detail/access.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

template <class T>
class outcome;

namespace detail {
// Fills an outcome (take_outcome).
struct outcome_maker {
  template <class T, class F>
  static weft::outcome<T> make(F&& take);
};
}  // namespace detail

// asyncio's return_when.
enum class return_when {
  first_completed,  // any handle finished (value, exception or cancellation)
  first_exception,  // any handle finished by an exception other than cancelled_error, or all did
  all_completed,    // every handle finished
};

// What wait() gives: the handles that had finished when it returned, and the
// others, each in the order of the range.
template <class T>
struct wait_result {
  std::vector<join_handle<T>*> done;
  std::vector<join_handle<T>*> pending;
};

// The outcome of one task, kept instead of thrown (gather_outcomes): its value
// (nothing for void) or its exception -- a cancelled_error too, as asyncio
// returns the CancelledError.
template <class T>
class outcome {
 public:
  using value_type = T;

  bool has_value() const noexcept { return error_ == nullptr; }
  bool has_exception() const noexcept { return error_ != nullptr; }
  // The task ended by cancellation (the exception is a cancelled_error).
  bool cancelled() const noexcept { return cancelled_; }
  // The exception, or null.
  const std::exception_ptr& exception() const noexcept { return error_; }

  // The value, or the exception rethrown.
  std::add_lvalue_reference_t<T> value() & {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return *value_;
  }
  std::add_lvalue_reference_t<const T> value() const& {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return *value_;
  }
  T value() && {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  friend struct detail::outcome_maker;
  using stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  std::optional<stored> value_;
  std::exception_ptr error_;
  bool cancelled_ = false;
};

namespace detail {

// The handle type of a range element: join_handle<T> or join_handle<T>*.
template <class E>
struct handle_of {};
template <class T>
struct handle_of<join_handle<T>> {
  using type = join_handle<T>;
};
template <class T>
struct handle_of<join_handle<T>*> {
  using type = join_handle<T>;
};
template <class R>
using range_handle_t = typename handle_of<std::remove_cv_t<std::ranges::range_value_t<R>>>::type;

template <class R>
concept handle_range = std::ranges::forward_range<R> && requires { typename range_handle_t<R>; };

template <class T>
join_handle<T>* handle_ptr(join_handle<T>& h) noexcept {
  return &h;
}
template <class T>
join_handle<T>* handle_ptr(join_handle<T>* h) noexcept {
  return h;
}

// The core behind `h` (null: a null pointer in a range of pointers), checked
// by checked_core.
template <class T>
task_core* waitable_core(join_handle<T>* h, const char* construct) {
  return checked_core(h != nullptr && h->valid() ? &access::core(*h) : nullptr, construct);
}

// The handles of a range, and their cores (checked by waitable_core).
template <class T, class R>
void collect(R& range, std::vector<join_handle<T>*>& handles, std::vector<task_core*>& cores,
             const char* construct) {
  if constexpr (std::ranges::sized_range<R>) {
    handles.reserve(std::ranges::size(range));
    cores.reserve(std::ranges::size(range));
  }
  for (auto&& e : range) {
    join_handle<T>* h = handle_ptr(e);
    cores.push_back(waitable_core(h, construct));
    handles.push_back(h);
  }
}

template <class T>
task<wait_result<T>> wait_handles(std::vector<join_handle<T>*> handles,
                                  std::vector<task_core*> cores, return_when when,
                                  std::uint64_t deadline) {
  const std::vector<char> done = co_await wait_cores(std::move(cores), when, deadline);
  wait_result<T> r;
  for (std::size_t i = 0; i < handles.size(); ++i)
    (done[i] != 0 ? r.done : r.pending).push_back(handles[i]);
  co_return r;
}

// The order in which a set of tasks finish, as as_completed hands them out.
// Watches every task from its construction to its destruction.
struct watch_set;
class completion_order {
 public:
  completion_order(std::vector<task_core*> cores, std::uint64_t deadline);
  completion_order(completion_order&&) noexcept;
  completion_order& operator=(completion_order&&) noexcept;
  ~completion_order();
  // The position of the next task to finish (those that had finished at the
  // construction first, in order), or kNoMore once all were given.  A
  // cancellation point; throws timeout_error once the deadline passed.
  static constexpr std::size_t kNoMore = ~std::size_t{0};
  task<std::size_t> next();
  std::size_t remaining() const noexcept;

 private:
  std::unique_ptr<watch_set> set_;
  std::uint64_t deadline_;
  std::size_t given_ = 0;
};

template <class T, class F>
weft::outcome<T> outcome_maker::make(F&& take) {
  weft::outcome<T> o;
  try {
    if constexpr (std::is_void_v<T>) {
      take();
      o.value_.emplace();
    } else {
      o.value_.emplace(take());
    }
  } catch (...) {
    o.error_ = std::current_exception();
    o.cancelled_ = is_cancellation(o.error_);
  }
  return o;
}

// The outcome of a finished task, taken (no cancellation point).
template <class T>
weft::outcome<T> take_outcome(join_handle<T>& h) {
  return outcome_maker::make<T>([&h]() -> T {
    mark_taken(&access::core(h));
    return take_result(access::promise(h));
  });
}

template <class T, class R>
task<std::vector<weft::outcome<T>>> gather_range(R& range, std::vector<task_core*> cores) {
  co_await gather_wait(std::move(cores));
  std::vector<weft::outcome<T>> out;
  if constexpr (std::ranges::sized_range<R>) out.reserve(std::ranges::size(range));
  for (auto&& e : range) out.push_back(take_outcome(*handle_ptr(e)));
  co_return out;
}

template <class... Ts>
task<std::tuple<weft::outcome<Ts>...>> gather_pack(std::vector<task_core*> cores,
                                                   join_handle<Ts>&... hs) {
  co_await gather_wait(std::move(cores));
  co_return std::tuple<weft::outcome<Ts>...>(take_outcome(hs)...);
}

}  // namespace detail

// asyncio.wait(handles, return_when=when): waits until `when` holds and gives
// the handles that had finished then and the others.  A cancellation point;
// cancelling the waiting task ends only the wait (nothing it waits on is
// cancelled; every handle stays usable).  Takes no outcome.  At least one
// handle (usage_error otherwise, as asyncio's ValueError).
template <class R>
  requires detail::handle_range<R>
task<wait_result<typename detail::range_handle_t<R>::value_type>> wait(
    R& handles, return_when when = return_when::all_completed) {
  using T = typename detail::range_handle_t<R>::value_type;
  std::vector<join_handle<T>*> hs;
  std::vector<detail::task_core*> cores;
  detail::collect<T>(handles, hs, cores, "weft::wait");
  return detail::wait_handles<T>(std::move(hs), std::move(cores), when, detail::kEndOfTime);
}

// The same with a timeout (asyncio's `timeout=`): when it passes first, the
// wait returns what it has -- it throws nothing and cancels nothing.  `timeout`
// saturates (max() of any unit never passes); <= 0 returns at once with the
// handles that had finished (still a cancellation point).
template <class R, class Rep, class Period>
  requires detail::handle_range<R> && std::is_integral_v<Rep>
task<wait_result<typename detail::range_handle_t<R>::value_type>> wait(
    R& handles, return_when when, std::chrono::duration<Rep, Period> timeout) {
  using T = typename detail::range_handle_t<R>::value_type;
  std::vector<join_handle<T>*> hs;
  std::vector<detail::task_core*> cores;
  detail::collect<T>(handles, hs, cores, "weft::wait");
  return detail::wait_handles<T>(std::move(hs), std::move(cores), when,
                                 detail::deadline_after(detail::saturating_ns(timeout)));
}

// asyncio.as_completed: the handles in the order their tasks finish.
template <class T>
class as_completed_sequence {
 public:
  // The next handle whose task finished (those already finished when the
  // sequence was made come first, in the range's order), or nullptr once every
  // handle was given.  Takes no outcome: `co_await *h` gives it, without
  // suspending.  A cancellation point that cancels nothing; after the
  // sequence's timeout passed, throws timeout_error while handles remain.
  task<join_handle<T>*> next() {
    const std::size_t i = co_await order_.next();
    co_return i == detail::completion_order::kNoMore ? nullptr : handles_[i];
  }
  // Handles not given yet.
  std::size_t remaining() const noexcept { return order_.remaining(); }

  // Made by as_completed().
  as_completed_sequence(std::vector<join_handle<T>*> hs, std::vector<detail::task_core*> cores,
                        std::uint64_t deadline)
      : handles_(std::move(hs)), order_(std::move(cores), deadline) {}

 private:
  std::vector<join_handle<T>*> handles_;
  detail::completion_order order_;
};

// Watch `handles` from now on; the sequence gives them as they finish.  An
// empty range gives an empty sequence.
template <class R>
  requires detail::handle_range<R>
as_completed_sequence<typename detail::range_handle_t<R>::value_type> as_completed(R& handles) {
  using T = typename detail::range_handle_t<R>::value_type;
  std::vector<join_handle<T>*> hs;
  std::vector<detail::task_core*> cores;
  detail::collect<T>(handles, hs, cores, "weft::as_completed");
  return as_completed_sequence<T>(std::move(hs), std::move(cores), detail::kEndOfTime);
}

// The same with a timeout counted from now (asyncio's `timeout=`): a next()
// that finds no finished handle once it passed throws timeout_error.
template <class R, class Rep, class Period>
  requires detail::handle_range<R> && std::is_integral_v<Rep>
as_completed_sequence<typename detail::range_handle_t<R>::value_type> as_completed(
    R& handles, std::chrono::duration<Rep, Period> timeout) {
  using T = typename detail::range_handle_t<R>::value_type;
  std::vector<join_handle<T>*> hs;
  std::vector<detail::task_core*> cores;
  detail::collect<T>(handles, hs, cores, "weft::as_completed");
  return as_completed_sequence<T>(std::move(hs), std::move(cores),
                                  detail::deadline_after(detail::saturating_ns(timeout)));
}

// asyncio.gather(*handles, return_exceptions=True): waits for every task and
// gives every outcome, in the range's order, taking it (the handles are done
// and their outcomes taken afterwards).  Nothing is thrown for a task that
// failed or was cancelled: its outcome holds the exception.  Cancelling the
// gathering task (asyncio's gather does the same) cancels every task still
// running (cancel_kind::parent, the gatherer's reason and location), waits
// until all have finished -- a further cancel() meanwhile stays pending for
// the gatherer's next cancellation point -- and rethrows the gatherer's
// cancelled_error; no outcome is taken then.  An empty range gives an empty
// vector.
template <class R>
  requires detail::handle_range<R>
task<std::vector<outcome<typename detail::range_handle_t<R>::value_type>>> gather_outcomes(
    R& handles) {
  using T = typename detail::range_handle_t<R>::value_type;
  std::vector<join_handle<T>*> hs;
  std::vector<detail::task_core*> cores;
  detail::collect<T>(handles, hs, cores, "weft::gather_outcomes");
  return detail::gather_range<T>(handles, std::move(cores));
}

// The same for handles of different types: a tuple of outcomes.
template <class... Ts>
  requires(sizeof...(Ts) > 0)
task<std::tuple<outcome<Ts>...>> gather_outcomes(join_handle<Ts>&... handles) {
  std::vector<detail::task_core*> cores{
      detail::waitable_core(&handles, "weft::gather_outcomes")...};
  return detail::gather_pack<Ts...>(std::move(cores), handles...);
}

}  // namespace weft
