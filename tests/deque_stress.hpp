// tests/deque_stress.hpp -- the exactly-once stress of the Chase-Lev deque,
// shared by deque_test.cpp (the real deque) and deque_broken_test.cpp (a
// deliberately broken variant that the stress must catch).
//
// What makes it bite (../shared/notes/deque.md): a tiny initial capacity so the
// buffer grows under thieves, the owner taking right after most pushes so the
// deque sits at size 0-1 where take and steal race for the last item, and
// several thieves.  It counts how many steal attempts met a deque of size <= 1
// so a test can require that the boundary was really exercised.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "weft/detail/deque.hpp"

namespace weft_test {

struct deque_stress_result {
  std::int64_t items = 0;
  std::int64_t lost = 0;        // taken by nobody
  std::int64_t duplicated = 0;  // taken more than once
  std::int64_t boundary_steals = 0;  // steal attempts that saw size <= 1
  std::int64_t steals = 0;
};

inline deque_stress_result run_deque_stress(int items, int thieves, std::uint64_t seed,
                                            int take_every = 1) {
  struct item_t {
    int id;
  };
  std::vector<item_t> pool(static_cast<std::size_t>(items));
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(items));
  for (int i = 0; i < items; ++i) pool[static_cast<std::size_t>(i)].id = i;
  weft::detail::chase_lev_deque<item_t*> dq(2);
  // Relaxed flags: the threads only need to stop eventually; the counts are
  // read after join().
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> boundary{0}, steals{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < thieves; ++t) {
    ts.emplace_back([&] {
      std::int64_t local_boundary = 0, local_steals = 0;
      while (!done.load(std::memory_order_relaxed)) {
        if (dq.size_hint() <= 1) ++local_boundary;
        item_t* got = nullptr;
        if (dq.steal(got) == weft::detail::steal_result::success) {
          ++local_steals;
          seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
        }
      }
      boundary.fetch_add(local_boundary, std::memory_order_relaxed);
      steals.fetch_add(local_steals, std::memory_order_relaxed);
    });
  }
  std::mt19937_64 rng(seed);
  for (int i = 0; i < items; ++i) {
    dq.push(&pool[static_cast<std::size_t>(i)]);
    // Mostly take right away (size 0-1); sometimes let it grow (forces the
    // buffer to double while thieves read it).
    if (take_every > 0 && rng() % static_cast<std::uint64_t>(take_every + 1) != 0) {
      if (item_t* got = dq.take()) seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
    }
    if (rng() % 4096 == 0) {
      // A burst: push a few hundred before taking again.
      int burst = static_cast<int>(rng() % 300);
      for (int k = 0; k < burst && i + 1 < items; ++k) dq.push(&pool[static_cast<std::size_t>(++i)]);
    }
  }
  while (item_t* got = dq.take()) seen[static_cast<std::size_t>(got->id)].fetch_add(1, std::memory_order_relaxed);
  // Thieves may still hold nothing: the deque is empty now.
  done.store(true, std::memory_order_relaxed);
  for (auto& t : ts) t.join();
  deque_stress_result r;
  r.items = items;
  for (auto& s : seen) {
    int v = s.load(std::memory_order_relaxed);
    if (v == 0) ++r.lost;
    if (v > 1) r.duplicated += v - 1;
  }
  r.boundary_steals = boundary.load(std::memory_order_relaxed);
  r.steals = steals.load(std::memory_order_relaxed);
  return r;
}

}  // namespace weft_test
