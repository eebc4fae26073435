// SPDX-License-Identifier: MIT
// runtime/cancel_delivery.hpp -- what cancel delivery shares with completion,
// joins and sleeps: the tag a request carries in a `pending` slot, the
// hand-over walk, interned requests, the report of an unobserved exception.
// Internal to runtime/.
#pragma once

#include <cstdint>
#include <exception>
#include <source_location>

#include "runtime_impl.hpp"

namespace weft::detail {

// A request in a `pending` slot carries a tag in its three lowest bits
// (requests are at least 8-byte aligned): how many awaits down it was
// forwarded to reach this task -- 0 when it was made on this task directly.
// A forwarded request this task never took goes back one level to its waiter
// when the wait ends (reclaim_forwarded), tag minus one, and so on up to the
// task it was made for; a direct one stays with the task ("completed despite
// the cancel").  A delivered request keeps its tag in the cancelled_error
// (cancel_route), so that a construct that catches it and puts it back
// (park_cancellation) keeps it too.  Every reader of `pending` outside cancel
// delivery only compares it with null, which the tag does not change.  Deeper
// than 7 levels the tag saturates: such a request may come back up further
// than it went down, never less far.
inline constexpr std::uintptr_t kTagMask = 7;

inline cancel_request* tagged(cancel_request* r, unsigned depth) noexcept {
  return reinterpret_cast<cancel_request*>(reinterpret_cast<std::uintptr_t>(r) |
                                           (depth < kTagMask ? depth : kTagMask));
}
inline unsigned depth_of(const cancel_request* r) noexcept {
  return static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(r) & kTagMask);
}
inline cancel_request* untagged(cancel_request* r) noexcept {
  return reinterpret_cast<cancel_request*>(reinterpret_cast<std::uintptr_t>(r) & ~kTagMask);
}

// The private fields of cancelled_error that the runtime reads and sets.
struct cancel_route {
  static unsigned depth(const cancelled_error& e) noexcept { return e.forwarded_; }
  static void set_depth(cancelled_error& e, unsigned d) noexcept {
    e.forwarded_ = static_cast<std::uint8_t>(d);
  }
  // The cancellation-latency stamps (stats.cpp).
  static std::uint64_t requested_ns(const cancelled_error& e) noexcept { return e.requested_ns_; }
  static std::uint64_t delivered_ns(const cancelled_error& e) noexcept { return e.delivered_ns_; }
  static void set_stamps(cancelled_error& e, std::uint64_t requested,
                         std::uint64_t delivered) noexcept {
    e.requested_ns_ = requested;
    e.delivered_ns_ = delivered;
  }
};

// Give `req` (owned) to `core`, forwarded down the chain of tasks each waiting
// on the next; `depth`: how many levels down it already came.  Returns false
// when `core` had finished (then `req` was freed).  cancel_delivery.cpp.
bool hand_over(task_core* core, cancel_request* req, unsigned depth = 0);

// The shared request for a cancel() without a reason from `where` (never
// freed).  interned_requests.cpp.
cancel_request* interned_request(cancel_kind kind, std::source_location where);

// An exception nobody observed: to the runtime's unhandled_exception hook
// (when `rt` is still alive), else to stderr, naming the task `core` (its
// name and spawn site) when given.  unhandled.cpp.
void report_unhandled(runtime_impl* rt, const std::exception_ptr& e,
                      const task_core* core = nullptr) noexcept;

}  // namespace weft::detail
