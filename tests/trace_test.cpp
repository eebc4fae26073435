// SPDX-License-Identifier: MIT
// tests/trace_test.cpp -- trace export (runtime_options::trace, WEFT_TRACE):
// a real workload is traced, the file is parsed as JSON (nlohmann-json, for
// the tests only) and its events are checked against the Trace Event Format
// and against what the workload did.
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <latch>
#include <map>
#include <set>

#include "test_support.hpp"

namespace {

using namespace weft_test;
using namespace std::chrono_literals;
using json = nlohmann::json;

// A file name under TMPDIR (or /tmp) that no other test process uses.
std::string temp_path(const char* stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr && dir[0] != '\0' ? dir : "/tmp") + "/weft_" + stem + "_" +
         std::to_string(::getpid()) + ".json";
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);  // throws on malformed JSON: the test fails
}

// Microseconds with three decimals (the writer's format) back to ns.
std::int64_t ns_of(const json& us) { return std::llround(us.get<double>() * 1000.0); }

std::map<std::int64_t, std::string> thread_names(const json& trace) {
  std::map<std::int64_t, std::string> names;
  for (const json& e : trace["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name") {
      names[e["tid"].get<std::int64_t>()] = e["args"]["name"].get<std::string>();
    }
  }
  return names;
}

// The format's rules for what weft writes: slices with ts/dur/tid that do not
// overlap on a track, flows whose start and finish come in pairs, instants
// on a thread track.  Returns the number of slices.
std::size_t check_well_formed(const json& trace) {
  std::map<std::int64_t, std::vector<std::pair<std::int64_t, std::int64_t>>> slices;
  std::map<std::string, std::pair<int, int>> flows;  // cat/id -> (starts, finishes)
  std::map<std::string, std::int64_t> flow_start_ts;
  std::size_t n = 0;
  for (const json& e : trace["traceEvents"]) {
    const std::string ph = e["ph"];
    EXPECT_TRUE(e.contains("pid")) << e.dump();
    if (ph == "M") continue;
    EXPECT_TRUE(e.contains("tid") && e.contains("ts") && e.contains("name")) << e.dump();
    if (ph == "X") {
      EXPECT_TRUE(e.contains("dur")) << e.dump();
      slices[e["tid"]].emplace_back(ns_of(e["ts"]), ns_of(e["dur"]));
      ++n;
    } else if (ph == "s" || ph == "f") {
      const std::string key = e["cat"].get<std::string>() + "/" + e["id"].dump();
      if (ph == "s") {
        ++flows[key].first;
        flow_start_ts[key] = ns_of(e["ts"]);
      } else {
        ++flows[key].second;
        EXPECT_EQ(e["bp"], "e") << e.dump();
        EXPECT_LE(flow_start_ts[key], ns_of(e["ts"])) << "flow finishes before it starts";
      }
    } else if (ph == "i") {
      EXPECT_EQ(e["s"], "t") << e.dump();
    } else {
      ADD_FAILURE() << "unexpected phase " << e.dump();
    }
  }
  for (auto& [tid, v] : slices) {
    std::sort(v.begin(), v.end());
    for (std::size_t i = 1; i < v.size(); ++i) {
      EXPECT_LE(v[i - 1].first + v[i - 1].second, v[i].first)
          << "slices overlap on tid " << tid << " at " << v[i].first << " ns";
    }
  }
  for (auto& [key, count] : flows) {
    EXPECT_EQ(count.first, 1) << "flow " << key << " starts " << count.first << " times";
    EXPECT_EQ(count.second, 1) << "flow " << key << " finishes " << count.second << " times";
  }
  return n;
}

// ------------------------------------------------------------ the workload

struct shared {
  std::latch sleeper_started{1};
  std::latch victim_started{1};
  std::atomic<std::uint64_t> sink{0};
};

// CPU work long enough (tens of microseconds) for the other worker to steal
// its siblings.
weft::task<void> busy(shared* s) {
  std::uint64_t x = 0;  // unsigned: the mixing wraps by design
  for (std::uint64_t i = 0; i < 20000; ++i) x += i ^ (x >> 3);
  s->sink.fetch_add(x, std::memory_order_relaxed);  // Relaxed: keeps x alive
  co_return;
}

weft::task<void> fan_out(shared* s) {
  std::vector<weft::join_handle<void>> hs;
  for (int i = 0; i < 64; ++i) hs.push_back(weft::spawn(busy(s)));
  for (auto& h : hs) co_await h;
}

weft::task<void> sleeper(std::latch* started) {
  started->count_down();
  co_await weft::sleep_for(60s);  // cancelled long before
}

// Cancels its victim from inside a task, then waits for it.
weft::task<void> canceller(weft::join_handle<void>* victim) {
  victim->cancel("cancel from a task");
  try {
    co_await *victim;
  } catch (const weft::cancelled_error&) {
  }
}

weft::task<void> named_work() {
  co_await weft::yield();
  co_return;
}

TEST(TraceTest, RealWorkloadGivesWellFormedEventsWithFlowsCancelsAndNames) {
  watchdog wd(60s);
  const std::string path = temp_path("trace_workload");
  shared s;
  {
    weft::runtime_options o = with_workers(2);
    o.trace = weft::trace_options{path, 1 << 16};
    weft::runtime rt(o);
    // Steals: a fan-out on one worker; the other finds its deque.  Repeated
    // until a steal happened (almost always the first round).
    for (int round = 0; round < 50 && rt.stats().total.steals == 0; ++round)
      rt.block_on(fan_out(&s));
    ASSERT_GT(rt.stats().total.steals, 0u);
    // A cancel from a foreign thread (this one).
    auto sleeping = rt.spawn(sleeper(&s.sleeper_started));
    s.sleeper_started.wait();
    sleeping.cancel("cancel from a foreign thread");
    EXPECT_THROW(sleeping.join(), weft::cancelled_error);
    // A cancel from a task.
    auto victim = rt.spawn(sleeper(&s.victim_started));
    s.victim_started.wait();
    rt.block_on(canceller(&victim));
    // A named task.
    rt.spawn(named_work(), weft::spawn_options{"trace-named"}).join();
    rt.shutdown();
  }
  const json trace = read_json(path);
  std::remove(path.c_str());
  EXPECT_GT(check_well_formed(trace), 0u);
  EXPECT_EQ(trace["otherData"]["dropped_events"], 0);

  const auto names = thread_names(trace);
  std::set<std::string> name_set;
  for (auto& [tid, name] : names) name_set.insert(name);
  EXPECT_TRUE(name_set.count("weft-w0") == 1 && name_set.count("weft-w1") == 1);

  std::map<std::string, int> flows;  // cat -> starts
  bool named_slice = false;
  std::map<std::string, std::string> request_thread, delivery_thread;  // reason -> thread
  for (const json& e : trace["traceEvents"]) {
    if (e["ph"] == "s") ++flows[e["cat"]];
    if (e["ph"] == "X" && e["name"] == "trace-named") named_slice = true;
    if (e["ph"] == "i" && e["cat"] == "cancel") {
      const std::string reason = e["args"]["reason"];
      const std::string thread = names.at(e["tid"].get<std::int64_t>());
      (e["name"] == "cancel request" ? request_thread : delivery_thread)[reason] = thread;
      EXPECT_EQ(e["args"]["kind"], "explicit") << e.dump();
      EXPECT_NE(e["args"]["where"].get<std::string>().find("trace_test.cpp"), std::string::npos);
    }
  }
  EXPECT_GT(flows["spawn"], 0);
  EXPECT_GT(flows["steal"], 0);
  EXPECT_TRUE(named_slice);
  // The foreign thread's request is on its own track; the task's on a worker.
  ASSERT_TRUE(request_thread.count("cancel from a foreign thread"));
  EXPECT_EQ(request_thread["cancel from a foreign thread"].rfind("weft-w", 0), std::string::npos);
  ASSERT_TRUE(request_thread.count("cancel from a task"));
  EXPECT_EQ(request_thread["cancel from a task"].rfind("weft-w", 0), 0u);
  // Both were delivered, on a worker.
  for (const char* reason : {"cancel from a foreign thread", "cancel from a task"}) {
    ASSERT_TRUE(delivery_thread.count(reason)) << reason;
    EXPECT_EQ(delivery_thread[reason].rfind("weft-w", 0), 0u) << reason;
  }
}

TEST(TraceTest, TinyRingKeepsItsBoundAndCountsWhatItDropped) {
  watchdog wd(60s);
  const std::string path = temp_path("trace_tiny");
  constexpr std::size_t kCapacity = 8;
  shared s;
  {
    weft::runtime_options o = with_workers(2);
    o.trace = weft::trace_options{path, kCapacity};
    weft::runtime rt(o);
    for (int round = 0; round < 4; ++round) rt.block_on(fan_out(&s));
  }
  const json trace = read_json(path);
  std::remove(path.c_str());
  check_well_formed(trace);
  EXPECT_EQ(trace["otherData"]["ring_capacity"], kCapacity);
  // 4 x 65 tasks ran: far more events than 3 rings of 8 hold.
  EXPECT_GT(trace["otherData"]["dropped_events"].get<std::uint64_t>(), 100u);
  std::size_t events = 0;
  std::map<std::int64_t, std::size_t> slices_per_tid;
  for (const json& e : trace["traceEvents"]) {
    if (e["ph"] == "M") continue;
    ++events;
    if (e["ph"] == "X") ++slices_per_tid[e["tid"]];
  }
  EXPECT_LE(events, 3 * kCapacity);  // two workers' rings and the foreign one
  for (auto& [tid, n] : slices_per_tid) EXPECT_LE(n, kCapacity) << "tid " << tid;
}

TEST(TraceTest, EnvironmentVariableTurnsTracingOnAndABadPathOnlyWarns) {
  watchdog wd(60s);
  const std::string path = temp_path("trace_env");
  ASSERT_EQ(::setenv("WEFT_TRACE", path.c_str(), 1), 0);
  {
    weft::runtime rt(with_workers(1));
    rt.block_on(named_work());
  }
  EXPECT_GT(check_well_formed(read_json(path)), 0u);
  std::remove(path.c_str());

  ASSERT_EQ(::setenv("WEFT_TRACE", "/nonexistent-dir/weft/trace.json", 1), 0);
  testing::internal::CaptureStderr();
  {
    weft::runtime rt(with_workers(1));
    rt.block_on(named_work());  // runs untraced
  }
  const std::string err = testing::internal::GetCapturedStderr();
  ::unsetenv("WEFT_TRACE");
  EXPECT_NE(err.find("weft: not tracing: cannot write WEFT_TRACE=\"/nonexistent-dir/weft/"
                     "trace.json\""),
            std::string::npos)
      << err;

  // An option with an empty path turns tracing off even with WEFT_TRACE set.
  ASSERT_EQ(::setenv("WEFT_TRACE", path.c_str(), 1), 0);
  {
    weft::runtime_options o = with_workers(1);
    o.trace = weft::trace_options{};
    weft::runtime rt(o);
    rt.block_on(named_work());
  }
  ::unsetenv("WEFT_TRACE");
  EXPECT_FALSE(std::ifstream(path).good());
}

TEST(TraceTest, SimulationTracesInVirtualTime) {
  watchdog wd(60s);
  const std::string path = temp_path("trace_sim");
  shared s;
  {
    weft::runtime_options o;
    o.workers = 3;
    o.simulation = weft::sim::options{};
    o.trace = weft::trace_options{path, 1 << 12};
    weft::runtime rt(o);
    rt.block_on(fan_out(&s));
  }
  const json trace = read_json(path);
  std::remove(path.c_str());
  EXPECT_GT(check_well_formed(trace), 0u);
  EXPECT_EQ(trace["otherData"]["clock"], "virtual (simulation)");
  EXPECT_EQ(thread_names(trace).count(3), 1u);  // weft-w2
}

}  // namespace
