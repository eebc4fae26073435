// SPDX-License-Identifier: MIT
// uts/tree.hpp -- an unbalanced tree search (UTS) tree, our own small
// generator (not the UTS suite's SHA-1 one): every node carries a 64-bit
// state; child i of a node with state s has state mix(s + (i+1) * golden),
// a splitmix64 step, so any subtree can be generated independently of the
// rest (the tree is "splittable", as UTS requires).  Shapes, as in UTS:
//
//   geometric (like UTS T1): a node at depth < max_depth has
//     floor(log(1-u) / log(1-p)) children, p = 1/(1+b0), u uniform in [0,1)
//     from the node's state (a geometric distribution with mean b0); nodes at
//     max_depth are leaves.  Bushy, with subtrees of very different sizes.
//   binomial (like UTS T3): the root has root_children children; every other
//     node has m children with probability q, else none.  q*m just below 1
//     gives a few very deep, narrow subtrees: the hard case for load balance.
//
// The search counts the nodes.  The count for a given shape and seed is fixed;
// the serial search is the reference every parallel run is checked against.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace uts_bench {

struct tree {
  enum class shape { geometric, binomial };
  shape kind = shape::geometric;
  std::uint64_t seed = 19;
  // geometric
  double b0 = 4;
  int max_depth = 10;
  // binomial
  int root_children = 2000;
  double q = 0.124875;
  int m = 8;

  double log_1mp = 0;  // log(1 - 1/(1+b0)), set by prepare()

  void prepare() { log_1mp = std::log(1.0 - 1.0 / (1.0 + b0)); }

  std::string describe() const {
    char buf[160];
    if (kind == shape::geometric)
      std::snprintf(buf, sizeof buf, "geometric b0=%g depth=%d seed=%llu", b0, max_depth,
                    static_cast<unsigned long long>(seed));
    else
      std::snprintf(buf, sizeof buf, "binomial root=%d q=%g m=%d seed=%llu", root_children, q, m,
                    static_cast<unsigned long long>(seed));
    return buf;
  }
};

inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline std::uint64_t root_state(const tree& t) { return mix(t.seed + 0x9e3779b97f4a7c15ULL); }

inline std::uint64_t child_state(std::uint64_t s, int i) {
  return mix(s + 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(i + 1));
}

inline int num_children(const tree& t, std::uint64_t s, int depth) {
  const double u = static_cast<double>(s >> 11) * 0x1.0p-53;  // [0, 1)
  if (t.kind == tree::shape::geometric) {
    if (depth >= t.max_depth) return 0;
    return static_cast<int>(std::floor(std::log(1.0 - u) / t.log_1mp));
  }
  if (depth == 0) return t.root_children;
  return u < t.q ? t.m : 0;
}

// Children kept in a fixed array up to this many (more go to the heap).
inline constexpr int kInlineChildren = 16;

inline long uts_serial(const tree* t, std::uint64_t s, int depth) {
  const int n = num_children(*t, s, depth);
  long count = 1;
  for (int i = 0; i < n; ++i) count += uts_serial(t, child_state(s, i), depth + 1);
  return count;
}

}  // namespace uts_bench
