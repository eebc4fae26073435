// SPDX-License-Identifier: MIT
// fib/tbb_fib.hpp -- fib with oneTBB task_group: run one child as a task,
// compute the other inline, wait.  Call it inside a tbb::task_arena::execute
// to choose the number of threads.
#pragma once

#include <oneapi/tbb/task_group.h>

namespace fib_bench {

inline long fib_tbb(int n) {
  if (n < 2) return n;
  long a = 0;
  tbb::task_group g;
  g.run([&a, n] { a = fib_tbb(n - 1); });
  const long b = fib_tbb(n - 2);
  g.wait();
  return a + b;
}

}  // namespace fib_bench
