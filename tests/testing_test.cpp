// SPDX-License-Identifier: MIT
// weft/testing.hpp: the explorer finds planted bugs in user-style code within
// a stated number of runs, reports them with a replay that reproduces them,
// writes traces, shrinks, and runs user timers in virtual time.
//
// The walk-through in docs/stress-testing.md ("Testing your own code") copies
// the blocks between the clang-format markers verbatim
// (TestingDocTest.EveryCppBlockIsCopiedFromATestSource checks it).
#include "weft/testing.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "weft/errors.hpp"
#include "weft/runtime.hpp"
#include "weft/sync.hpp"
#include "weft/task.hpp"
#include "weft/timeout.hpp"

namespace {

using namespace std::chrono_literals;
using weft_test::watchdog;

// clang-format off
// A bank whose transfer has a planted bug: it reads both balances, yields
// (an await point: another task may run here), then writes them back, so a
// concurrent transfer's update can be lost.
struct bank {
  int a = 100;
  int b = 100;
  bool fixed = false;  // the fix: no await point between reading and writing

  weft::task<void> transfer(int amount) {
    const int from = a;
    const int to = b;
    if (!fixed) co_await weft::yield();
    a = from - amount;
    b = to + amount;
    if (fixed) co_await weft::yield();
  }
};

weft::task<void> transfers(bank& bk) {
  std::vector<weft::join_handle<void>> hs;
  for (int i = 1; i <= 3; ++i) hs.push_back(weft::spawn(bk.transfer(i)));
  for (auto& h : hs) co_await h;
}
// clang-format on

// The walk-through's body: one run of the planted bug, counting its runs.
std::function<weft::task<void>()> lost_update_body(bank& bk, int* bodies = nullptr) {
  return [&bk, bodies]() -> weft::task<void> {
    if (bodies != nullptr) ++*bodies;
    bk = {};
    co_await transfers(bk);
    weft::testing::check(bk.a == 94 && bk.b == 106, "a transfer was lost");
  };
}

weft::testing::options quiet(std::string name) {
  weft::testing::options o;
  o.name = std::move(name);
  o.log = nullptr;  // the tests read the result; nothing on stderr
  return o;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Restores WEFT_SIM_SEED (and the trace directory) when the test ends.
class env_guard {
 public:
  explicit env_guard(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
  }
  ~env_guard() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  env_guard(const env_guard&) = delete;
  env_guard& operator=(const env_guard&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// clang-format off
void transfers_keep_the_total() {
  bank bk;
  weft::testing::options o;
  o.name = "Bank.TransfersKeepTheTotal";  // WEFT_SIM_SEED=test=... names it
  auto r = weft::testing::explore([&]() -> weft::task<void> {
    bk = {};  // a fresh bank for every run
    co_await transfers(bk);
    weft::testing::check(bk.a == 94 && bk.b == 106, "a transfer was lost");
  }, o);
  EXPECT_TRUE(r.passed());  // the report, with its replay line, is on stderr
}
// clang-format on

// The walk-through's test, with its planted bug: it must fail, the way the
// doc shows.
TEST(TestingDocTest, LostUpdateInATransferIsFoundAndReplayed) {
  watchdog wd(120s);
  EXPECT_NONFATAL_FAILURE(transfers_keep_the_total(), "r.passed()");
}

TEST(ExploreTest, PlantedLostUpdateIsFoundWithinFiftySeedsWithAReplayAndATrace) {
  watchdog wd(120s);
  bank bk;
  auto o = quiet("Explore.LostUpdate");
  o.seeds = 50;
  const auto body = lost_update_body(bk);
  const weft::testing::result r = weft::testing::explore(body, o);
  ASSERT_FALSE(r.passed());
  const weft::testing::failure& f = *r.first_failure;
  EXPECT_LE(f.run.seed, 50u);
  EXPECT_EQ(r.runs, f.run.seed);  // it stopped at the first failing run
  EXPECT_EQ(f.kind, "check");
  EXPECT_NE(f.what.find("a transfer was lost"), std::string::npos) << f.what;
  EXPECT_NE(f.where.find("testing_test.cpp:"), std::string::npos) << f.where;
  EXPECT_EQ(f.run.schedule, weft::sim::policy::random);
  EXPECT_EQ(f.run.workers, 4u);
  EXPECT_EQ(f.run.test, "Explore.LostUpdate");
  // The replay line: the variable, then this process's own command line.
  EXPECT_EQ(f.replay.rfind("WEFT_SIM_SEED=" + f.run.to_string(), 0), 0u) << f.replay;
  EXPECT_NE(f.replay.find("weft_tests"), std::string::npos) << f.replay;
  // The trace: a header naming the run and the failure, then the events.
  ASSERT_FALSE(f.trace_path.empty());
  const std::string trace = slurp(f.trace_path);
  EXPECT_EQ(trace.rfind("# weft::testing trace: WEFT_SIM_SEED=" + f.run.to_string() + "\n", 0), 0u);
  EXPECT_NE(trace.find("# failure: check: "), std::string::npos);
  EXPECT_NE(trace.find(" step w"), std::string::npos);
  EXPECT_EQ(trace.find("# note:"), std::string::npos) << "the replay did not fail the same way";
  // The report names all of it.
  const std::string report = r.to_string();
  EXPECT_NE(report.find("replay:  WEFT_SIM_SEED="), std::string::npos) << report;
  EXPECT_NE(report.find("trace:   " + f.trace_path), std::string::npos) << report;
  std::filesystem::remove(f.trace_path);
  if (f.shrunk) std::filesystem::remove(f.shrunk_trace_path);
}

TEST(ExploreTest, FixedTransferPassesEveryScheduleAndEveryCancelPoint) {
  watchdog wd(300s);
  bank bk;
  auto o = quiet("Explore.LockedTransfer");
  o.seeds = 30;
  o.pct_seeds = 30;
  o.cancel_seeds = 1;
  // With a cancellation anywhere, a transfer happens whole or not at all;
  // when the body completes, every transfer happened.
  bool completed = false;
  o.after_each = [&] {
    weft::testing::check(bk.a + bk.b == 200, "money was created or lost");
    if (completed) weft::testing::check(bk.a == 94 && bk.b == 106, "a transfer was lost");
  };
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        bk = {};
        bk.fixed = true;
        completed = false;
        co_await transfers(bk);
        completed = true;
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  // 30 random + 30 PCT + one resume point count per cancel point of seed 1.
  EXPECT_GT(r.runs, 60u + 5u);
  EXPECT_GT(r.resume_points, r.runs);
  EXPECT_NE(r.to_string().find("no failure"), std::string::npos);
}

TEST(ExploreTest, ReplayFromTheEnvironmentRunsOnlyTheFailingRunAndFailsTheSameWay) {
  watchdog wd(120s);
  env_guard g("WEFT_SIM_SEED");
  ::unsetenv("WEFT_SIM_SEED");
  bank bk;
  int bodies = 0;
  auto o = quiet("Explore.Replay");
  o.seeds = 50;
  const auto body = lost_update_body(bk, &bodies);
  const weft::testing::result first = weft::testing::explore(body, o);
  ASSERT_FALSE(first.passed());
  const weft::testing::failure& f = *first.first_failure;
  const std::string trace = slurp(f.trace_path);

  ::setenv("WEFT_SIM_SEED", f.run.to_string().c_str(), 1);
  bodies = 0;
  const weft::testing::result again = weft::testing::explore(body, o);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.runs, 1u);
  EXPECT_EQ(bodies, 2);  // the run, and the replay that writes its trace
  ASSERT_FALSE(again.passed());
  EXPECT_EQ(again.first_failure->run, f.run);
  EXPECT_EQ(again.first_failure->kind, f.kind);
  EXPECT_EQ(again.first_failure->what, f.what);
  EXPECT_EQ(again.first_failure->resume_points, f.resume_points);
  EXPECT_EQ(slurp(again.first_failure->trace_path), trace);  // event for event

  // A variable naming another test leaves this one alone.
  ::setenv("WEFT_SIM_SEED", ("test=Other.Test,seed=" + std::to_string(f.run.seed)).c_str(), 1);
  const weft::testing::result other = weft::testing::explore(body, o);
  EXPECT_FALSE(other.replayed);
  EXPECT_EQ(other.runs, f.run.seed);

  // A bare seed replays that seed with a random schedule.
  ::setenv("WEFT_SIM_SEED", std::to_string(f.run.seed).c_str(), 1);
  const weft::testing::result bare = weft::testing::explore(body, o);
  EXPECT_TRUE(bare.replayed);
  ASSERT_FALSE(bare.passed());
  EXPECT_EQ(bare.first_failure->resume_points, f.resume_points);

  // A malformed variable is a usage error, not a silent full run.
  ::setenv("WEFT_SIM_SEED", "seed=seven", 1);
  EXPECT_THROW((void)weft::testing::explore(body, o), weft::usage_error);
  std::filesystem::remove(f.trace_path);
}

// Two tasks take two locks in opposite orders: an await cycle under some
// schedules only.
TEST(ExploreTest, LockOrderInversionIsReportedAsADeadlockWithinFiftySeeds) {
  watchdog wd(120s);
  auto o = quiet("Explore.LockOrder");
  o.seeds = 50;
  o.pct_seeds = 50;
  struct locks {
    weft::semaphore first{1};
    weft::semaphore second{1};
  };
  std::unique_ptr<locks> l;
  const auto take = [](weft::semaphore& x, weft::semaphore& y) -> weft::task<void> {
    co_await x.acquire();
    co_await weft::yield();
    co_await y.acquire();
    y.release();
    x.release();
  };
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        l = std::make_unique<locks>();
        auto h1 = weft::spawn(take(l->first, l->second));
        auto h2 = weft::spawn(take(l->second, l->first));
        co_await h1;
        co_await h2;
      },
      o);
  ASSERT_FALSE(r.passed());
  EXPECT_EQ(r.first_failure->kind, "deadlock") << r.to_string();
  EXPECT_LE(r.runs, 100u);
  if (!r.first_failure->trace_path.empty()) {
    EXPECT_NE(slurp(r.first_failure->trace_path).find(" deadlock "), std::string::npos);
    std::filesystem::remove(r.first_failure->trace_path);
  }
}

// A task that holds a resource across an await point and releases it only
// on the normal path: random schedules never see the leak; a cancellation at
// the right resume point does.
TEST(ExploreTest, MissingCleanupIsFoundOnlyByCancellingAtEveryResumePoint) {
  watchdog wd(300s);
  int open = 0;
  const auto use = [&](bool guarded) -> weft::task<void> {
    ++open;
    if (guarded) {
      struct closer {
        int* n;
        ~closer() { --*n; }
      } c{&open};
      co_await weft::sleep_for(1ms);
      co_return;
    }
    co_await weft::sleep_for(1ms);
    --open;  // skipped when the sleep is cancelled
  };
  const auto body_for = [&](bool guarded) {
    return [&, guarded]() -> weft::task<void> {
      open = 0;
      auto h1 = weft::spawn(use(guarded));
      auto h2 = weft::spawn(use(guarded));
      co_await h1;
      co_await h2;
    };
  };
  auto o = quiet("Explore.Cleanup");
  o.after_each = [&] { weft::testing::check(open == 0, "a resource was left open"); };
  o.cancel_seeds = 0;
  EXPECT_TRUE(weft::testing::explore(body_for(false), o).passed());  // schedules alone: no leak

  o.seeds = 0;
  o.pct_seeds = 0;
  o.cancel_seeds = 1;
  const weft::testing::result r = weft::testing::explore(body_for(false), o);
  ASSERT_FALSE(r.passed());
  const weft::testing::failure& f = *r.first_failure;
  EXPECT_EQ(f.kind, "check");
  EXPECT_NE(f.what.find("a resource was left open"), std::string::npos);
  EXPECT_GT(f.run.cancel_at, 0u);
  EXPECT_NE(f.run.to_string().find(",cancel_at="), std::string::npos);
  // Stated bound: within the resume points of the first seed.
  EXPECT_LE(r.runs, 1u + 50u);
  std::filesystem::remove(f.trace_path);
  if (f.shrunk) std::filesystem::remove(f.shrunk_trace_path);

  o.cancel_seeds = 3;
  EXPECT_TRUE(weft::testing::explore(body_for(true), o).passed());
}

// cancel_target: every resume point of one chosen task in turn, and only
// that task's.
TEST(ExploreTest, CancelTargetCancelsTheChosenTaskAtEachOfItsOwnResumePoints) {
  watchdog wd(120s);
  std::vector<std::uint64_t> hit;  // cancel_at of the runs whose body saw its cancellation
  int others_cancelled = 0;
  const auto helper = [&]() -> weft::task<void> {
    try {
      for (int i = 0; i < 5; ++i) co_await weft::yield();
    } catch (const weft::cancelled_error&) {
      ++others_cancelled;
      throw;
    }
  };
  auto o = quiet("Explore.Target");
  o.seeds = 0;
  o.pct_seeds = 0;
  o.cancel_seeds = 1;
  o.cancel_target = 1;  // the body: the first task the driver sees
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        auto h = weft::spawn(helper());
        try {
          for (int i = 0; i < 4; ++i) co_await weft::yield();
          co_await h;
        } catch (const weft::cancelled_error& e) {
          hit.push_back(weft::testing::current_run()->cancel_at);
          EXPECT_NE(std::string(e.reason()).find(" of task 1"), std::string::npos) << e.reason();
          throw;
        }
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  // The body's resume points: its start, one per yield, and the wake-up
  // after the join (if it suspends there).  A cancellation at the start lands
  // before the body runs (it never sees it); each later one reaches it.
  ASSERT_GE(hit.size(), 4u);
  for (std::size_t i = 0; i < hit.size(); ++i) EXPECT_EQ(hit[i], i + 2);
  EXPECT_EQ(r.runs, hit.size() + 2);  // plus the counting run and the start
  // The helper was never the target: it ends by its parent's cancellation
  // ("parent" kind) or not at all, never by an injected one of its own.
  (void)others_cancelled;
}

TEST(ExploreTest, AnHourLongTimeoutRunsInVirtualTime) {
  watchdog wd(60s);
  bool timed_out = false;
  std::chrono::nanoseconds elapsed{0};
  auto o = quiet("Explore.VirtualTime");
  o.seeds = 3;
  o.pct_seeds = 3;
  o.cancel_seeds = 0;
  const auto wall = std::chrono::steady_clock::now();
  const weft::testing::result r = weft::testing::explore(
      [&]() -> weft::task<void> {
        const auto t0 = weft::sim::now();
        co_await weft::sleep_for(1h);
        auto slow = []() -> weft::task<int> {
          co_await weft::sleep_for(2h);
          co_return 1;
        };
        try {
          (void)co_await weft::wait_for(slow(), 1h);
        } catch (const weft::timeout_error&) {
          timed_out = true;
        }
        elapsed = weft::sim::now() - t0;
      },
      o);
  EXPECT_TRUE(r.passed()) << r.to_string();
  EXPECT_TRUE(timed_out);
  EXPECT_GE(elapsed, 2h);
  EXPECT_LT(elapsed, 2h + 1s);
  // Six runs of three virtual hours each: far less than a minute of wall time.
  EXPECT_LT(std::chrono::steady_clock::now() - wall, 60s);
}

TEST(ExploreTest, ShrinkingFindsAFailingRunWithFewerWorkersThatFailsTheSameWay) {
  watchdog wd(300s);
  bank bk;
  auto o = quiet("Explore.Shrink");
  o.workers = 8;
  o.seeds = 100;
  const auto body = lost_update_body(bk);
  const weft::testing::result r = weft::testing::explore(body, o);
  ASSERT_FALSE(r.passed());
  const weft::testing::failure& f = *r.first_failure;
  EXPECT_EQ(f.run.workers, 8u);
  ASSERT_TRUE(f.shrunk.has_value()) << r.to_string();
  EXPECT_TRUE(f.shrunk->workers < 8 || f.shrunk_resume_points < f.resume_points);
  EXPECT_NE(r.to_string().find("shorter: " + f.shrunk->to_string()), std::string::npos);
  // The shorter run replays and fails the same way.
  const weft::testing::result again = weft::testing::replay(body, *f.shrunk, o);
  ASSERT_FALSE(again.passed());
  EXPECT_EQ(again.first_failure->kind, "check");
  EXPECT_EQ(again.first_failure->where, f.where);
  EXPECT_EQ(again.first_failure->resume_points, f.shrunk_resume_points);
  std::filesystem::remove(f.trace_path);
  std::filesystem::remove(f.shrunk_trace_path);
  std::filesystem::remove(again.first_failure->trace_path);
}

TEST(ExploreTest, FalseResultsStrayExceptionsAndUninjectedCancellationsAreFailures) {
  watchdog wd(60s);
  auto o = quiet("Explore.Kinds");
  o.write_trace = false;
  o.shrink_runs = 0;
  const weft::testing::result f = weft::testing::explore(
      []() -> weft::task<bool> {
        co_await weft::yield();
        co_return weft::testing::current_run()->seed != 3;
      },
      o);
  ASSERT_FALSE(f.passed());
  EXPECT_EQ(f.first_failure->kind, "returned false");
  EXPECT_EQ(f.first_failure->run.seed, 3u);
  EXPECT_TRUE(f.first_failure->trace_path.empty());

  const weft::testing::result e = weft::testing::explore(
      []() -> weft::task<void> {
        co_await weft::yield();
        throw std::out_of_range("index 7");
      },
      o);
  ASSERT_FALSE(e.passed());
  EXPECT_EQ(e.first_failure->kind, "exception");
  EXPECT_EQ(e.first_failure->where, "std::out_of_range");
  EXPECT_EQ(e.first_failure->what, "index 7");

  const weft::testing::result c = weft::testing::explore(
      []() -> weft::task<void> {
        auto nap = []() -> weft::task<void> { co_await weft::sleep_for(1s); };
        auto h = weft::spawn(nap());
        h.cancel("the test's own cancel");
        co_await h;  // throws cancelled_error: nobody injected it
      },
      o);
  ASSERT_FALSE(c.passed());
  EXPECT_EQ(c.first_failure->kind, "cancelled");
  EXPECT_NE(c.first_failure->what.find("the test's own cancel"), std::string::npos);

  o.after_each = [] { throw std::runtime_error("invariant broke"); };
  const weft::testing::result a =
      weft::testing::explore([]() -> weft::task<void> { co_return; }, o);
  ASSERT_FALSE(a.passed());
  EXPECT_EQ(a.first_failure->kind, "after_each");
  EXPECT_EQ(a.first_failure->run.seed, 1u);
}

// EXPECT_* inside the body reach the explorer through options::failed.
TEST(ExploreTest, GoogleTestExpectationsInTheBodyFailTheRunThroughTheFailedHook) {
  watchdog wd(60s);
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    auto o = quiet("Explore.Gtest");
    o.write_trace = false;
    o.shrink_runs = 0;
    o.failed = [&] { return results.size() > 0; };
    const weft::testing::result r = weft::testing::explore(
        []() -> weft::task<void> {
          co_await weft::yield();
          EXPECT_NE(weft::testing::current_run()->seed, 5u) << "planted";
        },
        o);
    ASSERT_FALSE(r.passed());
    EXPECT_EQ(r.first_failure->kind, "failed");
    EXPECT_EQ(r.first_failure->run.seed, 5u);
  }
  ASSERT_EQ(results.size(), 1);
  EXPECT_NE(std::string(results.GetTestPartResult(0).message()).find("planted"), std::string::npos);
}

TEST(ExploreTest, MisuseIsAUsageErrorBeforeAnyRun) {
  int bodies = 0;
  const auto body = [&]() -> weft::task<void> {
    ++bodies;
    co_return;
  };
  auto o = quiet("Explore.Misuse");
  o.workers = 0;
  EXPECT_THROW((void)weft::testing::explore(body, o), weft::usage_error);
  o.workers = 65;
  EXPECT_THROW((void)weft::testing::explore(body, o), weft::usage_error);
  o.workers = 2;
  o.name = "has,comma";
  EXPECT_THROW((void)weft::testing::explore(body, o), weft::usage_error);
  o.name = "ok";
  o.pct_depth = 0;
  EXPECT_THROW((void)weft::testing::explore(body, o), weft::usage_error);
  EXPECT_THROW((void)weft::testing::explore(std::function<weft::task<void>()>{}, quiet("x")),
               weft::usage_error);
  EXPECT_EQ(bodies, 0);
  EXPECT_EQ(weft::testing::current_run(), nullptr);
}

TEST(RunSpecTest, TextRoundTripsAndMalformedTextIsRefused) {
  weft::testing::run_spec s;
  s.test = "Suite.Name";
  s.seed = 42;
  s.schedule = weft::sim::policy::pct;
  s.workers = 3;
  s.pct_depth = 5;
  s.pct_steps = 900;
  s.cancel_at = 17;
  s.cancel_target = 2;
  EXPECT_EQ(s.to_string(),
            "test=Suite.Name,seed=42,schedule=pct,workers=3,pct_depth=5,pct_steps=900,"
            "cancel_at=17,cancel_target=2");
  EXPECT_EQ(weft::testing::run_spec::parse(s.to_string()), s);
  const auto bare = weft::testing::run_spec::parse("123");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->seed, 123u);
  EXPECT_EQ(bare->workers, 0u);  // the options' count
  std::string error;
  for (const char* bad : {"", "seed", "seed=", "seed=-1", "seed=1x", "workers=0", "workers=65",
                          "schedule=fifo", "colour=red", "seed=18446744073709551616"}) {
    EXPECT_FALSE(weft::testing::run_spec::parse(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

// Every ```cpp block of docs/stress-testing.md's "Testing your own code"
// section is copied from this file.
TEST(TestingDocTest, EveryCppBlockIsCopiedFromATestSource) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(__FILE__).parent_path().parent_path();
  const std::string doc = slurp((root / "docs" / "stress-testing.md").string());
  const std::size_t from = doc.find("\n## Testing your own code");
  ASSERT_NE(from, std::string::npos) << "the section is gone";
  const std::size_t to = doc.find("\n## ", from + 1);
  const auto blocks = weft_test::cpp_blocks(doc.substr(from, to - from));
  ASSERT_TRUE(blocks.has_value()) << "an unterminated ```cpp block";
  const std::string sources = slurp(__FILE__);
  EXPECT_GE(blocks->size(), 2u);
  for (const std::string& b : *blocks)
    EXPECT_NE(sources.find(b), std::string::npos) << "not copied from a source:\n" << b;
}

}  // namespace
