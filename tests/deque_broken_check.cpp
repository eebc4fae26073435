// A program, not a gtest: runs the deque stress against a deliberately broken
// deque (WEFT_DEQUE_BREAK_LAST_ELEMENT: take() grabs the last item without the
// CAS that races thieves) and exits 0 only if the stress caught it (an item
// taken twice) -- proof that the stress in deque_test.cpp can fail.
#define WEFT_DEQUE_BREAK_LAST_ELEMENT 1
#include <cstdio>

#include "deque_stress.hpp"

int main() {
  for (int round = 0; round < 20; ++round) {
    auto r = weft_test::run_deque_stress(200'000, 3, 1234 + static_cast<unsigned>(round));
    if (r.duplicated > 0 || r.lost > 0) {
      std::printf("broken deque caught in round %d: %lld duplicated, %lld lost\n", round,
                  static_cast<long long>(r.duplicated), static_cast<long long>(r.lost));
      return 0;
    }
  }
  std::printf("broken deque NOT caught in 20 rounds: the stress test is too weak\n");
  return 1;
}
