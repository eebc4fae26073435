// SPDX-License-Identifier: MIT
// peer/libfork_uts.cpp -- UTS with libfork, a task per node: fork all
// children but the last, call the last, join.  The results live in the frame
// up to kInlineChildren children and on the heap beyond, as in the weft and
// oneTBB variants.
#include <memory>

#include "peer/libfork_impl.hpp"

namespace peer_libfork {
namespace {

using uts_bench::tree;

constexpr auto uts_lf = [](auto self, const tree* t, std::uint64_t s, int depth)
                            LF_STATIC_CALL -> lf::task<long> {
  const int n = uts_bench::num_children(*t, s, depth);
  if (n == 0) co_return 1;
  long small[uts_bench::kInlineChildren];
  std::unique_ptr<long[]> big;
  long* r = small;
  if (n > uts_bench::kInlineChildren) {
    big = std::make_unique<long[]>(static_cast<std::size_t>(n));
    r = big.get();
  }
  for (int i = 0; i < n - 1; ++i)
    co_await lf::fork(&r[i], self)(t, uts_bench::child_state(s, i), depth + 1);
  co_await lf::call(&r[n - 1], self)(t, uts_bench::child_state(s, n - 1), depth + 1);
  co_await lf::join;
  long count = 1;
  for (int i = 0; i < n; ++i) count += r[i];
  co_return count;
};

}  // namespace

long uts(pool& p, const tree* t, std::uint64_t root) {
  return lf::sync_wait(p.get().lazy, uts_lf, t, root, 0);
}

}  // namespace peer_libfork
