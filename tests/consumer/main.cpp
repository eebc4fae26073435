// Smallest use of weft from another project: block_on a task, print its value.
#include <weft/weft.hpp>

#include <cstdio>

#ifndef WEFT_CONSUMER_MODE_NAME
#define WEFT_CONSUMER_MODE_NAME "unknown"
#endif

weft::task<int> f() { co_return 42; }

int main() {
  weft::runtime rt;
  int v = rt.block_on(f());
  std::printf("weft consumer (%s): block_on -> %d\n", WEFT_CONSUMER_MODE_NAME, v);
  return v == 42 ? 0 : 1;
}
