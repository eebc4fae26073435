// SPDX-License-Identifier: MIT
// runtime/errors.cpp -- weft's exception types.
#include "weft/errors.hpp"

#include <memory>
#include <utility>

namespace weft {

std::string_view to_string(cancel_kind kind) noexcept {
  switch (kind) {
    case cancel_kind::explicit_request:
      return "explicit";
    case cancel_kind::timeout:
      return "timeout";
    case cancel_kind::group:
      return "group";
    case cancel_kind::parent:
      return "parent";
    case cancel_kind::shutdown:
      return "shutdown";
  }
  return "unknown";
}

std::string describe(const std::exception_ptr& e) {
  if (!e) return "no exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "a non-std exception";
  }
}

cancelled_error::cancelled_error(std::string reason, cancel_kind kind, std::source_location where)
    : reason_(std::move(reason)), where_(where), kind_(kind) {
  what_ = reason_.empty() ? std::string("cancelled") : "cancelled: " + reason_;
}

timeout_error::timeout_error(cancelled_error cause)
    : cause_(std::make_shared<const cancelled_error>(std::move(cause))) {}

}  // namespace weft
