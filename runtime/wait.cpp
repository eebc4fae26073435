// SPDX-License-Identifier: MIT
// runtime/wait.cpp -- weft::wait, as_completed and gather_outcomes: waiting
// on many tasks without taking their outcomes (docs/architecture.md,
// "Waiting on many tasks").
//
// A watch_set holds one list_wait entry per task, linked into that task's
// watcher list (the one shield() waits on), with on_fire set: the task's
// completion hands the entry to entry_fired instead of resuming anybody.
//   watch:   per task, under its watcher list's lock: watch_ready (kWatched,
//            or the task is done already: recorded at once) or link the entry.
//   record:  entry_fired, under the list's lock and then the set's own lock:
//            append the task's position to `finished`; when the waiter's
//            condition now holds, take `sleeper` and interrupt() it.
//   sleep:   the waiter sets its timer_node's core, then under the set's lock
//            either finds its condition met (no suspension) or publishes the
//            node as `sleeper`; then it arms the node as a sleep (sleep_arm:
//            the task's hook, so cancel() interrupts it, and a timer for the
//            deadline).  Whoever claims the node (a completion, cancel(), the
//            timer, shutdown) resumes the task through the node's latch.
//   wake:    the waiter clears `sleeper` under the set's lock: a completion
//            that still holds that lock is done with the node once the waiter
//            has it; then sleep_resume takes any cancellation.
//   unwatch: the set's destructor unlinks every entry under its list's lock;
//            a completion firing an entry holds that lock, so after the loop
//            no completion can reach the set.
// Nothing here cancels or joins a watched task, so every handle stays usable.
#include <string>

#include "cancel_delivery.hpp"
#include "spin.hpp"
#include "weft/detail/task_ref.hpp"
#include "weft/timeout.hpp"
#include "weft/wait.hpp"

namespace weft::detail {

struct watch_set {
  explicit watch_set(std::vector<task_core*> cores);
  ~watch_set() { unwatch(linked_count); }
  watch_set(const watch_set&) = delete;
  watch_set& operator=(const watch_set&) = delete;

  void lock() noexcept { spin_lock(lock_flag); }
  void unlock() noexcept {
    // Release: pairs with spin_lock's acquire exchange.
    lock_flag.store(0, std::memory_order_release);
  }
  // Under the lock: the waiter's condition holds.
  bool met_locked(std::size_t want, bool want_failure) const noexcept {
    return finished.size() >= want || (want_failure && failed);
  }
  // Under the lock (and the list's, or as the watching task): task `i` finished.
  void record_locked(std::size_t i) noexcept {
    finished.push_back(i);  // reserved for every task: allocates nothing
    if (owner_of(targets[i])->result == outcome::exception) failed = true;
  }
  void unwatch(std::size_t count) noexcept;

  std::vector<task_core*> targets;
  // Keep every task's frame, and so its watcher list, alive while an entry
  // may be linked there, also when a handle is dropped meanwhile.
  std::vector<task_ref> refs;
  std::unique_ptr<list_wait[]> entries;
  std::size_t linked_count = 0;  // entries set up (all, once constructed)
  std::atomic<std::uint8_t> lock_flag{0};
  // ---- guarded by lock_flag ----
  std::vector<std::size_t> finished;  // positions, in the order the tasks finished
  bool failed = false;                // one finished by an exception (not a cancellation)
  timer_node* sleeper = nullptr;      // the suspended waiter's node, or null
  std::size_t need = 0;               // what the sleeper waits for (met_locked)
  bool on_failure = false;
};

namespace {

void entry_fired(list_wait* n, void* ctx) noexcept {
  auto* s = static_cast<watch_set*>(ctx);
  s->lock();
  s->record_locked(static_cast<std::size_t>(n - s->entries.get()));
  if (s->sleeper != nullptr && s->met_locked(s->need, s->on_failure)) {
    // The waiter cannot leave its wait while we hold the lock (wake step), so
    // the node is alive; interrupt() may find it claimed already (timer,
    // cancel), and then does nothing.
    std::exchange(s->sleeper, nullptr)->interrupt();
  }
  s->unlock();
}

}  // namespace

watch_set::watch_set(std::vector<task_core*> cores)
    : targets(std::move(cores)), entries(new list_wait[targets.size()]) {
  finished.reserve(targets.size());
  refs.reserve(targets.size());
  for (task_core* c : targets) refs.emplace_back(c);
  try {
    for (; linked_count < targets.size(); ++linked_count) {
      list_wait& e = entries[linked_count];
      e.on_fire = &entry_fired;
      e.fire_ctx = this;
      e.owner = watch_list(targets[linked_count]);  // may throw bad_alloc
      e.owner->lock();
      if (watch_ready(targets[linked_count])) {
        lock();
        record_locked(linked_count);
        unlock();
      } else {
        e.owner->push_back(&e);
      }
      e.owner->unlock();
    }
  } catch (...) {
    unwatch(linked_count);
    throw;
  }
}

void watch_set::unwatch(std::size_t count) noexcept {
  for (std::size_t i = 0; i < count; ++i) {
    list_wait& e = entries[i];
    e.owner->lock();
    if (e.linked) e.owner->erase(&e);
    e.owner->unlock();
  }
}

namespace {

enum class wake : std::uint8_t { met, timed_out, again };

// One wait on a watch_set until `need` tasks finished (or, with on_failure,
// one failed), or the deadline.  `shielded`: no cancellation point -- no hook
// (cancel() does not wake it), no timer; only the condition ends it.
struct until_awaiter {
  until_awaiter(watch_set* s, std::size_t n, bool f, std::uint64_t d, bool sh) noexcept
      : set(s), need(n), on_failure(f), deadline(d), shielded(sh) {}
  watch_set* set;
  std::size_t need;
  bool on_failure;
  std::uint64_t deadline;
  bool shielded;
  task_core* core = nullptr;
  timer_node node;
  bool at_once = false;

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    core = h.promise().core;
    node.core = core;  // before `sleeper` publishes the node (sleep_arm keeps it)
    node.deadline = deadline;
    set->lock();
    if (set->met_locked(need, on_failure)) {
      set->unlock();
      at_once = true;
      return false;
    }
    set->need = need;
    set->on_failure = on_failure;
    set->sleeper = &node;
    set->unlock();
    if (shielded) {
      core->resume_point = h;
      // acq_rel: the latch, as in sleep_suspend; only a completion's
      // interrupt() counts the other share.
      return node.latch.fetch_sub(1, std::memory_order_acq_rel) != 1;
    }
    return sleep_arm(core, &node, h);
  }
  wake await_resume() {
    if (at_once) {
      if (!shielded) deliver_if_pending(core);  // still a cancellation point
      return wake::met;
    }
    set->lock();
    set->sleeper = nullptr;
    const bool met = set->met_locked(need, on_failure);
    set->unlock();
    if (shielded) return wake::met;  // only the condition resumes it
    // Unregisters the hook; throws the shutdown cancellation if the runtime
    // refused the sleep.
    if (cancel_request* r = sleep_resume(core, &node)) throw_taken(r);
    if (met) return wake::met;
    // Relaxed: our own node; its last writer resumed us through the latch.
    if (node.claim.load(std::memory_order_relaxed) == timer_node::kFired) return wake::timed_out;
    return wake::again;  // a cancel woke it and was withdrawn (uncancel) meanwhile
  }
};

// What co_await of a named until_awaiter goes through: a copyable proxy (g++
// 12 copies an awaiter that await_transform returns by reference; the node
// holds atomics and must stay where the set can reach it).
struct until_ref {
  until_awaiter* a;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    return a->await_suspend(h);
  }
  wake await_resume() { return a->await_resume(); }
};

// Waits until every task of `set` finished, or the deadline passed (false).
task<bool> wait_until_met(watch_set* set, std::size_t need, bool on_failure, std::uint64_t deadline,
                          bool shielded) {
  for (;;) {
    until_awaiter a{set, need, on_failure, deadline, shielded};
    const wake w = co_await until_ref{&a};
    if (w == wake::met) co_return true;
    if (w == wake::timed_out) co_return false;
  }
}

[[noreturn]] void refuse(const char* construct, const char* why) {
  throw usage_error(std::string(construct) + ": " + why);
}

}  // namespace

task_core* checked_core(task_core* core, const char* construct) {
  if (core == nullptr)
    refuse(construct, "an empty join_handle (moved from or default constructed)");
  // Plain read: written by the handle's owner (the caller) when it took the
  // outcome.
  if (core->observed) {
    refuse(construct,
           "the outcome of this join_handle was already taken (joined or awaited); there is "
           "nothing left to wait for");
  }
  // Relaxed: a claim by a thread's join() is the caller's own earlier action
  // or a breach of the one-owner rule; either way only the flag is read.
  if ((core->state.load(std::memory_order_relaxed) & task_core::kThreadJoiner) != 0)
    refuse(construct, "a thread joins this join_handle (join()) and takes its outcome");
  return core;
}

task<std::vector<char>> wait_cores(std::vector<task_core*> cores, return_when when,
                                   std::uint64_t deadline) {
  if (cores.empty()) refuse("weft::wait", "no handles to wait on");
  if (when != return_when::first_completed && when != return_when::first_exception &&
      when != return_when::all_completed)
    refuse("weft::wait", "return_when is none of its three values");
  const std::size_t n = cores.size();
  watch_set set(std::move(cores));
  co_await wait_until_met(&set, when == return_when::first_completed ? 1 : n,
                          when == return_when::first_exception, deadline, false);
  std::vector<char> done(n);
  for (std::size_t i = 0; i < n; ++i) {
    // Acquire: pairs with complete_task's release RMW (kDone); the caller may
    // take the outcome of a task reported done without another check.
    done[i] = static_cast<char>(
        (set.targets[i]->state.load(std::memory_order_acquire) & task_core::kDone) != 0 ? 1 : 0);
  }
  co_return done;
}

completion_order::completion_order(std::vector<task_core*> cores, std::uint64_t deadline)
    : set_(cores.empty() ? nullptr : new watch_set(std::move(cores))), deadline_(deadline) {}
completion_order::completion_order(completion_order&&) noexcept = default;
completion_order& completion_order::operator=(completion_order&&) noexcept = default;
completion_order::~completion_order() = default;

std::size_t completion_order::remaining() const noexcept {
  return set_ == nullptr ? 0 : set_->targets.size() - given_;
}

task<std::size_t> completion_order::next() {
  if (remaining() == 0) {
    this_task::throw_if_cancel_requested();  // a cancellation point all the same
    co_return kNoMore;
  }
  if (!co_await wait_until_met(set_.get(), given_ + 1, false, deadline_, false))
    throw timeout_error();
  set_->lock();
  const std::size_t i = set_->finished[given_];
  set_->unlock();
  ++given_;
  co_return i;
}

task<void> gather_wait(std::vector<task_core*> cores) {
  if (cores.empty()) {
    this_task::throw_if_cancel_requested();
    co_return;
  }
  const std::size_t n = cores.size();
  watch_set set(std::move(cores));
  std::exception_ptr cancelled;
  try {
    co_await wait_until_met(&set, n, false, kEndOfTime, false);
  } catch (const cancelled_error&) {
    cancelled = std::current_exception();
  }
  if (!cancelled) co_return;
  // asyncio's gather: the gatherer's cancellation goes to every task still
  // running; the gatherer waits for all of them, then reports it.
  try {
    std::rethrow_exception(cancelled);
  } catch (const cancelled_error& e) {
    for (task_core* c : set.targets) {
      if (e.reason().empty()) {
        request_cancel_plain(c, cancel_kind::parent, e.where());
      } else {
        request_cancel(c, std::string(e.reason()), cancel_kind::parent, e.where());
      }
    }
  }
  co_await wait_until_met(&set, n, false, kEndOfTime, true);
  std::rethrow_exception(cancelled);
}

}  // namespace weft::detail
