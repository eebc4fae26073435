// SPDX-License-Identifier: MIT
// weft/detail/deque.hpp -- the Chase-Lev work-stealing deque of one worker.
//
// Chase & Lev, "Dynamic Circular Work-Stealing Deque" (SPAA 2005), with the
// C11 orderings of Lê, Pop, Cohen, Zappa Nardelli (PPoPP 2013, Fig. 1) in the
// fence-free form that ThreadSanitizer understands (it does not model
// atomic_thread_fence) and that was model-checked clean (docs/pitfalls.md,
// "TSan does not model std::atomic_thread_fence"):
//   push:  slot relaxed; bottom store release.
//   take:  bottom.exchange(b - 1, seq_cst); top load seq_cst; the last element
//          is raced for with a seq_cst CAS on top.
//   steal: top load seq_cst; bottom load seq_cst; slot relaxed; CAS top seq_cst.
// On x86-64 the exchange is one `xchg` (a locked instruction: the cost of the
// paper's fence, without clang's `mfence`), and seq_cst loads are plain moves.
//
// Asymmetric fences (fence_mode): that locked instruction is about 9% of a
// fork-join's cost (fib, clang 19, 1 worker).  While no thief takes from a
// deque, its owner lowers bottom with a plain store and a compiler barrier
// (the "light" take) and every thief pays instead: between its loads of top
// and bottom it runs heavy_barrier() (Linux membarrier, private expedited),
// which makes every running thread of the process execute a full barrier --
// the owner's store is then visible to the thief, or the owner's load of top
// comes after the thief's barrier and sees what the thief saw.  That is the
// asymmetric Dekker pair (membarrier(2); Dice, Huang, Yang, "Asymmetric Dekker
// Synchronization").  A barrier costs a thief about 22 us while the owner's
// thread runs (1.1 us with it idle; a 2-vCPU VM), so the owner goes back to the symmetric exchange
// the moment it sees top move (a thief took something) and tries the light take again only after
// kQuietTakes takes without a steal.  Switching to light is a seq_cst
// exchange of the flag before the first light take; a thief that read the
// flag clear reads it again after bottom and backs off if it is now set.
// Switching back is a plain store: a thief that reads the flag clear also sees
// every light take before it.  docs/architecture.md, "The deque's fences".
//
// The owner pushes and takes at the bottom; thieves steal from the top.
// Indices are signed 64-bit (take on an empty deque goes to -1 transiently).
// Buffers grow by doubling; a retired buffer is kept until the deque dies,
// because a thief may still be reading a slot of it.
//
// Kept small and free of runtime dependencies so that a model checker can be
// pointed at it.  T must be a pointer (trivially copyable, null = empty).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "weft/detail/chaos.hpp"
#include "weft/detail/mutant.hpp"

namespace weft::detail {

enum class steal_result : std::uint8_t { success, empty, lost_race };

// How the owner's take orders its store of bottom before its load of top.
enum class fence_mode : std::uint8_t {
  adaptive,   // symmetric while thieves take from it, light after a quiet spell
  symmetric,  // always the locked exchange (also where membarrier is missing)
#if WEFT_MUTANT_IS(always_light_take)
  asymmetric,  // tests only: always the light take; every non-empty steal pays the barrier
#endif
};

// runtime/barrier.cpp.  Whether heavy_barrier() works in this process
// (membarrier registered; false when the kernel lacks it or refuses it, or
// with WEFT_ASYMMETRIC_FENCE=0 in the environment).  Decided once.
bool asymmetric_fence_available() noexcept;
// A full memory barrier on every running thread of this process.  Only after
// asymmetric_fence_available() returned true.
void heavy_barrier() noexcept;

template <class T>
class chase_lev_deque {
  static_assert(std::is_pointer_v<T>);

  struct buffer {
    explicit buffer(std::int64_t cap)
        : capacity(cap), mask(cap - 1), slots(new std::atomic<T>[static_cast<std::size_t>(cap)]) {}
    std::int64_t capacity;
    std::int64_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
    T load(std::int64_t i) const noexcept {
      // Relaxed: slot reads are ordered by the index protocol (release store of
      // bottom in push; seq_cst loads/CAS of top and bottom in take/steal).
      return slots[static_cast<std::size_t>(i & mask)].load(std::memory_order_relaxed);
    }
    void store(std::int64_t i, T v) noexcept {
      // Relaxed: published by push's release store of bottom.
      slots[static_cast<std::size_t>(i & mask)].store(v, std::memory_order_relaxed);
    }
  };

 public:
  // Takes without a steal before an adaptive deque tries the light take again.
  static constexpr std::uint32_t kQuietTakes = 1u << 14;

  explicit chase_lev_deque(std::int64_t initial_capacity = 256,
                           fence_mode mode = fence_mode::adaptive) {
    if (mode != fence_mode::symmetric && !asymmetric_fence_available())
      mode = fence_mode::symmetric;
    mode_ = mode;
#if WEFT_MUTANT_IS(always_light_take)
    // Relaxed: as buf_ below.
    light_.store(mode == fence_mode::asymmetric, std::memory_order_relaxed);
#endif
    std::int64_t cap = 1;
    while (cap < initial_capacity) cap <<= 1;
    buffers_.push_back(std::make_unique<buffer>(cap));
    // Relaxed: the deque is shared with thieves only after construction
    // (workers start after every deque exists; thread start synchronises).
    buf_.store(buffers_.back().get(), std::memory_order_relaxed);
  }
  chase_lev_deque(const chase_lev_deque&) = delete;
  chase_lev_deque& operator=(const chase_lev_deque&) = delete;

  // Owner only.  push, take_if and lower_bottom are on every spawn and join:
  // forced inline, because g++ 12 does not inline them in a large translation
  // unit (the benchmarks', with oneTBB's headers), where fib is then 1.6x
  // slower.
  [[gnu::always_inline]] void push(T item) {
    // Relaxed: only the owner writes bottom.
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    // Acquire: pairs with the thieves' CAS on top, so a slot they have taken is
    // not overwritten before they read it.
    std::int64_t t = top_.load(std::memory_order_acquire);
    // Relaxed: only the owner writes buf_.
    buffer* a = buf_.load(std::memory_order_relaxed);
    if (b - t > a->capacity - 1) a = grow(a, t, b);
    a->store(b, item);
    WEFT_CHAOS_POINT();
    // Release: publishes the slot (and the task it points to) to thieves,
    // whose seq_cst load of bottom synchronises with it.
    bottom_.store(b + 1, std::memory_order_release);
  }

  // Owner only.  Null when empty (or the last item went to a thief).
  T take() noexcept {
    // Relaxed: only the owner writes bottom and buf_.
    std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    buffer* a = buf_.load(std::memory_order_relaxed);
    std::int64_t t = lower_bottom(b);
    if (t > b) {
      // Empty: restore.  Relaxed: owner-only variable.
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T item = a->load(b);
    if (t == b) {
#if WEFT_MUTANT_IS(deque_last_element)
      // Deliberately broken variant (weft/detail/mutant.hpp): take the last
      // item without racing the thieves, so an item can be taken twice.
      top_.store(t + 1, std::memory_order_relaxed);
#else
      // The last item: race the thieves for it.  seq_cst: pairs with their CAS.
      if (top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                       std::memory_order_relaxed))
        seen_top_ = t + 1;  // our own move of top is not a thief's
      else
        item = nullptr;
#endif
      // Relaxed: owner-only variable; the CAS above ordered the race.
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return item;
  }

  // Owner only: take the bottom item if it is `expected` (a joiner looking
  // for its own child).  False, with nothing changed, when the bottom slot
  // holds another item, the deque is empty, or a thief won the last item.
  // One look at the slot first, so a miss costs no locked instruction.
  [[gnu::always_inline]] bool take_if(T expected) noexcept {
    // Relaxed: only the owner writes bottom, buf_ and the slots.
    std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    buffer* a = buf_.load(std::memory_order_relaxed);
    // The slot below bottom was last written by this owner's push; when the
    // deque is empty it is stale (or null), and the protocol below finds the
    // deque empty and restores bottom.
    if (a->load(b) != expected) return false;
    std::int64_t t = lower_bottom(b);
    if (t > b) {
      // Empty: restore.  Relaxed: owner-only variable.
      bottom_.store(b + 1, std::memory_order_relaxed);
      return false;
    }
    if (t == b) {
#if WEFT_MUTANT_IS(deque_last_element)
      top_.store(t + 1, std::memory_order_relaxed);  // broken variant, see take()
      bool won = true;
#else
      // The last item: race the thieves for it.  seq_cst: pairs with their CAS.
      bool won = top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                              std::memory_order_relaxed);
      if (won) seen_top_ = t + 1;  // our own move of top is not a thief's
#endif
      // Relaxed: owner-only variable; the CAS above ordered the race.
      bottom_.store(b + 1, std::memory_order_relaxed);
      return won;
    }
    return true;
  }

  // The items steal() and take() would take, without taking them (null when
  // the deque looks empty).  For single-threaded inspection only (the
  // simulation driver, which owns every deque of its runtime): with a thief or
  // the owner running, the answer may be stale at once.
  T peek_top() const noexcept {
    // Relaxed: single-threaded use; nothing is published or consumed here.
    std::int64_t t = top_.load(std::memory_order_relaxed);
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    if (t >= b) return nullptr;
    return buf_.load(std::memory_order_relaxed)->load(t);
  }
  T peek_bottom() const noexcept {
    // Relaxed: as peek_top.
    std::int64_t t = top_.load(std::memory_order_relaxed);
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    if (t >= b) return nullptr;
    return buf_.load(std::memory_order_relaxed)->load(b - 1);
  }

  // Any thread.
  steal_result steal(T& out) noexcept {
    // seq_cst loads of top then bottom: pairs with take's exchange of bottom
    // and its seq_cst load of top (the fence-free variant).
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    WEFT_CHAOS_POINT();
    std::int64_t b;
    // seq_cst: pairs with go_light()'s exchange and go_symmetric()'s store
    // (acquire would do for the latter: a thief that sees the flag clear sees
    // the owner's light stores of bottom before it).
    if (light_.load(std::memory_order_seq_cst)) {
      // Relaxed: a first look, so that an empty deque costs no barrier; the
      // seq_cst load after the barrier decides.
      if (t >= bottom_.load(std::memory_order_relaxed)) return steal_result::empty;
      heavy_barrier();  // the owner's light take: see the top of this file
      b = bottom_.load(std::memory_order_seq_cst);
      if (t >= b) return steal_result::empty;
    } else {
      b = bottom_.load(std::memory_order_seq_cst);
      if (t >= b) return steal_result::empty;
      // seq_cst, after the load of bottom: the owner may have switched to light
      // takes since our first look, and our look at bottom may predate one.
      // Pairs with go_light()'s exchange; the caller tries again.
      if (light_.load(std::memory_order_seq_cst)) return steal_result::lost_race;
    }
    // Acquire: pairs with grow()'s release store of a new buffer.
    buffer* a = buf_.load(std::memory_order_acquire);
    T item = a->load(t);
    WEFT_CHAOS_POINT();
    // seq_cst CAS: decides the race with other thieves and with take().
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed))
      return steal_result::lost_race;
    out = item;
    return steal_result::success;
  }

  // Whether the owner's takes are light now (tests, diagnostics).  Any
  // thread; stale at once while the owner runs.
  bool light_takes() const noexcept {
    // Relaxed: a report, nothing is read through it.
    return light_.load(std::memory_order_relaxed);
  }

  // Any thread; approximate.
  std::int64_t size_hint() const noexcept {
    // seq_cst: used by a worker about to park, after its seq_cst RMW on the
    // sleeper count (the parking Dekker pair, see runtime.cpp).
    std::int64_t b = bottom_.load(std::memory_order_seq_cst);
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    return b - t;
  }

 private:
  // The owner's half of take: store b as the new bottom, then load top, in
  // this order as seen by every thief.  Owner only.
  [[gnu::always_inline]] std::int64_t lower_bottom(std::int64_t b) noexcept {
    // Relaxed: only the owner writes light_.
    if (light_.load(std::memory_order_relaxed)) {
      // The light take.  Relaxed store, compiler barrier, relaxed load: the
      // order between them is made by the thieves' heavy_barrier() (top of
      // this file), which the C++ memory model does not describe.
      bottom_.store(b, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
      WEFT_CHAOS_POINT();
      std::int64_t t = top_.load(std::memory_order_relaxed);
      if (t != seen_top_) [[unlikely]]
        go_symmetric(t);  // a thief took something
      return t;
    }
    // seq_cst exchange: the store of bottom must be ordered before the load of
    // top (the paper's seq_cst fence); pairs with steal's seq_cst loads.
    bottom_.exchange(b, std::memory_order_seq_cst);
    WEFT_CHAOS_POINT();
    // seq_cst: see above.
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    if (mode_ == fence_mode::adaptive) {
      if (t != seen_top_) {
        seen_top_ = t;
        quiet_ = 0;
      } else if (++quiet_ >= kQuietTakes) {
        go_light();
      }
    }
    return t;
  }
  void go_symmetric(std::int64_t t) noexcept {
    seen_top_ = t;
#if WEFT_MUTANT_IS(always_light_take)
    if (mode_ == fence_mode::asymmetric) return;  // forced light stays light
#endif
    quiet_ = 0;
    // Release: pairs with steal's seq_cst load of the flag; a thief that sees
    // it clear also sees our light stores of bottom, which came before.
    light_.store(false, std::memory_order_release);
  }
  void go_light() noexcept {
    quiet_ = 0;
    // seq_cst exchange (a full barrier): the flag is visible to every thief
    // before our first light store of bottom; pairs with the load of the flag
    // that a thief makes after its load of bottom.
    light_.exchange(true, std::memory_order_seq_cst);
  }

  buffer* grow(buffer* old, std::int64_t t, std::int64_t b) {
    auto bigger = std::make_unique<buffer>(old->capacity * 2);
    for (std::int64_t i = t; i < b; ++i) bigger->store(i, old->load(i));
    buffer* a = bigger.get();
    buffers_.push_back(std::move(bigger));  // the old one stays alive: thieves may read it
    // Release: pairs with steal's acquire load; the copied slots are visible.
    buf_.store(a, std::memory_order_release);
    return a;  // re-loaded pointer (the CDSChecker bug was using the old one)
  }

  // top and bottom on separate cache lines: thieves hammer top.
  alignas(128) std::atomic<std::int64_t> top_{0};
  alignas(128) std::atomic<std::int64_t> bottom_{0};
  // The owner takes light (true) or with the exchange (false).  Written by
  // the owner only; read by thieves.  Next to bottom: both are read together.
  std::atomic<bool> light_{false};
  // Owner only: top as of the owner's last take, and takes since a thief was
  // last seen (adaptive mode).  On bottom's line, which every take writes
  // anyway: on buf_'s line (read by every steal) they made each steal miss.
  std::int64_t seen_top_ = 0;
  std::uint32_t quiet_ = 0;
  fence_mode mode_ = fence_mode::symmetric;
  alignas(128) std::atomic<buffer*> buf_{nullptr};
  std::vector<std::unique_ptr<buffer>> buffers_;  // owner only (grow)
};

}  // namespace weft::detail
