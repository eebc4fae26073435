// SPDX-License-Identifier: MIT
// fib/weft_fib.hpp -- fib with weft, written the way the docs recommend for
// fork-join: spawn one child, await the other inline (a call), then await the
// spawned child's handle.  Every call with n >= 2 forks one task.
#pragma once

#include <weft/weft.hpp>

namespace fib_bench {

inline weft::task<long> fib_weft(int n) {
  if (n < 2) co_return n;
  auto h = weft::spawn(fib_weft(n - 1));
  long b = co_await fib_weft(n - 2);
  long a = co_await h;
  co_return a + b;
}

}  // namespace fib_bench
