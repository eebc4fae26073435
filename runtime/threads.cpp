// SPDX-License-Identifier: MIT
// runtime/threads.cpp -- the runtime's threads: the default worker count
// (WEFT_WORKERS, else the affinity mask lowered to the cgroup CPU quota),
// thread names, worker hooks.
//
// A container limited with `docker run --cpus=2` (or a systemd unit's
// CPUQuota=) still sees every CPU of the host in its affinity mask; only
// cpu.max says that it gets two CPUs' worth of time.  Starting one worker per
// host CPU there makes the kernel throttle the whole process each period,
// which costs far more than the idle CPUs would have given.
#include "threads.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "weft/errors.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {
namespace {

unsigned long long parse_count(const std::string& s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  return end == s.c_str() || *end != '\0' || s[0] == '-' ? 0 : v;
}

// CPUs from a quota and a period (microseconds); 0 for none.  A partial CPU
// still runs, so round up.
unsigned cpus_of(unsigned long long quota, unsigned long long period) {
  if (quota == 0 || period == 0) return 0;
  const unsigned long long cpus = quota / period + (quota % period != 0 ? 1 : 0);
  return static_cast<unsigned>(std::min<unsigned long long>(cpus, runtime_options::max_workers));
}

// cgroup v2: "$QUOTA $PERIOD", QUOTA "max" for none.
unsigned cpus_in_v2(const std::string& dir) {
  std::ifstream in(dir + "/cpu.max");
  std::string quota;
  std::string period;
  if (!(in >> quota >> period) || quota == "max") return 0;
  return cpus_of(parse_count(quota), parse_count(period));
}

// cgroup v1: cpu.cfs_quota_us ("-1" for none) and cpu.cfs_period_us.
unsigned cpus_in_v1(const std::string& dir) {
  std::ifstream q(dir + "/cpu.cfs_quota_us");
  std::ifstream p(dir + "/cpu.cfs_period_us");
  std::string quota;
  std::string period;
  if (!(q >> quota) || !(p >> period)) return 0;
  return cpus_of(parse_count(quota), parse_count(period));
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t end = s.find(sep, pos);
    out.emplace_back(s.substr(pos, end == std::string_view::npos ? s.npos : end - pos));
    if (end == std::string_view::npos) return out;
    pos = end + 1;
  }
}

// The smallest quota of `cgroup` (a path in the hierarchy, "/a/b") and its
// ancestors, in a hierarchy whose part `mount_root` is mounted at
// `mount_point`.  Ancestors above the mount's root are not visible (a
// container's namespace) and are not read.
unsigned smallest_quota(const std::string& mount_point, const std::string& mount_root,
                        std::string cgroup, bool v2) {
  if (cgroup.empty() || cgroup[0] != '/' || cgroup.find("/..") != std::string::npos) return 0;
  if (mount_root != "/") {
    if (cgroup.rfind(mount_root, 0) != 0) return 0;
    cgroup = cgroup.substr(mount_root.size());
    if (cgroup.empty()) cgroup = "/";
  }
  unsigned limit = 0;
  for (;;) {
    const std::string dir = mount_point + (cgroup == "/" ? "" : cgroup);
    const unsigned cpus = v2 ? cpus_in_v2(dir) : cpus_in_v1(dir);
    if (cpus != 0) limit = limit == 0 ? cpus : std::min(limit, cpus);
    if (cgroup == "/") return limit;
    const std::size_t slash = cgroup.rfind('/');
    cgroup = slash == 0 ? "/" : cgroup.substr(0, slash);
  }
}

}  // namespace

unsigned cgroup_cpu_limit(std::string_view mountinfo, std::string_view proc_self_cgroup) {
  // /proc/self/cgroup: "ID:CONTROLLERS:PATH"; v2 is "0::PATH".
  std::string v2_path;
  std::string v1_cpu_path;
  for (const std::string& line : split(proc_self_cgroup, '\n')) {
    const std::size_t a = line.find(':');
    const std::size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) v2_path = line.substr(b + 1);
    for (const std::string& c : split(controllers, ',')) {
      if (c == "cpu") v1_cpu_path = line.substr(b + 1);
    }
  }
  // /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS".
  unsigned limit = 0;
  for (const std::string& line : split(mountinfo, '\n')) {
    const std::vector<std::string> f = split(line, ' ');
    std::size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (f.size() < 5 || dash + 1 >= f.size()) continue;
    const std::string& fstype = f[dash + 1];
    unsigned cpus = 0;
    if (fstype == "cgroup2" && !v2_path.empty()) {
      cpus = smallest_quota(f[4], f[3], v2_path, true);
    } else if (fstype == "cgroup" && !v1_cpu_path.empty() && dash + 3 < f.size()) {
      for (const std::string& opt : split(f[dash + 3], ',')) {
        if (opt == "cpu") cpus = smallest_quota(f[4], f[3], v1_cpu_path, false);
      }
    }
    if (cpus != 0) limit = limit == 0 ? cpus : std::min(limit, cpus);
  }
  return limit;
}

namespace {
std::string read_text(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

unsigned default_worker_count() {
  if (const char* env = std::getenv("WEFT_WORKERS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= long{runtime_options::max_workers}) {
      return static_cast<unsigned>(v);
    }
    std::fprintf(stderr, "weft: ignoring WEFT_WORKERS=\"%s\" (want a number 1..%u)\n", env,
                 runtime_options::max_workers);
  }
  unsigned cpus = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int c = CPU_COUNT(&set);
    if (c > 0) cpus = static_cast<unsigned>(c);
  }
  if (cpus == 0) cpus = std::thread::hardware_concurrency();
  if (cpus == 0) cpus = 1;
  if (const unsigned quota =
          cgroup_cpu_limit(read_text("/proc/self/mountinfo"), read_text("/proc/self/cgroup"));
      quota != 0) {
    cpus = std::min(cpus, quota);
  }
  return std::min(cpus, runtime_options::max_workers);
}

namespace {
// Linux refuses names over 15 characters (ERANGE): keep the first 15.
void set_name(pthread_t t, const char* name) noexcept {
  char truncated[16];
  std::strncpy(truncated, name, sizeof truncated - 1);
  truncated[sizeof truncated - 1] = '\0';
  (void)pthread_setname_np(t, truncated);
}
}  // namespace

void name_this_thread(const char* name) noexcept { set_name(pthread_self(), name); }

void name_thread(std::thread& t, const char* name) noexcept { set_name(t.native_handle(), name); }

void run_worker_hook(const std::function<void(unsigned)>& hook, unsigned worker,
                     const char* which) noexcept {
  if (!hook) return;
  try {
    hook(worker);
  } catch (...) {
    std::fprintf(stderr, "weft: runtime_options::%s threw on worker %u (ignored): %s\n", which,
                 worker, describe(std::current_exception()).c_str());
  }
}

}  // namespace weft::detail

unsigned weft::runtime::default_workers() { return detail::default_worker_count(); }
