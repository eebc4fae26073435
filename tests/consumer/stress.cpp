// SPDX-License-Identifier: MIT
// A project's own stress program over an installed weft::stress (check.sh):
// one registered scenario, `tally`, whose tasks add to a counter under a
// semaphore while some of them are cancelled; its check wants the counter to
// equal the sum of the values of the tasks that completed.
#include <weft/stress.hpp>
#include <weft/weft.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace {

struct tally {
  std::uint64_t counter = 0;
  std::uint64_t expected = 0;
  weft::semaphore lock{1};
};

weft::task<std::uint64_t> add(tally* t, std::uint64_t v) {
  co_await weft::yield();
  co_await t->lock.acquire();
  t->counter += v;
  t->lock.release();
  co_return v;
}

weft::task<void> adders(weft::stress::context& r) {
  tally& t = r.state<tally>();
  std::vector<weft::join_handle<std::uint64_t>> hs;
  for (unsigned i = 0; i < r.tasks(); ++i) {
    hs.push_back(weft::spawn(add(&t, 1 + r.below(9))));
    r.spawned();
    if (r.chance(r.cancel_rate())) r.cancel(hs.back(), "tally: cancel an adder");
  }
  for (auto& h : hs) {
    try {
      t.expected += co_await h;
      r.ended(weft::stress::context::ending::value);
    } catch (const weft::cancelled_error&) {
      if (weft::this_task::cancelling() > 0) throw;
      r.ended(weft::stress::context::ending::cancelled);
    }
  }
}

void adds_up(weft::stress::context& r) {
  const tally& t = r.state<tally>();
  if (!r.cut_short() && t.counter != t.expected)
    r.violation("counter " + std::to_string(t.counter) + ", want " + std::to_string(t.expected));
}

}  // namespace

int main(int argc, char** argv) {
  return weft::stress::main(argc, argv, {{"tally", "adders under a semaphore", adders, adds_up}});
}
