// SPDX-License-Identifier: MIT
// A program, not a gtest: runs the deque stress against a deliberately broken
// deque (the mutant deque_last_element, weft/detail/mutant.hpp: take() grabs
// the last item without the CAS that races thieves) and exits 0 only if the
// stress caught it (an item taken twice) -- proof that the stress in
// deque_test.cpp can fail.  Only this program's own deques are broken: the
// runtime it links is the real one.
#define WEFT_MUTANT deque_last_element
#include <cstdio>

#include "deque_stress.hpp"

// Up to 200 rounds: one round catches the planted bug most of the time, but on
// a loaded machine (2 shared cores) 20 rounds sometimes did not (1 run in 8
// here), which made this check fail spuriously.  It stops at the first catch.
constexpr int kRounds = 200;

int main() {
  for (int round = 0; round < kRounds; ++round) {
    auto r = weft_test::run_deque_stress(200'000, 3, 1234 + static_cast<unsigned>(round));
    if (r.duplicated > 0 || r.lost > 0) {
      std::printf("broken deque caught in round %d: %lld duplicated, %lld lost\n", round,
                  static_cast<long long>(r.duplicated), static_cast<long long>(r.lost));
      return 0;
    }
  }
  std::printf("broken deque NOT caught in %d rounds: the stress test is too weak\n", kRounds);
  return 1;
}
