// SPDX-License-Identifier: MIT
// runtime/alloc.cpp -- coroutine frame memory.
//
// Frames come from per-worker free lists by 16-byte size class (up to 1008
// bytes): the promise's operator new/delete pop and push them inline
// (alloc_frame_fast / free_frame_fast in detail/task_core.hpp); this file holds the
// slow paths.  A list is refilled one block at a time from the system
// allocator when empty; a frame freed on another worker than the one that
// allocated it joins the freeing worker's list (at most kFramesPerClass per
// class; beyond that it goes back to the system).  Threads that are not
// workers, and every sanitizer build (WEFT_SYSTEM_ALLOCATOR: the cache limit
// is 0), use the system allocator directly, so ASan sees every frame.
//
// Live-frame accounting (diagnostics::live_frames): each worker counts in a
// plain owner-only integer and adds it to a process-wide atomic when it exits;
// other threads count in the atomic directly.
#include <atomic>
#include <cstdlib>
#include <new>

#if defined(WEFT_FRAME_TBBMALLOC)
// Measurement variant (define WEFT_FRAME_TBBMALLOC and link TBB::tbbmalloc by
// hand; not a CMake option): every frame from oneTBB's scalable allocator
// instead of the per-worker caches.
#include <oneapi/tbb/scalable_allocator.h>
#define WEFT_SYSTEM_ALLOCATOR 1
#define WEFT_FRAME_NEW(n) scalable_malloc(n)
#define WEFT_FRAME_DELETE(p) scalable_free(p)
#else
#define WEFT_FRAME_NEW(n) ::operator new(n)
#define WEFT_FRAME_DELETE(p) ::operator delete(p)
#endif

#include "runtime_impl.hpp"

namespace weft::detail {

namespace {
// Frames allocated minus freed by non-workers, plus the totals flushed by
// exited workers.  Relaxed everywhere: a counter, read when quiescent.
std::atomic<std::int64_t> g_frames_outside{0};

#if defined(WEFT_SYSTEM_ALLOCATOR)
constexpr bool kCacheFrames = false;
#else
constexpr bool kCacheFrames = true;
#endif

// Blocks of a cacheable size are allocated rounded up to their class on every
// thread: a block may end up in any worker's cache and serve any frame of its
// class there.
std::size_t block_size(std::size_t size) noexcept {
  if (!kCacheFrames || size > frame_cache::kMaxCached) return size;
  return frame_cache::size_class(size) * frame_cache::kGranule;
}
}  // namespace

void init_frame_cache(worker* w) noexcept { w->frames.limit = kCacheFrames ? kFramesPerClass : 0; }

void free_frame_cache(worker* w) noexcept {
  for (auto& head : w->frames.heads) {
    while (head != nullptr) {
      frame_cache::free_node* n = head;
      head = n->next;
      WEFT_FRAME_DELETE(static_cast<void*>(n));
    }
  }
}

void* alloc_frame(std::size_t size) {
  // The inline fast path (alloc_frame_fast) found no cached block.
  void* p = WEFT_FRAME_NEW(block_size(size));
  if (p == nullptr) throw std::bad_alloc();
  if (worker_hot* w = tls_worker) {
    ++w->frames.live;
  } else {
    // Relaxed: counter only.
    g_frames_outside.fetch_add(1, std::memory_order_relaxed);
  }
  return p;
}

void free_frame(void* p, std::size_t size) noexcept {
  // The inline fast path (free_frame_fast) could not cache the block.
  (void)size;
  if (worker_hot* w = tls_worker) {
    --w->frames.live;
  } else {
    // Relaxed: counter only.
    g_frames_outside.fetch_sub(1, std::memory_order_relaxed);
  }
  WEFT_FRAME_DELETE(p);
}

void flush_frame_count(worker* w) noexcept {
  // Relaxed: counter only; read when quiescent (thread join orders it).
  g_frames_outside.fetch_add(w->frames.live, std::memory_order_relaxed);
  w->frames.live = 0;
}

std::int64_t frames_outside_workers() noexcept {
  // Relaxed: counter only.
  return g_frames_outside.load(std::memory_order_relaxed);
}

}  // namespace weft::detail
