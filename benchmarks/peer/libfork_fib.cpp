// SPDX-License-Identifier: MIT
// peer/libfork_fib.cpp -- fib with libfork: fork fib(n-1), call fib(n-2), join.
#include "peer/libfork_impl.hpp"

namespace peer_libfork {
namespace {

constexpr auto fib_lf = [](auto self, int n) LF_STATIC_CALL -> lf::task<long> {
  if (n < 2) co_return n;
  long a = 0, b = 0;
  co_await lf::fork(&a, self)(n - 1);
  co_await lf::call(&b, self)(n - 2);
  co_await lf::join;
  co_return a + b;
};

}  // namespace

long fib(pool& p, int n) { return lf::sync_wait(p.get().lazy, fib_lf, n); }

}  // namespace peer_libfork
