// SPDX-License-Identifier: MIT
// The library of the consumer project: its interface uses weft's types, so
// whoever links it links weft too (tests/consumer/CMakeLists.txt).
#pragma once

#include <weft/task.hpp>

namespace weft_consumer {

// A weft task that computes 6 * 7 through a spawned child.
weft::task<int> answer();

}  // namespace weft_consumer
