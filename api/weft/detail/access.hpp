// weft/detail/access.hpp -- the one door from weft's own code into members of
// the public types that are not the user's API.
//
// A public class that keeps such members private names `friend struct
// detail::access;`, and weft's headers and runtime reach them through the
// static functions here, so no member has to be public "for internal use".
#pragma once

#include "weft/detail/core.hpp"

namespace weft::detail {

struct access {
  // The core of the task behind a join_handle (valid handles only).
  template <class Handle>
  static task_core& core(const Handle& h) noexcept {
    return h.handle().promise().own_core();
  }
  // The promise of the task behind a join_handle (valid handles only).
  template <class Handle>
  static auto& promise(const Handle& h) noexcept {
    return h.handle().promise();
  }
};

}  // namespace weft::detail
