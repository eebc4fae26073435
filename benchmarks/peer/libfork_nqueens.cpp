// SPDX-License-Identifier: MIT
// peer/libfork_nqueens.cpp -- nqueens with libfork, a task per placement: fork
// every free column but the last, call the last, join (the weft and oneTBB
// variants' shape, not libfork's own nqueens benchmark, which copies boards).
#include "peer/libfork_impl.hpp"

namespace peer_libfork {
namespace {

using nqueens_bench::board;

constexpr auto nqueens_lf = [](auto self, board b, std::uint32_t all)
                                LF_STATIC_CALL -> lf::task<long> {
  if (b.cols == all) co_return 1;
  std::uint32_t avail = nqueens_bench::free_cols(b, all);
  if (avail == 0) co_return 0;
  long r[nqueens_bench::kMaxN];
  int forked = 0;
  for (; (avail & (avail - 1)) != 0; avail &= avail - 1, ++forked)
    co_await lf::fork(&r[forked], self)(nqueens_bench::place(b, avail & -avail), all);
  co_await lf::call(&r[forked], self)(nqueens_bench::place(b, avail), all);
  co_await lf::join;
  long count = 0;
  for (int i = 0; i <= forked; ++i) count += r[i];
  co_return count;
};

}  // namespace

long nqueens(pool& p, board b, std::uint32_t all) {
  return lf::sync_wait(p.get().lazy, nqueens_lf, b, all);
}

}  // namespace peer_libfork
