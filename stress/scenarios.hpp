// SPDX-License-Identifier: MIT
// stress/scenarios.hpp -- the coroutines of the round (scenarios.cpp).
#pragma once

#include <cstdint>

#include "internal.hpp"

namespace weft_stress {

// Spawns a driver task per selected scenario (not shutdown/outside, which
// shape the round itself) and takes their outcomes.
weft::task<void> round_root(round_ctx* c);

// What an outside thread (or, in a simulation, the driving thread between
// slices of the run) spawns: a tracked body with a random plan.
weft::task<std::uint64_t> outside_work(round_ctx* c, record* r, std::uint64_t seed);

}  // namespace weft_stress
