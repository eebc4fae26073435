// SPDX-License-Identifier: MIT
#include "answers.hpp"

namespace weft_consumer {
namespace {

weft::task<int> times(int a, int b) { co_return a* b; }

}  // namespace

weft::task<int> answer() {
  weft::join_handle<int> h = weft::spawn(times(6, 7));
  co_return co_await h;
}

}  // namespace weft_consumer
