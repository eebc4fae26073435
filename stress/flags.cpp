// SPDX-License-Identifier: MIT
// stress/flags.cpp -- weft-stress's command line: weft::stress::main().
//
// The flags are parsed here, by a small parser of the engine's own, not by a
// flags library: the engine is a library that users link (weft::stress), and
// with Abseil flags every user program -- and an installed weft::stress -- would
// need Abseil's CMake package, its flag registry would clash with a user's own
// Abseil flags, and a flag library's --help lists every flag of every linked
// library.  The syntax is the one weft-stress always accepted (Abseil's):
// --flag=value, --flag value, -flag=value; booleans as --flag, --noflag or
// --flag=true|false|1|0|yes|no; durations as a number with a unit (ns, us, ms,
// s, m, h), several in a row (1m30s), or 0 or inf; unsigned integers in
// decimal.  Usage errors exit 2 with one line naming the problem.
#include <weft/stress.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stress.hpp"

namespace weft::stress {
namespace {

constexpr const char* kUsage =
    "%s: hammer the weft runtime%s and check its invariants.\n"
    "\n"
    "Runs rounds of the selected scenarios on a fresh runtime each: the real multi-threaded\n"
    "runtime, or (--sim) the deterministic simulation, where round i is seed --seed+i and\n"
    "replays event for event.  Prints the seed and the configuration first, a progress line\n"
    "every --progress_interval (rounds done, of how many, and the time left), and a summary\n"
    "table at the end.\n"
    "\n"
    "Invariants checked after every round: every task's outcome observed exactly once;\n"
    "every cleanup ran exactly once per body; no frame leaked (live-frame count back to\n"
    "its value before the round); no body ran after a cancel() that returned true before\n"
    "it started (exact in --sim); every cancellation observed within --cancel_bound; the\n"
    "cancellation contract (every cancel() that returned true delivered exactly once, to\n"
    "its task or below it, or its task completed despite it); and what the scenarios\n"
    "check as they go (values, timeouts, task groups, shield, composed constructs) and,\n"
    "for a scenario registered through weft/stress.hpp, its own check after the round.\n"
    "\n"
    "Exit status: 0 all invariants held; 1 a violation (each printed, with the command\n"
    "that replays it); 2 a usage error (an unknown flag, a bad value, an unknown scenario,\n"
    "an unexpected argument: one line on stderr names it); 3 a hang (the watchdog on the\n"
    "real runtime, a deadlock or the step limit in --sim).  --json is written on every\n"
    "one of them.\n"
    "\n"
    "Examples:\n"
    "  %s --duration=30s --workers=2                 # everything, real runtime\n"
    "  %s --sim --iterations=10000 --scenario=core   # 10^4 seeds\n"
    "  %s --sim --seed=42 --iterations=1 --trace=t.txt   # replay one seed\n"
    "  %s --sim --explore=cancel_points --scenario=cancel --tasks=10 --iterations=20\n";

enum class kind { boolean, u32, u64, real, duration, text };

struct flag {
  const char* name;
  kind type;
  const char* def;  // the default, as --help shows it
  std::string help;
  // Sets the value from its text; false when the text is not a value of the type.
  std::function<bool(config&, std::string_view)> set;
};

bool parse_u64(std::string_view t, std::uint64_t max, std::uint64_t* out) {
  if (t.empty() || t.size() > 20) return false;
  std::uint64_t v = 0;
  for (char ch : t) {
    if (ch < '0' || ch > '9') return false;
    const auto d = static_cast<std::uint64_t>(ch - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool parse_real(std::string_view t, double* out) {
  if (t.empty()) return false;
  const std::string s(t);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno != 0 || std::isnan(v)) return false;
  *out = v;
  return true;
}

// "30s", "2m", "250ms", "1.5s", "250us", "1m30s", "0", "inf" -> seconds.
bool parse_duration(std::string_view t, double* out) {
  if (t == "0") {
    *out = 0;
    return true;
  }
  if (t == "inf") {
    *out = std::numeric_limits<double>::infinity();
    return true;
  }
  double total = 0;
  if (t.empty()) return false;
  while (!t.empty()) {
    std::size_t n = 0;
    while (n < t.size() && ((t[n] >= '0' && t[n] <= '9') || t[n] == '.')) ++n;
    if (n == 0) return false;
    double v = 0;
    if (!parse_real(t.substr(0, n), &v)) return false;
    t.remove_prefix(n);
    std::size_t u = 0;
    while (u < t.size() && t[u] >= 'a' && t[u] <= 'z') ++u;
    const std::string_view unit = t.substr(0, u);
    t.remove_prefix(u);
    if (unit == "ns") {
      total += v * 1e-9;
    } else if (unit == "us") {
      total += v * 1e-6;
    } else if (unit == "ms") {
      total += v * 1e-3;
    } else if (unit == "s") {
      total += v;
    } else if (unit == "m") {
      total += v * 60;
    } else if (unit == "h") {
      total += v * 3600;
    } else {
      return false;  // no unit, or an unknown one
    }
  }
  *out = total;
  return true;
}

bool parse_bool(std::string_view t, bool* out) {
  if (t == "true" || t == "1" || t == "yes" || t == "t" || t == "y") {
    *out = true;
  } else if (t == "false" || t == "0" || t == "no" || t == "f" || t == "n") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

template <class T>
std::function<bool(config&, std::string_view)> unsigned_into(T config::* m) {
  return [m](config& c, std::string_view t) {
    std::uint64_t v = 0;
    if (!parse_u64(t, std::numeric_limits<T>::max(), &v)) return false;
    c.*m = static_cast<T>(v);
    return true;
  };
}

std::function<bool(config&, std::string_view)> duration_into(
    std::chrono::duration<double> config::* m) {
  return [m](config& c, std::string_view t) {
    double v = 0;
    if (!parse_duration(t, &v)) return false;
    c.*m = std::chrono::duration<double>(v);
    return true;
  };
}

std::function<bool(config&, std::string_view)> text_into(std::string config::* m) {
  return [m](config& c, std::string_view t) {
    c.*m = std::string(t);
    return true;
  };
}

std::function<bool(config&, std::string_view)> bool_into(bool config::* m) {
  return [m](config& c, std::string_view t) { return parse_bool(t, &(c.*m)); };
}

// One of the named values.
template <class T>
std::function<bool(config&, std::string_view)> choice_into(
    T config::* m, const std::vector<std::pair<std::string_view, T>>& choices) {
  return [m, choices](config& c, std::string_view t) {
    for (const auto& [name, value] : choices) {
      if (t == name) {
        c.*m = value;
        return true;
      }
    }
    return false;
  };
}

std::vector<flag> flags(const std::vector<scenario>& user) {
  std::string mine;
  for (const auto& s : user)
    mine += s.name + " (" + s.help + (s.only_by_name ? "; only when named" : "") + "), ";
  std::vector<flag> f;
  f.push_back({"seed", kind::u64, "0",
               "First seed.  Round i (seed i in --sim) uses seed+i for every choice the "
               "scenarios make (and, in --sim, for every scheduling decision).  0: pick one at "
               "random and print it.",
               unsigned_into(&config::seed)});
  f.push_back({"workers", kind::u32, "2",
               "Worker threads of the real runtime, or virtual workers of the simulation (1..64).",
               unsigned_into(&config::workers)});
  f.push_back({"duration", kind::duration, "0",
               "Wall-time bound of the whole run (e.g. 30s, 2m).  The run stops starting new "
               "rounds after it; with --iterations, whichever comes first.  0 (the default): 10s "
               "when --iterations is not given, else no bound (--iterations alone runs every "
               "round).",
               duration_into(&config::duration)});
  f.push_back({"iterations", kind::u64, "0",
               "Rounds to run (seeds in --sim); 0: as many as --duration allows.",
               unsigned_into(&config::iterations)});
  f.push_back(
      {"scenario", kind::text, user.empty() ? "all" : "the registered scenarios",
       "Comma-separated scenarios: " + mine +
           "storm (fan-out trees, children cancelled at random), cancel (cancel before start / "
           "while suspended / while running / after completion), timeout (wait_for races), "
           "checkpoint (CPU loops with checkpoint() and yield()), group (nested task groups with "
           "failing children, shield()), cleanup (cleanups that spawn and wake tasks), shutdown "
           "(each round ends by shutdown() under load), outside (threads that are not workers "
           "spawn, cancel and join), compose (composed constructs: nested timeouts, a group / "
           "when_all / when_any whose owner is cancelled while a child fails, shield inside "
           "wait_for, a task cancelled by the task it awaits or by itself), fork (tasks awaiting "
           "fork_task trees with checkpoint() and yield() in frames, some with a frame that "
           "throws, cancelled at random moments from other tasks); or core (the built-in ones "
           "but outside), all (every one not marked \"only when named\").",
       text_into(&config::scenario)});
  f.push_back({"compose", kind::text, "all",
               "The cases the compose scenario draws from, comma-separated: nested, group, "
               "when_all, when_any, shield, awaited, self; or all.",
               text_into(&config::compose)});
  f.push_back({"cancel_rate", kind::real, "0.3",
               "Share of tasks that get a cancel() at some moment (0..1).",
               [](config& c, std::string_view t) { return parse_real(t, &c.cancel_rate); }});
  f.push_back({"tasks", kind::u32, "200", "Tracked tasks per scenario per round (about).",
               unsigned_into(&config::tasks)});
  f.push_back({"time_slice", kind::duration, "250us",
               "The real runtime's time slice (runtime_options::time_slice): how long a task may "
               "run before checkpoint() reschedules it.  Short slices preempt CPU loops often.  "
               "(In --sim the generator decides slice expiry.)",
               [](config& c, std::string_view t) {
                 double v = 0;
                 if (!parse_duration(t, &v) || v > 3600) return false;
                 c.time_slice = std::chrono::microseconds(static_cast<std::int64_t>(v * 1e6));
                 return true;
               }});
  f.push_back({"json", kind::text, "\"\"",
               "Write a machine-readable report to this file, however the run ends (a "
               "violation, a hang, a usage error included): the figures, the exit code, each "
               "failing round with every violation and the command that replays it, and a "
               "hang's dump.",
               text_into(&config::json_path)});
  f.push_back({"sim", kind::boolean, "false",
               "Run on the deterministic simulation (weft/sim.hpp) instead of worker threads: "
               "one OS thread, virtual workers and virtual time, every decision from the seed.  "
               "A failing seed replays exactly with --sim --seed=S --iterations=1.",
               bool_into(&config::sim)});
  f.push_back({"sim_policy", kind::text, "random",
               "--sim scheduling: random (a random worker looks for work with the real policy) "
               "or pct (probabilistic concurrency testing: random priorities, --pct_depth - 1 "
               "change points).",
               choice_into(&config::policy, {{"random", weft::sim::policy::random},
                                             {"pct", weft::sim::policy::pct}})});
  f.push_back({"pct_depth", kind::u32, "3", "PCT's bug depth d (d - 1 priority change points).",
               unsigned_into(&config::pct_depth)});
  f.push_back({"pct_steps", kind::u64, "0",
               "PCT: change points are drawn from [1, pct_steps]; 0: 6 x tasks x scenarios.",
               unsigned_into(&config::pct_steps)});
  f.push_back({"explore", kind::text, "none",
               "--sim exploration: none, or cancel_points: run each seed once to count its "
               "resume points, then once per resume point with a cancellation delivered exactly "
               "there (at most --max_cancel_points per seed, evenly spaced), checking the "
               "invariants each time.",
               choice_into(&config::explore, {{"none", explore_mode::none},
                                              {"cancel_points", explore_mode::cancel_points}})});
  f.push_back({"max_cancel_points", kind::u64, "500", "cancel_points: runs per seed at most.",
               unsigned_into(&config::max_cancel_points)});
  f.push_back({"cancel_at", kind::u64, "0",
               "--sim: deliver a cancellation at this resume point (replays one run of "
               "cancel_points).",
               unsigned_into(&config::cancel_at)});
  f.push_back({"trace", kind::text, "\"\"",
               "--sim: write the event trace here: of the seed when --iterations=1, else of the "
               "first failing seed (replayed).",
               text_into(&config::trace_path)});
  f.push_back({"check_replay", kind::boolean, "false",
               "--sim: run every seed twice with a trace and compare the traces event by event "
               "(a difference is a violation: the simulation must be deterministic).",
               bool_into(&config::check_replay)});
  f.push_back({"progress_interval", kind::duration, "1s", "Time between progress lines.",
               duration_into(&config::progress_interval)});
  f.push_back({"cancel_bound", kind::duration, "5s",
               "A cancellation must be observed (the task's body ends) this soon after cancel() "
               "returned true; also the bound on shutdown().  Wall time on the real runtime, "
               "virtual time in --sim.",
               duration_into(&config::cancel_bound)});
  f.push_back({"watchdog", kind::duration, "2m",
               "A round running longer than this (wall time) is a hang: every live task is "
               "dumped with its state and where it was spawned, the --json report is written, "
               "and the program exits 3.",
               duration_into(&config::watchdog)});
  f.push_back({"quiet", kind::boolean, "false", "No progress lines.", bool_into(&config::quiet)});
  std::sort(f.begin(), f.end(),
            [](const flag& a, const flag& b) { return std::string_view(a.name) < b.name; });
  return f;
}

std::string base_name(std::string_view path) {
  const auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

void print_help(const std::string& program, const std::vector<flag>& fs, bool user) {
  const std::string name = base_name(program);
  const char* p = name.c_str();
  std::printf(kUsage, p, user ? " and the scenarios registered with it" : "", p, p, p, p);
  std::fputs("\nFlags:\n", stdout);
  for (const auto& f : fs) {
    std::printf("  --%s (default: %s)\n", f.name, f.def);
    // Wrap the help text at about 90 columns.
    const std::string& help = f.help;
    std::size_t pos = 0;
    while (pos < help.size()) {
      std::size_t len = std::min<std::size_t>(86, help.size() - pos);
      if (pos + len < help.size()) {
        const std::size_t sp = help.rfind(' ', pos + len);
        if (sp != std::string::npos && sp > pos) len = sp - pos;
      }
      std::printf("      %s\n", help.substr(pos, len).c_str());
      pos += len;
      while (pos < help.size() && help[pos] == ' ') ++pos;
    }
  }
}

}  // namespace

int main(int argc, char** argv, const std::vector<scenario>& scenarios) {
  config cfg;
  cfg.program = argc > 0 && argv[0] != nullptr ? argv[0] : "weft-stress";
  const std::vector<flag> fs = flags(scenarios);
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--help" || a == "-h" || a == "--helpfull" || a == "-help") {
      print_help(cfg.program, fs, !scenarios.empty());
      return kPassed;
    }
  }
  // --json first: a usage error found below is reported there too.
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    if (a.starts_with("--json=")) cfg.json_path = std::string(a.substr(7));
    if (a.starts_with("-json=")) cfg.json_path = std::string(a.substr(6));
    if ((a == "--json" || a == "-json") && i + 1 < argc) cfg.json_path = argv[i + 1];
  }
  auto bad = [&](const std::string& what) {
    return weft_stress::usage_error(cfg.program, cfg.json_path, what);
  };
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (flags_done || a.size() < 2 || a[0] != '-') {
      return bad("unexpected argument '" + std::string(a) + "'");
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string_view body = a.substr(a[1] == '-' ? 2 : 1);
    std::string_view name = body;
    std::string_view value;
    bool has_value = false;
    if (const auto eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    const flag* f = nullptr;
    bool negated = false;
    for (const auto& x : fs) {
      if (name == x.name) f = &x;
    }
    if (f == nullptr && name.starts_with("no")) {
      for (const auto& x : fs) {
        if (x.type == kind::boolean && name.substr(2) == x.name) {
          f = &x;
          negated = true;
        }
      }
      if (negated && has_value)
        return bad("--" + std::string(name) + " takes no value ('" + std::string(a) + "')");
    }
    if (f == nullptr) return bad("unknown flag '" + std::string(a) + "'");
    if (f->type == kind::boolean && !has_value) {
      value = negated ? "false" : "true";
    } else if (!has_value) {
      if (i + 1 >= argc) return bad("missing value for --" + std::string(f->name));
      value = argv[++i];
    }
    if (!f->set(cfg, value)) {
      const char* want = f->type == kind::boolean    ? "true or false"
                         : f->type == kind::u32      ? "an unsigned 32-bit integer"
                         : f->type == kind::u64      ? "an unsigned integer"
                         : f->type == kind::real     ? "a number"
                         : f->type == kind::duration ? "a duration such as 30s, 2m, 250ms or 1.5s"
                         : std::string_view(f->name) == "explore" ? "none or cancel_points"
                                                                  : "random or pct";
      return bad("bad value '" + std::string(value) + "' for --" + f->name + ": want " + want);
    }
  }
  return run(cfg, scenarios);
}

}  // namespace weft::stress
