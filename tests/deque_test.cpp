// White-box tests of the Chase-Lev deque (runtime/deque.hpp).
#include <gtest/gtest.h>

#include <cstdio>

#include "deque_stress.hpp"
#include "test_support.hpp"

namespace {

#if WEFT_TEST_SANITIZER == 1
constexpr int kItems = 20'000;
#else
constexpr int kItems = 200'000;
#endif
constexpr std::int64_t kMinBoundary = 1000;

TEST(DequeTest, OwnerAloneIsLifo) {
  weft::detail::chase_lev_deque<int*> dq(2);
  int v[100];
  for (int& x : v) dq.push(&x);  // grows 2 -> 128
  for (int i = 99; i >= 0; --i) ASSERT_EQ(dq.take(), &v[i]);
  EXPECT_EQ(dq.take(), nullptr);
  EXPECT_EQ(dq.take(), nullptr);  // take on empty twice: indices stay sane
  dq.push(&v[0]);
  EXPECT_EQ(dq.take(), &v[0]);
}

TEST(DequeTest, TakeIfTakesOnlyTheExpectedBottomItem) {
  weft::detail::chase_lev_deque<int*> dq(2);
  int v[3];
  EXPECT_FALSE(dq.take_if(nullptr)) << "an empty, never used deque has nothing to take";
  EXPECT_FALSE(dq.take_if(&v[0]));
  dq.push(&v[0]);
  dq.push(&v[1]);
  EXPECT_FALSE(dq.take_if(&v[0])) << "v[0] is not at the bottom";
  EXPECT_TRUE(dq.take_if(&v[1]));
  EXPECT_FALSE(dq.take_if(&v[1])) << "taken once only";
  int* got = nullptr;
  ASSERT_EQ(dq.steal(got), weft::detail::steal_result::success);
  EXPECT_EQ(got, &v[0]);
  // The slot below bottom still holds v[0]: the deque is empty all the same.
  EXPECT_FALSE(dq.take_if(&v[0]));
  EXPECT_EQ(dq.take(), nullptr);
  dq.push(&v[2]);
  EXPECT_TRUE(dq.take_if(&v[2]));
  EXPECT_EQ(dq.take(), nullptr);
}

TEST(DequeTest, StealTakesFromTheTopInFifoOrder) {
  weft::detail::chase_lev_deque<int*> dq(4);
  int v[10];
  for (int& x : v) dq.push(&x);
  for (int i = 0; i < 10; ++i) {
    int* got = nullptr;
    ASSERT_EQ(dq.steal(got), weft::detail::steal_result::success);
    EXPECT_EQ(got, &v[i]);
  }
  int* got = nullptr;
  EXPECT_EQ(dq.steal(got), weft::detail::steal_result::empty);
}

class DequeStressTest : public ::testing::TestWithParam<int> {};

TEST_P(DequeStressTest, EveryItemTakenExactlyOnceAtTheSizeOneBoundary) {
  weft_test::watchdog dog(std::chrono::seconds(120));
  const int thieves = GetParam();
  // Keeps pushing (up to 10x kItems) until the thieves met the boundary
  // often enough, so a thief starved of CPU cannot make the test vacuous.
  auto r = weft_test::run_deque_stress(kItems, thieves, 0xC0FFEEu + static_cast<unsigned>(thieves),
                                       1, kMinBoundary, 10 * kItems);
  std::printf("thieves=%d items=%lld steals=%lld boundary-steal-attempts=%lld\n", thieves,
              static_cast<long long>(r.items), static_cast<long long>(r.steals),
              static_cast<long long>(r.boundary_steals));
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.duplicated, 0);
  // The stress is only worth something if thieves really met the 0-1 boundary.
  EXPECT_GE(r.boundary_steals, kMinBoundary);
}

TEST_P(DequeStressTest, GrowsUnderThievesWithoutLosingItems) {
  weft_test::watchdog dog(std::chrono::seconds(120));
  // take_every = 0: the owner never takes while pushing, so the buffer keeps
  // doubling while thieves read from it.
  auto r = weft_test::run_deque_stress(kItems, GetParam(), 42, 0);
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.duplicated, 0);
}

INSTANTIATE_TEST_SUITE_P(Thieves, DequeStressTest, ::testing::Values(1, 3, 7));

}  // namespace
