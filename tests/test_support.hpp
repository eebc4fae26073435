// SPDX-License-Identifier: MIT
// tests/test_support.hpp -- shared helpers for weft's black-box tests.
//
// Rules every test here follows:
//   * No wall-clock sleeps as synchronisation.  Threads meet on latches,
//     atomics and join handles; no thread ever sleeps on the wall clock.
//     (weft::sleep_for inside a task is a thing under test and is fine.)
//   * Every concurrent test is bounded by a `watchdog` that aborts the process
//     with the test's name when it overruns (4x the bound under sanitizers), so a
//     hang is a failure with a message, never a stuck CI job.
//   * Time is asserted only as a generous upper bound ("woken well before the
//     5 s sleep ended": < 2 s), never as a performance goal.
//   * Iteration counts are scaled down under sanitizers with `scaled()`; the
//     scenarios stay the same.
//   * No capturing lambda temporary inside a co_await full-expression (g++ 12
//     double-frees it, docs/pitfalls.md): coroutines here are free
//     functions taking their state by pointer/reference, and that state is
//     declared before the runtime so it outlives every task.
#pragma once

#include <gtest/gtest.h>

#include <weft/weft.hpp>

#include <malloc.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "splitmix.hpp"  // runtime/: the project's one seeded generator

#ifndef WEFT_TEST_SANITIZER
#define WEFT_TEST_SANITIZER 0  // 0 normal build, 1 TSan, 2 ASan(+UBSan)
#endif

// LeakSanitizer runs with AddressSanitizer (g++ and clang spell it differently).
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_TEST_LSAN 1
#endif
#endif
#if defined(WEFT_TEST_LSAN)
#include <sanitizer/lsan_interface.h>
#endif

namespace weft_test {

// The ```cpp blocks of a markdown text, in order (the docs-examples tests
// check that each is copied from a test source); nullopt when a block is
// not terminated.
inline std::optional<std::vector<std::string>> cpp_blocks(const std::string& doc) {
  std::vector<std::string> blocks;
  for (std::size_t pos = doc.find("```cpp\n"); pos != std::string::npos;
       pos = doc.find("```cpp\n", pos)) {
    pos += 7;
    const std::size_t end = doc.find("```\n", pos);
    if (end == std::string::npos) return std::nullopt;
    blocks.push_back(doc.substr(pos, end - pos));
    pos = end + 4;
  }
  return blocks;
}

// `using namespace weft_test;` also brings these into a test file, with
// std::chrono_literals: the names nearly every test spells.
using namespace std::chrono_literals;
using weft::cancel_kind;
using weft::cancelled_error;

using clock_type = std::chrono::steady_clock;

inline constexpr int kSanitizer = WEFT_TEST_SANITIZER;
inline constexpr bool kTsan = kSanitizer == 1;
inline constexpr bool kAsan = kSanitizer == 2;

// An iteration count for this build: `normal` in plain builds, `tsan` under
// ThreadSanitizer (30-45x slower here), `asan` under AddressSanitizer.
constexpr long scaled(long normal, long tsan, long asan) {
  return kTsan ? tsan : kAsan ? asan : normal;
}
constexpr long scaled(long normal, long sanitized) { return scaled(normal, sanitized, sanitized); }

// Wall-time bounds are stretched this much under sanitizers.
inline constexpr int kSlowdown = kSanitizer == 0 ? 1 : 4;

inline std::string current_test_name() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return "(no test)";
  return std::string(info->test_suite_name()) + "." + info->name();
}

// ctest kills a test after 120 s (tests/CMakeLists.txt, TIMEOUT): the watchdog
// fires a little earlier so that a hang names itself.
inline constexpr std::chrono::seconds kWatchdogCap{115};

// Aborts the process (with a message naming the test) when the test runs
// longer than `bound` (x kSlowdown, at most kWatchdogCap), or, when a stall
// bound is given, when kick() has not been called for that long.  Destroying
// it disarms it.
class watchdog {
 public:
  explicit watchdog(std::chrono::seconds bound = 60s, std::chrono::seconds stall = 0s,
                    std::string what = {})
      : what_(what.empty() ? current_test_name() : std::move(what)),
        bound_(std::min(bound * kSlowdown, kWatchdogCap)),
        stall_(std::min(stall * kSlowdown, kWatchdogCap)),
        start_(clock_type::now()),
        last_kick_ns_(0) {
    thread_ = std::jthread([this](std::stop_token st) { run(st); });
  }
  ~watchdog() {
    thread_.request_stop();
    cv_.notify_all();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  // Report progress (for stall bounds).  Cheap: one relaxed store.
  void kick() noexcept {
    last_kick_ns_.store((clock_type::now() - start_).count(), std::memory_order_relaxed);
  }
  // Name what the test is doing right now (appears in the abort message).
  void phase(const char* p) noexcept { phase_.store(p, std::memory_order_relaxed); }

 private:
  void run(std::stop_token st) {
    std::unique_lock lock(mu_);
    const auto deadline = start_ + bound_;
    while (!st.stop_requested()) {
      auto now = clock_type::now();
      if (now >= deadline) fail("exceeded its bound of", bound_);
      if (stall_.count() > 0) {
        auto last = start_ + clock_type::duration(last_kick_ns_.load(std::memory_order_relaxed));
        if (now - last >= stall_) fail("made no progress for", stall_);
      }
      auto next = deadline;
      if (stall_.count() > 0) next = std::min(next, now + std::chrono::milliseconds(100));
      cv_.wait_until(lock, st, next, [] { return false; });
    }
  }
  [[noreturn]] void fail(const char* why, std::chrono::seconds s) {
    const char* p = phase_.load(std::memory_order_relaxed);
    std::fprintf(stderr, "\nWATCHDOG: %s %s %lld s (phase: %s); aborting\n", what_.c_str(), why,
                 static_cast<long long>(s.count()), p ? p : "-");
    std::fflush(stderr);
    std::abort();
  }

  std::string what_;
  std::chrono::seconds bound_;
  std::chrono::seconds stall_;
  clock_type::time_point start_;
  std::atomic<clock_type::rep> last_kick_ns_;
  std::atomic<const char*> phase_{nullptr};
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;  // last: started after every other member exists
};

// Busy work of a length that differs each round (up to `span` steps): moves
// one side of a race across the other's steps, round after round.
inline void jitter(long round, long span) {
  static std::atomic<long> sink{0};
  // Relaxed: a busy loop's counter that nobody reads.
  for (long i = 0; i < (round * 37) % span; ++i) sink.fetch_add(1, std::memory_order_relaxed);
}

// Spin (yielding the CPU) until pred() holds or `bound` passes.  Returns
// whether pred() held.  For polling state the API exposes only as a query
// (join_handle::done()), never as a substitute for a latch.
template <class Pred>
bool spin_until(Pred pred, std::chrono::milliseconds bound = 10'000ms) {
  const auto deadline = clock_type::now() + bound * kSlowdown;
  while (!pred()) {
    if (clock_type::now() >= deadline) return pred();
    std::this_thread::yield();
  }
  return true;
}

// Spin (yielding) until pred() holds, with no bound of its own: the test's
// watchdog bounds it.  For a state the scenario must reach before it goes on.
template <class Pred>
void await_true(Pred pred) {
  while (!pred()) std::this_thread::yield();
}

// Expects f() to throw an E; returns it, or nothing after a failure (f()
// threw nothing).  Any other exception leaves the helper, and fails the test.
template <class E, class F>
std::optional<E> expect_throws(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  ADD_FAILURE() << "no exception of the expected type";
  return std::nullopt;
}

// Expects f() to throw cancelled_error; returns it (or a dummy after a failure).
template <class F>
cancelled_error expect_cancelled(F&& f) {
  try {
    f();
  } catch (const cancelled_error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something else: " << e.what();
    return cancelled_error("<wrong exception>", cancel_kind::timeout);
  }
  ADD_FAILURE() << "did not throw cancelled_error";
  return cancelled_error("<no exception>", cancel_kind::timeout);
}

// Wait (outside the runtime) until the handle reports done(), bounded.
template <class H>
bool wait_done(const H& h, std::chrono::milliseconds bound = 10'000ms) {
  return spin_until([&] { return h.done(); }, bound);
}

// A busy gap of about `d` of wall time, used only to vary timing (e.g. to let
// workers go idle between spawns).  Synchronises nothing.
inline void busy_gap(std::chrono::nanoseconds d) {
  const auto end = clock_type::now() + d;
  while (clock_type::now() < end) {
  }
}

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Counts constructions and destructions of a RAII local inside tasks.
struct raii_counter {
  std::atomic<long> constructed{0};
  std::atomic<long> destroyed{0};
};
class raii_probe {
 public:
  explicit raii_probe(raii_counter& c) : c_(&c) {
    c_->constructed.fetch_add(1, std::memory_order_relaxed);
  }
  raii_probe(const raii_probe&) = delete;
  raii_probe& operator=(const raii_probe&) = delete;
  ~raii_probe() { c_->destroyed.fetch_add(1, std::memory_order_relaxed); }

 private:
  raii_counter* c_;
};

// runtime_options with only the worker count set (designated initialisers
// would warn under -Wextra about the other members).
inline weft::runtime_options with_workers(unsigned n) {
  weft::runtime_options o;
  o.workers = n;
  return o;
}

// ---- small coroutines used across the test files ----

inline weft::task<int> value_task(int v) { co_return v; }
inline weft::task<long> long_value_task(long v) { co_return v; }
inline weft::task<void> void_task() { co_return; }

// Captures the frame counter at construction; use check() after the runtime
// and every handle are gone.
struct frame_baseline {
  std::int64_t start = weft::diagnostics::live_frames();
  std::int64_t now() const { return weft::diagnostics::live_frames(); }
};

// Tells LeakSanitizer that the frame of `h`'s task is leaked on purpose (a
// task that can never finish is reported and leaked, as documented).
template <class H>
void expect_leaked(const H& h) {
#if defined(WEFT_TEST_LSAN)
  __lsan_ignore_object(weft::detail::access::handle(h).address());
#else
  (void)h;
#endif
}

// Runs body(rt) on a runtime of `workers` workers; no frame may outlive the
// runtime.  State the tasks use is declared by the caller, before the call.
template <class Body>
void run_leaving_no_frame(unsigned workers, Body body) {
  const frame_baseline frames;
  {
    weft::runtime rt(with_workers(workers));
    body(rt);
  }
  EXPECT_EQ(frames.now(), frames.start);
}

// Runs make()'s task to the end on a runtime of `workers` workers (make() is
// called while the runtime exists): the task must return `want`, and no frame
// may outlive the runtime.
template <class Make, class T>
void expect_result_leaving_no_frame(unsigned workers, Make make, const T& want) {
  run_leaving_no_frame(workers, [&](weft::runtime& rt) { EXPECT_EQ(rt.block_on(make()), want); });
}

// splitmix64 (runtime/splitmix.hpp): deterministic per seed, cheap, fine for
// tests; the seed is spread first, so that neighbouring seeds start far apart.
struct rng : weft::detail::splitmix64 {
  explicit rng(std::uint64_t seed)
      : splitmix64(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
};

// Bytes allocated and not yet freed, process-wide (the sanitizer's allocator
// under ASan/TSan, glibc's arenas otherwise).  For "nothing kept" checks, after
// a warm-up round has filled the runtime's frame caches.
#if WEFT_TEST_SANITIZER != 0
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
inline long long allocated_bytes() {
  return static_cast<long long>(__sanitizer_get_current_allocated_bytes());
}
#else
inline long long allocated_bytes() {
  const struct mallinfo2 mi = ::mallinfo2();
  return static_cast<long long>(mi.uordblks + mi.hblkhd);  // arenas in use + mmapped
}
#endif

}  // namespace weft_test
