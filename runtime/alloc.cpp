// runtime/alloc.cpp -- coroutine frame memory.
//
// Frames come from per-worker free lists by 16-byte size class (up to 1 KiB),
// refilled from and spilled to the system allocator.  A frame freed on another
// worker than the one that allocated it joins the freeing worker's list (at
// most kMaxPerClass per class; beyond that it goes back to the system).
// Threads that are not workers, and every sanitizer build
// (WEFT_SYSTEM_ALLOCATOR), use the system allocator directly, so ASan sees
// every frame.
//
// Live-frame accounting (diagnostics::live_frames): each worker counts in a
// plain owner-only integer and adds it to a process-wide atomic when it exits;
// other threads count in the atomic directly.
#include <atomic>
#include <cstdlib>
#include <new>

#if defined(WEFT_FRAME_TBBMALLOC)
// Measurement variant (CMake: -DWEFT_FRAME_ALLOCATOR=tbbmalloc): every frame
// from oneTBB's scalable allocator instead of the per-worker caches.
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
}  // namespace

frame_cache::~frame_cache() {
  for (auto& head : heads) {
    while (head != nullptr) {
      free_node* n = head;
      head = n->next;
      ::operator delete(static_cast<void*>(n));
    }
  }
}

void* alloc_frame(std::size_t size) {
#if !defined(WEFT_SYSTEM_ALLOCATOR)
  worker* w = tls_worker;
  if (w != nullptr) {
    ++w->frames_live;
    std::size_t cls = (size + frame_cache::kGranule - 1) / frame_cache::kGranule;
    if (cls < frame_cache::kClasses) {
      frame_cache& fc = w->frames;
      if (frame_cache::free_node* n = fc.heads[cls]) {
        fc.heads[cls] = n->next;
        --fc.counts[cls];
        return n;
      }
      return ::operator new(cls * frame_cache::kGranule);
    }
    return ::operator new(size);
  }
#endif
  // Relaxed: counter only.
  g_frames_outside.fetch_add(1, std::memory_order_relaxed);
  void* p = WEFT_FRAME_NEW(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void free_frame(void* p, std::size_t size) noexcept {
#if !defined(WEFT_SYSTEM_ALLOCATOR)
  worker* w = tls_worker;
  if (w != nullptr) {
    --w->frames_live;
    std::size_t cls = (size + frame_cache::kGranule - 1) / frame_cache::kGranule;
    if (cls < frame_cache::kClasses) {
      frame_cache& fc = w->frames;
      if (fc.counts[cls] < frame_cache::kMaxPerClass) {
        auto* n = static_cast<frame_cache::free_node*>(p);
        n->next = fc.heads[cls];
        fc.heads[cls] = n;
        ++fc.counts[cls];
        return;
      }
    }
    ::operator delete(p);
    return;
  }
#else
  (void)size;
#endif
  // Relaxed: counter only.
  g_frames_outside.fetch_sub(1, std::memory_order_relaxed);
  WEFT_FRAME_DELETE(p);
}

void flush_frame_count(worker* w) noexcept {
  // Relaxed: counter only; read when quiescent (thread join orders it).
  g_frames_outside.fetch_add(w->frames_live, std::memory_order_relaxed);
  w->frames_live = 0;
}

std::int64_t frames_outside_workers() noexcept {
  // Relaxed: counter only.
  return g_frames_outside.load(std::memory_order_relaxed);
}

}  // namespace weft::detail
