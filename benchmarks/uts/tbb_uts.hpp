// SPDX-License-Identifier: MIT
// uts/tbb_uts.hpp -- UTS with oneTBB task_group: a task per node; the last
// child runs inline, then wait.  Call it inside a tbb::task_arena::execute.
#pragma once

#include <oneapi/tbb/task_group.h>

#include <memory>

#include "uts/tree.hpp"

namespace uts_bench {

inline long uts_tbb(const tree* t, std::uint64_t s, int depth) {
  const int n = num_children(*t, s, depth);
  if (n == 0) return 1;
  long small[kInlineChildren];
  std::unique_ptr<long[]> big;
  long* r = small;
  if (n - 1 > kInlineChildren) {
    big = std::make_unique<long[]>(static_cast<std::size_t>(n - 1));
    r = big.get();
  }
  tbb::task_group g;
  for (int i = 0; i < n - 1; ++i) {
    long* slot = &r[i];
    const std::uint64_t cs = child_state(s, i);
    g.run([slot, t, cs, depth] { *slot = uts_tbb(t, cs, depth + 1); });
  }
  long count = 1 + uts_tbb(t, child_state(s, n - 1), depth + 1);
  g.wait();
  for (int i = 0; i < n - 1; ++i) count += r[i];
  return count;
}

}  // namespace uts_bench
