// SPDX-License-Identifier: MIT
// nqueens/tbb_nqueens.hpp -- nqueens with oneTBB task_group: a task per
// placement; the last free column runs inline, then wait.  Call it inside a
// tbb::task_arena::execute to choose the number of threads.
#pragma once

#include <oneapi/tbb/task_group.h>

#include <cstdint>

#include "nqueens/serial.hpp"

namespace nqueens_bench {

inline long nqueens_tbb(board b, std::uint32_t all) {
  if (b.cols == all) return 1;
  std::uint32_t avail = free_cols(b, all);
  if (avail == 0) return 0;
  long r[kMaxN];
  int spawned = 0;
  tbb::task_group g;
  for (; (avail & (avail - 1)) != 0; avail &= avail - 1) {
    const board child = place(b, avail & -avail);
    long* slot = &r[spawned++];
    g.run([slot, child, all] { *slot = nqueens_tbb(child, all); });
  }
  long count = nqueens_tbb(place(b, avail), all);
  g.wait();
  for (int i = 0; i < spawned; ++i) count += r[i];
  return count;
}

}  // namespace nqueens_bench
