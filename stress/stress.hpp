// SPDX-License-Identifier: MIT
// stress/stress.hpp -- the engine of weft-stress (the library weft::stress,
// whose public face is weft/stress.hpp): configuration, one round, and a whole
// run.  Test programs link the engine sources against a deliberately broken
// runtime build and call run_round() directly.
#pragma once

#include <weft/sim.hpp>
#include <weft/stress.hpp>

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
// The figures' index of the first user scenario (kScenarioCount: the round's
// own tasks, the drivers).
inline constexpr std::uint32_t kUserBase = kScenarioCount + 1;
// What CI runs over 10^4 seeds: everything the simulation can host faithfully
// (in a simulation, "outside" spawns come from the driving thread between
// slices of the run, not from other threads).
inline constexpr std::uint32_t kCoreScenarios = kAllScenarios & ~kOutside;

const char* scenario_name(std::uint32_t bit) noexcept;
// "storm,cancel" / "core" / "all" / a user scenario's name -> the built-in
// bits and the user scenarios (`all` is every one of both); false on an
// unknown name (*error says which).
bool parse_scenarios(const std::string& text, const std::vector<weft::stress::scenario>& user,
                     std::uint32_t* bits, std::vector<const weft::stress::scenario*>* chosen,
                     std::string* error);
std::string scenario_list(std::uint32_t bits);

// The cases of the compose scenario (a bit set; --compose).
inline constexpr std::uint32_t kComposeCaseCount = 7;
inline constexpr std::uint32_t kAllComposeCases = (1u << kComposeCaseCount) - 1;
// "nested,when_all" / "all" -> bits; false on an unknown name (*error says which).
bool parse_compose_cases(const std::string& text, std::uint32_t* bits, std::string* error);
std::string compose_case_list(std::uint32_t bits);

using explore_mode = weft::stress::explore_mode;

// User scenarios (weft/stress.hpp) registered with one run, at most this many.
inline constexpr std::uint32_t kMaxUserScenarios = 32;

// The engine's configuration: the flags (weft::stress::config) with the
// scenario selection resolved (run() does it) and `duration` made explicit
// (infinite: no bound).
struct config : weft::stress::config {
  config() { duration = std::chrono::duration<double>(10.0); }
  std::uint32_t scenarios = kAllScenarios;         // the built-in scenarios selected
  std::uint32_t compose_cases = kAllComposeCases;  // the cases the compose scenario draws from
  // The user scenarios selected; the figures of user[i] are at per[kUserBase + i].
  std::vector<const weft::stress::scenario*> user;
};

// The selected scenarios of `cfg`, user and built-in, comma-separated.
std::string scenario_list(const config& cfg);

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
// 0 all invariants held, 1 a violation, 3 a hang (in a simulation; the
// watchdog on the real runtime ends the process with 3).
int run(const config& cfg);

// A usage error: the one-line message on stderr (naming the program) and,
// when `json_path` is not empty, a JSON report saying so.  Returns 2.
int usage_error(const std::string& program, const std::string& json_path, const std::string& what);

// The command that replays seed `seed` (for messages): exact in a
// simulation; on the real runtime the same seed and flags, one round (the
// interleavings differ).
std::string replay_command(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at);

}  // namespace weft_stress
