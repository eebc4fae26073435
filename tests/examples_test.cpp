// SPDX-License-Identifier: MIT
// Runs the example programs as separate processes and checks their output
// line by line, and how long they take.
//
// WEFT_EXAMPLE_DIR (the directory holding the example binaries) is defined by
// tests/CMakeLists.txt when the example targets exist; without it the tests
// are skipped.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

struct run_result {
  std::vector<std::string> lines;  // stdout, split at '\n'
  int exit_code = -1;
  double seconds = 0;  // wall time, popen to pclose
};

[[maybe_unused]] run_result run_program(const std::string& path) {
  run_result r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = ::popen(path.c_str(), "r");
  if (p == nullptr) return r;
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  std::size_t start = 0;
  while (start < out.size()) {
    std::size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    r.lines.push_back(out.substr(start, end - start));
    start = end + 1;
  }
  return r;
}

// Runs the example program `name`: it must exit 0, print `expected` line by
// line, and take between `min_seconds` and `max_seconds` of wall time.
[[maybe_unused]] void expect_example_run(const std::string& dir, const std::string& name,
                                         const std::vector<std::string>& expected,
                                         double min_seconds, double max_seconds) {
  const std::string path = dir + "/" + name;
  const run_result r = run_program(path);
  EXPECT_EQ(r.exit_code, 0) << path;
  EXPECT_EQ(r.lines, expected);
  EXPECT_GE(r.seconds, min_seconds);
  EXPECT_LE(r.seconds, max_seconds);
}

TEST(ExamplesTest, SeedCancelPrintsTheSixLinesAndCancelWakesTheSleep) {
#ifndef WEFT_EXAMPLE_DIR
  GTEST_SKIP() << "WEFT_EXAMPLE_DIR is not defined: the seed_cancel example was not built";
#else
  // main waits 1 s before cancelling; the worker's sleep is 5 s.  Finishing
  // well under 5 s proves cancel() woke the sleep instead of waiting it out.
  expect_example_run(WEFT_EXAMPLE_DIR, "seed_cancel",
                     {
                         "--- Main Process Started ---",
                         "[Worker] Task started. Executing heavy process...",
                         ">>> Main: Requesting task cancellation...",
                         "[Worker] Cancellation notice received. Interrupting process.",
                         "Main: Task result -> Canceled",
                         "--- Main Process Finished ---",
                     },
                     0.9, 3.0);
#endif
}

TEST(ExamplesTest, AdvancedTimeoutPrintsTheThreeLinesAndTimesOutAfterOneSecond) {
#ifndef WEFT_EXAMPLE_DIR
  GTEST_SKIP() << "WEFT_EXAMPLE_DIR is not defined: the examples were not built";
#else
  // The wait_for is 1 s, the sleep 3 s: about 1 s proves the timeout cancelled
  // the sleep rather than waiting it out.
  expect_example_run(WEFT_EXAMPLE_DIR, "advanced_timeout",
                     {
                         "[Process] Started",
                         "[Process] Interrupted due to timeout",
                         "Main: Timed out (Task already cancelled)",
                     },
                     0.9, 2.5);
#endif
}

}  // namespace
