// SPDX-License-Identifier: MIT
// The asyncio "advanced" seed, with weft: a task sleeps 3 s inside a 1 s
// wait_for; the timeout cancels it, it reports the interruption and rethrows,
// and main sees the timeout.  Runs in about 1 s, not 3.
//
//   async def process():
//       print("[Process] Started")
//       try:
//           await asyncio.sleep(3)
//       except asyncio.CancelledError:
//           print("[Process] Interrupted due to timeout")
//           raise
//   async def main():
//       try:
//           await asyncio.wait_for(process(), timeout=1)
//       except asyncio.TimeoutError:
//           print("Main: Timed out (Task already cancelled)")
#include <chrono>
#include <cstdio>

#include <weft/weft.hpp>

using namespace std::chrono_literals;

weft::task<void> process() {
  std::puts("[Process] Started");
  std::fflush(stdout);
  try {
    co_await weft::sleep_for(3s);
  } catch (const weft::cancelled_error&) {
    std::puts("[Process] Interrupted due to timeout");
    std::fflush(stdout);
    throw;
  }
}

weft::task<void> main_task() {
  try {
    co_await weft::wait_for(process(), 1s);
  } catch (const weft::timeout_error&) {
    std::puts("Main: Timed out (Task already cancelled)");
    std::fflush(stdout);
  }
}

int main() {
  weft::runtime rt;
  rt.block_on(main_task());
  return 0;
}
