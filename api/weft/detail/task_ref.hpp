// SPDX-License-Identifier: MIT
// weft/detail/task_ref.hpp -- a counted reference to a spawned task's core.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <utility>

#include "weft/detail/task_core.hpp"

namespace weft::detail {

// Keeps a spawned task's frame (and so its core) alive while its holder may
// still cancel it: a task bound to a cancellation_token (the registration
// holds one), the target of wait_for's deadline task (a parameter of that
// coroutine, so the frame owns it from its creation and drops it when it is
// destroyed, also when the deadline task never runs its body).  Taken only by
// the owner of the task's join_handle, so the task cannot be finishing inline
// at the same moment (see join_handle's inline join).
class task_ref {
 public:
  explicit task_ref(task_core* c) noexcept : core_(c) {
    // Relaxed: the caller's handle keeps the core alive while we add ours; the
    // count publishes nothing (release_ref's acq_rel orders the teardown).
    core_->state.fetch_add(task_core::kRefOne, std::memory_order_relaxed);
  }
  task_ref(task_ref&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  task_ref& operator=(task_ref&&) = delete;
  task_ref(const task_ref&) = delete;
  ~task_ref() {
    if (core_ != nullptr) release_ref(core_);
  }
  task_core* get() const noexcept { return core_; }

 private:
  task_core* core_;
};

}  // namespace weft::detail
