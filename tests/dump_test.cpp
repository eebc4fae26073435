// SPDX-License-Identifier: MIT
// tests/dump_test.cpp -- runtime::dump() with and without the task registry
// (runtime_options::track_tasks), and WEFT_DUMP_ON.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <string>

#include "dump_impl.hpp"
#include "test_support.hpp"
#include "weft/sync.hpp"
#include "weft/weft.hpp"

namespace {

using namespace std::chrono_literals;
using weft::task_dump;

const task_dump::task_info* find_named(const task_dump& d, const std::string& name) {
  for (const auto& t : d.tasks) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

weft::task<void> sleeper() { co_await weft::sleep_for(1h); }

weft::task<void> waiter(weft::event* e) { co_await e->wait(); }

weft::task<void> spinner(std::atomic<bool>* running, std::atomic<bool>* stop) {
  // Release: pairs with the test's acquire load.
  running->store(true, std::memory_order_release);
  // Acquire: pairs with the test's release store.
  while (!stop->load(std::memory_order_acquire)) {
  }
  co_return;
}

weft::task<void> parent_of(weft::event* e) {
  auto child = weft::spawn(waiter(e), {.name = "child"});
  co_await child;
}

TEST(Dump, WithoutTrackTasksNamedTasksAreListedByNameAndUnnamedOnesByWhereTheyWait) {
  weft_test::watchdog wd(60s);
  weft::runtime rt(weft_test::with_workers(2));
  weft::event e;
  std::atomic<bool> running{false}, stop{false};
  auto s = rt.spawn(sleeper(), {.name = "sleeper"});
  auto b = rt.spawn(waiter(&e), {.name = "waiter"});
  auto r = rt.spawn(spinner(&running, &stop), {.name = "spinner"});
  auto u = rt.spawn(sleeper());  // unnamed: found by the walk (the timer heap)
  auto unnamed_sleeping = [](const task_dump& d) {
    for (const auto& t : d.tasks) {
      if (t.name.empty() && t.state == task_dump::task_state::sleeping) return true;
    }
    return false;
  };
  task_dump d;
  ASSERT_TRUE(weft_test::spin_until([&] {
    d = rt.dump();
    const auto* sp = find_named(d, "spinner");
    return running.load(std::memory_order_acquire) && sp != nullptr &&
           sp->state == task_dump::task_state::running && find_named(d, "sleeper") != nullptr &&
           find_named(d, "sleeper")->state == task_dump::task_state::sleeping &&
           find_named(d, "waiter") != nullptr &&
           find_named(d, "waiter")->state == task_dump::task_state::blocked && unnamed_sleeping(d);
  })) << d.to_string();
  EXPECT_FALSE(d.complete);
  EXPECT_TRUE(find_named(d, "sleeper")->sleeping_until.has_value());
  // A running named task is named (it is in the registry, so alive while
  // the dump holds the registry's lock), with an id.
  EXPECT_NE(find_named(d, "spinner")->id, 0u);
  // Each task once: 3 named, 1 unnamed.
  EXPECT_EQ(d.tasks.size(), 4u) << d.to_string();
  EXPECT_NE(d.to_string().find("\"spinner\""), std::string::npos) << d.to_string();
  stop.store(true, std::memory_order_release);
  e.set();
  s.cancel();
  u.cancel();
  rt.shutdown();
}

TEST(Dump, WithRegistryListsEveryTaskWithIdParentStateAndCancel) {
  weft_test::watchdog wd(60s);
  weft::runtime_options o = weft_test::with_workers(2);
  o.track_tasks = true;
  weft::runtime rt(o);
  weft::event e;
  std::atomic<bool> running{false}, stop{false};
  auto p = rt.spawn(parent_of(&e), {.name = "parent"});
  auto r = rt.spawn(spinner(&running, &stop), {.name = "spinner"});
  auto s = rt.spawn(sleeper(), {.name = "sleeper"});
  s.cancel("tired of waiting");  // delivered: the sleeper ends
  ASSERT_TRUE(weft_test::wait_done(s));
  task_dump d;
  ASSERT_TRUE(weft_test::spin_until([&] {
    d = rt.dump();
    const auto* parent = find_named(d, "parent");
    const auto* child = find_named(d, "child");
    return running.load(std::memory_order_acquire) && parent != nullptr && child != nullptr &&
           parent->state == task_dump::task_state::awaiting &&
           child->state == task_dump::task_state::blocked &&
           find_named(d, "spinner")->state == task_dump::task_state::running;
  })) << d.to_string();
  EXPECT_TRUE(d.complete);
  EXPECT_EQ(d.tasks.size(), 3u) << d.to_string();  // the sleeper finished
  const auto* parent = find_named(d, "parent");
  const auto* child = find_named(d, "child");
  EXPECT_NE(parent->id, 0u);
  EXPECT_EQ(parent->parent_id, 0u);  // spawned from outside
  EXPECT_EQ(child->parent_id, parent->id);
  EXPECT_EQ(parent->awaits_id, child->id);
  EXPECT_EQ(parent->awaits_name, "child");
  // The time since its last resume point: sampled by the timer thread's tick.
  ASSERT_TRUE(weft_test::spin_until([&] {
    d = rt.dump();
    const auto* sp = find_named(d, "spinner");
    return sp != nullptr && sp->since_resume.has_value();
  })) << d.to_string();
  // A cancel request on the running spinner: pending, with its provenance.
  r.cancel("stop spinning");
  d = rt.dump();
  const auto* sp = find_named(d, "spinner");
  ASSERT_NE(sp, nullptr);
  ASSERT_TRUE(sp->cancel.has_value());
  EXPECT_EQ(sp->cancel->reason, "stop spinning");
  EXPECT_EQ(sp->cancel->kind, weft::cancel_kind::explicit_request);
  EXPECT_TRUE(sp->cancel->pending);
  EXPECT_NE(d.to_string().find("cancel pending (explicit, \"stop spinning\""), std::string::npos)
      << d.to_string();
  stop.store(true, std::memory_order_release);
  e.set();
  ASSERT_TRUE(weft_test::wait_done(p));
  ASSERT_TRUE(weft_test::wait_done(r));
  EXPECT_TRUE(weft_test::spin_until([&] {
    d = rt.dump();
    return d.tasks.empty();
  })) << d.to_string();
  rt.shutdown();
}

TEST(Dump, ShutdownReportNamesARunningNamedTaskWithoutTrackTasks) {
  weft_test::watchdog wd(60s);
  weft::runtime_options o = weft_test::with_workers(1);
  o.shutdown_report_after = 1ms;
  std::mutex mu;
  std::condition_variable cv;
  std::string report;
  o.on_shutdown_report = [&](const weft::shutdown_report& r) {
    std::lock_guard lk(mu);
    if (report.empty()) report = r.to_string();
    cv.notify_all();
  };
  std::atomic<bool> running{false}, stop{false};
  weft::runtime rt(o);
  auto h = rt.spawn(spinner(&running, &stop), {.name = "busy loop"});
  weft_test::await_true([&] { return running.load(std::memory_order_acquire); });
  std::thread closer([&] { rt.shutdown(); });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return !report.empty(); });
  }
  stop.store(true, std::memory_order_release);
  closer.join();
  EXPECT_NE(report.find("task \"busy loop\" spawned at"), std::string::npos) << report;
  EXPECT_NE(report.find("running on worker 0"), std::string::npos) << report;
}

TEST(Dump, SimulationDumpsFromItsOwnerThread) {
  weft_test::watchdog wd(60s);
  weft::runtime_options o;
  o.simulation = weft::sim::options{};
  o.track_tasks = true;
  weft::runtime rt(o);
  auto h = rt.spawn(sleeper(), {.name = "sim sleeper"});
  const task_dump d = rt.dump();  // not run yet: queued on the injection queue
  ASSERT_EQ(d.tasks.size(), 1u) << d.to_string();
  EXPECT_EQ(d.tasks[0].name, "sim sleeper");
  EXPECT_EQ(d.tasks[0].state, task_dump::task_state::queued);
  h.cancel();
  rt.shutdown();
}

TEST(Dump, SignalNamedByWeftDumpOnPrintsTheDump) {
  weft_test::watchdog wd(60s);
  std::mutex mu;
  std::condition_variable cv;
  std::string text;
  weft::detail::testing::set_dump_sink([&](const std::string& s) {
    std::lock_guard lk(mu);
    text += s;
    cv.notify_all();
  });
  ::setenv("WEFT_DUMP_ON", "SIGUSR2", 1);
  {
    weft::runtime rt(weft_test::with_workers(1));
    ::unsetenv("WEFT_DUMP_ON");
    auto s = rt.spawn(sleeper(), {.name = "signal sleeper"});
    ASSERT_TRUE(weft_test::spin_until([&] {
      const task_dump d = rt.dump();
      const auto* t = find_named(d, "signal sleeper");
      return t != nullptr && t->state == task_dump::task_state::sleeping;
    }));
    std::raise(SIGUSR2);
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return text.find("\"signal sleeper\"") != std::string::npos; });
    }
    EXPECT_NE(text.find("sleeping"), std::string::npos) << text;
    s.cancel();
    rt.shutdown();
  }
  weft::detail::testing::set_dump_sink({});
}

}  // namespace
