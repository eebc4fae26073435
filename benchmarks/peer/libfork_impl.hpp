// SPDX-License-Identifier: MIT
// peer/libfork_impl.hpp -- what the libfork variants (peer/libfork_*.cpp)
// share: the pool's definition.  Included only by the weft_bench_libfork
// library, which is compiled with libfork's headers.
#pragma once

#include <libfork.hpp>

#include "peer/libfork_peer.hpp"

namespace peer_libfork {

struct pool::impl {
  explicit impl(unsigned workers) : lazy(workers) {}
  lf::lazy_pool lazy;
};

}  // namespace peer_libfork
