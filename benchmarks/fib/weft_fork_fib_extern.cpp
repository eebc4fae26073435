// SPDX-License-Identifier: MIT
// fib/weft_fork_fib_extern.cpp -- fib_fork_extern: the body of fib_fork
// (fib/weft_fork_fib.hpp), token for token, in a .cpp of its own.
#include "fib/weft_fork_fib_extern.hpp"

namespace fib_bench {

weft::fork_task<long> fib_fork_extern(int n) {
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib_fork_extern(n - 1));
  long b = co_await fib_fork_extern(n - 2);
  co_await weft::join();
  co_return a + b;
}

}  // namespace fib_bench
