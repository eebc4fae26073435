// SPDX-License-Identifier: MIT
// A program, not a gtest: the weft-stress engine in simulation mode, linked
// against a deliberately broken build of the runtime (tests/CMakeLists.txt
// builds it once per mutant; the library brings its WEFT_MUTANT), must catch
// the planted bug within 10^4 seeds of the core scenarios -- and the failing
// seed must replay: the same violations and the same event trace, twice.
// Exits 0 only then: proof that the seeds CI runs can fail.  The mutants are
// described in weft/detail/mutant.hpp.
#include <cstdio>
#include <string>
#include <vector>

#include "stress.hpp"
#include "weft/detail/mutant.hpp"

#if WEFT_MUTANT_IS(no_wake_on_cancel)
static const char* const kVariant = "no_wake_on_cancel";
// What the invariants report when a cancelled task stays asleep: its
// cancellation comes late, a task that waits until cancelled ends normally,
// a wait_for times out late, or a wait that only a cancel could end hangs.
static const char* const kExpected[] = {"observed", "finished normally", "long after", "deadlock",
                                        "sleeps an hour"};
#elif WEFT_MUTANT_IS(lost_cancel_before_start)
static const char* const kVariant = "lost_cancel_before_start";
static const char* const kExpected[] = {"before it started"};
#elif WEFT_MUTANT_IS(no_reclaim)
static const char* const kVariant = "no_reclaim";
// The contract ledger's verdict: the request was delivered nowhere and the
// handle of the task it was made for does not report completed_despite_cancel().
static const char* const kExpected[] = {"was lost: cancel() returned true"};
#else
#error \
    "link a runtime built with WEFT_MUTANT=no_wake_on_cancel, lost_cancel_before_start or no_reclaim"
#endif

int main() {
  weft_stress::config cfg;
  cfg.sim = true;
  cfg.scenarios = weft_stress::kCoreScenarios;
  cfg.tasks = 100;
  cfg.quiet = true;
  const std::uint64_t kSeeds = 10'000;
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) {
    weft_stress::round_report rep = weft_stress::run_round(cfg, seed);
    if (rep.violations.empty()) continue;
    std::printf("mutant %s caught at seed %llu (after %llu seeds): %s\n", kVariant,
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
                rep.violations.front().c_str());
    bool expected = false;
    for (const auto& v : rep.violations)
      for (const char* e : kExpected) expected = expected || v.find(e) != std::string::npos;
    if (!expected) {
      std::printf("but not by the violation this variant should cause; all of them:\n");
      for (const auto& v : rep.violations) std::printf("  %s\n", v.c_str());
      return 1;
    }
    std::vector<weft::sim::event> t1, t2;
    weft_stress::round_report a = weft_stress::run_round(cfg, seed, 0, &t1);
    weft_stress::round_report b = weft_stress::run_round(cfg, seed, 0, &t2);
    if (a.violations != rep.violations || b.violations != rep.violations) {
      std::printf("the replay of seed %llu gave other violations: not deterministic\n",
                  static_cast<unsigned long long>(seed));
      return 1;
    }
    if (t1 != t2 || t1.empty()) {
      std::printf("two replays of seed %llu gave different traces (%zu vs %zu events)\n",
                  static_cast<unsigned long long>(seed), t1.size(), t2.size());
      return 1;
    }
    std::printf("replayed twice: the same %zu violation(s) and the same trace of %zu events\n",
                rep.violations.size(), t1.size());
    std::printf("replay: %s\n", weft_stress::replay_command(cfg, seed, 0).c_str());
    return 0;
  }
  std::printf("mutant %s NOT caught in %llu seeds: the seeds are too weak\n", kVariant,
              static_cast<unsigned long long>(kSeeds));
  return 1;
}
