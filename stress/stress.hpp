// SPDX-License-Identifier: MIT
// stress/stress.hpp -- the engine of weft-stress: configuration, one round,
// and a whole run.  No Abseil here (main.cpp parses the flags), so that test
// programs can link the engine against a deliberately broken runtime build.
#pragma once

#include <weft/sim.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace weft_stress {

// Scenarios, combinable (a bit set).
enum scenario : std::uint32_t {
  kStorm = 1u << 0,       // spawn storm: fan-out trees, children cancelled at random moments
  kCancel = 1u << 1,      // random cancellation: before start, suspended, running, after completion
  kTimeout = 1u << 2,     // wait_for races: the task against its deadline
  kCheckpoint = 1u << 3,  // CPU loops with checkpoint()/yield(), cancelled mid-loop
  kGroup = 1u << 4,       // nested task groups with failing children, shield()
  kCleanup = 1u << 5,     // cleanups (catch blocks, destructors) that spawn and wake tasks
  kShutdown = 1u << 6,    // the round ends by shutdown() under load instead of a join
  kOutside = 1u << 7,     // threads that are not workers spawn, cancel and join
  kCompose = 1u << 8,     // composed constructs: nested timeouts, groups/when_all/when_any whose
                          // owner is cancelled while a child fails, shield in wait_for, ...
  kFork = 1u << 9,        // tasks awaiting fork_task trees (fib-like, checkpoint()/yield() in
                          // frames, a frame that throws), cancelled at random moments
};
inline constexpr std::uint32_t kScenarioCount = 10;
inline constexpr std::uint32_t kAllScenarios = (1u << kScenarioCount) - 1;
// What CI runs over 10^4 seeds: everything the simulation can host faithfully
// (in a simulation, "outside" spawns come from the driving thread between
// slices of the run, not from other threads).
inline constexpr std::uint32_t kCoreScenarios = kAllScenarios & ~kOutside;

const char* scenario_name(std::uint32_t bit) noexcept;
// "storm,cancel" / "core" / "all" -> bits; false on an unknown name (*error says which).
bool parse_scenarios(const std::string& text, std::uint32_t* bits, std::string* error);
std::string scenario_list(std::uint32_t bits);

// The cases of the compose scenario (a bit set; --compose).
inline constexpr std::uint32_t kComposeCaseCount = 7;
inline constexpr std::uint32_t kAllComposeCases = (1u << kComposeCaseCount) - 1;
// "nested,when_all" / "all" -> bits; false on an unknown name (*error says which).
bool parse_compose_cases(const std::string& text, std::uint32_t* bits, std::string* error);
std::string compose_case_list(std::uint32_t bits);

enum class explore_mode { none, cancel_points };

struct config {
  std::uint64_t seed = 1;
  unsigned workers = 2;
  std::chrono::duration<double> duration{10.0};  // wall-time bound of the run
  std::uint64_t iterations = 0;                  // rounds (seeds in --sim); 0: until `duration`
  std::uint32_t scenarios = kAllScenarios;
  double cancel_rate = 0.3;                        // share of tasks that get a cancel
  unsigned tasks = 200;                            // tasks per scenario per round (about)
  std::uint32_t compose_cases = kAllComposeCases;  // the cases the compose scenario draws from
  // runtime_options::time_slice of the real runtime: short slices mean more
  // preemption at checkpoint() and CPU loops that do not hog a worker.
  std::chrono::microseconds time_slice{250};
  bool sim = false;
  weft::sim::policy policy = weft::sim::policy::random;
  unsigned pct_depth = 3;
  std::uint64_t pct_steps = 0;  // 0: derived from `tasks`
  explore_mode explore = explore_mode::none;
  std::uint64_t max_cancel_points = 500;  // cancel_points: at most this many per seed
  std::uint64_t cancel_at = 0;            // replay one resume point of cancel_points
  std::string trace_path;                 // --sim: write the trace of a failing (or the only) seed
  bool check_replay = false;              // --sim: run every seed twice, compare the traces
  std::string json_path;
  std::chrono::duration<double> progress_interval{1.0};
  // A cancellation must be observed this soon after cancel() returned true
  // (wall time on the real runtime, virtual time in a simulation).
  std::chrono::duration<double> cancel_bound{5.0};
  // A round running longer than this (wall time) is a hang: dump and exit 3.
  std::chrono::duration<double> watchdog{120.0};
  bool quiet = false;  // no progress lines
  FILE* out = stdout;
};

// The result of one round (one seed in a simulation).
struct round_report {
  std::uint64_t seed = 0;
  std::uint64_t cancel_at = 0;
  std::vector<std::string> violations;
  std::uint64_t tasks = 0;          // tracked tasks spawned
  std::uint64_t resume_points = 0;  // simulation only
  bool hang = false;                // deadlock / step limit (simulation)
};

// Runs one round with seed `seed` (the round's own seed, not the run's).
// In a simulation, `cancel_at` and `trace` go to weft::sim::options.
round_report run_round(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at = 0,
                       std::vector<weft::sim::event>* trace = nullptr);

// A whole run as the tool does it: prints the configuration, progress lines
// and the summary; writes the JSON and trace files.  Returns the exit code:
// 0 all invariants held, 1 a violation, 3 a hang (the watchdog fired).
int run(const config& cfg);

// The flags that replay seed `seed` (for messages).
std::string replay_command(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at);

}  // namespace weft_stress
