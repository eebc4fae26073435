// SPDX-License-Identifier: MIT
// weft/errors.hpp -- the exceptions weft throws.
//
// cancelled_error is what a task sees at an await point when a cancellation
// request is delivered to it (asyncio.CancelledError).  timeout_error is what
// a deadline that passed turns its own cancellation into (asyncio.TimeoutError,
// chained from the CancelledError).  usage_error reports a misuse that would
// otherwise deadlock or be undefined (join() from a worker, awaiting a handle
// twice, ...).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <cstdint>
#include <exception>
#include <memory>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>

namespace weft {

namespace detail {
struct cancel_route;  // core.cpp: reads and sets cancelled_error::forwarded_
}  // namespace detail

// Why a task was cancelled.  Carried by every cancelled_error and every
// cancelled handle.
enum class cancel_kind : std::uint8_t {
  explicit_request,  // join_handle::cancel()
  timeout,           // wait_for / wait_until expired
  group,             // a sibling in a task group failed
  parent,            // the awaiting (parent) task was cancelled
  shutdown,          // runtime::shutdown() or the runtime's destructor
};

// Text name of a cancel_kind ("explicit", "timeout", ...).
std::string_view to_string(cancel_kind kind) noexcept;

// The text of the exception `e` holds: its what() for a std::exception, else
// "a non-std exception"; "no exception" for a null pointer.  For logs of what
// a task_group_error or an unhandled_exception hook carries.
std::string describe(const std::exception_ptr& e);

// Thrown into a task at the await point where a cancellation request is
// delivered.  Catching it "refuses" the cancellation; rethrowing (or not
// catching) makes the task finish as cancelled.  Copyable; thread-compatible.
class cancelled_error final : public std::exception {
 public:
  cancelled_error(std::string reason, cancel_kind kind,
                  std::source_location where = std::source_location::current());

  // The text passed to cancel(reason); empty when none was given.
  std::string_view reason() const noexcept { return reason_; }
  // The kind of cause (explicit, timeout, shutdown, ...).
  cancel_kind kind() const noexcept { return kind_; }
  // Where the cancel() call that caused this was made.
  const std::source_location& where() const noexcept { return where_; }
  // "cancelled: <reason>" or "cancelled".
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  friend struct detail::cancel_route;
  std::string reason_;
  std::string what_;
  std::source_location where_;
  cancel_kind kind_;
  // How many awaits down the request travelled before it was delivered here
  // (0: made for the task that caught it).  A construct that catches the
  // error and puts it back keeps it, so that a request nobody finally
  // observes still finds its way back to the task it was made for.
  std::uint8_t forwarded_ = 0;
  // When the request behind it reached the task and when it was delivered
  // (now_ns() clock; 0: unknown), for runtime::stats()'s cancellation
  // latency; cleared by the task it finishes, so that a rethrow elsewhere
  // does not count it twice.
  std::uint64_t requested_ns_ = 0;
  std::uint64_t delivered_ns_ = 0;
};

// Thrown by wait_for / wait_until and by a timeout scope (weft/timeout.hpp)
// when their own deadline passed and the cancellation it caused ended the
// awaited task or the scope's block.  Chained from that cancellation, as
// asyncio raises TimeoutError from the CancelledError, in two ways:
//   * cause(): the cancelled_error (kind timeout, reason "timeout", where()
//     the line of the wait_for / timeout call), typed, kept by copies;
//   * std::nested_exception: weft throws it with std::throw_with_nested, so
//     std::rethrow_if_nested(e) rethrows that cancelled_error (code that logs
//     exception chains walks it without knowing weft).
// A timeout_error made by user code (default constructor) has no cause.
class timeout_error : public std::exception {
 public:
  timeout_error() noexcept = default;
  explicit timeout_error(cancelled_error cause);

  const char* what() const noexcept override { return "weft: timed out"; }
  // The cancellation this timeout is made of; null when there is none.
  const cancelled_error* cause() const noexcept { return cause_.get(); }

 private:
  std::shared_ptr<const cancelled_error> cause_;  // shared: copies never throw
};

// A misuse of the API that weft detects instead of deadlocking or crashing:
// blocking join()/block_on()/shutdown() from a worker thread of a runtime,
// awaiting or joining a handle whose result was already taken, a second
// joiner of one handle while the first waits, join() of a task that can never
// finish (its runtime is shut down), awaiting or spawning an empty task or
// one that was already awaited.
class usage_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace weft
