// SPDX-License-Identifier: MIT
// uts/weft_uts.hpp -- UTS with weft: a task per node.  All children but the
// last are spawned, the last runs inline (a call), then the handles are
// awaited newest first, as in skynet.
#pragma once

#include <array>
#include <memory>

#include <weft/weft.hpp>

#include "uts/tree.hpp"

namespace uts_bench {

inline weft::task<long> uts_weft(const tree* t, std::uint64_t s, int depth) {
  const int n = num_children(*t, s, depth);
  if (n == 0) co_return 1;
  std::array<weft::join_handle<long>, kInlineChildren> small;
  std::unique_ptr<weft::join_handle<long>[]> big;
  weft::join_handle<long>* h = small.data();
  if (n - 1 > kInlineChildren) {
    big = std::make_unique<weft::join_handle<long>[]>(static_cast<std::size_t>(n - 1));
    h = big.get();
  }
  for (int i = 0; i < n - 1; ++i) h[i] = weft::spawn(uts_weft(t, child_state(s, i), depth + 1));
  long count = 1 + co_await uts_weft(t, child_state(s, n - 1), depth + 1);
  for (int i = n - 2; i >= 0; --i) count += co_await h[i];
  co_return count;
}

}  // namespace uts_bench
