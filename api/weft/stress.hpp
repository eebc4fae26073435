// SPDX-License-Identifier: MIT
// weft/stress.hpp -- the engine of weft-stress as a library: run your own
// scenario through the same round runner, invariants, simulation modes,
// dumps, replay commands and JSON report as weft's built-in ones.
//
//   weft::task<void> transfers(weft::stress::context& r) { ... }  // the round's work
//   void books_balance(weft::stress::context& r) { ... }     // after the round
//
//   int main(int argc, char** argv) {
//     return weft::stress::main(argc, argv, {{"bank", "transfers between accounts",
//                                             transfers, books_balance}});
//   }
//
// and then `./my_stress --sim --iterations=10000 --scenario=bank`, or any other
// flag of weft-stress (`--help`).  Link the CMake target weft::stress
// (find_package(weft COMPONENTS stress)); it needs weft and nothing else.
//
// A round: a fresh runtime (the real one, or with --sim a simulation seeded
// with the round's seed), one task per selected scenario running its `run`,
// the runtime shut down and destroyed, then each scenario's `check` and the
// engine's own invariants: no coroutine frame leaked, nothing reached the
// unhandled-exception hook, the round ended before --watchdog (real runtime)
// or without a deadlock (simulation).  docs/stress-testing.md has the rest.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "weft/sim.hpp"
#include "weft/task.hpp"

namespace weft::stress {

class context;
namespace detail {
struct context_access;  // the engine (stress/internal.hpp)
}  // namespace detail

// A scenario of your own.  `run` is called once per round, inside a task of
// the round's runtime, and returns the coroutine that does the round's work:
// it spawns, awaits and cancels as the code under test would.  It may end
// cancelled (a shutdown round, or --explore=cancel_points delivering a
// cancellation at one of its resume points); any other exception out of it is
// a violation.  `check` runs after the round, once the runtime is destroyed
// (every task has ended), and reports what is wrong with context::violation().
struct scenario {
  std::string name;  // selected with --scenario=<name>; letters, digits, '_' and '-'
  std::string help;  // one line for --help
  std::function<weft::task<void>(context&)> run;
  std::function<void(context&)> check;  // may be empty
  // Left out of the default selection and of --scenario=all: run only when
  // named (a scenario with a planted bug, a slow one).
  bool only_by_name = false;
};

// The round as a scenario sees it (its context).  One object per scenario per round; its
// member functions may be called from any task of the round (and from `check`).
class context {
 public:
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  ~context();

  // This scenario's seed in this round (derived from the round's seed and the
  // scenario's name: the same in every replay of the round).
  std::uint64_t seed() const noexcept { return seed_; }
  // A generator seeded with seed() (splitmix64).  One generator: draw from it
  // in one task, or hand out seeds to the tasks you spawn (a generator shared
  // between tasks on the real runtime makes the choices depend on the
  // interleaving, and is a data race).
  std::uint64_t next() noexcept;
  std::uint64_t below(std::uint64_t n) noexcept;  // uniform in [0, n); 0 when n == 0
  bool chance(double p) noexcept;                 // true with probability p

  // The run's flags as the scenario uses them.
  unsigned tasks() const noexcept;      // --tasks: the round's size
  double cancel_rate() const noexcept;  // --cancel_rate: share of tasks to cancel
  bool simulated() const noexcept;      // --sim
  // The round is cut short by the engine: a shutdown round (--scenario with
  // shutdown), or --explore=cancel_points / --cancel_at delivering a
  // cancellation somewhere.  Checks that hold only for a round run to its end
  // consult this.
  bool cut_short() const noexcept;

  // Report a broken invariant (from a task or from `check`): the round fails,
  // and the run prints it with the seed and the command that replays it.
  void violation(const std::string& what);
  // A line in the simulation's event trace (--trace); nothing on the real runtime.
  void note(std::string text);

  // Figures for the progress lines, the summary table and the JSON report.
  void spawned(std::uint64_t n = 1) noexcept;
  enum class ending : std::uint8_t { value, cancelled, error };
  void ended(ending how) noexcept;
  // cancel() on `h`, counted in the figures (and noted in a simulation's trace).
  template <class T>
  bool cancel(weft::join_handle<T>& h, const std::string& reason = "weft::stress") {
    const bool ok = h.cancel(reason);
    count_cancel(reason, ok);
    return ok;
  }

  // The scenario's state for this round: a T value-initialised on the first
  // call, destroyed after `check`.  The same T every call of one scenario.
  template <class T>
  T& state() {
    if (!state_) state_ = std::make_shared<T>();
    return *static_cast<T*>(state_.get());
  }

 private:
  friend struct detail::context_access;
  context() = default;
  void count_cancel(const std::string& reason, bool ok);

  void* engine_ = nullptr;   // the engine's round (stress/internal.hpp)
  std::uint32_t index_ = 0;  // the scenario's figures
  std::uint64_t seed_ = 0;
  std::uint64_t gen_ = 0;
  std::shared_ptr<void> state_;
};

enum class explore_mode : std::uint8_t { none, cancel_points };

// Everything the flags set (weft-stress --help says what each does).
struct config {
  std::uint64_t seed = 0;  // 0: one at random, printed
  unsigned workers = 2;
  // 0: 10 s when `iterations` is 0, else no bound.
  std::chrono::duration<double> duration{0.0};
  std::uint64_t iterations = 0;
  // Comma-separated names, "core" (the built-in ones but outside), "all"
  // (every one); empty: the registered scenarios, or all when none is.
  std::string scenario;
  std::string compose = "all";  // the compose scenario's cases
  double cancel_rate = 0.3;
  unsigned tasks = 200;
  std::chrono::microseconds time_slice{250};
  bool sim = false;
  weft::sim::policy policy = weft::sim::policy::random;
  unsigned pct_depth = 3;
  std::uint64_t pct_steps = 0;  // 0: derived from `tasks`
  explore_mode explore = explore_mode::none;
  std::uint64_t max_cancel_points = 500;
  std::uint64_t cancel_at = 0;
  std::string trace_path;
  bool check_replay = false;
  std::string json_path;
  std::chrono::duration<double> progress_interval{1.0};
  std::chrono::duration<double> cancel_bound{5.0};
  std::chrono::duration<double> watchdog{120.0};
  bool quiet = false;
  // The program the replay commands name (main() sets argv[0]).
  std::string program = "weft-stress";
  FILE* out = stdout;
};

// The exit codes of main() and run().
inline constexpr int kPassed = 0;
inline constexpr int kViolation = 1;
inline constexpr int kUsageError = 2;
inline constexpr int kHang = 3;

// A whole run: the configuration printed, rounds until `iterations` or
// `duration`, progress lines, the summary, the JSON report (`json_path`, on
// every exit path, a hang included).  `scenarios` are selectable by name with
// the built-in ones.  Returns kPassed, kViolation or kHang, or kUsageError
// (after a one-line message on stderr) for a bad configuration (an unknown
// scenario, a value out of range).  A hang on the real runtime (the watchdog)
// ends the process with kHang after writing the dump and the JSON report.
// One run at a time per process.
int run(const config& cfg, const std::vector<scenario>& scenarios = {});

// weft-stress's command line: parses argv (the flags of `weft-stress --help`),
// then run().  Usage errors exit 2 with one line naming the problem.
int main(int argc, char** argv, const std::vector<scenario>& scenarios = {});

}  // namespace weft::stress
