// SPDX-License-Identifier: MIT
// fib/weft_fork_fib.hpp -- fib in weft's fork-join form (weft/fork.hpp):
// fork one child (it runs now; this frame's continuation may be stolen), call
// the other, join.  The spawn form of the same problem is fib/weft_fib.hpp.
// Run it from a weft::task (co_await) or through weft::as_task for block_on.
#pragma once

#include <weft/weft.hpp>

namespace fib_bench {

inline weft::fork_task<long> fib_fork(int n) {
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib_fork(n - 1));
  long b = co_await fib_fork(n - 2);
  co_await weft::join();
  co_return a + b;
}

}  // namespace fib_bench
