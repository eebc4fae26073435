// SPDX-License-Identifier: MIT
// runtime/chaos.cpp -- what a chaos point does in a WEFT_CHAOS build
// (weft/detail/chaos.hpp).  Compiled to nothing in other builds.
//
// Per thread, a xorshift generator decides at each point: about 1 in 16 points
// yields the thread (another thread gets to run right here), about 1 in 256
// spins 1-20 microseconds (a stretched window without giving up the CPU).  A
// simulation's driving thread skips them: it is alone, and a delay there would
// only cost time.
#include "weft/detail/chaos.hpp"

#if defined(WEFT_CHAOS) && WEFT_CHAOS

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <thread>

#include "sim_driver.hpp"

namespace weft::detail {

namespace {

struct chaos_settings {
  bool on = true;
  std::uint64_t seed = 0x5EED'C4A0'5000'0001ull;
};

const chaos_settings& settings() {
  static const chaos_settings s = [] {
    chaos_settings c;
    if (const char* e = std::getenv("WEFT_CHAOS")) c.on = !(e[0] == '0' && e[1] == '\0');
    if (const char* e = std::getenv("WEFT_CHAOS_SEED")) c.seed ^= std::strtoull(e, nullptr, 10);
    return c;
  }();
  return s;
}

thread_local std::uint64_t t_state = 0;

}  // namespace

void chaos_point() noexcept {
  const chaos_settings& s = settings();
  if (!s.on || sim_hook::driving()) return;
  std::uint64_t x = t_state;
  if (x == 0) {
    x = s.seed ^ (std::hash<std::thread::id>{}(std::this_thread::get_id()) * 0x9E3779B97F4A7C15ull);
    if (x == 0) x = 1;
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  t_state = x;
  const unsigned r = static_cast<unsigned>(x % 256);
  if (r < 16) {
    std::this_thread::yield();
  } else if (r == 16) {
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::microseconds(1 + (x >> 32) % 20);
    while (std::chrono::steady_clock::now() < until) {
    }
  }
}

}  // namespace weft::detail

#endif  // WEFT_CHAOS
