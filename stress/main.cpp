// SPDX-License-Identifier: MIT
// stress/main.cpp -- weft-stress: the command line (Abseil flags).
//
// `--help` prints the usage below and the flags of this file, and exits 0
// (Abseil's own --help exits 1 and lists every flag of every library; this
// tool handles --help, -h and --helpfull itself before Abseil parses).
#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/reflection.h>
#include <absl/flags/usage.h>
#include <absl/strings/string_view.h>
#include <absl/time/time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "stress.hpp"

ABSL_FLAG(uint64_t, seed, 0,
          "First seed.  Round i (seed i in --sim) uses seed+i for every choice the scenarios "
          "make (and, in --sim, for every scheduling decision).  0: pick one at random and "
          "print it.");
ABSL_FLAG(uint32_t, workers, 2,
          "Worker threads of the real runtime, or virtual workers of the simulation.");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "Wall-time bound of the whole run (e.g. 30s, 2m).  The run stops starting new rounds "
          "after it; with --iterations, whichever comes first.  0 (the default): 10s when "
          "--iterations is not given, else no bound (--iterations alone runs every round).");
ABSL_FLAG(uint64_t, iterations, 0,
          "Rounds to run (seeds in --sim); 0: as many as --duration allows.");
ABSL_FLAG(std::string, scenario, "all",
          "Comma-separated scenarios: storm (fan-out trees, children cancelled at random), "
          "cancel (cancel before start / while suspended / while running / after completion), "
          "timeout (wait_for races), checkpoint (CPU loops with checkpoint() and yield()), "
          "group (nested task groups with failing children, shield()), cleanup (cleanups that "
          "spawn and wake tasks), shutdown (each round ends by shutdown() under load), outside "
          "(threads that are not workers spawn, cancel and join), compose (composed constructs: "
          "nested timeouts, a group / when_all / when_any whose owner is cancelled while a child "
          "fails, shield inside wait_for, a task cancelled by the task it awaits or by itself), "
          "fork (tasks awaiting fork_task trees with checkpoint() and yield() in frames, some "
          "with a frame that throws, cancelled at random moments from other tasks); "
          "or core (all but outside), all.");
ABSL_FLAG(std::string, compose, "all",
          "The cases the compose scenario draws from, comma-separated: nested, group, when_all, "
          "when_any, shield, awaited, self; or all.");
ABSL_FLAG(double, cancel_rate, 0.3, "Share of tasks that get a cancel() at some moment (0..1).");
ABSL_FLAG(uint32_t, tasks, 200, "Tracked tasks per scenario per round (about).");
ABSL_FLAG(absl::Duration, time_slice, absl::Microseconds(250),
          "The real runtime's time slice (runtime_options::time_slice): how long a task may run "
          "before checkpoint() reschedules it.  Short slices preempt CPU loops often.  (In --sim "
          "the generator decides slice expiry.)");
ABSL_FLAG(std::string, json, "", "Write a machine-readable summary to this file.");
ABSL_FLAG(bool, sim, false,
          "Run on the deterministic simulation (weft/sim.hpp) instead of worker threads: one OS "
          "thread, virtual workers and virtual time, every decision from the seed.  A failing "
          "seed replays exactly with --sim --seed=S --iterations=1.");
ABSL_FLAG(std::string, sim_policy, "random",
          "--sim scheduling: random (a random worker looks for work with the real policy) or "
          "pct (probabilistic concurrency testing: random priorities, --pct_depth - 1 change "
          "points).");
ABSL_FLAG(uint32_t, pct_depth, 3, "PCT's bug depth d (d - 1 priority change points).");
ABSL_FLAG(uint64_t, pct_steps, 0,
          "PCT: change points are drawn from [1, pct_steps]; 0: 6 x tasks x scenarios.");
ABSL_FLAG(std::string, explore, "none",
          "--sim exploration: none, or cancel_points: run each seed once to count its resume "
          "points, then once per resume point with a cancellation delivered exactly there "
          "(at most --max_cancel_points per seed, evenly spaced), checking the invariants each "
          "time.");
ABSL_FLAG(uint64_t, max_cancel_points, 500, "cancel_points: runs per seed at most.");
ABSL_FLAG(uint64_t, cancel_at, 0,
          "--sim: deliver a cancellation at this resume point (replays one run of "
          "cancel_points).");
ABSL_FLAG(std::string, trace, "",
          "--sim: write the event trace here: of the seed when --iterations=1, else of the "
          "first failing seed (replayed).");
ABSL_FLAG(bool, check_replay, false,
          "--sim: run every seed twice with a trace and compare the traces event by event (a "
          "difference is a violation: the simulation must be deterministic).");
ABSL_FLAG(absl::Duration, progress_interval, absl::Seconds(1), "Time between progress lines.");
ABSL_FLAG(absl::Duration, cancel_bound, absl::Seconds(5),
          "A cancellation must be observed (the task's body ends) this soon after cancel() "
          "returned true; also the bound on shutdown().  Wall time on the real runtime, virtual "
          "time in --sim.");
ABSL_FLAG(absl::Duration, watchdog, absl::Seconds(120),
          "A round running longer than this (wall time) is a hang: every live task is dumped "
          "with its state and where it was spawned, and the tool exits 3.");
ABSL_FLAG(bool, quiet, false, "No progress lines.");

namespace {

constexpr const char* kUsage =
    "weft-stress: hammer the weft runtime and check its invariants.\n"
    "\n"
    "Runs rounds of the selected scenarios on a fresh runtime each: the real multi-threaded\n"
    "runtime, or (--sim) the deterministic simulation, where round i is seed --seed+i and\n"
    "replays event for event.  Prints the seed and the configuration first, a progress line\n"
    "every --progress_interval, and a summary table at the end.\n"
    "\n"
    "Invariants checked after every round: every task's outcome observed exactly once;\n"
    "every cleanup ran exactly once per body; no frame leaked (live-frame count back to\n"
    "its value before the round); no body ran after a cancel() that returned true before\n"
    "it started (exact in --sim); every cancellation observed within --cancel_bound; the\n"
    "cancellation contract (every cancel() that returned true delivered exactly once, to\n"
    "its task or below it, or its task completed despite it); and what the scenarios\n"
    "check as they go (values, timeouts, task groups, shield, composed constructs).\n"
    "\n"
    "Exit status: 0 all invariants held; 1 a violation (each printed, with the replay\n"
    "command in --sim); 2 bad flags; 3 a hang (watchdog, or a simulation deadlock).\n"
    "\n"
    "Examples:\n"
    "  weft-stress --duration=30s --workers=2                 # everything, real runtime\n"
    "  weft-stress --sim --iterations=10000 --scenario=core   # 10^4 seeds\n"
    "  weft-stress --sim --seed=42 --iterations=1 --trace=t.txt   # replay one seed\n"
    "  weft-stress --sim --explore=cancel_points --scenario=cancel --tasks=10 --iterations=20\n";

void print_help() {
  std::fputs(kUsage, stdout);
  std::fputs("\nFlags:\n", stdout);
  std::vector<std::pair<std::string, absl::CommandLineFlag*>> mine;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string file = flag->Filename();
    if (file.size() >= 15 && file.compare(file.size() - 15, 15, "stress/main.cpp") == 0)
      mine.emplace_back(std::string(name), flag);
  }
  std::sort(mine.begin(), mine.end());
  for (const auto& [name, flag] : mine) {
    std::printf("  --%s (default: %s)\n", name.c_str(), flag->DefaultValue().c_str());
    // Wrap the help text at about 90 columns.
    std::string help = flag->Help();
    std::size_t pos = 0;
    while (pos < help.size()) {
      std::size_t len = std::min<std::size_t>(86, help.size() - pos);
      if (pos + len < help.size()) {
        std::size_t sp = help.rfind(' ', pos + len);
        if (sp != std::string::npos && sp > pos) len = sp - pos;
      }
      std::printf("      %s\n", help.substr(pos, len).c_str());
      pos += len;
      while (pos < help.size() && help[pos] == ' ') ++pos;
    }
  }
}

[[noreturn]] void bad(const std::string& what) {
  std::fprintf(stderr, "weft-stress: %s (see --help)\n", what.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "--helpfull") == 0 || std::strcmp(argv[i], "-help") == 0) {
      print_help();
      return 0;
    }
  }
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) bad(std::string("unexpected argument '") + rest[1] + "'");

  weft_stress::config cfg;
  cfg.seed = absl::GetFlag(FLAGS_seed);
  if (cfg.seed == 0) {
    std::random_device rd;
    cfg.seed = (static_cast<std::uint64_t>(rd()) << 32 | rd()) % 1'000'000'000 + 1;
  }
  cfg.workers = absl::GetFlag(FLAGS_workers);
  if (cfg.workers == 0 || cfg.workers > 64) bad("--workers must be 1..64");
  cfg.duration =
      std::chrono::duration<double>(absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration)));
  if (cfg.duration.count() < 0) bad("--duration must not be negative");
  cfg.iterations = absl::GetFlag(FLAGS_iterations);
  // A count alone is run in full: a default time bound applies only to runs
  // that name no count (asking for 10^4 seeds and getting 2,000 is a trap).
  if (cfg.duration.count() == 0) {
    cfg.duration = cfg.iterations != 0
                       ? std::chrono::duration<double>(std::numeric_limits<double>::infinity())
                       : std::chrono::duration<double>(10.0);
  }
  std::string error;
  if (!weft_stress::parse_scenarios(absl::GetFlag(FLAGS_scenario), &cfg.scenarios, &error))
    bad(error);
  if (!weft_stress::parse_compose_cases(absl::GetFlag(FLAGS_compose), &cfg.compose_cases, &error))
    bad(error);
  cfg.cancel_rate = absl::GetFlag(FLAGS_cancel_rate);
  if (!(cfg.cancel_rate >= 0 && cfg.cancel_rate <= 1)) bad("--cancel_rate must be in [0, 1]");
  cfg.tasks = absl::GetFlag(FLAGS_tasks);
  if (cfg.tasks == 0) bad("--tasks must be at least 1");
  cfg.json_path = absl::GetFlag(FLAGS_json);
  cfg.time_slice =
      std::chrono::microseconds(absl::ToInt64Microseconds(absl::GetFlag(FLAGS_time_slice)));
  if (cfg.time_slice.count() <= 0) bad("--time_slice must be positive");
  cfg.sim = absl::GetFlag(FLAGS_sim);
  const std::string policy = absl::GetFlag(FLAGS_sim_policy);
  if (policy == "random") {
    cfg.policy = weft::sim::policy::random;
  } else if (policy == "pct") {
    cfg.policy = weft::sim::policy::pct;
  } else {
    bad("--sim_policy must be random or pct");
  }
  cfg.pct_depth = absl::GetFlag(FLAGS_pct_depth);
  cfg.pct_steps = absl::GetFlag(FLAGS_pct_steps);
  const std::string explore = absl::GetFlag(FLAGS_explore);
  if (explore == "none") {
    cfg.explore = weft_stress::explore_mode::none;
  } else if (explore == "cancel_points") {
    cfg.explore = weft_stress::explore_mode::cancel_points;
  } else {
    bad("--explore must be none or cancel_points");
  }
  cfg.max_cancel_points = absl::GetFlag(FLAGS_max_cancel_points);
  cfg.cancel_at = absl::GetFlag(FLAGS_cancel_at);
  cfg.trace_path = absl::GetFlag(FLAGS_trace);
  cfg.check_replay = absl::GetFlag(FLAGS_check_replay);
  if (!cfg.sim && (cfg.explore != weft_stress::explore_mode::none || cfg.cancel_at != 0 ||
                   !cfg.trace_path.empty() || policy != "random" || cfg.check_replay)) {
    bad("--explore, --cancel_at, --trace, --check_replay and --sim_policy need --sim");
  }
  cfg.progress_interval =
      std::chrono::duration<double>(absl::ToDoubleSeconds(absl::GetFlag(FLAGS_progress_interval)));
  cfg.cancel_bound =
      std::chrono::duration<double>(absl::ToDoubleSeconds(absl::GetFlag(FLAGS_cancel_bound)));
  cfg.watchdog =
      std::chrono::duration<double>(absl::ToDoubleSeconds(absl::GetFlag(FLAGS_watchdog)));
  cfg.quiet = absl::GetFlag(FLAGS_quiet);
  return weft_stress::run(cfg);
}
