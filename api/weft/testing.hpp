// SPDX-License-Identifier: MIT
// weft/testing.hpp -- test your own concurrent code under the deterministic
// simulation: many schedules, PCT, a cancellation at every resume point, and
// a replay of the first failure.
//
//   TEST(Bank, TransfersKeepTheTotal) {
//     weft::testing::options o;
//     o.name = "Bank.TransfersKeepTheTotal";
//     weft::testing::result r = weft::testing::explore([&]() -> weft::task<void> {
//       ... spawn tasks that use your code, join them ...
//       weft::testing::check(total == 200, "the total changed");
//     }, o);
//     EXPECT_TRUE(r.passed()) << r.to_string();
//   }
//
// One call runs the body many times, each run on a fresh simulation runtime
// (weft/sim.hpp: virtual workers driven by this thread, every decision from one
// seed, virtual time), and stops at the first run that fails:
//   1. `seeds` runs with random schedules (seeds first_seed, first_seed + 1, ...);
//   2. `pct_seeds` runs under PCT (sim::policy::pct);
//   3. for each of the first `cancel_seeds` seeds: one run to count the resume
//      points, then one run per resume point k with a cancellation delivered
//      exactly there (to whichever task resumes at k, or with `cancel_target`
//      to the k-th resume point of one task).
//
// A run fails when
//   - the body throws (check() throws check_failure; any other exception counts
//     too), except a weft::cancelled_error in a run that injected a
//     cancellation (the injected cancellation reaching the body is what the
//     run asks for: the invariants go in `after_each`);
//   - a task<bool> body returns false;
//   - the simulation reports a deadlock (an await cycle, a lost wake-up) or
//     its step limit (a livelock);
//   - `after_each` throws (it runs on this thread after every run, whether
//     the body completed or was cancelled, with the runtime shut down);
//   - `failed` returns true (GoogleTest: `[] { return ::testing::Test::HasFailure(); }`,
//     so EXPECT_* in the body count).
//
// Then explore() writes the failing run's event trace to a file, looks for
// a shorter failing schedule (fewer workers, fewer resume points, the same
// kind of failure; `shrink_runs` runs at most), prints a report on `log` and
// returns it.  The report names the run as one environment variable,
//
//   WEFT_SIM_SEED=test=Bank.TransfersKeepTheTotal,seed=7,schedule=random,workers=4
//
// and a command line (this process's own) with it: the same test run again
// with that variable set runs that one run only, writes its trace, and
// reports the same failure.  An explore() whose `name` differs from the
// variable's `test` ignores it; a variable without `test` applies to every
// explore() in the process.  WEFT_SIM_SEED=7 alone replays seed 7 with a
// random schedule and the options' worker count.
//
// Virtual time: sleep_for, sleep_until(weft::sim::now() + d), wait_for and
// every timer of the body run on the simulation's clock, so a test of an
// hour-long timeout takes as long as its steps.  A deadline taken from
// std::chrono::steady_clock::now() is wall time: use weft::sim::now().
//
// Thread: call explore() from a thread that is not a worker of a weft
// runtime (a test's main thread).  The body, after_each and failed run on
// that thread.  The body must not use runtimes other than its own.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>

#include "weft/sim.hpp"
#include "weft/task.hpp"

namespace weft::testing {

// What check() and fail() throw: a failed expectation of the test itself.
class check_failure : public std::runtime_error {
 public:
  check_failure(const std::string& what, std::source_location where);
  const std::source_location& where() const noexcept { return where_; }

 private:
  std::source_location where_;
};

// Throws check_failure("file:line: what") unless `condition` holds.
void check(bool condition, std::string_view what,
           std::source_location where = std::source_location::current());
[[noreturn]] void fail(std::string_view what,
                       std::source_location where = std::source_location::current());

// One run, as the report and WEFT_SIM_SEED name it.
struct run_spec {
  std::string test;  // options::name ("" applies to every explore)
  std::uint64_t seed = 1;
  sim::policy schedule = sim::policy::random;
  unsigned workers = 4;
  unsigned pct_depth = 3;           // pct only
  std::uint64_t pct_steps = 0;      // pct only; 0: the options' value
  std::uint64_t cancel_at = 0;      // 0: no injected cancellation
  std::uint64_t cancel_target = 0;  // sim::options::cancel_target
  // "test=NAME,seed=7,schedule=pct,workers=2,pct_depth=3,pct_steps=400,cancel_at=12,cancel_target=1"
  // (fields at their defaults left out, except seed, schedule and workers).
  std::string to_string() const;
  // The inverse; also a bare number ("7": that seed, the rest default).
  // std::nullopt (with *error set when given) for anything else.
  static std::optional<run_spec> parse(std::string_view text, std::string* error = nullptr);
  friend bool operator==(const run_spec&, const run_spec&) = default;
};

// The simulation knobs explore() starts from: sim::options' defaults with
// max_steps 10^6, so that a livelock is reported within seconds.
sim::options default_simulation();

struct options {
  // The test's name: in the report, the trace file's name and WEFT_SIM_SEED.
  std::string name;
  std::uint64_t first_seed = 1;
  std::uint64_t seeds = 100;               // runs with random schedules
  std::uint64_t pct_seeds = 100;           // runs under PCT
  unsigned pct_depth = 3;                  // PCT's d
  std::uint64_t pct_steps = 0;             // 0: twice the first run's resume points
  std::uint64_t cancel_seeds = 2;          // seeds whose every resume point gets a cancellation
  std::uint64_t cancel_target = 0;         // see sim::options::cancel_target
  std::uint64_t max_cancel_points = 2000;  // per seed; beyond it, evenly spaced points
  unsigned workers = 4;                    // virtual workers, 1..64
  // The other knobs of each run (slice expiry, timer order, step cost,
  // horizon, max_steps); its seed, schedule, pct_*, cancel_* and trace are the
  // explorer's.
  sim::options simulation = default_simulation();
  std::function<void()> after_each;  // the invariants, after every run
  std::function<bool()> failed;      // an outside failure flag, read after every run
  // Where the failing run's trace goes: this directory, else
  // $WEFT_SIM_TRACE_DIR, else $TMPDIR, else /tmp.  The file is named after
  // the test and the run.
  std::string trace_dir;
  bool write_trace = true;
  std::uint64_t shrink_runs = 200;  // 0: no shrinking
  // The report (a failure, or a replay) is printed here; nullptr: nowhere.
  std::FILE* log = stderr;
};

struct failure {
  run_spec run;
  // "check" (check_failure), "exception", "cancelled" (a cancelled_error
  // with no injected cancellation), "returned false", "deadlock",
  // "step limit", "after_each", "failed".
  std::string kind;
  std::string what;   // the message
  std::string where;  // check(): file:line; an exception: its type; else ""
  std::uint64_t resume_points = 0;
  std::string trace_path;  // "" when none was written
  // A shorter failing run of the same kind (and the same check() site), when
  // shrinking found one; its own trace.
  std::optional<run_spec> shrunk;
  std::uint64_t shrunk_resume_points = 0;
  std::string shrunk_trace_path;
  std::string shrunk_replay;
  // The one-line replay: "WEFT_SIM_SEED=... <this process's command line>".
  std::string replay;
};

struct result {
  std::uint64_t runs = 0;           // runs made (shrinking and trace replays not counted)
  std::uint64_t resume_points = 0;  // in those runs
  bool replayed = false;            // WEFT_SIM_SEED chose the one run
  std::optional<failure> first_failure;

  bool passed() const noexcept { return !first_failure.has_value(); }
  // "explored N runs (...): no failure", or the failure report (several lines).
  std::string to_string() const;
};

// The body is a factory called once per run, on this thread, before the run
// starts: reset the state under test there (or in the body).
result explore(std::function<task<void>()> body, const options& opt = {});
result explore(const std::function<task<bool>()>& body, const options& opt = {});

// Runs one run as `spec` says (its trace written as for a failure), and
// returns the result of that run alone.
result replay(std::function<task<void>()> body, const run_spec& spec, const options& opt = {});
result replay(const std::function<task<bool>()>& body, const run_spec& spec,
              const options& opt = {});

// The run in progress (inside the body, or in after_each); nullptr elsewhere.
// Lets the body seed its own choices with the run's seed.
const run_spec* current_run() noexcept;

}  // namespace weft::testing
