// SPDX-License-Identifier: MIT
// uts/weft_fork_uts.hpp -- UTS in weft's fork-join form (weft/fork.hpp), a
// frame per node: fork all children but the last, call the last, join once.
// The results live in the frame up to kInlineChildren children and on the
// heap beyond (allocated before the first fork: nothing may throw between a
// fork and its join), as in the other variants.  The spawn form is
// uts/weft_uts.hpp.
#pragma once

#include <cstdint>
#include <memory>

#include <weft/weft.hpp>

#include "uts/tree.hpp"

namespace uts_bench {

inline weft::fork_task<long> uts_fork(const tree* t, std::uint64_t s, int depth) {
  const int n = num_children(*t, s, depth);
  if (n == 0) co_return 1;
  long small[kInlineChildren];
  std::unique_ptr<long[]> big;
  long* r = small;
  if (n - 1 > kInlineChildren) {
    big = std::make_unique<long[]>(static_cast<std::size_t>(n - 1));
    r = big.get();
  }
  for (int i = 0; i < n - 1; ++i)
    co_await weft::fork(r[i], uts_fork(t, child_state(s, i), depth + 1));
  long count = 1 + co_await uts_fork(t, child_state(s, n - 1), depth + 1);
  co_await weft::join();
  for (int i = 0; i < n - 1; ++i) count += r[i];
  co_return count;
}

}  // namespace uts_bench
