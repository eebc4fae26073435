// SPDX-License-Identifier: MIT
// peer/libfork_skynet.cpp -- skynet with libfork: fork nine children, call the
// tenth, join (skynet/serial.hpp describes the tree).
#include "peer/libfork_impl.hpp"

namespace peer_libfork {
namespace {

constexpr auto skynet_lf = [](auto self, long num, long size) LF_STATIC_CALL -> lf::task<long> {
  if (size == 1) co_return num;
  const long sub = size / 10;
  long r[10];
  for (int i = 0; i < 9; ++i) co_await lf::fork(&r[i], self)(num + i * sub, sub);
  co_await lf::call(&r[9], self)(num + 9 * sub, sub);
  co_await lf::join;
  long sum = 0;
  for (long v : r) sum += v;
  co_return sum;
};

}  // namespace

long skynet(pool& p, long size) { return lf::sync_wait(p.get().lazy, skynet_lf, 0L, size); }

}  // namespace peer_libfork
