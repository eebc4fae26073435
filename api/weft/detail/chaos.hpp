// SPDX-License-Identifier: MIT
// weft/detail/chaos.hpp -- chaos points for stress builds.
//
// WEFT_CHAOS_POINT() compiles to nothing unless the build defines WEFT_CHAOS
// (CMake: -DWEFT_CHAOS=ON, which puts WEFT_CHAOS=1 on weft::weft's interface so
// that the header code of every target in that build sees it too).  In such a
// build each chaos point sometimes yields the thread or spins a few
// microseconds, so that the windows between the runtime's atomic operations
// and around its park points are hit by other threads far more often than in
// a normal build.  The points sit in the deque (this header's includer), the
// worker loop, parking, injection, the timer, cancel hand-over, completion and
// the wait protocols (docs/architecture.md, "Chaos points").  Environment, read
// once: WEFT_CHAOS=0 turns the points off at run time; WEFT_CHAOS_SEED seeds
// the per-thread generators.  Not for production builds.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#if defined(WEFT_CHAOS) && WEFT_CHAOS
namespace weft::detail {
void chaos_point() noexcept;  // runtime/chaos.cpp
}  // namespace weft::detail
#define WEFT_CHAOS_POINT() ::weft::detail::chaos_point()
#else
#define WEFT_CHAOS_POINT() static_cast<void>(0)
#endif
