// SPDX-License-Identifier: MIT
// A program that uses weft from another project.  check.sh builds and runs it
// every way a project gets weft (find_package, add_subdirectory, pkg-config);
// headers.sh compiles it with every warning on as errors (-Wall -Wextra
// -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror), so it
// instantiates the main templates of the public headers: task<int>,
// task<void>, spawn, join_handle, wait_for, task_group, when_all, fork_task,
// event, semaphore, cancellation_source, checkpoint, yield, sleep_for.
#include <weft/weft.hpp>

#include <chrono>
#include <cstdio>
#include <string>

#ifndef WEFT_CONSUMER_MODE_NAME
#define WEFT_CONSUMER_MODE_NAME "unknown"
#endif

namespace {

using namespace std::chrono_literals;

weft::task<int> answer() { co_return 42; }

weft::fork_task<long> fib(int n) {
  if (n < 2) co_return n;
  long a = 0;
  co_await weft::fork(a, fib(n - 1));
  const long b = co_await fib(n - 2);
  co_await weft::join();
  co_return a + b;
}

weft::task<void> signal(weft::event* ready, weft::semaphore* sem) {
  co_await sem->acquire();
  co_await weft::yield();
  co_await weft::checkpoint();
  co_await weft::sleep_for(1ms);
  sem->release();
  ready->set();
}

weft::task<void> sleep_until_cancelled() { co_await weft::sleep_for(1h); }

// Every construct once; returns the sum of what each produced (42 + 55 + 1 + 1 + 1 = 100).
weft::task<int> everything() {
  int total = 0;
  weft::join_handle<int> h = weft::spawn(answer());
  total += co_await weft::wait_for(h, 10s);

  total += static_cast<int>(co_await fib(10));

  weft::event ready;
  weft::semaphore sem(1);
  weft::join_handle<void> signaller = weft::spawn(signal(&ready, &sem));
  co_await ready.wait();
  co_await signaller;

  weft::task_group group;
  weft::join_handle<int> one = group.spawn(answer());
  weft::join_handle<void> two = group.spawn(signal(&ready, &sem));
  co_await group.join();
  co_await two;
  auto [x, y] = co_await weft::when_all(answer(), answer());
  total += (co_await one == 42 ? 1 : 0) + (x == y ? 1 : 0);

  weft::cancellation_source src;
  weft::join_handle<void> sleeper = weft::spawn(sleep_until_cancelled(), src.token());
  src.cancel("done");
  try {
    co_await sleeper;
  } catch (const weft::cancelled_error& e) {
    total += e.reason() == "done" ? 1 : 0;
  }
  co_return total;
}

}  // namespace

int main() {
  weft::runtime rt;
  const int v = rt.block_on(answer());
  const int all = rt.block_on(everything());
  std::printf("weft %s consumer (%s): block_on -> %d, every construct -> %d\n", WEFT_VERSION_STRING,
              WEFT_CONSUMER_MODE_NAME, v, all);
  return v == 42 && all == 100 ? 0 : 1;
}
