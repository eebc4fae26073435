// SPDX-License-Identifier: MIT
// weft::describe: the text of whatever an exception_ptr holds, for logs of a
// task_group_error's children or an unhandled-exception hook.
#include <gtest/gtest.h>

#include <exception>
#include <stdexcept>

#include "weft/weft.hpp"

namespace {

TEST(DescribeTest, StdExceptionGivesItsWhat) {
  EXPECT_EQ(weft::describe(std::make_exception_ptr(std::runtime_error("disk full"))), "disk full");
}

TEST(DescribeTest, CancelledErrorGivesCancelledAndItsReason) {
  auto e = std::make_exception_ptr(weft::cancelled_error("user stop", weft::cancel_kind::timeout));
  EXPECT_EQ(weft::describe(e), "cancelled: user stop");
}

TEST(DescribeTest, NonStdExceptionIsNamedAsSuch) {
  EXPECT_EQ(weft::describe(std::make_exception_ptr(42)), "a non-std exception");
}

TEST(DescribeTest, NullPointerSaysThereIsNoException) {
  EXPECT_EQ(weft::describe(std::exception_ptr()), "no exception");
}

}  // namespace
