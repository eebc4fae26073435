// SPDX-License-Identifier: MIT
// skynet/weft_fork_skynet.hpp -- skynet in weft's fork-join form
// (weft/fork.hpp): fork nine children (each runs at once; the loop's
// continuation is what a thief steals), call the tenth, join once.  The spawn
// form is skynet/weft_skynet.hpp.
#pragma once

#include <weft/weft.hpp>

namespace skynet_bench {

inline weft::fork_task<long> skynet_fork(long num, long size) {
  if (size == 1) co_return num;
  const long sub = size / 10;
  long r[9];
  for (int i = 0; i < 9; ++i) co_await weft::fork(r[i], skynet_fork(num + i * sub, sub));
  long sum = co_await skynet_fork(num + 9 * sub, sub);
  co_await weft::join();
  for (long v : r) sum += v;
  co_return sum;
}

}  // namespace skynet_bench
