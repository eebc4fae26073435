// SPDX-License-Identifier: MIT
// nqueens/serial.hpp -- count the ways to place n non-attacking queens, one row
// at a time, as a plain recursive function.
//
// A partial placement is three bitmasks: columns taken, and the diagonals
// attacked in the next row going left and right.  Every queen placed (every
// node of the search tree below the root) is one task in the parallel
// variants.  n <= kMaxN.
#pragma once

#include <cstdint>

namespace nqueens_bench {

inline constexpr int kMaxN = 16;

struct board {
  std::uint32_t cols, left, right;
};

inline std::uint32_t full_mask(int n) { return (1u << n) - 1; }

inline std::uint32_t free_cols(const board& b, std::uint32_t all) {
  return ~(b.cols | b.left | b.right) & all;
}

inline board place(const board& b, std::uint32_t bit) {
  return {b.cols | bit, (b.left | bit) << 1, (b.right | bit) >> 1};
}

inline long nqueens_serial(board b, std::uint32_t all) {
  if (b.cols == all) return 1;
  long count = 0;
  for (std::uint32_t avail = free_cols(b, all); avail != 0; avail &= avail - 1)
    count += nqueens_serial(place(b, avail & -avail), all);
  return count;
}

// Nodes of the search tree below the root (= tasks per run in the parallel
// variants).
inline long nqueens_placements(board b, std::uint32_t all) {
  long nodes = 0;
  for (std::uint32_t avail = free_cols(b, all); avail != 0; avail &= avail - 1)
    nodes += 1 + nqueens_placements(place(b, avail & -avail), all);
  return nodes;
}

// Known solution counts (OEIS A000170), for n = 0..16.
inline long nqueens_known(int n) {
  static const long k[] = {1,   1,   0,    0,     2,     10,     4,       40,      92,
                           352, 724, 2680, 14200, 73712, 365596, 2279184, 14772512};
  return k[n];
}

}  // namespace nqueens_bench
