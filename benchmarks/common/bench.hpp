// SPDX-License-Identifier: MIT
// common/bench.hpp -- what every benchmark program here shares: option
// parsing, the compiler string, medians, percentiles, a small JSON writer, and
// the interleaved weft / oneTBB / serial (/ libfork) loop of the throughput
// problems.
//
// Conventions (docs/benchmarks.md):
//   - every program takes --workers=1,2 --reps=N --quick --json=FILE;
//   - every timed run is checked against a reference; a mismatch is printed on
//     stderr and the program exits 1 at the end (after writing its JSON, with
//     "verified": false);
//   - weft and oneTBB (and libfork, when the suite is built with it) are
//     timed in turn inside one process: the order rotates from one repetition
//     to the next (with two runtimes: alternates), and each run is followed
//     by the same short pause (kSettle) so that no runtime's idle-spinning
//     threads eat into another's run.
#pragma once

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <weft/weft.hpp>

#ifdef WEFT_BENCH_LIBFORK
#include "peer/libfork_peer.hpp"
#else
namespace peer_libfork {
class pool;  // the optional peer's pool (peer/libfork_peer.hpp); unused without it
}  // namespace peer_libfork
#endif

#ifndef WEFT_BUILD_TYPE
#define WEFT_BUILD_TYPE "unknown"
#endif

namespace bench {

using clock_type = std::chrono::steady_clock;

// Pause after every timed run of a runtime (both runtimes alike).
inline constexpr std::chrono::milliseconds kSettle{5};

// Untimed warm-up of each runtime before its timed runs: runs until this much
// time has passed (at least one run, at most kWarmUpMaxRuns).  libfork's
// lazy_pool often runs the first two to four runs of a fresh process (fib(32),
// about 80 ms each) at one-worker speed on this machine; one run was not
// enough.  Every runtime gets the same rule.
inline constexpr std::chrono::milliseconds kWarmUp{300};
inline constexpr int kWarmUpMaxRuns = 20;

inline double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

// "g++ 12.2.0" / "clang 19.1.7": the compiler that built this program.
inline std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("g++ ") + __VERSION__;
#else
  return "unknown compiler";
#endif
}

inline std::string tbb_version() {
  char buf[64];
  std::snprintf(buf, sizeof buf, "oneTBB %d.%d", TBB_VERSION_MAJOR, TBB_VERSION_MINOR);
  return buf;
}

inline std::string build_description() {
#ifdef NDEBUG
  return std::string(WEFT_BUILD_TYPE) + " (NDEBUG)";
#else
  return std::string(WEFT_BUILD_TYPE) + " (asserts on)";
#endif
}

// ---------------------------------------------------------------- options

// --key=value and --flag arguments.  Each program declares the keys it knows;
// anything else is a usage error (exit 2).
class args {
 public:
  args(int argc, char** argv, std::string usage, std::vector<std::string> known)
      : usage_(std::move(usage)) {
    known.insert(known.end(), {"workers", "reps", "quick", "json"});
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) fail(a);
      std::string key = a.substr(2), value = "1";
      if (auto eq = key.find('='); eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      }
      if (std::find(known.begin(), known.end(), key) == known.end()) fail(a);
      values_[key] = value;
    }
  }

  bool has(const std::string& key) const { return values_.count(key) != 0; }
  bool quick() const { return has("quick"); }
  std::string str(const std::string& key, std::string dflt) const {
    auto it = values_.find(key);
    return it == values_.end() ? dflt : it->second;
  }
  // Accepts 1000000, 1e6, 10^6.
  long long num(const std::string& key, long long dflt, long long lo, long long hi) const {
    auto it = values_.find(key);
    if (it == values_.end()) return dflt;
    long long v = 0;
    if (!parse_num(it->second, &v) || v < lo || v > hi) fail("--" + key + "=" + it->second);
    return v;
  }
  std::vector<long long> nums(const std::string& key, std::vector<long long> dflt, long long lo,
                              long long hi) const {
    auto it = values_.find(key);
    if (it == values_.end()) return dflt;
    std::vector<long long> out;
    const std::string& list = it->second;
    std::size_t pos = 0;
    while (pos <= list.size()) {
      std::size_t comma = list.find(',', pos);
      if (comma == std::string::npos) comma = list.size();
      long long v = 0;
      if (!parse_num(list.substr(pos, comma - pos), &v) || v < lo || v > hi)
        fail("--" + key + "=" + list);
      out.push_back(v);
      pos = comma + 1;
    }
    if (out.empty()) fail("--" + key + "=" + list);
    return out;
  }
  std::vector<unsigned> workers() const {
    std::vector<unsigned> w;
    for (long long v : nums("workers", {1, 2}, 1, 256)) w.push_back(static_cast<unsigned>(v));
    return w;
  }
  int reps(int full, int quick_reps) const {
    return static_cast<int>(num("reps", quick() ? quick_reps : full, 1, 100000));
  }

  [[noreturn]] void fail(const std::string& bad) const {
    std::fprintf(stderr, "bad argument '%s'\nusage: %s\n", bad.c_str(), usage_.c_str());
    std::exit(2);
  }

 private:
  static bool parse_num(const std::string& s, long long* out) {
    if (s.empty()) return false;
    const char* p = s.c_str();
    char* end = nullptr;
    if (auto caret = s.find('^'); caret != std::string::npos) {  // 10^6
      long long base = std::strtoll(p, &end, 10);
      if (end != p + caret) return false;
      long long e = std::strtoll(p + caret + 1, &end, 10);
      if (*end != '\0' || e < 0 || e > 18) return false;
      long long v = 1;
      for (long long i = 0; i < e; ++i) v *= base;
      *out = v;
      return true;
    }
    if (s.find_first_of("eE") != std::string::npos) {  // 1e6
      double d = std::strtod(p, &end);
      if (*end != '\0' || d < 0 || d > 9.2e18 || d != std::floor(d)) return false;
      *out = static_cast<long long>(d);
      return true;
    }
    long long v = std::strtoll(p, &end, 10);
    if (*end != '\0') return false;
    *out = v;
    return true;
  }

  std::string usage_;
  std::map<std::string, std::string> values_;
};

// ---------------------------------------------------------------- statistics

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t k = v.size();
  return (k % 2) ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

// Nearest-rank percentile (p in [0, 100]) of a sorted vector.
inline double percentile_sorted(const std::vector<double>& s, double p) {
  if (s.empty()) return 0;
  std::size_t rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(s.size())));
  if (rank < 1) rank = 1;
  if (rank > s.size()) rank = s.size();
  return s[rank - 1];
}

struct summary {
  double median = 0, min = 0, max = 0;
};

inline summary summarize(const std::vector<double>& v) {
  summary s;
  if (v.empty()) return s;
  s.median = median(v);
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

// ---------------------------------------------------------------- JSON

// A tiny JSON writer: enough for flat objects, arrays of numbers and arrays
// of objects.  Values are written in insertion order.
class json {
 public:
  static json object() { return json('{'); }
  static json array() { return json('['); }

  json& add(const std::string& key, const std::string& v) { return raw(key, quote(v)); }
  json& add(const std::string& key, const char* v) { return raw(key, quote(v)); }
  json& add(const std::string& key, double v) { return raw(key, number(v)); }
  json& add(const std::string& key, long long v) { return raw(key, std::to_string(v)); }
  json& add(const std::string& key, long v) { return raw(key, std::to_string(v)); }
  json& add(const std::string& key, int v) { return raw(key, std::to_string(v)); }
  json& add(const std::string& key, unsigned v) { return raw(key, std::to_string(v)); }
  json& add(const std::string& key, bool v) { return raw(key, v ? "true" : "false"); }
  json& add(const std::string& key, const json& v) { return raw(key, v.str()); }
  json& add(const std::string& key, const std::vector<double>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) s += ',';
      s += number(v[i]);
    }
    return raw(key, s + "]");
  }
  // Arrays.
  json& push(const json& v) { return raw("", v.str()); }

  std::string str() const { return body_ + (open_ == '{' ? "}" : "]"); }

  bool write_file(const std::string& path) const {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return false;
    }
    std::string s = str();
    std::fwrite(s.data(), 1, s.size(), f);
    std::fputc('\n', f);
    std::fclose(f);
    return true;
  }

  static std::string number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[64];
    if (v == std::floor(v) && std::fabs(v) < 1e15)
      std::snprintf(buf, sizeof buf, "%.0f", v);  // integral: exact
    else
      std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
  }

 private:
  explicit json(char open) : open_(open), body_(1, open) {}
  static std::string quote(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') {
        o += '\\';
        o += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        o += buf;
      } else {
        o += c;
      }
    }
    return o + "\"";
  }
  json& raw(const std::string& key, const std::string& v) {
    if (!first_) body_ += ',';
    first_ = false;
    if (open_ == '{') body_ += quote(key) + ":";
    body_ += v;
    return *this;
  }
  char open_;
  bool first_ = true;
  std::string body_;
};

// The header every program's JSON starts with.
inline json document(const std::string& benchmark, const args& a) {
  json d = json::object();
  d.add("benchmark", benchmark)
      .add("compiler", compiler())
      .add("build", build_description())
      .add("tbb", tbb_version())
      .add("hardware_concurrency", std::thread::hardware_concurrency())
      .add("quick", a.quick());
#ifdef WEFT_BENCH_LIBFORK
  d.add("libfork", peer_libfork::version());
#endif
  return d;
}

// ---------------------------------------------------------------- checking

inline bool g_failed = false;

template <class T>
void check(const char* what, unsigned workers, const T& got, const T& want) {
  if (got == want) return;
  std::fprintf(stderr, "MISMATCH: %s with %u workers: got %lld, expected %lld\n", what, workers,
               static_cast<long long>(got), static_cast<long long>(want));
  g_failed = true;
}

// Warms `run` up by kWarmUp's rule, checking every result against `expected`.
template <class Run, class T>
void warm_up(const std::string& what, unsigned workers, Run&& run, const T& expected) {
  const auto t0 = clock_type::now();
  for (int i = 0; i < kWarmUpMaxRuns && (i == 0 || clock_type::now() - t0 < kWarmUp); ++i)
    check((what + " (warm-up)").c_str(), workers, static_cast<T>(run()), expected);
}

inline void print_header(const char* program, const std::string& what) {
  std::string peers = tbb_version();
#ifdef WEFT_BENCH_LIBFORK
  peers += ", " + peer_libfork::version() + " (lazy_pool)";
#endif
  std::printf("%s: %s\ncompiler: %s, build: %s, %s\n", program, what.c_str(), compiler().c_str(),
              build_description().c_str(), peers.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------- throughput problems

// A weft spelling of a problem other than the suite's own (`problem::weft`,
// spawn+join): its own row and JSON records under `name` ("weft-extern";
// "weft-fork" for the fork-join form, weft::fork_task, and
// "weft-fork-extern" for its fib in a .cpp of its own).
struct weft_variant {
  std::string name;
  std::function<long long(weft::runtime&)> run;
};

// One instance of a fork-join problem, several ways.  Each function returns
// the answer; `expected` is checked against every run.
struct problem {
  std::string name;      // "skynet"
  std::string instance;  // "10^6 leaves"
  double tasks = 0;      // tasks (or calls) per run, for ns/task
  long long expected = 0;
  std::function<long long()> serial;
  std::function<long long(weft::runtime&)> weft;
  std::vector<weft_variant> weft_more;  // more weft spellings, on the same runtime
  std::function<long long(tbb::task_arena&)> tbb;
  // The optional peer (peer/libfork_peer.hpp): set only when the program is
  // built with libfork (WEFT_BENCH_LIBFORK); empty, it has no column.
  std::function<long long(peer_libfork::pool&)> libfork;
};

struct problem_medians {
  double serial_ms = 0;
  std::vector<unsigned> workers;
  std::vector<double> weft_ms, tbb_ms;  // medians, per entry of `workers`
  // Every runtime's medians by its name ("weft", "oneTBB", "libfork",
  // "weft-extern"), per entry of `workers`.
  std::map<std::string, std::vector<double>> ms;
};

// Runs `p` for every worker count: a weft runtime with k workers, a oneTBB
// arena of concurrency k (the calling thread takes part in it, as in
// fib_compare) and, when built with libfork and `p.libfork` is set, a libfork
// lazy_pool of k threads are built once and each runtime (each weft spelling)
// is warmed up with untimed runs (warm_up); then each repetition times serial and
// then every runtime once, the order rotating by one from one repetition to
// the next (with weft and oneTBB alone: alternating).  Appends one object per
// (workers, runtime) to `results`.
inline problem_medians run_problem(const problem& p, const std::vector<unsigned>& workers, int reps,
                                   json& results) {
  problem_medians out;
  // The timed runtimes of one worker count, in rotation order, each bound to
  // that count's weft runtime, arena or pool.
  struct entry {
    std::string name;
    std::function<long long()> run;
    std::vector<double> ms;
    // weft's spellings: steals and parks per timed run, from runtime::stats()
    // read before and after the run (outside the timed interval).
    bool weft = false;
    std::vector<double> steals, parks;
  };
  std::vector<std::string> names{"weft"};
  for (const weft_variant& v : p.weft_more) names.push_back(v.name);
  names.push_back("oneTBB");
#ifdef WEFT_BENCH_LIBFORK
  const bool with_libfork = static_cast<bool>(p.libfork);
#else
  const bool with_libfork = false;
#endif
  if (with_libfork) names.push_back("libfork");
  std::string who;  // "weft and oneTBB", "weft, oneTBB and libfork"
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) who += i + 1 == names.size() ? " and " : ", ";
    who += names[i];
  }
  std::printf("\n== %s, %s (%.0f tasks per run), %d reps, %s interleaved\n", p.name.c_str(),
              p.instance.c_str(), p.tasks, reps, who.c_str());
  std::printf("%-8s %-16s %11s %11s %11s %9s  %s\n", "workers", "runtime", "median ms", "min ms",
              "max ms", "ns/task", "oneTBB/weft");
  std::fflush(stdout);
  auto row = [&](const std::string& w, const std::string& name, const std::vector<double>& ms,
                 const std::string& ratio) {
    summary s = summarize(ms);
    std::printf("%-8s %-16s %11.2f %11.2f %11.2f %9.2f  %s\n", w.c_str(), name.c_str(), s.median,
                s.min, s.max, s.median * 1e6 / p.tasks, ratio.c_str());
    std::fflush(stdout);
  };
  auto record = [&](unsigned k, const std::string& name, const std::vector<double>& ms,
                    const entry* e = nullptr) {
    summary s = summarize(ms);
    json r = json::object();
    r.add("problem", p.name)
        .add("instance", p.instance)
        .add("tasks", p.tasks)
        .add("workers", k)
        .add("runtime", name)
        .add("median_ms", s.median)
        .add("min_ms", s.min)
        .add("max_ms", s.max)
        .add("samples_ms", ms);
    if (e != nullptr && e->weft) {
      r.add("steals_median", median(e->steals)).add("parks_median", median(e->parks));
    }
    results.push(r);
  };
  auto ratio = [](const char* what, double num, double den) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%s%.2fx", what, num / den);
    return std::string(buf);
  };

  std::vector<double> serial_ms;
  for (unsigned k : workers) {
    weft::runtime_options ro;
    ro.workers = k;
    weft::runtime rt(ro);
    tbb::task_arena arena(static_cast<int>(k));
    arena.initialize();
    if (rt.workers() != k)
      std::fprintf(stderr, "warning: weft runtime has %u workers, asked for %u\n", rt.workers(), k);
    if (arena.max_concurrency() != static_cast<int>(k))
      std::fprintf(stderr, "warning: oneTBB arena has concurrency %d, asked for %u\n",
                   arena.max_concurrency(), k);
    std::vector<entry> entries;
    entries.push_back({"weft", [&] { return p.weft(rt); }, {}, true, {}, {}});
    for (const weft_variant& v : p.weft_more)
      entries.push_back({v.name, [&] { return v.run(rt); }, {}, true, {}, {}});
    entries.push_back({"oneTBB", [&] { return p.tbb(arena); }, {}, false, {}, {}});
#ifdef WEFT_BENCH_LIBFORK
    std::unique_ptr<peer_libfork::pool> lf;
    if (with_libfork) {
      lf = std::make_unique<peer_libfork::pool>(k);
      entries.push_back({"libfork", [&] { return p.libfork(*lf); }, {}, false, {}, {}});
    }
#endif

    for (entry& e : entries) warm_up(e.name, k, e.run, p.expected);
    std::this_thread::sleep_for(kSettle);

    for (int rep = 0; rep < reps; ++rep) {
      auto t0 = clock_type::now();
      long long r = p.serial();
      serial_ms.push_back(ms_since(t0));
      check("serial", 1, r, p.expected);
      std::this_thread::sleep_for(kSettle);
      for (std::size_t turn = 0; turn < entries.size(); ++turn) {
        entry& e = entries[(turn + static_cast<std::size_t>(rep)) % entries.size()];
        weft::worker_stats before;
        if (e.weft) before = rt.stats().total;
        t0 = clock_type::now();
        r = e.run();
        e.ms.push_back(ms_since(t0));
        if (e.weft) {
          const weft::worker_stats after = rt.stats().total;
          e.steals.push_back(static_cast<double>(after.steals - before.steals));
          e.parks.push_back(static_cast<double>(after.parks - before.parks));
        }
        check(e.name.c_str(), k, r, p.expected);
        std::this_thread::sleep_for(kSettle);
      }
    }
    const double weft_med = median(entries.front().ms);
    const double tbb_med = median(entries[1 + p.weft_more.size()].ms);
    const double lf_med = with_libfork ? median(entries.back().ms) : 0;
    for (const entry& e : entries) {
      std::string note;
      if (e.name == "weft")
        note = ratio("", tbb_med, weft_med);
      else if (e.name == "libfork")
        note = ratio("weft/libfork ", weft_med, median(e.ms));
      else if (e.name != "oneTBB") {
        note = ratio((e.name + "/weft ").c_str(), median(e.ms), weft_med);
        if (with_libfork) note += ", " + ratio("/libfork ", median(e.ms), lf_med);
      }
      if (e.weft) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%ssteals/run %.0f", note.empty() ? "" : ", ",
                      median(e.steals));
        note += buf;
      }
      row(std::to_string(k), e.name, e.ms, note);
    }
    for (const entry& e : entries) {
      record(k, e.name, e.ms, &e);
      out.ms[e.name].push_back(median(e.ms));
    }
    out.workers.push_back(k);
    out.weft_ms.push_back(weft_med);
    out.tbb_ms.push_back(tbb_med);
  }
  row("-", "serial", serial_ms, "");
  record(1, "serial", serial_ms);
  out.serial_ms = median(serial_ms);
  return out;
}

// Shared main() body of the throughput programs: write the JSON, report.
inline int finish(json& doc, const json& results, const args& a) {
  doc.add("results", results).add("verified", !g_failed);
  if (a.has("json") && !doc.write_file(a.str("json", ""))) return 1;
  if (g_failed) {
    std::printf("\nFAILED: some result differed from the reference (see stderr)\n");
    return 1;
  }
  return 0;
}

}  // namespace bench
