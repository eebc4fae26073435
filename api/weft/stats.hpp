// SPDX-License-Identifier: MIT
// weft/stats.hpp -- runtime::stats(): what each worker did (tasks, steals,
// parks, busy time) and how long cancellations took (log2 histograms).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "weft/errors.hpp"

namespace weft {

// The number of cancel_kind values (explicit_request ... shutdown).
inline constexpr std::size_t kCancelKinds = 5;

// Durations in log2 buckets: counts[0] holds samples under 1 ns (0), counts[i]
// those in [2^(i-1), 2^i) ns; the last bucket also takes everything longer.
// count(), sum and max are exact; quantiles are approximate: a quantile is the
// upper edge of the bucket that holds it (so at most twice the true value),
// capped at the exact max.
struct latency_histogram {
  static constexpr std::size_t kBuckets = 48;  // the last starts at 2^46 ns (about 20 h)
  std::array<std::uint64_t, kBuckets> counts{};
  std::uint64_t sum_ns = 0;  // sum of all samples
  std::uint64_t max_ns = 0;  // the largest sample

  std::uint64_t count() const noexcept;
  std::chrono::nanoseconds max() const noexcept { return std::chrono::nanoseconds(max_ns); }
  std::chrono::nanoseconds mean() const noexcept;
  // q in [0, 1]: the upper edge of the bucket holding the sample of rank
  // ceil(q * count()), capped at max(); 0 when there is no sample.
  std::chrono::nanoseconds quantile(double q) const noexcept;
  std::chrono::nanoseconds p50() const noexcept { return quantile(0.5); }
  std::chrono::nanoseconds p99() const noexcept { return quantile(0.99); }
  // The bucket a sample of `ns` nanoseconds goes to.
  static std::size_t bucket_of(std::uint64_t ns) noexcept;
  // "n=12 p50=8.2us p99=31us max=30.5us" ("n=0" when empty).
  std::string summary() const;
  latency_histogram& operator+=(const latency_histogram& o) noexcept;
};

// What one worker did since the runtime started (or, in runtime_stats::
// outside, the threads that are not workers).  Every figure only grows.
struct worker_stats {
  // Tasks spawned from this worker (runtime::spawn or weft::spawn in a task
  // running here).  Fork-join children (weft/fork.hpp) are frames of their
  // task, not tasks: not counted.
  std::uint64_t spawned = 0;
  // Tasks that finished here, whatever the outcome (a value, an exception,
  // cancelled); a task may finish on another worker than it was spawned on.
  std::uint64_t completed = 0;
  // Of `completed`: finished as cancelled (a cancelled_error ended them, or
  // they were cancelled before they started), in total and by the kind of
  // the cancelled_error (cancelled_by[static_cast<size_t>(kind)]).  A task
  // that ends by rethrowing the cancelled_error of a task it awaited counts
  // too, with that error's kind.
  std::uint64_t cancelled = 0;
  std::array<std::uint64_t, kCancelKinds> cancelled_by{};
  // Of `completed`: finished with another exception.
  std::uint64_t failed = 0;
  std::uint64_t steals = 0;          // tasks this worker took from another's deque
  std::uint64_t steal_attempts = 0;  // deques it tried to rob (successful or not)
  // Tasks this worker put on the runtime's injection queue (a yield, a wake-up
  // of a task of this runtime); outside: spawns and wake-ups from other threads.
  std::uint64_t injected = 0;
  std::uint64_t parks = 0;  // times it went to sleep (a futex wait) for lack of work
  // Sleeping workers it woke (a spawn, a wake-up or a yield that found one).
  std::uint64_t wakeups = 0;
  // Time between finding work after an idle stretch and the next idle
  // stretch (32 fruitless looks for work): running tasks, plus looking for
  // work between them.  A simulation: virtual time of its steps.
  std::chrono::nanoseconds busy{0};
  // The longest time this worker stayed in one resume of a task from its loop
  // (the task between two resume points that go back to the loop; a chain
  // of tasks that hand over to each other by symmetric transfer, or a task
  // that joins its children inline, counts as one stretch).  Threaded
  // runtime: sampled by the timer thread at its tick (max(time_slice/4,
  // 50 us)); a lower bound, short by less than two ticks, and a stretch
  // shorter than one tick may show as 0.  Driven runtime: exact (its driver
  // reads the clock around each resume).  Simulation: virtual time.
  std::chrono::nanoseconds longest_run{0};

  std::uint64_t cancelled_of(cancel_kind k) const noexcept {
    return cancelled_by[static_cast<std::size_t>(k)];
  }
  worker_stats& operator+=(const worker_stats& o) noexcept;
};

// runtime::stats(): per worker, the threads outside the workers, the total,
// and the cancellation latency of the whole runtime.
//
// Exact once the runtime is quiet (no task running or queued, workers idle
// for longer than their spin): every figure is then what happened.  While
// tasks run, each figure is a recent value of its own (relaxed reads of
// counters other threads are writing): they need not agree with each other
// (e.g. completed may briefly exceed spawned read a moment earlier).
struct runtime_stats {
  // workers[i]: worker i; outside: what threads that are not workers of
  // this runtime did; total: the sum of both.
  std::vector<worker_stats> workers;
  worker_stats outside;
  worker_stats total;

  // Cancellation latency.  A request is stamped when it reaches the task
  // (cancel(), a timeout, a group, the shutdown's start), delivered when the
  // task receives it (the cancelled_error raised at its cancellation point,
  // or the unstarted task completed as cancelled; a fork-join tree: when its
  // first strand sees it), finished when the task ends by that
  // cancelled_error.  One sample per request that reaches each step:
  //   cancel_to_delivery: request -> delivered
  //   delivery_to_finish: delivered -> finished (the task's cleanup)
  //   cancel_to_finish:   request -> finished
  // Not sampled: a request that replaces one still pending (the first one's
  // stamp stays), a task that catches its cancellation and finishes
  // otherwise (no finish sample), a cancellation re-raised from another
  // task's outcome, spawns refused by a stopping runtime.  Request stamps are
  // kept per task in microseconds (32 bits): cancel_to_delivery has 1 us
  // resolution and wraps after 71 minutes.
  latency_histogram cancel_to_delivery;
  latency_histogram delivery_to_finish;
  latency_histogram cancel_to_finish;

  // A readable table: one row per worker, outside, total, then the three
  // histograms (docs/observability.md shows one).
  std::string to_string() const;
};

}  // namespace weft
