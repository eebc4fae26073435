// SPDX-License-Identifier: MIT
// nqueens/weft_nqueens.hpp -- nqueens with weft: a task per placement.  Every
// free column but the last is spawned; the last one runs inline (co_await of
// a task is a call); then the handles are awaited newest first, as in skynet.
#pragma once

#include <array>
#include <cstdint>

#include <weft/weft.hpp>

#include "nqueens/serial.hpp"

namespace nqueens_bench {

inline weft::task<long> nqueens_weft(board b, std::uint32_t all) {
  if (b.cols == all) co_return 1;
  std::array<weft::join_handle<long>, kMaxN> h;
  int spawned = 0;
  long count = 0;
  std::uint32_t avail = free_cols(b, all);
  if (avail == 0) co_return 0;
  for (; (avail & (avail - 1)) != 0; avail &= avail - 1)
    h[spawned++] = weft::spawn(nqueens_weft(place(b, avail & -avail), all));
  count += co_await nqueens_weft(place(b, avail), all);
  while (spawned > 0) count += co_await h[--spawned];
  co_return count;
}

}  // namespace nqueens_bench
