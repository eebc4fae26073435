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

void retain_for_timer(task_core* target) noexcept {
  // Relaxed: the waiter's handle holds a reference, so the count is not zero.
  target->state.fetch_add(task_core::kRefOne, std::memory_order_relaxed);
}

namespace {
// The deadline task's reference to its target.  A coroutine parameter, not a
// local of the body: the frame owns it from its creation and drops it when the
// frame is destroyed, also when the task never runs its body (it is cancelled
// before it starts whenever the wait ends first, and during shutdown).
class target_ref {
 public:
  explicit target_ref(task_core* c) noexcept : core_(c) {}
  target_ref(target_ref&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  target_ref(const target_ref&) = delete;
  target_ref& operator=(const target_ref&) = delete;
  target_ref& operator=(target_ref&&) = delete;
  ~target_ref() {
    if (core_ != nullptr) release_ref(core_);
  }
  task_core* get() const noexcept { return core_; }

 private:
  task_core* core_;
};

task<void> cancel_at_deadline(target_ref target, std::uint64_t deadline,
                              std::source_location where) {
  co_await sleep_tag{deadline, false};
  request_cancel(target.get(), "timeout", cancel_kind::timeout, where);
}
}  // namespace

task<void> deadline_canceller(task_core* target, std::uint64_t deadline,
                              std::source_location where) {
  // If creating the frame throws, the temporary still owns the reference and
  // drops it here.
  return cancel_at_deadline(target_ref(target), deadline, where);
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

wait_registration::wait_registration(task_core* target, std::uint64_t deadline)
    : target_(target) {
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

void rethrow_timeout_or(std::exception_ptr err, std::uint64_t deadline, bool own) {
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
