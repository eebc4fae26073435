// SPDX-License-Identifier: MIT
// Conformance with CPython's asyncio: the asyncio.wait, asyncio.as_completed
// and asyncio.gather(return_exceptions=True) cases of
// Lib/test/test_asyncio/test_tasks.py, ported to weft::wait, as_completed and
// gather_outcomes (weft/wait.hpp).  See conformance_tasks_test.cpp for the
// conventions, and docs/cancellation.md for the table of every case.
//
// asyncio's test loop has a virtual clock (loop.time(), advance_time); here the
// tests that assert times run on a simulation runtime (weft/sim.hpp), whose
// clock is virtual too: weft::sim::now() inside the tasks, a sleep costs no
// wall time, and each step adds at most 2 us (sim::options::max_step_cost),
// hence the tolerance of kSlack where CPython uses assertAlmostEqual.
#include <algorithm>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;
using weft_test::with_workers;

namespace {

using handles = std::vector<weft::join_handle<int>>;
using handle_ptrs = std::vector<weft::join_handle<int>*>;

constexpr auto kSlack = 1ms;

weft::runtime_options simulated(unsigned workers = 2) {
  weft::runtime_options o = with_workers(workers);
  o.simulation = weft::sim::options{};
  return o;
}

// Virtual time since `t0`, in the simulation.
std::chrono::nanoseconds since(std::chrono::steady_clock::time_point t0) {
  return weft::sim::now() - t0;
}

bool near(std::chrono::nanoseconds got, std::chrono::nanoseconds want) {
  return got >= want - kSlack && got <= want + kSlack;
}

weft::task<int> sleeper(std::chrono::milliseconds d, int v) {
  co_await weft::sleep_for(d);
  co_return v;
}

weft::task<int> sleeper_then_raise(std::chrono::milliseconds d) {
  co_await weft::sleep_for(d);
  throw std::domain_error("really");
}

weft::task<int> raise_now() {
  throw std::domain_error("err");
  co_return 0;
}

// Takes the outcome of `h`, which must be the domain_error of the tasks above.
weft::task<void> expect_domain_error(weft::join_handle<int>* h) {
  try {
    (void)co_await *h;
    ADD_FAILURE() << "no exception";
  } catch (const std::domain_error&) {
  }
}

weft::task<int> after_event(weft::event* e, int v) {
  co_await e->wait();
  co_return v;
}

// test_wait: wait([b, a]) gives both done at 0.15; doing it again takes no time.
weft::task<void> wait_twice() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper(150ms, 0)));  // b
  hs.push_back(weft::spawn(sleeper(100ms, 0)));  // a
  weft::wait_result<int> r = co_await weft::wait(hs);
  EXPECT_EQ(r.done, (handle_ptrs{&hs[0], &hs[1]}));
  EXPECT_TRUE(r.pending.empty());
  EXPECT_TRUE(near(since(t0), 150ms)) << since(t0).count();
  r = co_await weft::wait(hs);  // nothing was taken: the same answer, at once
  EXPECT_EQ(r.done.size(), 2u);
  EXPECT_TRUE(near(since(t0), 150ms)) << since(t0).count();
}

TEST(ConformanceWait, test_wait) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_twice());
}

weft::task<void> wait_first_completed() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper(10s, 1)));    // a
  hs.push_back(weft::spawn(sleeper(100ms, 2)));  // b
  weft::wait_result<int> r = co_await weft::wait(hs, weft::return_when::first_completed);
  EXPECT_EQ(r.done, (handle_ptrs{&hs[1]}));
  EXPECT_EQ(r.pending, (handle_ptrs{&hs[0]}));
  EXPECT_FALSE(hs[0].done());
  EXPECT_TRUE(hs[1].done());
  EXPECT_EQ(co_await hs[1], 2);
  EXPECT_TRUE(near(since(t0), 100ms)) << since(t0).count();
  (void)co_await weft::wait(r.pending);  // "move forward to close generator"
}

TEST(ConformanceWait, test_wait_first_completed) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_first_completed());
}

weft::task<int> yield_times(int n) {
  for (int i = 0; i < n; ++i) co_await weft::yield();
  co_return n;
}

// asyncio's point: a task in `done` is really done, even when its callbacks
// have not all run.  weft computes both sets from the tasks' completion state
// when the wait returns: every handle in `done` is done() and its outcome is
// there to take; which of the two is done by then depends on the schedule
// (asyncio's single loop makes it both).
weft::task<void> wait_really_done() {
  handles hs;
  hs.push_back(weft::spawn(yield_times(2)));  // b
  hs.push_back(weft::spawn(yield_times(1)));  // a
  weft::wait_result<int> r = co_await weft::wait(hs, weft::return_when::first_completed);
  EXPECT_FALSE(r.done.empty());
  EXPECT_EQ(r.done.size() + r.pending.size(), 2u);
  for (weft::join_handle<int>* h : r.done) {
    EXPECT_TRUE(h->done());
    EXPECT_EQ(co_await *h, h == &hs[0] ? 2 : 1);
  }
  for (weft::join_handle<int>* h : r.pending) (void)co_await *h;
}

TEST(ConformanceWait, test_wait_really_done) {
  weft_test::watchdog dog(60s);
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    weft::runtime_options o = simulated();
    o.simulation->seed = seed;
    weft::runtime rt(o);
    rt.block_on(wait_really_done());
  }
}

// first_exception, task already has exception: returns at once.
weft::task<void> wait_first_exception() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(raise_now()));        // b
  hs.push_back(weft::spawn(sleeper(10s, 0)));    // a
  while (!hs[0].done()) co_await weft::yield();  // "task already has exception"
  weft::wait_result<int> r = co_await weft::wait(hs, weft::return_when::first_exception);
  EXPECT_EQ(r.done, (handle_ptrs{&hs[0]}));
  EXPECT_EQ(r.pending, (handle_ptrs{&hs[1]}));
  EXPECT_LT(since(t0), kSlack);
  co_await expect_domain_error(&hs[0]);
  hs[1].cancel();  // asyncio advances the clock 10 s; nobody needs to wait for it here
  (void)co_await weft::wait(r.pending);
}

TEST(ConformanceWait, test_wait_first_exception) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_first_exception());
}

// first_exception, exception during waiting.
weft::task<void> wait_first_exception_in_wait() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper_then_raise(10ms)));  // b
  hs.push_back(weft::spawn(sleeper(10s, 0)));           // a
  weft::wait_result<int> r = co_await weft::wait(hs, weft::return_when::first_exception);
  EXPECT_EQ(r.done, (handle_ptrs{&hs[0]}));
  EXPECT_EQ(r.pending, (handle_ptrs{&hs[1]}));
  EXPECT_TRUE(near(since(t0), 10ms)) << since(t0).count();
  co_await expect_domain_error(&hs[0]);
  hs[1].cancel();
  (void)co_await weft::wait(r.pending);
}

TEST(ConformanceWait, test_wait_first_exception_in_wait) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_first_exception_in_wait());
}

// An exception is an outcome like any other for ALL_COMPLETED; twice.
weft::task<void> wait_with_exception() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper_then_raise(150ms)));  // b
  hs.push_back(weft::spawn(sleeper(100ms, 0)));          // a
  for (int round = 0; round < 2; ++round) {
    weft::wait_result<int> r = co_await weft::wait(hs);
    EXPECT_EQ(r.done.size(), 2u);
    EXPECT_TRUE(r.pending.empty());
    EXPECT_TRUE(near(since(t0), 150ms)) << since(t0).count();
  }
  std::size_t errors = 0;
  for (auto& h : hs) {
    try {
      (void)co_await h;
    } catch (const std::domain_error&) {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 1u);
}

TEST(ConformanceWait, test_wait_with_exception) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_with_exception());
}

// wait(timeout=0.11) returns at 0.11 with {a} done and {b} pending; neither is
// cancelled.
weft::task<void> wait_with_timeout(std::chrono::milliseconds timeout) {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper(150ms, 2)));  // b
  hs.push_back(weft::spawn(sleeper(100ms, 1)));  // a
  weft::wait_result<int> r = co_await weft::wait(hs, weft::return_when::all_completed, timeout);
  EXPECT_EQ(r.done, (handle_ptrs{&hs[1]}));
  EXPECT_EQ(r.pending, (handle_ptrs{&hs[0]}));
  EXPECT_TRUE(near(since(t0), timeout)) << since(t0).count();
  EXPECT_EQ(hs[0].cancelling(), 0u);
  EXPECT_EQ(co_await hs[0], 2);  // the timeout cancelled nothing
  EXPECT_EQ(co_await hs[1], 1);
}

TEST(ConformanceWait, test_wait_with_timeout) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(wait_with_timeout(110ms));
}

weft::task<int> counted_sleeper(std::chrono::milliseconds d, int v, int* started) {
  ++*started;  // one thread: the simulation's
  co_await weft::sleep_for(d);
  co_return v;
}

// The timeout and a's completion fall due at the same virtual instant (0.1):
// a counts as done if it finished before the wait returned.  asyncio's loop
// runs a's completion first; in the simulation either may come first, so the
// port asserts what holds in both orders and runs many seeds.  As in asyncio,
// both sleeps are armed before the wait's timeout.
weft::task<void> wait_concurrent_complete(int* a_done) {
  const auto t0 = weft::sim::now();
  int started = 0;
  handles hs;
  hs.push_back(weft::spawn(counted_sleeper(150ms, 2, &started)));  // b
  hs.push_back(weft::spawn(counted_sleeper(100ms, 1, &started)));  // a
  while (started < 2) co_await weft::yield();
  weft::wait_result<int> r =
      co_await weft::wait(hs, weft::return_when::all_completed, std::chrono::milliseconds(100));
  EXPECT_EQ(r.done.size() + r.pending.size(), 2u);
  EXPECT_NE(std::find(r.pending.begin(), r.pending.end(), &hs[0]), r.pending.end());
  if (!r.done.empty()) ++*a_done;
  EXPECT_TRUE(near(since(t0), 100ms)) << since(t0).count();
  (void)co_await weft::wait(hs);
}

TEST(ConformanceWait, test_wait_concurrent_complete) {
  weft_test::watchdog dog(60s);
  int a_done = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    weft::runtime_options o = simulated();
    o.simulation->seed = seed;
    weft::runtime rt(o);
    rt.block_on(wait_concurrent_complete(&a_done));
  }
  EXPECT_GT(a_done, 0);  // asyncio's order happens
}

// An empty set and an invalid return_when: ValueError in asyncio.
weft::task<void> wait_on(handles* hs, weft::return_when when) {
  (void)co_await weft::wait(*hs, when);
}

TEST(ConformanceWait, test_wait_errors) {
  weft_test::watchdog dog(60s);
  handles none, one;
  weft::runtime rt(with_workers(1));
  EXPECT_THROW(rt.block_on(wait_on(&none, weft::return_when::all_completed)), weft::usage_error);
  one.push_back(rt.spawn(weft_test::value_task(1)));
  EXPECT_THROW(rt.block_on(wait_on(&one, static_cast<weft::return_when>(-1))), weft::usage_error);
  EXPECT_EQ(one[0].join(), 1);
}

// The same awaitable twice: asyncio's sets hold it once; a weft range of
// handle pointers may name a handle twice, and each position is reported.
weft::task<void> wait_duplicate() {
  handles hs;
  hs.push_back(weft::spawn(weft_test::value_task(1)));  // "test"
  hs.push_back(weft::spawn(weft_test::value_task(2)));  // "spam"
  handle_ptrs ps{&hs[0], &hs[0], &hs[1]};
  weft::wait_result<int> r = co_await weft::wait(ps);
  EXPECT_TRUE(r.pending.empty());
  EXPECT_EQ(r.done, ps);
  EXPECT_EQ(co_await hs[0], 1);
  EXPECT_EQ(co_await hs[1], 2);
}

TEST(ConformanceWait, test_wait_duplicate_coroutines) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  rt.block_on(wait_duplicate());
}

// Cancelling the task in wait() makes the wait throw and leaves the inner
// task running: it finishes when its future is set.
weft::task<void> inner(weft::event* waiter, int* proof) {
  co_await waiter->wait();
  *proof += 1;
}

weft::task<void> outer(weft::join_handle<void>* in, int* proof, std::latch* waiting) {
  std::vector<weft::join_handle<void>*> one{in};
  waiting->count_down();
  (void)co_await weft::wait(one);
  *proof += 100;
}

TEST(ConformanceWait, test_yield_wait_does_not_shield_cancel) {
  weft_test::watchdog dog(60s);
  weft::event waiter;
  int proof = 0;
  std::latch waiting{1};
  weft::join_handle<void> in;
  weft::runtime rt(with_workers(2));
  in = rt.spawn(inner(&waiter, &proof));
  weft::join_handle<void> f = rt.spawn(outer(&in, &proof, &waiting));
  waiting.wait();
  EXPECT_TRUE(f.cancel());
  EXPECT_THROW(f.join(), weft::cancelled_error);
  waiter.set();
  in.join();
  EXPECT_EQ(proof, 1);
}

// ---- as_completed ----

// a and b finish at 0.01, c at 0.15: a and b first (either order), then c.
weft::task<std::vector<int>> as_completed_values(handles* hs) {
  std::vector<int> values;
  auto seq = weft::as_completed(*hs);
  while (weft::join_handle<int>* h = co_await seq.next()) values.push_back(co_await *h);
  co_return values;
}

weft::task<void> as_completed_twice() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper(10ms, 'b')));
  hs.push_back(weft::spawn(sleeper(150ms, 'c')));
  hs.push_back(weft::spawn(sleeper(10ms, 'a')));
  std::vector<int> res = co_await as_completed_values(&hs);
  EXPECT_TRUE(near(since(t0), 150ms)) << since(t0).count();
  EXPECT_EQ(res.size(), 3u);
  if (res.size() != 3u) co_return;
  EXPECT_NE(std::find(res.begin(), res.begin() + 2, 'a'), res.begin() + 2);
  EXPECT_NE(std::find(res.begin(), res.begin() + 2, 'b'), res.begin() + 2);
  EXPECT_EQ(res[2], 'c');
  // "Doing it again should take no time": the tasks are done (and their
  // outcomes taken): as_completed of fresh handles that are already done.
  handles again;
  for (int v : {'x', 'y'}) again.push_back(weft::spawn(weft_test::value_task(v)));
  for (auto& h : again) {
    while (!h.done()) co_await weft::yield();
  }
  const auto t1 = weft::sim::now();
  res = co_await as_completed_values(&again);
  EXPECT_EQ(res, (std::vector<int>{'x', 'y'}));
  EXPECT_LT(since(t1), kSlack);
}

TEST(ConformanceWait, test_as_completed) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(as_completed_twice());
}

// timeout=0.12: 'a' at 0.1, then TimeoutError at 0.12 for b.
weft::task<void> as_completed_with_timeout() {
  const auto t0 = weft::sim::now();
  handles hs;
  hs.push_back(weft::spawn(sleeper(100ms, 'a')));
  hs.push_back(weft::spawn(sleeper(150ms, 'b')));
  auto seq = weft::as_completed(hs, 120ms);
  std::vector<std::pair<int, int>> values;
  while (seq.remaining() > 0) {
    try {
      weft::join_handle<int>* h = co_await seq.next();
      values.emplace_back(1, co_await *h);
    } catch (const weft::timeout_error&) {
      values.emplace_back(2, 0);
      break;  // asyncio's iterator ends after the TimeoutError of each remaining future
    }
  }
  EXPECT_EQ(values.size(), 2u);
  if (values.size() != 2u) co_return;
  EXPECT_EQ(values[0], std::make_pair(1, static_cast<int>('a')));
  EXPECT_EQ(values[1].first, 2);
  EXPECT_TRUE(near(since(t0), 120ms)) << since(t0).count();
  EXPECT_EQ(co_await hs[1], 'b');  // the timeout cancelled nothing
}

TEST(ConformanceWait, test_as_completed_with_timeout) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(as_completed_with_timeout());
}

weft::task<void> as_completed_with_unused_timeout() {
  handles hs;
  hs.push_back(weft::spawn(sleeper(10ms, 'a')));
  auto seq = weft::as_completed(hs, 1s);
  while (weft::join_handle<int>* h = co_await seq.next()) EXPECT_EQ(co_await *h, 'a');
}

TEST(ConformanceWait, test_as_completed_with_unused_timeout) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(simulated());
  rt.block_on(as_completed_with_unused_timeout());
}

// Two tasks finishing at the same instant: both are given, each once.
weft::task<void> as_completed_concurrent() {
  handles hs;
  hs.push_back(weft::spawn(sleeper(50ms, 'a')));
  hs.push_back(weft::spawn(sleeper(50ms, 'b')));
  std::vector<int> res = co_await as_completed_values(&hs);
  std::sort(res.begin(), res.end());
  EXPECT_EQ(res, (std::vector<int>{'a', 'b'}));
}

TEST(ConformanceWait, test_as_completed_concurrent) {
  weft_test::watchdog dog(60s);
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    weft::runtime_options o = simulated();
    o.simulation->seed = seed;
    weft::runtime rt(o);
    rt.block_on(as_completed_concurrent());
  }
}

// The same awaitable twice: asyncio gives it once; weft gives each position.
weft::task<void> as_completed_duplicate() {
  handles hs;
  hs.push_back(weft::spawn(weft_test::value_task(1)));  // "ham"
  hs.push_back(weft::spawn(weft_test::value_task(2)));  // "spam"
  handle_ptrs ps{&hs[0], &hs[0], &hs[1]};
  auto seq = weft::as_completed(ps);
  std::vector<weft::join_handle<int>*> got;
  while (weft::join_handle<int>* h = co_await seq.next()) got.push_back(h);
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(std::count(got.begin(), got.end(), &hs[0]), 2);
  EXPECT_EQ(co_await hs[0], 1);
  EXPECT_EQ(co_await hs[1], 2);
}

TEST(ConformanceWait, test_as_completed_duplicate_coroutines) {
  weft_test::watchdog dog(60s);
  weft::runtime rt(with_workers(2));
  rt.block_on(as_completed_duplicate());
}

// ---- gather(return_exceptions=True) ----

weft::task<std::vector<weft::outcome<int>>> gather_all(handles* hs) {
  co_return co_await weft::gather_outcomes(*hs);
}

weft::task<int> raise_after_event(weft::event* e) {
  co_await e->wait();
  throw std::runtime_error("rte");
}

// a, b, c, d: b = 1, c raises, a = 3; not done until d raises too; the result
// is [3, 1, exc, exc2].
TEST(ConformanceWait, test_return_exceptions) {
  weft_test::watchdog dog(60s);
  weft::event a, b, c, d;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&a, 3)));
  hs.push_back(rt.spawn(after_event(&b, 1)));
  hs.push_back(rt.spawn(raise_after_event(&c)));
  hs.push_back(rt.spawn(raise_after_event(&d)));
  weft::join_handle<std::vector<weft::outcome<int>>> fut = rt.spawn(gather_all(&hs));
  b.set();
  c.set();
  a.set();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(weft_test::wait_done(hs[static_cast<std::size_t>(i)]));
  EXPECT_FALSE(fut.done());
  d.set();
  std::vector<weft::outcome<int>> res = fut.join();
  ASSERT_EQ(res.size(), 4u);
  EXPECT_EQ(res[0].value(), 3);
  EXPECT_EQ(res[1].value(), 1);
  EXPECT_THROW(res[2].value(), std::runtime_error);
  EXPECT_THROW(res[3].value(), std::runtime_error);
  EXPECT_NE(res[2].exception(), res[3].exception());
}

TEST(ConformanceWait, test_result_exception_success) {
  weft_test::watchdog dog(60s);
  weft::event a, b, c;
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&a, 2)));
  hs.push_back(rt.spawn(after_event(&b, 1)));
  hs.push_back(rt.spawn(after_event(&c, 3)));
  weft::join_handle<std::vector<weft::outcome<int>>> fut = rt.spawn(gather_all(&hs));
  b.set();
  a.set();
  ASSERT_TRUE(weft_test::wait_done(hs[0]));
  ASSERT_TRUE(weft_test::wait_done(hs[1]));
  EXPECT_FALSE(fut.done());
  c.set();
  std::vector<weft::outcome<int>> res = fut.join();
  std::vector<int> values;
  for (auto& o : res) values.push_back(o.value());
  EXPECT_EQ(values, (std::vector<int>{2, 1, 3}));
}

// a = 1, b raises zde, c cancelled, d = 3, e cancelled, f raises rte: the
// cancellations are outcomes (CancelledError objects), nothing is thrown.
TEST(ConformanceWait, test_result_exception_one_cancellation) {
  weft_test::watchdog dog(60s);
  weft::event ev[6];
  handles hs;
  weft::runtime rt(with_workers(2));
  hs.push_back(rt.spawn(after_event(&ev[0], 1)));
  hs.push_back(rt.spawn(raise_after_event(&ev[1])));
  hs.push_back(rt.spawn(after_event(&ev[2], 0)));
  hs.push_back(rt.spawn(after_event(&ev[3], 3)));
  hs.push_back(rt.spawn(after_event(&ev[4], 0)));
  hs.push_back(rt.spawn(raise_after_event(&ev[5])));
  weft::join_handle<std::vector<weft::outcome<int>>> fut = rt.spawn(gather_all(&hs));
  ev[0].set();
  ev[1].set();
  hs[2].cancel("c");
  ASSERT_TRUE(weft_test::wait_done(hs[2]));
  EXPECT_FALSE(fut.done());
  ev[3].set();
  hs[4].cancel("e");
  ev[5].set();
  std::vector<weft::outcome<int>> res = fut.join();
  ASSERT_EQ(res.size(), 6u);
  EXPECT_EQ(res[0].value(), 1);
  EXPECT_THROW(res[1].value(), std::runtime_error);
  EXPECT_TRUE(res[2].cancelled());
  EXPECT_EQ(res[3].value(), 3);
  EXPECT_TRUE(res[4].cancelled());
  EXPECT_FALSE(res[5].cancelled());
  EXPECT_THROW(res[5].value(), std::runtime_error);
}

TEST(ConformanceWait, test_constructor_empty_sequence) {
  weft_test::watchdog dog(60s);
  handles none;
  weft::runtime rt(with_workers(1));
  EXPECT_TRUE(rt.block_on(gather_all(&none)).empty());
}

// A gathering *future* refuses cancel() once its children are done; in weft
// the gatherer is a task, and a task takes a cancellation at its next
// cancellation point (asyncio's Task does too: _must_cancel).  What carries
// over: the finished child is not cancelled and keeps its result.
weft::task<int> child_coro(weft::event* fut) {
  co_await fut->wait();
  co_return 42;
}

weft::task<int> gather_one(weft::join_handle<int>* child, std::latch* waiting) {
  waiting->count_down();
  auto [o] = co_await weft::gather_outcomes(*child);
  co_return o.value();
}

TEST(ConformanceWait, test_cancel_gather_1) {
  weft_test::watchdog dog(60s);
  weft::event fut;
  std::latch waiting{1};
  weft::join_handle<int> child;
  weft::runtime rt(with_workers(2));
  child = rt.spawn(child_coro(&fut));
  weft::join_handle<int> gather_task = rt.spawn(gather_one(&child, &waiting));
  waiting.wait();
  fut.set();
  ASSERT_TRUE(weft_test::wait_done(child));
  const bool cancel_result = gather_task.cancel();
  try {
    EXPECT_EQ(gather_task.join(), 42);  // the gather had returned before the cancel
  } catch (const weft::cancelled_error&) {
    EXPECT_TRUE(cancel_result);  // the divergence: the gathering task took it
  }
  EXPECT_FALSE(child.cancelled());
  if (!child.done()) ADD_FAILURE();
}

// The gatherer's cancellation message reaches the awaiter through a gather
// with return_exceptions=True.
weft::task<void> gather_loop() {
  for (int i = 0; i < 40; ++i) {
    handles one;
    one.push_back(weft::spawn(sleeper(50ms, 0)));
    (void)co_await weft::gather_outcomes(one);
  }
}

weft::task<void> main_cancels(std::string reason) {
  weft::join_handle<void> qwe = weft::spawn(gather_loop());
  co_await weft::sleep_for(200ms);
  if (reason.empty()) {
    qwe.cancel();
  } else {
    qwe.cancel(reason);
  }
  co_await qwe;
}

TEST(ConformanceWait, test_cancel_gather_2) {
  weft_test::watchdog dog(60s);
  for (std::string reason : {std::string(), std::string("my message")}) {
    weft::runtime rt(simulated());
    try {
      rt.block_on(main_cancels(reason));
      ADD_FAILURE() << "gather_outcomes() did not propagate the cancellation";
    } catch (const weft::cancelled_error& e) {
      EXPECT_EQ(e.reason(), reason);
    }
  }
}

}  // namespace
