// SPDX-License-Identifier: MIT
// nqueens/weft_fork_nqueens.hpp -- nqueens in weft's fork-join form
// (weft/fork.hpp), a frame per placement: fork every free column but the
// last, call the last, join once.  The spawn form is nqueens/weft_nqueens.hpp.
#pragma once

#include <cstdint>

#include <weft/weft.hpp>

#include "nqueens/serial.hpp"

namespace nqueens_bench {

inline weft::fork_task<long> nqueens_fork(board b, std::uint32_t all) {
  if (b.cols == all) co_return 1;
  std::uint32_t avail = free_cols(b, all);
  if (avail == 0) co_return 0;
  long r[kMaxN];
  int forked = 0;
  for (; (avail & (avail - 1)) != 0; avail &= avail - 1)
    co_await weft::fork(r[forked++], nqueens_fork(place(b, avail & -avail), all));
  long count = co_await nqueens_fork(place(b, avail), all);
  co_await weft::join();
  for (int i = 0; i < forked; ++i) count += r[i];
  co_return count;
}

}  // namespace nqueens_bench
