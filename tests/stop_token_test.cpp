// SPDX-License-Identifier: MIT
// std::stop_token both ways (weft/cancellation.hpp): a cancellation_source
// that follows a std::stop_token, and this_task::stop_token(), a std token
// requested when a cancel request reaches the task (at the request, not at
// delivery), also at shutdown and when forwarded; a race of cancel() with the
// task's completion and with the token's creation.
#include <atomic>
#include <chrono>
#include <latch>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "test_support.hpp"
#include "weft/weft.hpp"

namespace {

using namespace weft_test;

weft::task<void> wait_forever() { co_await weft::sleep_for(std::chrono::hours::max()); }

TEST(StopTokenTest, StopRequestOnStdSourceCancelsTheBoundTask) {
  watchdog dog(60s);
  weft::runtime rt;
  std::stop_source stop;  // e.g. a std::jthread's
  weft::cancellation_source src(stop.get_token(), "stop requested by the host");
  weft::join_handle<void> h = rt.spawn(wait_forever());
  weft::cancellation_registration reg = src.token().bind(h);
  stop.request_stop();  // cancels the task, inside this call
  try {
    h.join();
    ADD_FAILURE() << "not cancelled";
  } catch (const weft::cancelled_error& e) {
    EXPECT_EQ(e.reason(), "stop requested by the host");
    EXPECT_EQ(e.kind(), weft::cancel_kind::explicit_request);
  }
}

TEST(StopTokenTest, AlreadyRequestedStdTokenMakesACancelledSource) {
  std::stop_source stop;
  stop.request_stop();
  weft::cancellation_source src(stop.get_token());
  EXPECT_TRUE(src.cancel_requested());
  EXPECT_EQ(src.token().reason(), "stop requested");
  EXPECT_FALSE(src.cancel("later"));  // the first cancellation stays
}

TEST(StopTokenTest, TokenThatCannotStopMakesAPlainSource) {
  weft::cancellation_source src{std::stop_token{}};
  EXPECT_FALSE(src.cancel_requested());
  EXPECT_TRUE(src.cancel("by hand"));
  EXPECT_EQ(src.token().reason(), "by hand");
}

TEST(StopTokenTest, CancellingTheWeftSourceLeavesTheStdSourceAlone) {
  std::stop_source stop;
  weft::cancellation_source src(stop.get_token());
  EXPECT_TRUE(src.cancel());
  EXPECT_FALSE(stop.stop_requested());
}

// ---- this_task::stop_token()

weft::task<std::string> spin_until_stop_requested(std::latch* ready) {
  std::stop_token st = co_await weft::this_task::stop_token();
  ready->count_down();
  // No cancellation point in this loop: the request stays undelivered, yet
  // the token is requested as soon as cancel() is made.
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (!st.stop_requested() && std::chrono::steady_clock::now() < give_up) {
  }
  co_return st.stop_requested() && weft::this_task::cancel_requested() ? "requested before delivery"
                                                                       : "not requested";
}

TEST(StopTokenTest, TaskTokenIsRequestedAtTheRequestNotAtDelivery) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch ready{1};
  weft::join_handle<std::string> h = rt.spawn(spin_until_stop_requested(&ready));
  ready.wait();
  h.cancel();
  EXPECT_EQ(h.join(), "requested before delivery");
  EXPECT_TRUE(h.completed_despite_cancel());
}

weft::task<void> sleep_with_stop_callback(std::latch* ready, std::atomic<int>* calls) {
  std::stop_token st = co_await weft::this_task::stop_token();
  // Relaxed: a count, read after cancel() returned (the callback runs inside it).
  std::stop_callback cb(st, [calls] { calls->fetch_add(1, std::memory_order_relaxed); });
  ready->count_down();
  co_await weft::sleep_for(std::chrono::hours::max());
}

TEST(StopTokenTest, StopCallbackRunsInsideCancel) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch ready{1};
  std::atomic<int> calls{0};
  weft::join_handle<void> h = rt.spawn(sleep_with_stop_callback(&ready, &calls));
  ready.wait();
  h.cancel();
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);  // before delivery, on this thread
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
}

TEST(StopTokenTest, ShutdownRequestsTheTaskToken) {
  watchdog dog(60s);
  std::latch ready{1};
  std::atomic<int> calls{0};
  weft::join_handle<void> h;
  {
    weft::runtime rt;
    h = rt.spawn(sleep_with_stop_callback(&ready, &calls));
    ready.wait();
    rt.shutdown();
  }
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
  EXPECT_THROW(h.join(), weft::cancelled_error);
}

TEST(StopTokenTest, PendingRequestBeforeTheCallRequestsTheTokenAtOnce) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch entered{1};
  std::atomic<bool> go{false};
  auto body = [&]() -> weft::task<bool> {
    entered.count_down();
    while (!go.load()) {  // no cancellation point: the request stays pending
    }
    std::stop_token st = co_await weft::this_task::stop_token();
    co_return st.stop_requested();
  };
  weft::join_handle<bool> h = rt.spawn(body());
  entered.wait();
  h.cancel();
  go.store(true);
  EXPECT_TRUE(h.join());
}

TEST(StopTokenTest, RequestForwardedToAnAwaitedTaskRequestsItsToken) {
  watchdog dog(60s);
  weft::runtime rt;
  std::latch ready{1};
  std::atomic<int> calls{0};
  auto outer = [&]() -> weft::task<void> {
    weft::join_handle<void> inner = weft::spawn(sleep_with_stop_callback(&ready, &calls));
    co_await inner;
  };
  weft::join_handle<void> h = rt.spawn(outer());
  ready.wait();
  h.cancel();  // forwarded down to `inner`, whose token is requested
  EXPECT_THROW(h.join(), weft::cancelled_error);
  EXPECT_EQ(calls.load(std::memory_order_relaxed), 1);
}

TEST(StopTokenTest, CancelRacingCreationAndCompletionIsAccountedExactly) {
  watchdog dog(100s);
  weft::runtime_options o;
  o.workers = 2;
  weft::runtime rt(o);
  const long rounds = scaled(5000, 300, 1000);
  long requested = 0;
  for (long r = 0; r < rounds; ++r) {
    std::optional<std::stop_token> token;  // written by the task, read after join
    std::atomic<int> calls{0};
    std::atomic<bool> entered{false}, go{false};
    auto body = [&]() -> weft::task<void> {
      entered.store(true);
      while (!go.load()) {  // start together with the cancel() below
      }
      jitter(r, 2000);
      std::stop_token st = co_await weft::this_task::stop_token();
      token = st;
      // A callback in the frame: deregistered when the frame goes, racing
      // the cancel() that may be running it.
      std::stop_callback cb(st, [&calls] { calls.fetch_add(1, std::memory_order_relaxed); });
      co_return;
    };
    weft::join_handle<void> h = rt.spawn(body());
    while (!entered.load()) {
    }
    go.store(true);
    jitter(r * 7, 2000);  // and the cancel() across the task's end
    const bool accepted = h.cancel();
    try {
      h.join();
    } catch (const weft::cancelled_error&) {
      EXPECT_TRUE(accepted);
    }
    EXPECT_LE(calls.load(), 1);
    ASSERT_TRUE(token.has_value());  // the body ran up to the token before it could end
    // A cancel() that was accepted reached the task while it lived: its token
    // was requested (inside cancel(), or by stop_token() when the request was
    // already pending).  One that came too late requested nothing.
    EXPECT_EQ(token->stop_requested(), accepted) << "round " << r;
    requested += accepted ? 1 : 0;
  }
  std::printf("accepted cancels that requested the token: %ld of %ld rounds\n", requested, rounds);
}

}  // namespace
