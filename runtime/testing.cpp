// SPDX-License-Identifier: MIT
// weft::testing -- the explorer over the simulation (weft/testing.hpp).
//
// Every run is a fresh simulation runtime on this thread: build the
// sim::options from the run's spec, block_on the body, shut the runtime down,
// then read after_each and failed.  A failure is classified by a signature
// (its kind, and where: the check() site or the exception's type) so that
// shrinking only accepts a shorter run that fails the same way.
#include "weft/testing.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "weft/errors.hpp"
#include "weft/runtime.hpp"

namespace weft::testing {
namespace {

thread_local const run_spec* tls_run = nullptr;

std::string located(std::string_view what, const std::source_location& where) {
  std::string s = where.file_name();
  s += ':';
  s += std::to_string(where.line());
  s += ": ";
  s += what;
  return s;
}

std::string site(const std::source_location& where) {
  return std::string(where.file_name()) + ':' + std::to_string(where.line());
}

std::string type_name(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> d(
      abi::__cxa_demangle(t.name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(t.name());
}

const char* policy_name(sim::policy p) { return p == sim::policy::pct ? "pct" : "random"; }

bool parse_u64(std::string_view v, std::uint64_t* out) {
  if (v.empty()) return false;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), *out);
  return r.ec == std::errc() && r.ptr == v.data() + v.size();
}

// What one run did.
struct outcome {
  bool failed = false;
  std::string kind;
  std::string what;
  std::string where;
  std::uint64_t resume_points = 0;
  std::uint64_t target_resume_points = 0;
  bool cancel_delivered = false;
};

using body_fn = std::function<task<bool>()>;

body_fn wrap(std::function<task<void>()> body) {
  if (!body) throw usage_error("weft::testing: the body is empty");
  return [body = std::move(body)]() -> task<bool> {
    co_await body();
    co_return true;
  };
}

void check_options(const options& opt) {
  if (opt.workers == 0 || opt.workers > 64)
    throw usage_error("weft::testing: options::workers must be 1..64, not " +
                      std::to_string(opt.workers));
  if (opt.pct_depth == 0) throw usage_error("weft::testing: options::pct_depth must be at least 1");
  if (opt.name.find_first_of(", \t\n") != std::string::npos)
    throw usage_error("weft::testing: options::name must not contain ',' or blanks: '" + opt.name +
                      "'");
}

void note_failure(outcome& o, std::string kind, std::string what, std::string where) {
  if (o.failed) return;  // the first failure of a run is the one reported
  o.failed = true;
  o.kind = std::move(kind);
  o.what = std::move(what);
  o.where = std::move(where);
}

// Runs `body` once as `spec` says.  Every exception of the body, the driver
// and the user's hooks ends up in the outcome: nothing escapes.
outcome run_once(const body_fn& body, const run_spec& spec, const options& opt,
                 std::vector<sim::event>* trace) {
  runtime_options ro;
  ro.workers = spec.workers;
  sim::options so = opt.simulation;
  so.seed = spec.seed;
  so.schedule = spec.schedule;
  so.pct_depth = spec.pct_depth;
  if (spec.pct_steps != 0) so.pct_steps = spec.pct_steps;
  so.cancel_at = spec.cancel_at;
  so.cancel_target = spec.cancel_target;
  so.trace = trace;
  ro.simulation = so;

  outcome o;
  const run_spec* const outer = tls_run;
  tls_run = &spec;
  {
    runtime rt(ro);
    const auto classify = [&](const char* during) {
      try {
        throw;
      } catch (const check_failure& e) {
        note_failure(o, "check", e.what(), site(e.where()));
      } catch (const cancelled_error& e) {
        // The injected cancellation reaching the body is what the run asked
        // for; any other is the test's own failure.
        if (!sim::stats(rt).cancel_delivered)
          note_failure(o, "cancelled",
                       std::string(during) + "cancelled: " + std::string(e.reason()),
                       "weft::cancelled_error");
      } catch (const sim::deadlock_error& e) {
        note_failure(o, "deadlock", std::string(during) + e.what(), "");
      } catch (const sim::step_limit_error& e) {
        note_failure(o, "step limit", std::string(during) + e.what(), "");
      } catch (const std::exception& e) {
        note_failure(o, "exception", std::string(during) + e.what(), type_name(typeid(e)));
      } catch (...) {
        note_failure(o, "exception", std::string(during) + "an exception of unknown type", "...");
      }
    };
    try {
      if (!rt.block_on(body())) note_failure(o, "returned false", "the body returned false", "");
    } catch (...) {
      classify("");
    }
    // Tasks the body left behind get their "shutdown" cancellation and run
    // their cleanups here, still in the simulation: a hang there is a
    // failure too.
    try {
      rt.shutdown();
    } catch (...) {
      classify("during shutdown: ");
    }
    const sim::statistics st = sim::stats(rt);
    o.resume_points = st.resume_points;
    o.target_resume_points = st.target_resume_points;
    o.cancel_delivered = st.cancel_delivered;
  }
  if (opt.after_each) {
    try {
      opt.after_each();
    } catch (const check_failure& e) {
      note_failure(o, "check", e.what(), site(e.where()));
    } catch (const std::exception& e) {
      note_failure(o, "after_each", e.what(), type_name(typeid(e)));
    } catch (...) {
      note_failure(o, "after_each", "an exception of unknown type", "...");
    }
  }
  if (opt.failed && opt.failed()) note_failure(o, "failed", "options::failed() returned true", "");
  tls_run = outer;
  return o;
}

bool same_failure(const outcome& a, const outcome& b) {
  return a.failed && b.failed && a.kind == b.kind && a.where == b.where;
}

std::string shell_quote(std::string_view s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::strchr("_-./=,:+@%", c) != nullptr;
  });
  if (plain) return std::string(s);
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  q += '\'';
  return q;
}

// This process's command line, shell-quoted ("" when /proc is not there).
std::string own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string line;
  std::size_t pos = 0;
  while (pos < all.size()) {
    std::size_t end = all.find('\0', pos);
    if (end == std::string::npos) end = all.size();
    if (!line.empty()) line += ' ';
    line += shell_quote(std::string_view(all).substr(pos, end - pos));
    pos = end + 1;
  }
  return line;
}

std::string trace_directory(const options& opt) {
  if (!opt.trace_dir.empty()) return opt.trace_dir;
  for (const char* var : {"WEFT_SIM_TRACE_DIR", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return v;
  }
  return "/tmp";
}

// Replays `spec` with a trace and writes it; the path, or "" when it could
// not be written.
std::string write_trace(const body_fn& body, const run_spec& spec, const options& opt,
                        const outcome& failed) {
  if (!opt.write_trace) return {};
  std::vector<sim::event> events;
  const outcome again = run_once(body, spec, opt, &events);
  std::string file = "weft-sim-" + (spec.test.empty() ? std::string("explore") : spec.test) +
                     "-seed" + std::to_string(spec.seed) + "-" + policy_name(spec.schedule) + "-w" +
                     std::to_string(spec.workers);
  if (spec.cancel_at != 0) file += "-c" + std::to_string(spec.cancel_at);
  if (spec.cancel_target != 0) file += "-t" + std::to_string(spec.cancel_target);
  file += ".trace";
  for (char& c : file) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && std::strchr("-_.", c) == nullptr)
      c = '_';
  }
  const std::string path = trace_directory(opt) + "/" + file;
  std::ofstream out(path, std::ios::trunc);
  if (!out) return {};
  out << "# weft::testing trace: WEFT_SIM_SEED=" << spec.to_string() << "\n";
  out << "# failure: " << failed.kind << ": " << failed.what << "\n";
  if (failed.failed && !same_failure(failed, again))
    out << "# note: this replay did not fail the same way ("
        << (again.failed ? again.kind : "passed")
        << "): does the body depend on something outside the simulation?\n";
  for (const sim::event& e : events) out << e.to_string() << "\n";
  return out ? path : std::string();
}

// "WEFT_SIM_SEED=... <this process's command line>".
std::string replay_line(const run_spec& spec) {
  std::string line = "WEFT_SIM_SEED=" + shell_quote(spec.to_string());
  const std::string cmd = own_command_line();
  if (!cmd.empty()) line += " " + cmd;
  return line;
}

struct explorer {
  const body_fn& body;
  const options& opt;
  result res;
  // Resume points of the random-schedule runs, by seed (the cancel phase's
  // counting runs).
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> points;

  run_spec spec_for(std::uint64_t seed, sim::policy p) const {
    run_spec s;
    s.test = opt.name;
    s.seed = seed;
    s.schedule = p;
    s.workers = opt.workers;
    s.pct_depth = opt.pct_depth;
    s.cancel_target = 0;
    return s;
  }

  // One counted run; true when it failed (and res.first_failure is set).
  bool counted(const run_spec& spec) {
    const outcome o = run_once(body, spec, opt, nullptr);
    ++res.runs;
    res.resume_points += o.resume_points;
    if (spec.schedule == sim::policy::random && spec.cancel_at == 0)
      points[spec.seed] = {o.resume_points, o.target_resume_points};
    if (!o.failed) return false;
    record(spec, o);
    return true;
  }

  void record(const run_spec& spec, const outcome& o) {
    failure f;
    f.run = spec;
    f.kind = o.kind;
    f.what = o.what;
    f.where = o.where;
    f.resume_points = o.resume_points;
    f.trace_path = write_trace(body, spec, opt, o);
    if (opt.shrink_runs != 0 && !res.replayed) shrink(f, o);
    f.replay = replay_line(spec);
    res.first_failure = std::move(f);
  }

  // Looks for a run that fails the same way with fewer workers or fewer
  // resume points: workers 1, 2, ... up to the failing run's, each over the
  // seeds from first_seed; a failure with an injected cancellation tries each
  // candidate's resume points in order and keeps the first that fails.
  void shrink(failure& f, const outcome& original) {
    std::uint64_t budget = opt.shrink_runs;
    std::uint64_t best = original.resume_points;
    unsigned best_workers = f.run.workers;
    std::optional<run_spec> found;
    const auto better = [&](const run_spec& s, const outcome& o) {
      if (!same_failure(original, o)) return false;
      if (s.workers < best_workers || (s.workers == best_workers && o.resume_points < best)) {
        best = o.resume_points;
        best_workers = s.workers;
        found = s;
        return true;
      }
      return false;
    };
    for (unsigned w = 1; w <= f.run.workers && budget > 0; ++w) {
      for (std::uint64_t i = 0; budget > 0 && i < 2 * opt.shrink_runs; ++i) {
        run_spec s = f.run;
        s.workers = w;
        s.seed = opt.first_seed + i;
        if (s == f.run) continue;
        if (f.run.cancel_at == 0) {
          --budget;
          (void)better(s, run_once(body, s, opt, nullptr));
          continue;
        }
        s.cancel_at = 0;
        --budget;
        const outcome count = run_once(body, s, opt, nullptr);
        const std::uint64_t n =
            s.cancel_target != 0 ? count.target_resume_points : count.resume_points;
        for (std::uint64_t k = 1; k <= n && budget > 0; ++k) {
          s.cancel_at = k;
          --budget;
          if (better(s, run_once(body, s, opt, nullptr))) break;
        }
      }
      if (found && found->workers == w) break;  // fewer workers cannot come later
    }
    if (!found) return;
    f.shrunk = found;
    f.shrunk_resume_points = best;
    f.shrunk_trace_path = write_trace(body, *found, opt, original);
    f.shrunk_replay = replay_line(*found);
  }

  void explore() {
    const std::uint64_t pct_first = opt.first_seed;
    for (std::uint64_t i = 0; i < opt.seeds; ++i)
      if (counted(spec_for(opt.first_seed + i, sim::policy::random))) return;
    std::uint64_t pct_steps = opt.pct_steps;
    if (pct_steps == 0) {
      auto it = points.find(opt.first_seed);
      std::uint64_t first = 0;
      if (it != points.end()) {
        first = it->second.first;
      } else if (opt.pct_seeds > 0) {
        first = run_once(body, spec_for(opt.first_seed, sim::policy::random), opt, nullptr)
                    .resume_points;
      }
      pct_steps = std::max<std::uint64_t>(2 * first, 16);
    }
    for (std::uint64_t i = 0; i < opt.pct_seeds; ++i) {
      run_spec s = spec_for(pct_first + i, sim::policy::pct);
      s.pct_steps = pct_steps;
      if (counted(s)) return;
    }
    for (std::uint64_t i = 0; i < opt.cancel_seeds; ++i) {
      run_spec s = spec_for(opt.first_seed + i, sim::policy::random);
      s.cancel_target = opt.cancel_target;
      auto it = points.find(s.seed);
      if (it == points.end() || s.cancel_target != 0) {
        if (counted(s)) return;
        it = points.find(s.seed);
      }
      const std::uint64_t n = s.cancel_target != 0 ? it->second.second : it->second.first;
      const std::uint64_t tries = std::min(n, std::max<std::uint64_t>(opt.max_cancel_points, 1));
      for (std::uint64_t j = 0; j < tries; ++j) {
        // Every point when they fit, else evenly spaced over [1, n].
        s.cancel_at = tries == n ? j + 1 : 1 + j * n / tries;
        if (counted(s)) return;
      }
    }
  }
};

void print(const options& opt, const result& r) {
  if (opt.log == nullptr) return;
  const std::string text = r.to_string();
  std::fputs(text.c_str(), opt.log);
  std::fputc('\n', opt.log);
  std::fflush(opt.log);
}

// WEFT_SIM_SEED, when it is set and names this test (or no test).
std::optional<run_spec> replay_request(const options& opt) {
  const char* v = std::getenv("WEFT_SIM_SEED");
  if (v == nullptr || *v == '\0') return std::nullopt;
  std::string error;
  std::optional<run_spec> s = run_spec::parse(v, &error);
  if (!s) throw usage_error("weft::testing: WEFT_SIM_SEED=" + std::string(v) + ": " + error);
  if (!s->test.empty() && s->test != opt.name) return std::nullopt;
  s->test = opt.name;
  if (s->workers == 0) s->workers = opt.workers;
  return s;
}

result replay_body(const body_fn& body, run_spec spec, const options& opt) {
  check_options(opt);
  if (spec.workers == 0) spec.workers = opt.workers;
  if (spec.workers > 64) throw usage_error("weft::testing: a run's workers must be 1..64");
  explorer e{body, opt, {}, {}};
  e.res.replayed = true;
  if (!e.counted(spec)) {
    // A passing replay still leaves its trace behind: that is what was asked.
    outcome none;
    none.kind = "none";
    none.what = "the run passed";
    (void)write_trace(body, spec, opt, none);
  }
  print(opt, e.res);
  return e.res;
}

result explore_body(const body_fn& body, const options& opt) {
  check_options(opt);
  if (std::optional<run_spec> s = replay_request(opt)) return replay_body(body, *s, opt);
  explorer e{body, opt, {}, {}};
  e.explore();
  if (!e.res.passed()) print(opt, e.res);
  return e.res;
}

}  // namespace

check_failure::check_failure(const std::string& what, std::source_location where)
    : std::runtime_error(what), where_(where) {}

void check(bool condition, std::string_view what, std::source_location where) {
  if (!condition) throw check_failure(located(what, where), where);
}

void fail(std::string_view what, std::source_location where) {
  throw check_failure(located(what, where), where);
}

sim::options default_simulation() {
  sim::options o;
  o.max_steps = 1'000'000;
  return o;
}

std::string run_spec::to_string() const {
  std::string s;
  if (!test.empty()) s += "test=" + test + ",";
  s += "seed=" + std::to_string(seed);
  s += ",schedule=";
  s += policy_name(schedule);
  s += ",workers=" + std::to_string(workers);
  if (schedule == sim::policy::pct) {
    s += ",pct_depth=" + std::to_string(pct_depth);
    if (pct_steps != 0) s += ",pct_steps=" + std::to_string(pct_steps);
  }
  if (cancel_at != 0) s += ",cancel_at=" + std::to_string(cancel_at);
  if (cancel_target != 0) s += ",cancel_target=" + std::to_string(cancel_target);
  return s;
}

std::optional<run_spec> run_spec::parse(std::string_view text, std::string* error) {
  const auto bad = [&](std::string why) -> std::optional<run_spec> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  run_spec s;
  s.workers = 0;  // the options' count unless named
  if (parse_u64(text, &s.seed)) return s;
  std::size_t pos = 0;
  std::string_view rest = text;
  while (!rest.empty()) {
    std::size_t end = rest.find(',');
    std::string_view field = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    const std::size_t eq = field.find('=');
    if (eq == std::string_view::npos) return bad("'" + std::string(field) + "' is not key=value");
    const std::string_view key = field.substr(0, eq);
    const std::string_view value = field.substr(eq + 1);
    std::uint64_t n = 0;
    const bool number = parse_u64(value, &n);
    if (key == "test") {
      s.test = std::string(value);
    } else if (key == "schedule") {
      if (value == "random") {
        s.schedule = sim::policy::random;
      } else if (value == "pct") {
        s.schedule = sim::policy::pct;
      } else {
        return bad("schedule must be random or pct");
      }
    } else if (!number) {
      return bad(std::string(key) + " needs a number, not '" + std::string(value) + "'");
    } else if (key == "seed") {
      s.seed = n;
    } else if (key == "workers") {
      if (n == 0 || n > 64) return bad("workers must be 1..64");
      s.workers = static_cast<unsigned>(n);
    } else if (key == "pct_depth") {
      if (n == 0 || n > 1000) return bad("pct_depth must be 1..1000");
      s.pct_depth = static_cast<unsigned>(n);
    } else if (key == "pct_steps") {
      s.pct_steps = n;
    } else if (key == "cancel_at") {
      s.cancel_at = n;
    } else if (key == "cancel_target") {
      s.cancel_target = n;
    } else {
      return bad("unknown key '" + std::string(key) + "'");
    }
    ++pos;
  }
  if (pos == 0) return bad("empty");
  return s;
}

std::string result::to_string() const {
  std::string s;
  if (!first_failure) {
    s = (replayed ? "weft::testing: the replayed run passed (" : "weft::testing: explored ") +
        std::to_string(runs) + " run(s), " + std::to_string(resume_points) +
        " resume points: no failure";
    if (replayed) s += ")";
    return s;
  }
  const failure& f = *first_failure;
  s = "weft::testing: " + (f.run.test.empty() ? std::string("explore") : f.run.test) +
      (replayed ? " failed in the replayed run" : " failed in run " + std::to_string(runs)) + " (" +
      std::to_string(f.resume_points) + " resume points):\n";
  s += "  run:     " + f.run.to_string() + "\n";
  s += "  failure: " + f.kind + ": " + f.what + "\n";
  if (!f.where.empty() && f.kind != "check") s += "  where:   " + f.where + "\n";
  if (!f.trace_path.empty()) s += "  trace:   " + f.trace_path + "\n";
  if (f.shrunk) {
    s += "  shorter: " + f.shrunk->to_string() + " (" + std::to_string(f.shrunk_resume_points) +
         " resume points)\n";
    if (!f.shrunk_trace_path.empty()) s += "           trace: " + f.shrunk_trace_path + "\n";
    s += "           replay: " + f.shrunk_replay + "\n";
  }
  s += "  replay:  " + f.replay;
  return s;
}

result explore(std::function<task<void>()> body, const options& opt) {
  return explore_body(wrap(std::move(body)), opt);
}

result explore(const std::function<task<bool>()>& body, const options& opt) {
  if (!body) throw usage_error("weft::testing: the body is empty");
  return explore_body(body, opt);
}

result replay(std::function<task<void>()> body, const run_spec& spec, const options& opt) {
  return replay_body(wrap(std::move(body)), spec, opt);
}

result replay(const std::function<task<bool>()>& body, const run_spec& spec, const options& opt) {
  if (!body) throw usage_error("weft::testing: the body is empty");
  return replay_body(body, spec, opt);
}

const run_spec* current_run() noexcept { return tls_run; }

}  // namespace weft::testing
