// SPDX-License-Identifier: MIT
// runtime/spin.hpp -- spinning: the pause hint, and the runtime's small spin locks (a task's hook
// lock, a wait_list's lock): held for a few instructions, never across a suspension, so spinning
// beats parking.  Past 64 rounds the spinner yields its core, so that a holder preempted on the
// same core (2-core machines, sanitizers) gets to run.  Internal to runtime/.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace weft::detail {

// The processor's spin-wait hint (x86 PAUSE): lets a sibling hyperthread run
// and avoids the memory-order flush when the awaited write arrives.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// One round of waiting for a lock that is held.
inline void spin_pause(unsigned& spins) noexcept {
  if (++spins > 64) {
    std::this_thread::yield();
  } else {
    cpu_relax();
  }
}

// Take `flag` (0 = free, 1 = held).  The holder lets go with a release store
// of 0 (task_core::unlock_hook, wait_list::unlock: inline in the headers).
inline void spin_lock(std::atomic<std::uint8_t>& flag) noexcept {
  unsigned spins = 0;
  for (;;) {
    // Acquire: pairs with the holder's release store of 0; the previous holder's
    // writes are visible.
    if (flag.exchange(1, std::memory_order_acquire) == 0) return;
    // Relaxed: spinning read; the exchange above is what acquires.
    while (flag.load(std::memory_order_relaxed) != 0) spin_pause(spins);
  }
}

// Take `flag` only if it is free now.
inline bool spin_try_lock(std::atomic<std::uint8_t>& flag) noexcept {
  // Relaxed look first; the exchange acquires, pairing with the holder's
  // release store of 0.
  return flag.load(std::memory_order_relaxed) == 0 &&
         flag.exchange(1, std::memory_order_acquire) == 0;
}

}  // namespace weft::detail
