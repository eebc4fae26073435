// SPDX-License-Identifier: MIT
// tests/watchdog_test.cpp -- runtime_options::watchdog: a task that runs too
// long without a resume point, or after a cancel request, is reported once.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "weft/weft.hpp"

namespace {

using namespace std::chrono_literals;

weft::task<void> spinner(std::atomic<bool>* running, std::atomic<bool>* stop) {
  // Release: pairs with the test's acquire load.
  running->store(true, std::memory_order_release);
  // Acquire: pairs with the test's release store.
  while (!stop->load(std::memory_order_acquire)) {
  }
  co_return;
}

struct collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<weft::watchdog_report> reports;
  auto hook() {
    return [this](const weft::watchdog_report& r) {
      std::lock_guard lk(mu);
      reports.push_back(r);
      cv.notify_all();
    };
  }
  // Waits (bounded by the test's watchdog) until `n` reports came.
  void wait_for(std::size_t n) {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return reports.size() >= n; });
  }
};

TEST(Watchdog, TaskWithoutResumePointIsReportedOnceWithNameAndSite) {
  weft_test::watchdog wd(60s);
  collected c;
  // The default: no track_tasks; a named task is in the registry anyway.
  weft::runtime_options o = weft_test::with_workers(2);
  o.watchdog.slow_resume = 20ms;
  o.watchdog.slow_cancel = 0ms;
  o.watchdog.hook = c.hook();
  weft::runtime rt(o);
  std::atomic<bool> running{false}, stop{false};
  auto h = rt.spawn(spinner(&running, &stop), {.name = "hog"});
  c.wait_for(1);
  // Still the same stretch after several thresholds: no second report.
  const auto t0 = weft_test::clock_type::now();
  weft_test::await_true([&] { return weft_test::clock_type::now() - t0 >= 100ms; });
  stop.store(true, std::memory_order_release);
  ASSERT_TRUE(weft_test::wait_done(h));
  rt.shutdown();
  std::lock_guard lk(c.mu);
  ASSERT_EQ(c.reports.size(), 1u);
  const auto& r = c.reports[0];
  EXPECT_EQ(r.what, weft::watchdog_report::kind::slow_resume);
  EXPECT_EQ(r.name, "hog");
  EXPECT_NE(r.id, 0u);
  EXPECT_GE(r.running_for, 20ms);
  EXPECT_NE(std::string(r.spawned_at.file_name()).find("watchdog_test.cpp"), std::string::npos);
  EXPECT_NE(r.to_string().find("\"hog\""), std::string::npos) << r.to_string();
  EXPECT_NE(r.to_string().find("without a resume point"), std::string::npos) << r.to_string();
}

TEST(Watchdog, TaskRunningOnAfterCancelIsReportedWithTheRequest) {
  weft_test::watchdog wd(60s);
  collected c;
  weft::runtime_options o = weft_test::with_workers(2);
  o.watchdog.slow_resume = 0ms;  // only the cancel check
  o.watchdog.slow_cancel = 20ms;
  o.watchdog.hook = c.hook();
  weft::runtime rt(o);
  std::atomic<bool> running{false}, stop{false};
  auto h = rt.spawn(spinner(&running, &stop));
  weft_test::await_true([&] { return running.load(std::memory_order_acquire); });
  h.cancel("deadline passed");
  c.wait_for(1);
  stop.store(true, std::memory_order_release);
  ASSERT_TRUE(weft_test::wait_done(h));
  rt.shutdown();
  std::lock_guard lk(c.mu);
  ASSERT_EQ(c.reports.size(), 1u);
  const auto& r = c.reports[0];
  EXPECT_EQ(r.what, weft::watchdog_report::kind::slow_cancel);
  EXPECT_EQ(r.cancel_reason, "deadline passed");
  EXPECT_EQ(r.cancel, weft::cancel_kind::explicit_request);
  EXPECT_GE(r.since_cancel, 20ms);
  EXPECT_EQ(r.id, 0u);  // no registry: no id, no name
  EXPECT_NE(r.to_string().find("after a cancel request (explicit, \"deadline passed\""),
            std::string::npos)
      << r.to_string();
}

// Runs `d` of CPU time with a checkpoint() between steps: its time slices
// expire and it is rescheduled (a resume point) every few milliseconds.
weft::task<void> checkpointing(std::chrono::milliseconds d) {
  const auto end = weft_test::clock_type::now() + d;
  while (weft_test::clock_type::now() < end) co_await weft::checkpoint();
}

TEST(Watchdog, TaskWithCheckpointsIsNotReported) {
  weft_test::watchdog wd(60s);
  collected c;
  weft::runtime_options o = weft_test::with_workers(1);
  // Well above a time slice (2 ms) and an OS preemption on a busy machine.
  o.watchdog.slow_resume = 200ms;
  o.watchdog.hook = c.hook();
  weft::runtime rt(o);
  rt.block_on(checkpointing(800ms));  // four thresholds of running
  rt.shutdown();
  std::lock_guard lk(c.mu);
  EXPECT_TRUE(c.reports.empty());
}

}  // namespace
