// SPDX-License-Identifier: MIT
// fib/serial.hpp -- naive recursive fib, the serial reference and the floor
// every runtime is compared with.
#pragma once

namespace fib_bench {

inline long fib_serial(int n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

// fib(n) computed iteratively (for call counts: fib(n) makes 2*fib(n+1)-1 calls).
inline long fib_value(int n) {
  long a = 0, b = 1;
  for (int i = 0; i < n; ++i) {
    long t = a + b;
    a = b;
    b = t;
  }
  return a;
}

// Calls made by the naive recursion for fib(n).
inline long fib_calls(int n) { return 2 * fib_value(n + 1) - 1; }

}  // namespace fib_bench
