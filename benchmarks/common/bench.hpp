// common/bench.hpp -- what every benchmark program here shares: option
// parsing, the compiler string, medians, percentiles, a small JSON writer, and
// the interleaved weft / oneTBB / serial loop of the throughput problems.
//
// Conventions (docs/benchmarks.md):
//   - every program takes --workers=1,2 --reps=N --quick --json=FILE;
//   - every timed run is checked against a reference; a mismatch is printed on
//     stderr and the program exits 1 at the end (after writing its JSON, with
//     "verified": false);
//   - weft and oneTBB are timed alternately inside one process: the order of
//     the two alternates from one repetition to the next, and each run is
//     followed by the same short pause (kSettle) so that neither runtime's
//     idle-spinning threads eat into the other's run.
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
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <weft/weft.hpp>

#ifndef WEFT_BUILD_TYPE
#define WEFT_BUILD_TYPE "unknown"
#endif

namespace bench {

using clock_type = std::chrono::steady_clock;

// Pause after every timed run of a runtime (both runtimes alike).
inline constexpr std::chrono::milliseconds kSettle{5};

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

inline void print_header(const char* program, const std::string& what) {
  std::printf("%s: %s\ncompiler: %s, build: %s, %s\n", program, what.c_str(), compiler().c_str(),
              build_description().c_str(), tbb_version().c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------- throughput problems

// One instance of a fork-join problem, three ways.  Each function returns the
// answer; `expected` is checked against every run.
struct problem {
  std::string name;      // "skynet"
  std::string instance;  // "10^6 leaves"
  double tasks = 0;      // tasks (or calls) per run, for ns/task
  long long expected = 0;
  std::function<long long()> serial;
  std::function<long long(weft::runtime&)> weft;
  std::function<long long(tbb::task_arena&)> tbb;
};

struct problem_medians {
  double serial_ms = 0;
  std::vector<unsigned> workers;
  std::vector<double> weft_ms, tbb_ms;  // medians, per entry of `workers`
};

// Runs `p` for every worker count: a weft runtime with k workers and a oneTBB
// arena of concurrency k (the calling thread takes part in it, as in
// fib_compare) are built once, warmed up with one untimed run each, then each
// repetition times serial, weft and oneTBB (the order of the last two
// alternating).  Appends one object per (workers, runtime) to `results`.
inline problem_medians run_problem(const problem& p, const std::vector<unsigned>& workers, int reps,
                                   json& results) {
  problem_medians out;
  std::printf("\n== %s, %s (%.0f tasks per run), %d reps, weft and oneTBB interleaved\n",
              p.name.c_str(), p.instance.c_str(), p.tasks, reps);
  std::printf("%-8s %-8s %11s %11s %11s %9s  %s\n", "workers", "runtime", "median ms", "min ms",
              "max ms", "ns/task", "oneTBB/weft");
  std::fflush(stdout);
  auto row = [&](const std::string& w, const char* who, const std::vector<double>& ms,
                 const char* ratio) {
    summary s = summarize(ms);
    std::printf("%-8s %-8s %11.2f %11.2f %11.2f %9.2f  %s\n", w.c_str(), who, s.median, s.min,
                s.max, s.median * 1e6 / p.tasks, ratio);
    std::fflush(stdout);
  };
  auto record = [&](unsigned k, const char* who, const std::vector<double>& ms) {
    summary s = summarize(ms);
    json r = json::object();
    r.add("problem", p.name)
        .add("instance", p.instance)
        .add("tasks", p.tasks)
        .add("workers", k)
        .add("runtime", who)
        .add("median_ms", s.median)
        .add("min_ms", s.min)
        .add("max_ms", s.max)
        .add("samples_ms", ms);
    results.push(r);
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

    check("weft (warm-up)", k, p.weft(rt), p.expected);
    check("oneTBB (warm-up)", k, p.tbb(arena), p.expected);
    std::this_thread::sleep_for(kSettle);

    std::vector<double> weft_ms, tbb_ms;
    for (int rep = 0; rep < reps; ++rep) {
      auto t0 = clock_type::now();
      long long r = p.serial();
      serial_ms.push_back(ms_since(t0));
      check("serial", 1, r, p.expected);
      std::this_thread::sleep_for(kSettle);
      for (int turn = 0; turn < 2; ++turn) {
        const bool weft_turn = (turn == 0) == (rep % 2 == 0);
        t0 = clock_type::now();
        if (weft_turn) {
          r = p.weft(rt);
          weft_ms.push_back(ms_since(t0));
          check("weft", k, r, p.expected);
        } else {
          r = p.tbb(arena);
          tbb_ms.push_back(ms_since(t0));
          check("oneTBB", k, r, p.expected);
        }
        std::this_thread::sleep_for(kSettle);
      }
    }
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%.2fx", median(tbb_ms) / median(weft_ms));
    row(std::to_string(k), "weft", weft_ms, ratio);
    row(std::to_string(k), "oneTBB", tbb_ms, "");
    record(k, "weft", weft_ms);
    record(k, "oneTBB", tbb_ms);
    out.workers.push_back(k);
    out.weft_ms.push_back(median(weft_ms));
    out.tbb_ms.push_back(median(tbb_ms));
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
