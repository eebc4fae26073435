// SPDX-License-Identifier: MIT
// skynet/tbb_skynet.hpp -- skynet with oneTBB task_group: run nine children
// as tasks, compute the tenth inline, wait.  Call it inside a
// tbb::task_arena::execute to choose the number of threads.
#pragma once

#include <oneapi/tbb/task_group.h>

namespace skynet_bench {

inline long skynet_tbb(long num, long size) {
  if (size == 1) return num;
  const long sub = size / 10;
  long r[9];
  tbb::task_group g;
  for (int i = 0; i < 9; ++i) g.run([&r, i, num, sub] { r[i] = skynet_tbb(num + i * sub, sub); });
  long sum = skynet_tbb(num + 9 * sub, sub);
  g.wait();
  for (long v : r) sum += v;
  return sum;
}

}  // namespace skynet_bench
