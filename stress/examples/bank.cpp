// SPDX-License-Identifier: MIT
// stress/examples/bank.cpp -- a user's own scenario run through weft-stress's
// engine (weft/stress.hpp): transfers between the accounts of a small bank,
// some of them cancelled, and after every round the check that no money was
// created or destroyed.
//
// The code under test comes in three versions, each a scenario of its own:
//   bank                the right one: a transfer holds the bank's lock and
//                       does not suspend between the withdrawal and the deposit;
//   bank_unlocked       planted bug: reads both balances, yields, writes them
//                       back without the lock (a lost update);
//   bank_cancel_unsafe  planted bug: suspends between the withdrawal and the
//                       deposit (a cancellation point), so a cancelled transfer
//                       loses the money it withdrew.
//
//   weft-stress-bank --sim --iterations=1000 --scenario=bank                 # passes
//   weft-stress-bank --sim --iterations=1000 --scenario=bank_unlocked        # exits 1
//   weft-stress-bank --sim --explore=cancel_points --scenario=bank_cancel_unsafe --tasks=4
//
// docs/stress-testing.md walks through it; stress/CMakeLists.txt runs it.
#include <weft/stress.hpp>
#include <weft/weft.hpp>

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace {

// ---- the code under test

enum class version { right, unlocked, cancel_unsafe };

struct bank {
  static constexpr std::int64_t kOpening = 100;  // each account's opening balance
  std::vector<std::int64_t> balances;
  weft::semaphore lock{1};
};

// Releases the bank's lock however the transfer ends.
struct unlock_on_exit {
  weft::semaphore* lock;
  ~unlock_on_exit() { lock->release(); }
};

weft::task<void> transfer(bank* b, std::size_t from, std::size_t to, std::int64_t amount,
                          version v) {
  co_await weft::yield();  // let other transfers run first (a cancellation point)
  if (v == version::unlocked) {
    const std::int64_t have = b->balances[from];
    const std::int64_t other = b->balances[to];
    co_await weft::yield();  // BUG: another transfer may change both meanwhile
    b->balances[from] = have - amount;
    b->balances[to] = other + amount;
    co_return;
  }
  co_await b->lock.acquire();
  unlock_on_exit unlock{&b->lock};
  b->balances[from] -= amount;
  if (v == version::cancel_unsafe)
    co_await weft::yield();  // BUG: a cancellation here loses `amount`
  b->balances[to] += amount;
}

// ---- the scenario: the round's work, then the round's check

weft::task<void> transfers(weft::stress::context& r, version v) {
  bank& b = r.state<bank>();
  b.balances.assign(8, bank::kOpening);
  std::vector<weft::join_handle<void>> handles;
  for (unsigned i = 0; i < r.tasks(); ++i) {
    const std::size_t from = r.below(8);
    const std::size_t to = (from + 1 + r.below(7)) % 8;
    const auto amount = static_cast<std::int64_t>(1 + r.below(20));
    handles.push_back(weft::spawn(transfer(&b, from, to, amount, v)));
    r.spawned();
    if (r.chance(r.cancel_rate())) r.cancel(handles.back(), "bank: cancel a transfer");
  }
  for (auto& h : handles) {
    try {
      co_await h;
      r.ended(weft::stress::context::ending::value);
    } catch (const weft::cancelled_error&) {
      if (weft::this_task::cancelling() > 0) throw;  // our own: the round is cut short
      r.ended(weft::stress::context::ending::cancelled);
    }
  }
}

void books_balance(weft::stress::context& r) {
  const bank& b = r.state<bank>();
  if (b.balances.empty()) return;  // the round ended before the scenario began
  const std::int64_t total = std::accumulate(b.balances.begin(), b.balances.end(), std::int64_t{0});
  const auto want = static_cast<std::int64_t>(b.balances.size()) * bank::kOpening;
  if (total != want)
    r.violation("money created or destroyed: the accounts hold " + std::to_string(total) +
                ", want " + std::to_string(want));
}

weft::stress::scenario bank_scenario(std::string name, std::string help, version v) {
  return {std::move(name), std::move(help),
          [v](weft::stress::context& r) { return transfers(r, v); }, books_balance,
          /*only_by_name=*/v != version::right};
}

}  // namespace

int main(int argc, char** argv) {
  return weft::stress::main(
      argc, argv,
      {bank_scenario("bank", "transfers between accounts, some cancelled", version::right),
       bank_scenario("bank_unlocked", "planted bug: a lost update", version::unlocked),
       bank_scenario("bank_cancel_unsafe", "planted bug: a cancelled transfer loses money",
                     version::cancel_unsafe)});
}
