// SPDX-License-Identifier: MIT
// runtime/splitmix.hpp -- splitmix64, the one seeded generator of the project.
//
// One 64-bit state, good enough statistics for scheduling and test choices,
// and trivially reproducible from the seed (Steele, Lea, Flood, "Fast
// Splittable Pseudorandom Number Generators", OOPSLA 2014).  The simulation's
// driver (sim_driver.hpp), the tests (tests/test_support.hpp) and the stress
// tool (stress/internal.hpp) all draw from it; each seeds it its own way.
// Header-only and free of runtime dependencies, so that tools built against
// the public API only may include it.
#pragma once

#include <cstdint>

namespace weft::detail {

struct splitmix64 {
  std::uint64_t state;
  explicit constexpr splitmix64(std::uint64_t seed) noexcept : state(seed) {}
  constexpr std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.  (The modulo bias is irrelevant at these sizes.)
  constexpr std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
};

}  // namespace weft::detail
