// SPDX-License-Identifier: MIT
// The runtime's threads as a program sees them from outside: their names
// (top, perf, gdb), the worker start and stop hooks, and the default worker
// count (WEFT_WORKERS, the affinity mask, the cgroup CPU quota of a
// container).
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "threads.hpp"
#include "weft/blocking.hpp"

namespace {

using namespace weft_test;

std::string this_thread_name() {
  char buf[32] = {};
  pthread_getname_np(pthread_self(), buf, sizeof buf);
  return buf;
}

// The names of every thread of this process (/proc/self/task/*/comm).
std::multiset<std::string> process_thread_names() {
  std::multiset<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(e.path() / "comm");
    std::string n;
    if (std::getline(in, n)) names.insert(n);
  }
  return names;
}

// ------------------------------------------------------------- names

TEST(ThreadNamesTest, WorkersAreNamedByIndexAndTheTimerAndBlockingThreadsByRole) {
  watchdog dog(60s);
  std::mutex mu;
  std::vector<std::string> seen(2);
  std::latch started(2);
  weft::runtime_options o = with_workers(2);
  o.on_worker_start = [&](unsigned i) {
    {
      std::lock_guard lk(mu);
      seen.at(i) = this_thread_name();
    }
    started.count_down();
  };
  weft::runtime rt(o);
  started.wait();
  EXPECT_EQ(seen[0], "weft-w0");
  EXPECT_EQ(seen[1], "weft-w1");
  const auto names = process_thread_names();
  EXPECT_EQ(names.count("weft-w0"), 1u);
  EXPECT_EQ(names.count("weft-w1"), 1u);
  EXPECT_EQ(names.count("weft-timer"), 1u);
  // A weft::blocking call runs on a thread named for its pool.
  auto blocking_name = [&]() -> weft::task<std::string> {
    co_return co_await weft::blocking([] { return this_thread_name(); });
  };
  EXPECT_EQ(rt.block_on(blocking_name()), "weft-blocking");
}

// ------------------------------------------------------------- hooks

// Set by the start hook on the worker's own thread: a task that finds it
// unset ran before its worker's start hook.
thread_local int tls_started_worker = -1;

TEST(WorkerHooksTest, EachWorkerRunsStartBeforeAnyTaskAndStopAfterItsLastOnItsOwnThread) {
  watchdog dog(60s);
  constexpr unsigned kWorkers = 2;
  std::mutex mu;
  std::vector<int> starts(kWorkers, 0);
  std::vector<int> stops(kWorkers, 0);
  std::vector<std::thread::id> start_thread(kWorkers);
  std::vector<std::thread::id> stop_thread(kWorkers);
  std::atomic<int> tasks_before_start{0};
  std::atomic<int> tasks_run{0};
  {
    weft::runtime_options o = with_workers(kWorkers);
    o.on_worker_start = [&](unsigned i) {
      tls_started_worker = static_cast<int>(i);
      std::lock_guard lk(mu);
      ++starts.at(i);
      start_thread.at(i) = std::this_thread::get_id();
    };
    o.on_worker_stop = [&](unsigned i) {
      std::lock_guard lk(mu);
      ++stops.at(i);
      stop_thread.at(i) = std::this_thread::get_id();
      // The same thread as the start hook: its thread-local is still set.
      EXPECT_EQ(tls_started_worker, static_cast<int>(i));
    };
    weft::runtime rt(o);
    // Spawned at once, racing the start hooks.
    auto probe = [&]() -> weft::task<void> {
      // Relaxed: counters, read after the runtime joined its workers.
      if (tls_started_worker < 0) tasks_before_start.fetch_add(1, std::memory_order_relaxed);
      tasks_run.fetch_add(1, std::memory_order_relaxed);
      co_return;
    };
    std::vector<weft::join_handle<void>> hs;
    for (int i = 0; i < 200; ++i) hs.push_back(rt.spawn(probe()));
    for (auto& h : hs) h.join();
    rt.shutdown();
    // shutdown() returned: every stop hook has returned.
    std::lock_guard lk(mu);
    for (unsigned i = 0; i < kWorkers; ++i) {
      EXPECT_EQ(starts[i], 1) << "worker " << i;
      EXPECT_EQ(stops[i], 1) << "worker " << i;
      EXPECT_EQ(start_thread[i], stop_thread[i]) << "worker " << i;
    }
    EXPECT_NE(start_thread[0], start_thread[1]);
  }
  // Relaxed: the workers were joined (happens-before).
  EXPECT_EQ(tasks_run.load(std::memory_order_relaxed), 200);
  EXPECT_EQ(tasks_before_start.load(std::memory_order_relaxed), 0);
}

TEST(WorkerHooksTest, AThrowingHookIsReportedAndTheWorkerStillRunsTasks) {
  watchdog dog(60s);
  testing::internal::CaptureStderr();
  {
    weft::runtime_options o = with_workers(1);
    o.on_worker_start = [](unsigned) { throw std::runtime_error("pinning failed"); };
    o.on_worker_stop = [](unsigned) { throw 42; };
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(value_task(7)), 7);
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("on_worker_start threw on worker 0 (ignored): pinning failed"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("on_worker_stop threw on worker 0 (ignored)"), std::string::npos) << err;
}

TEST(WorkerHooksTest, SimulatedAndDrivenRuntimesCallNoHook) {
  watchdog dog(60s);
  std::atomic<int> calls{0};
  auto count = [&](unsigned) {
    // Relaxed: a counter read by this thread after the runtimes are gone.
    calls.fetch_add(1, std::memory_order_relaxed);
  };
  {
    weft::runtime_options o;
    o.simulation = weft::sim::options{};
    o.on_worker_start = count;
    o.on_worker_stop = count;
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(value_task(1)), 1);
  }
  {
    weft::runtime_options o;
    o.driven = true;
    o.on_worker_start = count;
    o.on_worker_stop = count;
    weft::runtime rt(o);
    EXPECT_EQ(rt.block_on(value_task(2)), 2);
  }
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 0);
}

// ------------------------------------------------------------- worker count

// Sets an environment variable for one scope.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~scoped_env() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

unsigned affinity_cpus() {
  cpu_set_t set;
  EXPECT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  return static_cast<unsigned>(CPU_COUNT(&set));
}

TEST(DefaultWorkersTest, WeftWorkersWinsAndAnInvalidValueFallsBackToTheMachine) {
  {
    scoped_env env("WEFT_WORKERS", "3");
    EXPECT_EQ(weft::runtime::default_workers(), 3u);
    weft::runtime rt;
    EXPECT_EQ(rt.workers(), 3u);
  }
  for (const char* bad : {"0", "-2", "many", "4097", ""}) {
    scoped_env env("WEFT_WORKERS", bad);
    testing::internal::CaptureStderr();
    const unsigned n = weft::runtime::default_workers();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_GE(n, 1u) << bad;
    EXPECT_LE(n, affinity_cpus()) << bad;
    EXPECT_NE(err.find("ignoring WEFT_WORKERS"), std::string::npos) << bad;
  }
}

TEST(DefaultWorkersTest, WithoutWeftWorkersAtMostTheAffinityMaskAllows) {
  scoped_env env("WEFT_WORKERS", nullptr);
  const unsigned n = weft::runtime::default_workers();
  EXPECT_GE(n, 1u);
  EXPECT_LE(n, affinity_cpus());
}

// A machine of the test's own: cgroup hierarchies under a temporary
// directory, described by mountinfo and /proc/self/cgroup texts.
class fake_cgroups {
 public:
  fake_cgroups() {
    root_ = std::filesystem::temp_directory_path() /
            ("weft-cgroups-" + std::to_string(::getpid()) + "-" + current_test_name());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  ~fake_cgroups() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  fake_cgroups(const fake_cgroups&) = delete;
  fake_cgroups& operator=(const fake_cgroups&) = delete;

  std::string dir(const std::string& rel) const { return (root_ / rel).string(); }
  void write(const std::string& rel, const std::string& text) const {
    std::filesystem::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << text;
  }
  // A mountinfo line mounting hierarchy part `root` of `fstype` at `rel`.
  std::string mount(const std::string& rel, const std::string& root, const std::string& fstype,
                    const std::string& superopts) const {
    return "30 23 0:26 " + root + " " + dir(rel) + " rw,nosuid,nodev,noexec,relatime shared:4 - " +
           fstype + " cgroup " + superopts + "\n";
  }

 private:
  std::filesystem::path root_;
};

TEST(CgroupQuotaTest, V2QuotaOfTheCgroupOrAnAncestorCapsTheWorkers) {
  fake_cgroups fs;
  const std::string mi = fs.mount("v2", "/", "cgroup2", "rw,nsdelegate");
  fs.write("v2/app.slice/cpu.max", "400000 100000\n");       // 4 CPUs
  fs.write("v2/app.slice/svc/cpu.max", "150000 100000\n");   // 1.5: rounds up to 2
  fs.write("v2/app.slice/svc/job/cpu.max", "max 100000\n");  // none of its own
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/app.slice/svc/job\n"), 2u);
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/app.slice\n"), 4u);
  // A quota of a tenth of a CPU still runs one worker.
  fs.write("v2/tiny/cpu.max", "10000 100000\n");
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/tiny\n"), 1u);
  // No quota anywhere, no cpu.max at all, or the root.
  fs.write("v2/free/cpu.max", "max 100000\n");
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/free\n"), 0u);
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/absent/cgroup\n"), 0u);
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/\n"), 0u);
}

TEST(CgroupQuotaTest, AContainersNamespacedMountReadsItsOwnPartOfTheHierarchy) {
  fake_cgroups fs;
  // The container sees hierarchy part /docker/abc mounted at v2, and its
  // cgroup as /docker/abc/worker.
  const std::string mi = fs.mount("v2", "/docker/abc", "cgroup2", "rw");
  fs.write("v2/cpu.max", "200000 100000\n");
  fs.write("v2/worker/cpu.max", "max 100000\n");
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/docker/abc/worker\n"), 2u);
  // A cgroup outside the mounted part is not read.
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "0::/elsewhere\n"), 0u);
}

TEST(CgroupQuotaTest, V1CpuControllerQuotaCountsAndMinusOneMeansNone) {
  fake_cgroups fs;
  const std::string mi = fs.mount("cpu", "/", "cgroup", "rw,cpu,cpuacct") +
                         fs.mount("memory", "/", "cgroup", "rw,memory");
  fs.write("cpu/cpu.cfs_quota_us", "-1\n");
  fs.write("cpu/cpu.cfs_period_us", "100000\n");
  fs.write("cpu/batch/cpu.cfs_quota_us", "300000\n");
  fs.write("cpu/batch/cpu.cfs_period_us", "100000\n");
  const std::string cg = "4:memory:/batch\n3:cpu,cpuacct:/batch\n0::/\n";
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, cg), 3u);
  EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, "3:cpu,cpuacct:/\n"), 0u);
}

TEST(CgroupQuotaTest, MalformedInputsGiveNoLimitRatherThanAWrongOne) {
  fake_cgroups fs;
  const std::string mi = fs.mount("v2", "/", "cgroup2", "rw");
  fs.write("v2/a/cpu.max", "lots 100000\n");
  fs.write("v2/b/cpu.max", "100000 0\n");
  fs.write("v2/c/cpu.max", "\n");
  fs.write("v2/d/cpu.max", "-5 100000\n");
  for (const char* cg : {"0::/a\n", "0::/b\n", "0::/c\n", "0::/d\n", "0::relative\n",
                         "0::/a/../b\n", "garbage\n", "", "0:/x\n"}) {
    EXPECT_EQ(weft::detail::cgroup_cpu_limit(mi, cg), 0u) << cg;
  }
  EXPECT_EQ(weft::detail::cgroup_cpu_limit("not a mountinfo line\n\n", "0::/a\n"), 0u);
  EXPECT_EQ(weft::detail::cgroup_cpu_limit("", ""), 0u);
}

}  // namespace
