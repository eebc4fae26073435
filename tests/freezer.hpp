// SPDX-License-Identifier: MIT
// tests/freezer.hpp -- holds a race window open that is a few instructions
// wide, which no amount of plain repetition hits.
//
// The thread that makes the racing call does so inside a `freezable_region`
// (in a loop, where the call must be caught at an arbitrary point); the test
// sends it a signal whose handler parks it at whatever instruction it was on
// (if it was inside the region), checks from outside that the frozen thread
// holds no lock the rest of the scenario needs, plays the other side of the
// race, and thaws it.  Each freeze is one repetition of the scenario at an
// arbitrary point.  A frozen thread must not be in the middle of taking a
// mutex either: had it just been handed the mutex's wake-up, the other
// waiters would sleep on (glibc wakes one waiter per unlock).
#pragma once

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <thread>

namespace weft_test {

namespace freeze_detail {

inline constexpr int kIdle = 0, kAsked = 1, kFrozen = 2, kDeclined = 3, kThawed = 4;
inline std::atomic<int> g_freeze{kIdle};
inline thread_local volatile std::sig_atomic_t t_freezable = 0;

inline long futex(std::atomic<int>* word, int op, int val) {
  static_assert(sizeof(std::atomic<int>) == sizeof(int));
  return syscall(SYS_futex, reinterpret_cast<int*>(word), op, val, nullptr, nullptr, 0);
}

inline void on_freeze_signal(int) {
  const int saved = errno;
  if (t_freezable == 0) {
    g_freeze.store(kDeclined, std::memory_order_release);
  } else {
    g_freeze.store(kFrozen, std::memory_order_release);
    // Most freezes are short (the test looks and thaws): spin first, so that a
    // thaw does not pay for waking a sleeping thread.
    for (int spins = 0; g_freeze.load(std::memory_order_acquire) == kFrozen; ++spins) {
      if (spins < 100'000) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        futex(&g_freeze, FUTEX_WAIT_PRIVATE, kFrozen);
      }
    }
    g_freeze.store(kIdle, std::memory_order_release);
  }
  errno = saved;
}

}  // namespace freeze_detail

// Marks the code a thread may be frozen in.
struct freezable_region {
  freezable_region() noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    freeze_detail::t_freezable = 1;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~freezable_region() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    freeze_detail::t_freezable = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  freezable_region(const freezable_region&) = delete;
  freezable_region& operator=(const freezable_region&) = delete;
};

class freezer {
 public:
  freezer() {
    struct sigaction sa{};
    sa.sa_handler = freeze_detail::on_freeze_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, &old_);
  }
  ~freezer() { sigaction(SIGUSR2, &old_, nullptr); }
  freezer(const freezer&) = delete;
  freezer& operator=(const freezer&) = delete;

  // Interrupts `t` wherever it is.  True: it was inside a freezable region and
  // now waits in the signal handler until thaw().  The thread must be alive.
  bool try_freeze(pthread_t t) {
    using namespace freeze_detail;
    g_freeze.store(kAsked, std::memory_order_release);
    pthread_kill(t, SIGUSR2);
    int s;
    while ((s = g_freeze.load(std::memory_order_acquire)) == kAsked) std::this_thread::yield();
    if (s == kFrozen) return true;
    g_freeze.store(kIdle, std::memory_order_release);
    return false;
  }
  void thaw() {
    using namespace freeze_detail;
    g_freeze.store(kThawed, std::memory_order_release);
    futex(&g_freeze, FUTEX_WAKE_PRIVATE, INT_MAX);
    while (g_freeze.load(std::memory_order_acquire) != kIdle) std::this_thread::yield();
  }

 private:
  struct sigaction old_{};
};

}  // namespace weft_test
