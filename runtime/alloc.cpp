// runtime/alloc.cpp -- coroutine frame memory.
//
// Frames come from per-worker free lists by 64-byte size class (up to 1024
// bytes): the promise's operator new/delete pop and push them inline
// (alloc_frame_fast / free_frame_fast in detail/task_core.hpp); this file holds the
// slow paths.  A list is refilled one block at a time from the system
// allocator when empty; a frame freed on another worker than the one that
// allocated it joins the freeing worker's list (at most kFramesPerClass per
// class; beyond that it goes back to the system).  Threads that are not
// workers, and every sanitizer build (WEFT_SYSTEM_ALLOCATOR: the cache limit
// is 0), use the system allocator directly, so ASan sees every frame.  Every
// block, whatever the path, is cache-line aligned and a whole number of lines
// (frame_cache::block_size), so that no two frames share a line.
//
// Live-frame accounting (diagnostics::live_frames): each worker counts in a
// plain owner-only integer and adds it to a process-wide atomic when it exits;
// other threads count in the atomic directly.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(WEFT_FRAME_TBBMALLOC)
// Measurement variant (define WEFT_FRAME_TBBMALLOC and link TBB::tbbmalloc by
// hand; not a CMake option): every frame from oneTBB's scalable allocator
// instead of the per-worker caches.
#include <oneapi/tbb/scalable_allocator.h>
#define WEFT_SYSTEM_ALLOCATOR 1
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

constexpr std::size_t kLine = frame_cache::kGranule;

// A block of `bytes` (whole lines) that starts on a line.
//
// Sanitizer builds and the tbbmalloc variant ask the allocator for the
// alignment, so that the block is the allocation ASan and LeakSanitizer track.
// The default build aligns by hand instead: glibc's aligned operator new
// (memalign) costs 128 bytes beyond the block, where a plain one costs 16, and
// frames are allocated by the million.  The block then starts 16 to 64 bytes
// into a plain allocation of bytes + kLine, and the word below it holds the
// allocation's address for delete_block.  That word shares a line with no
// other block: the line below a block lies within the block's own allocation
// or in the heap's bookkeeping, never in another line-aligned block.
void* new_block(std::size_t bytes) {
#if defined(WEFT_FRAME_TBBMALLOC)
  void* p = scalable_aligned_malloc(bytes, kLine);
  if (p == nullptr) throw std::bad_alloc();
  return p;
#elif defined(WEFT_SYSTEM_ALLOCATOR)
  return ::operator new(bytes, std::align_val_t{kLine});
#else
  void* raw = ::operator new(bytes + kLine);
  const std::uintptr_t block = (reinterpret_cast<std::uintptr_t>(raw) + kLine) & ~(kLine - 1);
  reinterpret_cast<void**>(block)[-1] = raw;
  return reinterpret_cast<void*>(block);
#endif
}

void delete_block(void* p) noexcept {
#if defined(WEFT_FRAME_TBBMALLOC)
  scalable_aligned_free(p);
#elif defined(WEFT_SYSTEM_ALLOCATOR)
  ::operator delete(p, std::align_val_t{kLine});
#else
  ::operator delete(static_cast<void**>(p)[-1]);
#endif
}

}  // namespace

void init_frame_cache(worker* w) noexcept { w->frames.limit = kCacheFrames ? kFramesPerClass : 0; }

void free_frame_cache(worker* w) noexcept {
  for (std::size_t cls = 0; cls < frame_cache::kClasses; ++cls) {
    frame_cache::free_node*& head = w->frames.heads[cls];
    while (head != nullptr) {
      frame_cache::free_node* n = head;
      head = n->next;
      delete_block(n);
    }
    w->frames.counts[cls] = 0;
  }
}

void* alloc_frame(std::size_t size) {
  // The inline fast path (alloc_frame_fast) found no cached block.
  // Whole lines on every thread and in every mode: the block may end up in any
  // worker's cache and serve any frame of its class there, and it must not
  // share a line with another frame even when nothing is cached.
  void* p = new_block(frame_cache::block_size(size));
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
  delete_block(p);
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
