// SPDX-License-Identifier: MIT
// seed_cancel -- the seed scenario: cancel a sleeping task and let it answer.
//
// The asyncio program it reproduces:
//
//   async def worker():
//       print("[Worker] Task started. Executing heavy process...")
//       try:
//           await asyncio.sleep(5)
//       except asyncio.CancelledError:
//           print("[Worker] Cancellation notice received. Interrupting process.")
//           return "Canceled"
//
//   async def main():
//       task = asyncio.create_task(worker())
//       await asyncio.sleep(1)
//       print(">>> Main: Requesting task cancellation...")
//       task.cancel()
//       print(f"Main: Task result -> {await task}")
//
// Expected output, in about 1 s (not 5: cancel() wakes the sleep at once):
//
//   --- Main Process Started ---
//   [Worker] Task started. Executing heavy process...
//   >>> Main: Requesting task cancellation...
//   [Worker] Cancellation notice received. Interrupting process.
//   Main: Task result -> Canceled
//   --- Main Process Finished ---
//
// Every line is flushed as it is written, so the order holds when stdout is a
// pipe (tests/examples_test.cpp runs this program through popen).
#include <weft/weft.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

void say(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

weft::task<std::string> worker() {
  say("[Worker] Task started. Executing heavy process...");
  try {
    co_await weft::sleep_for(5s);
  } catch (const weft::cancelled_error&) {
    // Catching the cancellation and returning a value "refuses" it: the
    // handle then resolves with this value, not as cancelled (asyncio).
    say("[Worker] Cancellation notice received. Interrupting process.");
    co_return std::string("Canceled");
  }
  co_return std::string("Completed");
}

}  // namespace

int main() {
  say("--- Main Process Started ---");
  weft::runtime rt;
  weft::join_handle<std::string> h = rt.spawn(worker());

  // main() is not a task here: it waits on its own thread, as the asyncio
  // program's main coroutine waits in asyncio.sleep(1).
  std::this_thread::sleep_for(1s);

  say(">>> Main: Requesting task cancellation...");
  h.cancel();
  std::string result = h.join();
  say("Main: Task result -> " + result);
  say("--- Main Process Finished ---");
  return 0;
}
