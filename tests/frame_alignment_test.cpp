// tests/frame_alignment_test.cpp -- every coroutine frame a task gets starts on
// a cache line and no two live frames share one (docs/architecture.md, "Frame
// allocation"): frames migrate between workers, and two workers' hot frames on
// one line would falsely share it.
//
// A frame's start is its coroutine handle's address (the block operator new
// returned); its extent is known to reach at least the last byte of a local
// buffer that lives across a suspension point, so the buffer is in the frame.
// The tasks come in several frame sizes: small and medium ones (cached size
// classes) and one beyond the cache (always the system allocator).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "task_internals.hpp"

namespace {

using namespace weft_test;
using weft::detail::frame_cache;

constexpr std::uintptr_t kLine = frame_cache::kGranule;
static_assert(kLine == 64);

// What a task saw of its own frame.
struct frame_span {
  std::uintptr_t first = 0;  // the frame's address (from the join handle)
  std::uintptr_t buf_first = 0;
  std::uintptr_t buf_last = 0;  // a byte known to be inside the frame
};

// A task whose frame holds a K-byte buffer: written before a yield (a
// suspension point), read after it, so the compiler must keep it in the frame.
template <std::size_t K>
weft::task<long> sized(frame_span* out) {
  std::array<unsigned char, K> buf;
  for (std::size_t i = 0; i < K; ++i) buf[i] = static_cast<unsigned char>(i * 7U);
  co_await weft::yield();
  long sum = 0;
  for (std::size_t i = 0; i < K; ++i) sum += buf[i];
  out->buf_first = reinterpret_cast<std::uintptr_t>(&buf[0]);
  out->buf_last = reinterpret_cast<std::uintptr_t>(&buf[K - 1]);
  co_return sum;
}

template <std::size_t K>
long expected_sum() {
  long sum = 0;
  for (std::size_t i = 0; i < K; ++i) sum += static_cast<unsigned char>(i * 7U);
  return sum;
}

constexpr int kSizes = 4;

weft::join_handle<long> spawn_sized(int which, frame_span* out) {
  switch (which % kSizes) {
    case 0:
      return weft::spawn(sized<1>(out));
    case 1:
      return weft::spawn(sized<200>(out));
    case 2:
      return weft::spawn(sized<700>(out));
    default:
      return weft::spawn(sized<3000>(out));  // beyond frame_cache::kMaxCached
  }
}

long expected_for(int which) {
  switch (which % kSizes) {
    case 0:
      return expected_sum<1>();
    case 1:
      return expected_sum<200>();
    case 2:
      return expected_sum<700>();
    default:
      return expected_sum<3000>();
  }
}

// Spawns spans->size() tasks of mixed sizes and joins every one while keeping
// every handle, so that all their frames are live together when it returns;
// the handles go to `keep`.
weft::task<long> spawn_all(std::vector<frame_span>* spans,
                           std::vector<weft::join_handle<long>>* keep) {
  keep->clear();
  for (std::size_t i = 0; i < spans->size(); ++i)
    keep->push_back(spawn_sized(static_cast<int>(i), &(*spans)[i]));
  for (std::size_t i = 0; i < spans->size(); ++i)
    (*spans)[i].first =
        reinterpret_cast<std::uintptr_t>(weft::detail::access::handle((*keep)[i]).address());
  long wrong = 0;
  for (std::size_t i = 0; i < keep->size(); ++i) {
    if (co_await (*keep)[i] != expected_for(static_cast<int>(i))) ++wrong;
  }
  co_return wrong;
}

// A fork-join tree that churns the frame caches of every worker: children are
// stolen, finish elsewhere, and their blocks join other workers' lists.
weft::task<long> churn(int depth) {
  if (depth == 0) co_return 1;
  auto h = weft::spawn(churn(depth - 1));
  long b = co_await churn(depth - 1);
  long a = co_await h;
  co_return a + b;
}

// Turns the frame cache of the worker it runs on off (limit 0, as in the
// sanitizer builds) and frees what it held; runs on that worker, its owner.
weft::task<void> cache_off() {
  auto* w = static_cast<weft::detail::worker*>(weft::detail::current_worker());
  w->frames.limit = 0;
  weft::detail::free_frame_cache(w);
  co_return;
}

// Every frame starts on a line, the buffer lies inside the frame, and, in
// address order, no frame's known extent reaches the line the next one starts
// on.  (Blocks never overlap, so line-aligned starts alone already keep two
// frames off one line; the extent check guards the reading of the addresses.)
void expect_lines_unshared(std::vector<frame_span> spans) {
  std::size_t misaligned = 0;
  std::size_t outside = 0;
  for (const frame_span& s : spans) {
    if (s.first % kLine != 0) ++misaligned;
    if (s.buf_first < s.first || s.buf_last < s.buf_first) ++outside;
  }
  EXPECT_EQ(misaligned, 0U) << "of " << spans.size() << " frames";
  EXPECT_EQ(outside, 0U);
  std::sort(spans.begin(), spans.end(),
            [](const frame_span& a, const frame_span& b) { return a.first < b.first; });
  std::size_t shared = 0;
  for (std::size_t i = 1; i < spans.size(); ++i) {
    if (spans[i - 1].buf_last / kLine >= spans[i].first / kLine) ++shared;
  }
  EXPECT_EQ(shared, 0U) << "frames sharing a line with the next frame";
}

void run_rounds(unsigned workers, bool turn_cache_off) {
  watchdog dog(60s);
  const long n = scaled(4000, 400);
  std::vector<frame_span> spans(static_cast<std::size_t>(n));
  std::vector<weft::join_handle<long>> keep;
  run_leaving_no_frame(workers, [&](weft::runtime& rt) {
    if (turn_cache_off) rt.block_on(cache_off());
    // Three rounds: the first takes fresh blocks, the later ones reuse what
    // the churn and the earlier rounds left in the caches.
    for (int round = 0; round < 3; ++round) {
      dog.phase("churn");
      EXPECT_EQ(rt.block_on(churn(scaled(12, 8))), 1L << scaled(12, 8));
      dog.phase("spawn_all");
      std::fill(spans.begin(), spans.end(), frame_span{});
      EXPECT_EQ(rt.block_on(spawn_all(&spans, &keep)), 0);
      expect_lines_unshared(spans);
      keep.clear();
    }
  });
}

TEST(FrameAlignmentTest, LiveFramesOfEverySizeStartOnLinesAndShareNoneOnTwoWorkers) {
  run_rounds(2, false);
}

TEST(FrameAlignmentTest, LiveFramesShareNoLineWithTheCacheOff) { run_rounds(1, true); }

// The slow path itself, as non-workers (and every sanitizer build) use it:
// each block is line-aligned and rounded up to whole lines.
TEST(FrameAlignmentTest, SlowPathBlocksAreWholeLinesOffTheWorkers) {
  const frame_baseline frames;
  std::vector<void*> blocks;
  for (std::size_t size = 1; size <= 2 * frame_cache::kMaxCached; size += 37)
    blocks.push_back(weft::detail::alloc_frame(size));
  std::size_t i = 0;
  for (std::size_t size = 1; size <= 2 * frame_cache::kMaxCached; size += 37, ++i) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(blocks[i]) % kLine, 0U) << "size " << size;
    EXPECT_EQ(frame_cache::block_size(size) % kLine, 0U);
    EXPECT_GE(frame_cache::block_size(size), size);
  }
  i = 0;
  for (std::size_t size = 1; size <= 2 * frame_cache::kMaxCached; size += 37, ++i)
    weft::detail::free_frame(blocks[i], size);
  EXPECT_EQ(frames.now(), frames.start);
}

}  // namespace
