// SPDX-License-Identifier: MIT
// tests/task_internals.hpp -- white-box looks at a task's state and at the
// runtime, for the tests that must see a scenario reach a narrow window before
// they play its other side (a joiner registered, a temporary reference taken,
// a hook lock free, a worker parked).  They read the fields of
// detail::task_core and detail::runtime_impl, which tests may include.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime_impl.hpp"
#include "test_support.hpp"

namespace weft_test {

using weft::detail::task_core;

template <class T>
task_core& core_of(const weft::join_handle<T>& h) {
  return weft::detail::access::core(h);
}

inline std::uint32_t state_of(const task_core& c) {
  return c.state.load(std::memory_order_acquire);  // as join_handle::done()
}

inline std::uint32_t refs_of(const task_core& c) { return task_core::refs(state_of(c)); }

// Whether another task already waits on `h`'s task (kJoiner in its state).
template <class T>
bool has_joiner(const weft::join_handle<T>& h) {
  return (state_of(core_of(h)) & task_core::kJoiner) != 0;
}

// Stores the runtime_impl of the worker it runs on.  Relaxed: the tests read
// it after block_on().
inline weft::task<void> find_runtime(std::atomic<weft::detail::runtime_impl*>* out) {
  out->store(weft::detail::current_worker()->rt, std::memory_order_relaxed);
  co_return;
}

}  // namespace weft_test
