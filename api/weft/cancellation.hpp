// SPDX-License-Identifier: MIT
// weft/cancellation.hpp -- cancel many tasks at once: cancellation_source,
// cancellation_token, cancellation_registration.
//
//   weft::cancellation_source src;
//   auto h = weft::spawn(fetch(url), src.token());   // bound for its whole life
//   auto reg = src.token().bind(other_handle);      // bound while `reg` lives
//   auto cb = src.token().on_cancel(wake_my_socket); // non-weft waits
//   src.cancel("user pressed stop");                // all of the above, once
//
// Model (asyncio has none built in; this is .NET's CancellationTokenSource and
// C++20's std::stop_source with weft's provenance added):
//   * A source is cancelled at most once.  The first cancel() wins and fixes
//     the reason, the kind and the source location; later calls change nothing
//     and return false.
//   * Every task bound to one of its tokens is cancelled like
//     join_handle::cancel_as(kind, reason, where) with those three values, so
//     the cancelled_error it sees names the source's cancel() call site.
//   * kind is cancel_kind::explicit_request, or cancel_kind::parent when the
//     source was cancelled because its parent source was (child sources:
//     `cancellation_source child(parent.token())`; the reason and location are
//     the parent's, through any depth).
//   * A callback registered with on_cancel() runs exactly once: on the thread
//     that calls cancel() (inside that call), or at once on the registering
//     thread when the source was already cancelled.  Registering and
//     deregistering are safe against a concurrent cancel(): destroying a
//     registration whose callback is running on another thread waits for it
//     to return (unless called from inside that callback); after the
//     destructor returns the callback neither runs nor is running.
//     Callbacks must not throw (std::terminate) and should be short: they run
//     inside cancel().  This is std::stop_callback's contract, which this is
//     built on.
//
// Thread safety: sources, tokens and registrations may be used from any
// thread; sources and tokens are cheap shared handles (copy them freely); one
// registration object must not be used by two threads at once.
// Memory ordering: a caller that sees cancel_requested() == true (acquire)
// also sees reason(), kind() and where(); they are written before the stop
// request is published.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <memory>
#include <optional>
#include <source_location>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "weft/detail/task_core.hpp"
#include "weft/detail/task_ref.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

class cancellation_token;
class cancellation_registration;

namespace detail {

struct cancel_source_state;

// A type-erased, move-only nullary callback (std::stop_callback needs one
// concrete callback type; std::function would require copyable callables).
struct callback_box {
  virtual void run() noexcept = 0;
  virtual ~callback_box() = default;
};
template <class F>
struct callback_impl final : callback_box {
  explicit callback_impl(F&& f) : fn(std::move(f)) {}
  explicit callback_impl(const F& f) : fn(f) {}
  void run() noexcept override { fn(); }
  F fn;
};
struct erased_callback {
  std::unique_ptr<callback_box> box;
  void operator()() noexcept { box->run(); }
};

struct registration_impl {
  registration_impl(const std::stop_token& t, erased_callback fn) : cb(t, std::move(fn)) {}
  std::stop_callback<erased_callback> cb;
};

// co_await current_core_tag{} inside a weft coroutine: the task_core of the
// task running it (its own core when spawned, else its awaiter's).  Never
// suspends.
struct current_core_tag {
  task_core* core = nullptr;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    core = h.promise().core;
    return false;  // do not suspend: we only wanted the promise
  }
  task_core* await_resume() const noexcept { return core; }
};

struct cancel_source_state;

}  // namespace detail

// RAII handle of one registration (on_cancel, bind).  Destroying it (or
// reset()) deregisters: see the file comment for the guarantees.  Movable;
// default-constructed = empty.
class cancellation_registration {
 public:
  cancellation_registration() noexcept = default;
  cancellation_registration(cancellation_registration&&) noexcept = default;
  cancellation_registration& operator=(cancellation_registration&& o) noexcept {
    if (this != &o) {
      reset();
      impl_ = std::move(o.impl_);
    }
    return *this;
  }
  ~cancellation_registration() { reset(); }

  // Deregister now (waits for a callback running on another thread).
  void reset() noexcept { impl_.reset(); }
  // Holds a registration (not moved from, not reset).
  bool active() const noexcept { return static_cast<bool>(impl_); }

 private:
  friend struct detail::access;
  explicit cancellation_registration(std::unique_ptr<detail::registration_impl> p) noexcept
      : impl_(std::move(p)) {}
  std::unique_ptr<detail::registration_impl> impl_;
};

// The observing side of a cancellation_source.  A default-constructed token
// is never cancelled (can_be_cancelled() is false).
class cancellation_token {
 public:
  cancellation_token() noexcept = default;

  // False for a default-constructed token.
  bool can_be_cancelled() const noexcept { return static_cast<bool>(state_); }
  // The source was cancelled (acquire: see the file comment).
  bool cancel_requested() const noexcept;
  // The first cancel()'s reason ("" before), kind, and call site.  The
  // string_view stays valid while any token or source of this state lives.
  std::string_view reason() const noexcept;
  cancel_kind kind() const noexcept;
  std::source_location where() const noexcept;
  // Throws cancelled_error(reason(), kind(), where()) when cancel_requested().
  void throw_if_cancel_requested() const;

  // The underlying std::stop_token, for std::condition_variable_any::wait,
  // std::jthread and other stop_token-aware code.
  std::stop_token stop_token() const noexcept;

  // Run `f()` once when the source is cancelled, or right now (on this
  // thread) if it already is.  `f` must be callable as void() noexcept-ish.
  // On a default-constructed token nothing is registered.
  template <class F>
  [[nodiscard]] cancellation_registration on_cancel(F&& f) const {
    using D = std::decay_t<F>;
    static_assert(std::is_invocable_v<D&>, "on_cancel needs a callable taking no arguments");
    if (!state_) return {};
    detail::erased_callback cb{std::make_unique<detail::callback_impl<D>>(std::forward<F>(f))};
    return detail::access::make<cancellation_registration>(
        std::make_unique<detail::registration_impl>(stop_token(), std::move(cb)));
  }

  // While the returned registration lives, cancelling the source cancels the
  // task behind `h` (cancel_as with the source's kind, reason and location);
  // if the source is already cancelled, `h` is cancelled now.  The
  // registration keeps the task's frame alive (a reference, like a handle), so
  // it may outlive `h` safely.  Call it from the owner of `h`, and destroy the
  // registration from a thread that is not awaiting `h` at the same moment
  // (normally: the same task that owns `h`).
  template <class T>
  [[nodiscard]] cancellation_registration bind(join_handle<T>& h) const {
    if (!h.valid()) detail::throw_invalid_handle();
    if (!state_) return {};
    detail::task_core* c = &detail::access::core(h);
    return detail::make_core_registration(*this, c,
                                          std::optional<detail::task_ref>(std::in_place, c));
  }

 private:
  friend struct detail::access;
  explicit cancellation_token(std::shared_ptr<detail::cancel_source_state> s) noexcept
      : state_(std::move(s)) {}
  std::shared_ptr<detail::cancel_source_state> state_;
};

// The cancelling side.  Copies share one state (like std::stop_source).
class cancellation_source {
 public:
  // A root source.
  cancellation_source();
  // A child source: cancelled (kind parent, the parent's reason and location)
  // when `parent`'s source is, and at once if it already is.  Cancelling the
  // child does not touch the parent.  A default-constructed `parent` makes a
  // root source.
  explicit cancellation_source(const cancellation_token& parent);
  // A source that follows a std::stop_token, for code that already has one
  // (std::jthread, a library's stop_source): a stop request on it cancels
  // this source, with kind explicit_request, `reason`, and `where` (defaulted:
  // the line that makes the source) -- on the thread that calls
  // request_stop(), inside that call, and at once if the stop was already
  // requested.  cancel() on this source does not touch the std::stop_source.
  // A token that can never be stopped (std::stop_token{}) makes a plain root
  // source.  On a simulation runtime, request the stop from the simulation's
  // thread (a bound task is cancelled inside request_stop()).
  explicit cancellation_source(std::stop_token follow, std::string reason = "stop requested",
                               std::source_location where = std::source_location::current());

  cancellation_token token() const noexcept {
    return detail::access::make<cancellation_token>(state_);
  }

  // Cancel every bound task and run every callback (on this thread, before
  // returning).  True for the call that did it; false if the source was
  // already cancelled (the first reason/location stay).
  bool cancel(std::string reason = {},
              std::source_location where = std::source_location::current());
  bool cancel_requested() const noexcept { return token().cancel_requested(); }

 private:
  std::shared_ptr<detail::cancel_source_state> state_;
};

namespace detail {

// The body of spawn(task, token): owns a registration that cancels this very
// task, so no reference on the core is needed (the registration is gone
// before the task completes).
template <class T>
task<T> token_relay(cancellation_token tok, task<T> t) {
  task_core* self = co_await current_core_tag{};
  cancellation_registration reg = make_core_registration(tok, self, std::nullopt);
  // A source cancelled before we started: the callback has just put the
  // request on us.  Deliver it before the body runs (a task cancelled before
  // it starts never runs its body).
  if (cancel_request* r = take_pending(self)) throw_taken(r);
  task<T> body = std::move(t);
  if constexpr (std::is_void_v<T>) {
    co_await std::move(body);
  } else {
    co_return co_await std::move(body);
  }
}

// runtime/cancel_source.cpp: the token of this_task::stop_token() for the
// task whose core is `core` (its source is made on the first call).
std::stop_token task_stop_token(task_core* core);

struct stop_token_tag : current_core_tag {
  std::stop_token await_resume() const { return task_stop_token(core); }
};

}  // namespace detail

namespace this_task {
// `std::stop_token st = co_await weft::this_task::stop_token();` inside a
// task: a token that is requested when a cancel request reaches the task --
// at the request, on the thread that makes it (cancel(), cancel_as(), a
// bound cancellation_source, a timeout or task group cancelling it, a request
// forwarded down to it from a task awaiting it), not at delivery; and when
// the runtime's "shutdown" reaches it (its next cancellation point; shutdown
// wakes every waiting task at once).  A request already pending when it is
// called requests it at once.  Every call in one task returns a token of
// the same source; once requested it stays requested (a std::stop_source
// cannot be reset), also when uncancel() withdraws the request or the task
// catches the cancellation and carries on.  Stop callbacks registered on it
// run inside the cancel() call (as with any std::stop_source), never under a
// weft lock; the token stays valid after the task ended.  Never suspends;
// not a cancellation point.
inline detail::stop_token_tag stop_token() noexcept { return {}; }
}  // namespace this_task

// Spawn `t` on the current runtime (like weft::spawn) bound to `token` for its
// whole life: cancelling the source cancels the task with the source's kind,
// reason and location; a source that is already cancelled makes the task
// finish cancelled without running its body.  The task runs inside a relay
// coroutine that is awaited directly (one extra frame, no extra spawn).
// `where`: as weft::spawn's.
template <class T>
join_handle<T> spawn(task<T> t, cancellation_token token,
                     std::source_location where = std::source_location::current()) {
  if (!detail::spawnable(t)) detail::throw_empty_task();
  if (!token.can_be_cancelled()) return spawn(std::move(t), where);
  return spawn(detail::token_relay<T>(std::move(token), std::move(t)), where);
}

}  // namespace weft
