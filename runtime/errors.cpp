// runtime/errors.cpp -- weft's exception types.
#include "weft/errors.hpp"

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

cancelled_error::cancelled_error(std::string reason, cancel_kind kind, std::source_location where)
    : reason_(std::move(reason)), where_(where), kind_(kind) {
  what_ = reason_.empty() ? std::string("cancelled") : "cancelled: " + reason_;
}

}  // namespace weft
