// SPDX-License-Identifier: MIT
// skynet/serial.hpp -- the skynet tree as a plain recursive function.
//
// skynet(num, size): a node covering leaves [num, num + size) has ten children
// covering a tenth each; a leaf (size 1) returns its index.  The root returns
// the sum of all leaf indices, size * (size - 1) / 2.  size must be a power of
// ten.  With 10^d leaves the tree has (10^(d+1) - 1) / 9 nodes (every node is
// a task in the parallel variants).
#pragma once

namespace skynet_bench {

inline long skynet_serial(long num, long size) {
  if (size == 1) return num;
  const long sub = size / 10;
  long sum = 0;
  for (int i = 0; i < 10; ++i) sum += skynet_serial(num + i * sub, sub);
  return sum;
}

inline long skynet_expected(long size) { return size * (size - 1) / 2; }

inline double skynet_nodes(long size) {
  double n = 0;
  for (long s = size; s >= 1; s /= 10) n += static_cast<double>(size / s);
  return n;
}

}  // namespace skynet_bench
