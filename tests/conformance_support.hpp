// SPDX-License-Identifier: MIT
// tests/conformance_support.hpp -- helpers shared by the ports of CPython's
// asyncio tests (tests/conformance_*_test.cpp).
#pragma once

#include <utility>

#include "test_support.hpp"

namespace weft_conformance {

// Expects f() to throw task_group_error (asyncio: an ExceptionGroup); returns
// it, or an empty one after a failure.
template <class F>
weft::task_group_error expect_group_error(F&& f) {
  if (auto e = weft_test::expect_throws<weft::task_group_error>(std::forward<F>(f))) return *e;
  return weft::task_group_error({});
}

}  // namespace weft_conformance
