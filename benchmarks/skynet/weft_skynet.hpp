// SPDX-License-Identifier: MIT
// skynet/weft_skynet.hpp -- skynet with weft, fork-join as in fib: spawn nine
// children, run the tenth inline (co_await of a task is a call), then await
// the nine handles, newest first (the newest is at the bottom of this
// worker's deque, where the join finds it and runs it inline if nobody
// stole it).
#pragma once

#include <array>

#include <weft/weft.hpp>

namespace skynet_bench {

inline weft::task<long> skynet_weft(long num, long size) {
  if (size == 1) co_return num;
  const long sub = size / 10;
  std::array<weft::join_handle<long>, 9> h;
  for (int i = 0; i < 9; ++i) h[i] = weft::spawn(skynet_weft(num + i * sub, sub));
  long sum = co_await skynet_weft(num + 9 * sub, sub);
  for (int i = 8; i >= 0; --i) sum += co_await h[i];
  co_return sum;
}

}  // namespace skynet_bench
