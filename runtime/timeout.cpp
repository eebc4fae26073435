// SPDX-License-Identifier: MIT
// runtime/timeout.cpp -- the out-of-line parts of wait_for / wait_until and
// of the timeout scopes (timeout / timeout_at, timeout_scope).
#include "weft/timeout.hpp"

#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "runtime_impl.hpp"
#include "spin.hpp"

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

void rethrow_timeout_or(const std::exception_ptr& err, std::uint64_t deadline, bool own) {
  try {
    std::rethrow_exception(err);
  } catch (const cancelled_error& e) {
    // Ours only when our deadline passed and nobody cancelled the waiter: a
    // timeout of an enclosing wait_for (which cancels the waiter, so
    // cancelling() grew) stays a cancelled_error here, as in asyncio, and
    // becomes a timeout_error only at the wait_for that owns it.
    if (own && e.kind() == cancel_kind::timeout && now_ns() >= deadline)
      std::throw_with_nested(timeout_error(e));  // chained: cause() and rethrow_if_nested
    throw;
  }
}

void throw_expired_unstarted(std::source_location where) {
  // The cancellation the task would have been delivered, made current so
  // that throw_with_nested captures it.
  try {
    throw cancelled_error("timeout", cancel_kind::timeout, where);
  } catch (const cancelled_error& e) {
    std::throw_with_nested(timeout_error(e));
  }
}

// ---- timeout scopes ----
//
// The protocol (docs/architecture.md, "Timeout scopes"): one mutex guards a
// scope's phase, deadline, generation and deadline task.  Whoever makes the
// scope's request (its deadline task, or reschedule()/entry when the deadline
// has passed) first claims it under the mutex (active -> firing), makes the
// request with the mutex released (request_cancel runs the task's stop
// callbacks, user code that may call into the scope), then publishes it
// (firing -> expiring).  The block's end takes the mutex, waits out a
// `firing` (a request on its way: a bounded, non-suspending stretch of the
// other thread), and closes the scope (-> expired or finished), so no claim
// can succeed after it: a request of the scope is either made and withdrawn
// by the end's uncancel(), or never made.

class scope_state {
 public:
  enum class phase : std::uint8_t {
    active,    // the block runs; the deadline is armed (or never)
    firing,    // a request of the scope is being made
    expiring,  // it was made; the block has not ended
    expired,   // the block ended after the request
    finished,  // the block ended without one
  };
  scope_state(task_core* t, std::source_location w, unsigned count, std::uint64_t deadline) noexcept
      : target(t), where(w), count_at_entry(count), when(deadline) {}

  task_core* const target;  // the task running the block (alive while active/firing)
  const std::source_location where;
  const unsigned count_at_entry;  // the target's cancelling() when the scope began
  // The task's enclosing scope (registered in scope_table), alive while this
  // one is: scopes of one task nest.  Written at entry, before anyone else
  // can see this scope.
  scope_state* parent = nullptr;
  // An enclosing deadline had passed already when this scope began: it has
  // had its say, and this scope reports its own timeouts (a scope in the
  // cleanup after a timeout).  Task only.
  bool enclosing_passed_at_entry = false;

  std::mutex mu;
  std::uint64_t when;            // guarded by mu; kNever: never
  std::uint32_t generation = 0;  // guarded by mu: which deadline task is the current one
  phase ph = phase::active;      // guarded by mu
  join_handle<void> timer;       // guarded by mu: the current deadline task, if any
};

namespace {

using phase = scope_state::phase;

// Make the request claimed by the caller (phase firing, set under the mutex).
// If it cannot be made (out of memory), the scope is active again and the
// caller reports the exception (a deadline task: the unhandled-exception hook).
void fire_claimed(scope_state& s) {
  bool made = false;
  try {
    made = request_cancel(s.target, "timeout", cancel_kind::timeout, s.where);
  } catch (...) {
    std::lock_guard lk(s.mu);
    s.ph = phase::active;
    throw;
  }
  std::lock_guard lk(s.mu);
  // Not made only when the target had finished, which it cannot while its
  // scope is firing (the block's end waits for us); stay safe regardless.
  s.ph = made ? phase::expiring : phase::active;
}

task<void> scope_deadline(std::shared_ptr<scope_state> s, std::uint32_t gen,
                          std::uint64_t deadline) {
  co_await sleep_tag{deadline, false};
  {
    std::lock_guard lk(s->mu);
    // A rescheduled scope has a newer deadline task; an ended one none.
    if (s->ph != phase::active || s->generation != gen) co_return;
    s->ph = phase::firing;
  }
  fire_claimed(*s);
}

// A deadline task for generation `gen`, on the target's runtime.
join_handle<void> spawn_deadline(const std::shared_ptr<scope_state>& s, std::uint32_t gen,
                                 std::uint64_t deadline) {
  worker_hot* w = current_worker();
  if (w != nullptr && w->rt == s->target->rt)
    return weft::spawn(scope_deadline(s, gen, deadline), s->where);
  // reschedule() from another thread (or another runtime's task).
  return spawn_on(s->target->rt, scope_deadline(s, gen, deadline), s->where);
}

// Let a deadline task go: woken now, it finds the scope moved on and ends.
void drop_deadline(join_handle<void>& h) noexcept {
  if (!h.valid()) return;
  try {
    h.cancel();
  } catch (...) {
    // Out of memory, or a simulation cancelled from a foreign thread: it
    // sleeps to its deadline and then does nothing (the phase or the
    // generation tells it so).
  }
  h = join_handle<void>();
}

// The scopes each task is running, innermost first (through `parent`):
// whether a deadline that encloses some code has passed (the outermost
// expired deadline reports the timeout, as for nested wait_for).  Only the
// task itself registers and unregisters its scopes; never destroyed, like
// the wait table.
struct scope_table {
  std::mutex mu;
  std::unordered_map<const task_core*, scope_state*> innermost;  // guarded by mu
};
scope_table& scopes() {
  static scope_table* t = new scope_table;
  return *t;
}

bool passed(scope_state& s, std::uint64_t now) noexcept {
  std::lock_guard lk(s.mu);
  return s.when != kNever && s.when <= now;
}

// A deadline enclosing the running code has passed: a scope from `from`
// outwards (the running task's), a scope of a task that runs this one inline
// (it awaits it), or a wait_for waiting on one of them.
bool enclosing_deadline_passed(scope_state* from) noexcept {
  worker* w = tls_worker;
  if (w == nullptr || w->current == nullptr) return false;
  const std::uint64_t now = now_ns();
  for (scope_state* p = from; p != nullptr; p = p->parent) {
    if (passed(*p, now)) return true;
  }
  {
    wait_table& t = waits();
    std::lock_guard lk(t.mu);
    for (const task_core* c = w->current; c != nullptr; c = c->inline_joiner) {
      auto it = t.deadlines.find(c);
      if (it != t.deadlines.end() && it->second <= now) return true;
    }
  }
  // Lock order: the table, then a scope's mutex (nothing takes them the
  // other way round).
  scope_table& t = scopes();
  std::lock_guard lk(t.mu);
  if (t.innermost.empty()) return false;
  for (const task_core* c = w->current->inline_joiner; c != nullptr; c = c->inline_joiner) {
    auto it = t.innermost.find(c);
    if (it == t.innermost.end()) continue;
    for (scope_state* p = it->second; p != nullptr; p = p->parent) {
      if (passed(*p, now)) return true;
    }
  }
  return false;
}

// The running task's innermost scope, or null.
scope_state* innermost_scope(const task_core* self) noexcept {
  scope_table& t = scopes();
  std::lock_guard lk(t.mu);
  auto it = t.innermost.find(self);
  return it == t.innermost.end() ? nullptr : it->second;
}

void unregister_scope(scope_state& s) noexcept {
  scope_table& t = scopes();
  std::lock_guard lk(t.mu);
  if (s.parent != nullptr) {
    t.innermost[s.target] = s.parent;  // the entry exists: no allocation
  } else {
    t.innermost.erase(s.target);
  }
}

struct closed {
  bool fired = false;   // the scope's request was made
  bool passed = false;  // its deadline had passed when the block ended
};

// Close the scope: no claim succeeds after this.
closed close_scope(scope_state& s) noexcept {
  join_handle<void> timer;
  closed c;
  {
    std::unique_lock lk(s.mu);
    unsigned spins = 0;
    while (s.ph == phase::firing) {
      // The request is being made on another thread, which never suspends
      // while firing: wait for it, then withdraw it.
      lk.unlock();
      spin_pause(spins);
      lk.lock();
    }
    c.fired = s.ph == phase::expiring;
    // A deadline that passed but whose task has not fired yet (it may be
    // queued behind the block, or lost): the scope expired all the same.
    c.passed = c.fired || (s.when != kNever && s.when <= now_ns());
    s.ph = c.passed ? phase::expired : phase::finished;
    timer = std::move(s.timer);
  }
  unregister_scope(s);
  drop_deadline(timer);
  return c;
}

const char* phase_name(phase p) noexcept {
  switch (p) {
    case phase::active:
      return "active";
    case phase::firing:
    case phase::expiring:
      return "expiring";
    case phase::expired:
      return "expired";
    case phase::finished:
      return "finished";
  }
  return "unknown";
}

}  // namespace

std::uint64_t scope_deadline_after(std::chrono::nanoseconds d) noexcept {
  if (d.count() > 0) return deadline_after(d);  // kNever for max()
  const std::uint64_t now = now_ns();
  // |d| without overflow (d may be nanoseconds::min()).
  const std::uint64_t back = std::uint64_t{0} - static_cast<std::uint64_t>(d.count());
  return back >= now ? 0 : now - back;
}

std::shared_ptr<scope_state> scope_enter(std::uint64_t deadline, std::source_location where) {
  worker* w = tls_worker;
  if (w == nullptr || w->current == nullptr)
    throw usage_error("weft::timeout: a timeout scope runs inside a weft task");
  task_core* self = w->current;
  // The count first, under the hook lock (every request counts and lands
  // under it): a request counted here is either delivered just below or was
  // made after this read and counts above the entry level.
  self->lock_hook();
  // Relaxed: under the hook lock, which every update of the count holds.
  const unsigned count = self->cancel_count.load(std::memory_order_relaxed);
  self->unlock_hook();
  // Entering is a cancellation point: an outside request already pending is
  // delivered before the block runs, never mistaken for the scope's own.
  this_task::throw_if_cancel_requested();
  auto s = std::make_shared<scope_state>(self, where, count, deadline);
  s->parent = innermost_scope(self);
  s->enclosing_passed_at_entry = enclosing_deadline_passed(s->parent);
  {
    scope_table& t = scopes();
    std::lock_guard lk(t.mu);
    t.innermost[self] = s.get();  // may throw (no memory): nothing armed yet
  }
  if (deadline == kNever) return s;
  try {
    if (deadline <= now_ns()) {
      // Expired already: the request now, delivered at the block's first
      // cancellation point.  Nobody else sees the scope yet.
      s->ph = phase::firing;
      fire_claimed(*s);
      return s;
    }
    join_handle<void> h = spawn_deadline(s, 0, deadline);
    std::lock_guard lk(s->mu);
    s->timer = std::move(h);
  } catch (...) {
    unregister_scope(*s);  // the block never runs
    throw;
  }
  return s;
}

bool scope_leave(scope_state& s) noexcept {
  const closed c = close_scope(s);
  if (!c.passed) return false;
  unsigned count;
  if (c.fired) {
    // Withdraw the scope's request (asyncio's uncancel() in __aexit__): still
    // pending when the block ended without a cancellation point, it is
    // dropped with it when the count reaches zero.
    count = uncancel_core(s.target);
  } else {
    s.target->lock_hook();
    // Relaxed: under the hook lock, which every update of the count holds.
    count = s.target->cancel_count.load(std::memory_order_relaxed);
    s.target->unlock_hook();
  }
  // Ours only when no other request was counted since the scope began, and
  // no enclosing deadline passed during the block: the outermost expired
  // deadline reports the timeout, whichever fired first.
  if (count > s.count_at_entry) return false;
  return s.enclosing_passed_at_entry || !enclosing_deadline_passed(s.parent);
}

bool enclosing_wait_expired() noexcept {
  worker* w = tls_worker;
  if (w == nullptr || w->current == nullptr) return false;
  // Every scope of the waiting task encloses the wait.
  return enclosing_deadline_passed(innermost_scope(w->current));
}

void scope_abandon(scope_state& s) noexcept { (void)close_scope(s); }

void rethrow_scope_error(const std::exception_ptr& err) {
  try {
    std::rethrow_exception(err);
  } catch (const cancelled_error& e) {
    // The runtime's "shutdown" is nobody's timeout.
    if (e.kind() != cancel_kind::shutdown) std::throw_with_nested(timeout_error(e));
    throw;
  }
}

}  // namespace weft::detail

namespace weft {

bool timeout_scope::expired() const noexcept {
  if (!state_) return false;
  std::lock_guard lk(state_->mu);
  return state_->ph != detail::scope_state::phase::active &&
         state_->ph != detail::scope_state::phase::finished;
}

std::optional<std::chrono::steady_clock::time_point> timeout_scope::when() const noexcept {
  if (!state_) return std::nullopt;
  std::uint64_t w;
  {
    std::lock_guard lk(state_->mu);
    w = state_->when;
  }
  if (w == detail::kNever) return std::nullopt;
  return std::chrono::steady_clock::time_point(
      std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(w)));
}

void timeout_scope::reschedule(std::optional<std::chrono::steady_clock::time_point> when) {
  using detail::scope_state;
  if (!state_) throw usage_error("weft::timeout_scope::reschedule: the scope has not been entered");
  scope_state& s = *state_;
  const std::uint64_t deadline = when ? detail::deadline_at(*when) : detail::kNever;
  join_handle<void> old;
  std::uint32_t gen = 0;
  bool at_once = false;
  {
    std::lock_guard lk(s.mu);
    if (s.ph != scope_state::phase::active)
      throw usage_error(std::string("weft::timeout_scope::reschedule: the scope is ") +
                        detail::phase_name(s.ph) + " (its block ended, or its deadline fired)");
    s.when = deadline;
    gen = ++s.generation;
    old = std::move(s.timer);
    if (deadline != detail::kNever && deadline <= detail::now_ns()) {
      s.ph = scope_state::phase::firing;
      at_once = true;
    }
  }
  detail::drop_deadline(old);
  if (at_once) {
    detail::fire_claimed(s);
    return;
  }
  if (deadline == detail::kNever) return;
  join_handle<void> h = detail::spawn_deadline(state_, gen, deadline);
  {
    std::lock_guard lk(s.mu);
    if (s.ph == scope_state::phase::active && s.generation == gen) {
      s.timer = std::move(h);
      return;
    }
  }
  detail::drop_deadline(h);  // rescheduled again, or ended, meanwhile
}

}  // namespace weft
