// SPDX-License-Identifier: MIT
// weft/detail/fork_stack.hpp -- the per-worker stacks that fork-join frames
// (weft/fork.hpp) live on.
//
// Not part of the public API.  docs/architecture.md, "Fork-join frames on
// worker stacks", explains the protocol; docs/memory-model.md has the row for
// fork_block::state.
//
// A worker allocates a fork frame by bumping `top` in its current stacklet.
// Frames mostly end in the reverse order (a child before its parent), so a
// free is a store and the owner pops: fork_collect() moves `top` down past
// every freed block at the top.  A block freed out of order -- its frame ran
// on through a steal and ended on another worker, or a task object was
// dropped before a sibling created after it -- stays until everything above
// it has gone.  Every block starts on a cache line and covers whole lines, so
// two frames never share a line (a stolen continuation and the child its
// victim runs sit side by side on the victim's stack).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "weft/detail/seam.hpp"

namespace weft::detail {

inline constexpr std::size_t kForkLine = 64;

// The header of one frame block: the 16 bytes before the frame.
struct fork_block {
  static constexpr std::uint32_t kLive = 0, kFreed = 1, kHeap = 2;
  fork_block* prev;     // the block below on the same stack (null: the bottom)
  std::uint32_t bytes;  // the whole block, header included (a multiple of kForkLine)
  // kLive until the frame is destroyed; then kFreed, written by whichever
  // thread destroyed it.  kHeap (never changes): a block from the system
  // allocator (no worker on the allocating thread, or too large).
  std::atomic<std::uint32_t> state;
};
static_assert(sizeof(fork_block) == 16, "the frame after the header stays 16-byte aligned");

// A segment of a worker's fork stack.  Its blocks start at base().
struct stacklet {
  stacklet* prev;  // the segment below (null: the first)
  char* limit;     // one past the segment's last byte
  char* base() noexcept { return reinterpret_cast<char*>(this) + kForkLine; }
};

// Owner only (the worker's thread), except fork_block::state.
struct fork_stack {
  char* top = nullptr;         // where the next block goes, in `cur`
  char* limit = nullptr;       // cur->limit (null: no segment yet)
  fork_block* last = nullptr;  // the newest block not yet popped
  stacklet* cur = nullptr;
  stacklet* spare = nullptr;  // one emptied segment kept for reuse
};

inline constexpr std::size_t fork_block_bytes(std::size_t frame) noexcept {
  return (frame + sizeof(fork_block) + kForkLine - 1) & ~(kForkLine - 1);
}

// Put a block of `bytes` (fork_block_bytes) at `s.top`, which has room for
// it, and return the frame's memory (owner only).
[[gnu::always_inline]] inline void* fork_push_block(fork_stack& s, std::size_t bytes) noexcept {
  auto* b = reinterpret_cast<fork_block*>(s.top);
  b->prev = s.last;
  b->bytes = static_cast<std::uint32_t>(bytes);
  // Relaxed: the block is ours; a thread that destroys the frame later got
  // it through a queue (release/acquire) or runs on this thread.
  b->state.store(fork_block::kLive, std::memory_order_relaxed);
  s.last = b;
  s.top += bytes;
  return b + 1;
}

// Pop every freed block at the top of `s` (owner only).
[[gnu::always_inline]] inline void fork_collect(fork_stack& s) noexcept {
  while (fork_block* b = s.last) {
    // Acquire: pairs with the release store in fork_free(), so that the
    // thread that ended the frame is done with the memory before we reuse it.
    if (b->state.load(std::memory_order_acquire) != fork_block::kFreed) return;
    s.last = b->prev;
    s.top = reinterpret_cast<char*>(b);
    if (s.top == s.cur->base() && s.last != nullptr) fork_stack_step_down(s);
  }
}

}  // namespace weft::detail
