// SPDX-License-Identifier: MIT
// stress/tests/misbehave.cpp -- scenarios that misbehave on purpose, for the
// exit codes and the JSON report of weft::stress::main (stress/CMakeLists.txt):
//   stuck   a task that waits for an event nobody sets: a hang (exit 3), by
//           the watchdog on the real runtime, as a deadlock in --sim;
//   throws  a task that throws: a violation (exit 1);
//   fine    does a little work and passes.
#include <weft/stress.hpp>
#include <weft/weft.hpp>

#include <stdexcept>

namespace {

weft::task<void> stuck(weft::stress::context& r) {
  r.spawned();
  co_await r.state<weft::event>().wait();  // never set
}

weft::task<void> throws(weft::stress::context& r) {
  co_await weft::yield();
  if (r.below(2) < 2) throw std::runtime_error("planted failure");
}

weft::task<void> fine(weft::stress::context& r) {
  for (unsigned i = 0; i < r.tasks(); ++i) co_await weft::yield();
}

}  // namespace

int main(int argc, char** argv) {
  return weft::stress::main(argc, argv,
                            {{"stuck", "waits forever", stuck, {}, true},
                             {"throws", "throws from its task", throws, {}, true},
                             {"fine", "yields --tasks times", fine, {}, false}});
}
