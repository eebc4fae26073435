// SPDX-License-Identifier: MIT
// peer/libfork_peer.hpp -- the benchmark problems written with libfork, the
// optional peer (docs/benchmarks.md, "libfork").  This header does not
// include libfork: the variants are compiled in their own library
// (weft_bench_libfork, C++23 as libfork asks, built only when the CMake
// option WEFT_LIBFORK_DIR names a copy of libfork) so that the weft and oneTBB
// code of the programs is compiled exactly as without the option.  Programs
// call these functions only under #ifdef WEFT_BENCH_LIBFORK.
//
// Every variant has the shape of the weft and oneTBB ones beside it: fork all
// children but the last (lf::fork), run the last as a call (lf::call), join
// (lf::join).  The pool is libfork's lf::lazy_pool: its idle workers sleep, as
// weft's park and oneTBB's leave the arena, so that it does not take CPU from
// the runtime timed after it in the interleaved loop (lf::busy_pool spins).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nqueens/serial.hpp"
#include "uts/tree.hpp"

namespace peer_libfork {

// An lf::lazy_pool of `workers` threads.  The calling thread does not take
// part: lf::sync_wait submits the root task and blocks, as weft's block_on does.
class pool {
 public:
  explicit pool(unsigned workers);
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  unsigned workers() const { return workers_; }

  struct impl;
  impl& get() { return *impl_; }

 private:
  unsigned workers_;
  std::unique_ptr<impl> impl_;
};

// "libfork 3.8.0": the version in the headers this program was built with.
std::string version();

long fib(pool& p, int n);
long skynet(pool& p, long size);
long nqueens(pool& p, nqueens_bench::board b, std::uint32_t all);
long uts(pool& p, const uts_bench::tree* t, std::uint64_t root);

}  // namespace peer_libfork
