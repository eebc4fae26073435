// SPDX-License-Identifier: MIT
// Runs the task of a library that another project built against weft and
// exported (tests/consumer/downstream/CMakeLists.txt).
#include <answers.hpp>
#include <weft/runtime.hpp>

#include <cstdio>

int main() {
  weft::runtime rt;
  const int v = rt.block_on(weft_consumer::answer());
  std::printf("weft downstream: weft_consumer::answer() -> %d\n", v);
  return v == 42 ? 0 : 1;
}
