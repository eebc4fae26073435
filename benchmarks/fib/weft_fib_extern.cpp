// SPDX-License-Identifier: MIT
// fib/weft_fib_extern.cpp -- fib_weft_extern: the body of fib_weft
// (fib/weft_fib.hpp), token for token, in a .cpp of its own.
#include "fib/weft_fib_extern.hpp"

namespace fib_bench {

weft::task<long> fib_weft_extern(int n) {
  if (n < 2) co_return n;
  auto h = weft::spawn(fib_weft_extern(n - 1));
  long b = co_await fib_weft_extern(n - 2);
  long a = co_await h;
  co_return a + b;
}

}  // namespace fib_bench
