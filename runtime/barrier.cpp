// SPDX-License-Identifier: MIT
// runtime/barrier.cpp -- the heavy half of the deque's asymmetric fence
// (weft/detail/deque.hpp, docs/architecture.md "The deque's fences").
//
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) makes every thread of this
// process that is running on a CPU execute a full memory barrier before the
// call returns (an interrupt to each such CPU); a thread that is not running
// passes a full barrier when it is scheduled again.  The process registers
// its intent once (MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) before the
// first use.  Linux 4.14 and later; elsewhere the deque keeps its symmetric
// exchange.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "weft/detail/deque.hpp"

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace weft::detail {

namespace {

bool register_membarrier() noexcept {
  if (const char* env = std::getenv("WEFT_ASYMMETRIC_FENCE")) {
    if (std::string_view(env) == "0") return false;
  }
#if defined(__linux__) && defined(SYS_membarrier)
  const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 ||
      (cmds & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
    return false;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
  return false;
#endif
}

}  // namespace

bool asymmetric_fence_available() noexcept {
  // A function-local static: registered once, by the first deque built.
  static const bool available = register_membarrier();
  return available;
}

void heavy_barrier() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  // Registered, so the kernel cannot refuse; if it does, a light take could
  // hand one task to two workers.  Stop rather than run on.
  std::fprintf(stderr, "weft: membarrier failed after registration: %s\n", std::strerror(errno));
#else
  std::fprintf(stderr, "weft: heavy_barrier() without membarrier\n");
#endif
  std::abort();
}

}  // namespace weft::detail
