// SPDX-License-Identifier: MIT
// tests/deque_stress.hpp -- the exactly-once stress of the Chase-Lev deque,
// shared by deque_test.cpp (the real deque) and deque_broken_check.cpp (a
// deliberately broken variant that the stress must catch).
//
// What makes it bite (docs/pitfalls.md): a tiny initial capacity so the
// buffer grows under thieves, the owner taking right after most pushes so the
// deque sits at size 0-1 where take and steal race for the last item, and
// several thieves.  It counts how many steal attempts met a deque of size <= 1
// so a test can require that the boundary was really exercised.
#pragma once

#include <atomic>
#include <cstdint>
#include <latch>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "weft/detail/deque.hpp"

namespace weft_test {

// From per-item take counts: items taken by nobody, and takes beyond the
// first.  Read after every taker was joined (relaxed is enough then).
struct take_tally {
  std::int64_t lost = 0;
  std::int64_t duplicated = 0;
};
inline take_tally tally_takes(const std::vector<std::atomic<int>>& seen, std::size_t n) {
  take_tally t;
  for (std::size_t i = 0; i < n; ++i) {
    const int v = seen[i].load(std::memory_order_relaxed);
    if (v == 0) ++t.lost;
    if (v > 1) t.duplicated += v - 1;
  }
  return t;
}

struct deque_stress_result {
  std::int64_t items = 0;
  std::int64_t lost = 0;             // taken by nobody
  std::int64_t duplicated = 0;       // taken more than once
  std::int64_t boundary_steals = 0;  // steal attempts that saw size <= 1
  std::int64_t steals = 0;
};

// Pushes at least `items` items (more, up to `max_items`, until the thieves
// have met the size-0/1 boundary `min_boundary` times and stolen at least one
// item: on a loaded machine or under TSan a thief may get little CPU while the
// owner runs, and a stress that never met the boundary, or in which no thief
// ever won a race, proves nothing).  Thieves are all running
// before the owner pushes its first item.
inline deque_stress_result run_deque_stress(
    int items, int thieves, std::uint64_t seed, int take_every = 1, std::int64_t min_boundary = 0,
    int max_items = 0, weft::detail::fence_mode mode = weft::detail::fence_mode::adaptive) {
  struct item_t {
    int id;
  };
  if (max_items < items) max_items = items;
  std::vector<item_t> pool(static_cast<std::size_t>(max_items));
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(max_items));
  for (int i = 0; i < max_items; ++i) pool[static_cast<std::size_t>(i)].id = i;
  weft::detail::chase_lev_deque<item_t*> dq(2, mode);
  // Relaxed flags and counters: the threads only need to stop eventually;
  // the counts are read again after join(), which synchronises.
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> boundary{0}, steals{0};
  std::atomic<bool> stole{false};  // some thief took an item
  std::latch started(thieves + 1);
  std::vector<std::thread> ts;
  for (int t = 0; t < thieves; ++t) {
    ts.emplace_back([&] {
      started.count_down();
      std::int64_t local_boundary = 0, local_steals = 0, published = 0;
      while (!done.load(std::memory_order_relaxed)) {
        if (dq.size_hint() <= 1) ++local_boundary;
        item_t* got = nullptr;
        if (dq.steal(got) == weft::detail::steal_result::success) {
          // Relaxed: a progress hint for the owner's stopping rule.
          if (++local_steals == 1) stole.store(true, std::memory_order_relaxed);
          seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
        }
        if (local_boundary - published >= 64) {
          // Relaxed: a progress hint for the owner's stopping rule.
          boundary.fetch_add(local_boundary - published, std::memory_order_relaxed);
          published = local_boundary;
        }
      }
      // Relaxed: read after join().
      boundary.fetch_add(local_boundary - published, std::memory_order_relaxed);
      steals.fetch_add(local_steals, std::memory_order_relaxed);
    });
  }
  started.arrive_and_wait();
  std::mt19937_64 rng(seed);
  int pushed = 0;
  auto enough = [&] {
    if (pushed >= max_items) return true;
    // Relaxed: see above.
    return pushed >= items && boundary.load(std::memory_order_relaxed) >= min_boundary &&
           stole.load(std::memory_order_relaxed);
  };
  while (!enough()) {
    item_t* just_pushed = &pool[static_cast<std::size_t>(pushed++)];
    dq.push(just_pushed);
    // Mostly take right away (size 0-1); sometimes let it grow (forces the
    // buffer to double while thieves read it).  Half of the takes are
    // take_if(just pushed), the joiner's "is my child still here?".
    if (take_every > 0 && rng() % static_cast<std::uint64_t>(take_every + 1) != 0) {
      if (rng() % 2 == 0) {
        if (dq.take_if(just_pushed))
          seen[static_cast<std::size_t>(just_pushed->id)].fetch_add(1, std::memory_order_relaxed);
      } else if (item_t* got = dq.take()) {
        seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (rng() % 4096 == 0) {
      // A burst: push a few hundred before taking again.
      int burst = static_cast<int>(rng() % 300);
      for (int k = 0; k < burst && pushed < max_items; ++k)
        dq.push(&pool[static_cast<std::size_t>(pushed++)]);
    }
  }
  while (item_t* got = dq.take())
    seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
  // Thieves may still hold nothing: the deque is empty now.
  done.store(true, std::memory_order_relaxed);
  for (auto& t : ts) t.join();
  deque_stress_result r;
  r.items = pushed;
  const take_tally t = tally_takes(seen, static_cast<std::size_t>(pushed));
  r.lost = t.lost;
  r.duplicated = t.duplicated;
  r.boundary_steals = boundary.load(std::memory_order_relaxed);
  r.steals = steals.load(std::memory_order_relaxed);
  return r;
}

}  // namespace weft_test
