// SPDX-License-Identifier: MIT
// runtime/timeout.cpp -- the out-of-line parts of wait_for / wait_until.
#include "weft/timeout.hpp"

#include <limits>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "runtime_impl.hpp"

namespace weft::detail {

std::uint64_t deadline_after(std::chrono::nanoseconds d) noexcept {
  if (d.count() <= 0) return 0;  // already expired
  if (d == std::chrono::nanoseconds::max()) return kNever;
  std::uint64_t now = now_ns();
  auto ud = static_cast<std::uint64_t>(d.count());
  // Saturates at the end of the clock (a far deadline, still armed): never
  // overflows.
  return now >= kEndOfTime || ud > kEndOfTime - now ? kEndOfTime : now + ud;
}

std::uint64_t deadline_at(std::chrono::steady_clock::time_point tp) noexcept {
  if (tp == std::chrono::steady_clock::time_point::max()) return kNever;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
  return ns <= 0 ? 0 : static_cast<std::uint64_t>(ns);
}

namespace {
task<void> cancel_at_deadline(task_ref target, std::uint64_t deadline, std::source_location where) {
  co_await sleep_tag{deadline, false};
  request_cancel(target.get(), "timeout", cancel_kind::timeout, where);
}
}  // namespace

task<void> deadline_canceller(task_ref target, std::uint64_t deadline, std::source_location where) {
  // If creating the frame throws, our parameter still owns the reference and
  // drops it here.
  return cancel_at_deadline(std::move(target), deadline, where);
}

namespace {
struct wait_table {
  std::mutex mu;
  std::unordered_map<const task_core*, std::uint64_t> deadlines;  // guarded by mu
};
wait_table& waits() {
  // Never destroyed: waits may end on worker threads during static destruction.
  static wait_table* t = new wait_table;
  return *t;
}
}  // namespace

wait_registration::wait_registration(task_core* target, std::uint64_t deadline) : target_(target) {
  wait_table& t = waits();
  std::lock_guard lk(t.mu);
  t.deadlines[target] = deadline;  // one joiner per task: one wait at a time
}

wait_registration::~wait_registration() {
  wait_table& t = waits();
  std::lock_guard lk(t.mu);
  t.deadlines.erase(target_);
}

bool enclosing_wait_expired() noexcept {
  worker* w = tls_worker;
  if (w == nullptr) return false;
  const std::uint64_t now = now_ns();
  wait_table& t = waits();
  std::lock_guard lk(t.mu);
  if (t.deadlines.empty()) return false;
  for (const task_core* c = w->current; c != nullptr; c = c->inline_joiner) {
    auto it = t.deadlines.find(c);
    if (it != t.deadlines.end() && it->second <= now) return true;
  }
  return false;
}

void rethrow_timeout_or(const std::exception_ptr& err, std::uint64_t deadline, bool own) {
  try {
    std::rethrow_exception(err);
  } catch (const cancelled_error& e) {
    // Ours only when our deadline passed and nobody cancelled the waiter: a
    // timeout of an enclosing wait_for (which cancels the waiter, so
    // cancelling() grew) stays a cancelled_error here, as in asyncio, and
    // becomes a timeout_error only at the wait_for that owns it.
    if (own && e.kind() == cancel_kind::timeout && now_ns() >= deadline) throw timeout_error();
    throw;
  }
}

}  // namespace weft::detail
