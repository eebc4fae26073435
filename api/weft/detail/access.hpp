// SPDX-License-Identifier: MIT
// weft/detail/access.hpp -- the one door from weft's own code into members of
// the public types that are not the user's API.
//
// A public class that keeps such members private names `friend struct
// detail::access;`, and weft's headers and runtime reach them through the
// static functions here, so no member has to be public "for internal use".
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <utility>

#include "weft/detail/task_core.hpp"

namespace weft::detail {

struct access {
  // The coroutine behind a task or a join_handle (null when empty).
  template <class Owner>
  static auto handle(const Owner& o) noexcept {
    return o.h_;
  }
  // Hands a task's frame over (spawn, awaiters): the task is empty after.
  template <class Task>
  static auto release(Task& t) noexcept {
    return std::exchange(t.h_, {});
  }
  // One of the public types, built by its private constructor (a join_handle
  // from a spawned frame, a token from its source's state, a registration).
  template <class Made, class... Args>
  static Made make(Args&&... args) {
    return Made(std::forward<Args>(args)...);
  }
  // A cancellation_token's source state.
  template <class Token>
  static const auto& state(const Token& t) noexcept {
    return t.state_;
  }
  // The core of the task behind a join_handle (valid handles only).
  template <class Handle>
  static task_core& core(const Handle& h) noexcept {
    return h.h_.promise().own_core();
  }
  // The promise of the task behind a join_handle (valid handles only).
  template <class Handle>
  static auto& promise(const Handle& h) noexcept {
    return h.h_.promise();
  }
};

}  // namespace weft::detail
