// SPDX-License-Identifier: MIT
// runtime/task_group.cpp -- task_group, and the non-template parts of
// when_all / when_any.
//
// A child's life, by named steps (every step holds group_state::mu):
//   admit:   spawn() links a new entry into `unstarted` (marked cancelled if
//            the group already is);
//   adopt:   right after weft::spawn, still under mu: the entry learns its
//            core and the group takes a reference on it (group_ref);
//   start:   the relay's first step moves the entry to `running`; a child the
//            group cancelled before this point ends at once with that
//            cancellation (its body never runs);
//   end:     the relay's last step records a failure (and cancels the
//            siblings), moves the entry to `finished` (keeping group_ref), and
//            wakes join() when `running` became empty;
//   reap:    entries in `finished` whose task has published kDone are unlinked
//            and their group_ref dropped (by join(), by a later relay's end,
//            by the destructor), so after join() every handle reports done().
//            join() likewise unlinks entries still in `unstarted` whose task
//            is done (finished without ever starting: cancelled through its
//            handle, or by shutdown).  Nothing else would tell
//            the group about them, so join() polls for them while nothing is
//            running (yield, then sleeps of growing length); while children
//            run it sleeps on an event instead.  During shutdown (weft refuses
//            event waits and sleeps then) it polls with yield() only.
//   abandon: destruction with live children: group_ref of every unstarted
//            entry is dropped under mu (before any relay can start, so never
//            racing an inline join's plain store), and the entries stay
//            linked until their relay runs or ~group_state frees them; relays
//            that end after that drop their own group_ref and free their entry.
#include "weft/task_group.hpp"

#include "runtime_impl.hpp"

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace weft {

task_group_error::task_group_error(std::vector<std::exception_ptr> errors)
    // The exception builds its own message here; nothing is missing a throw.
    : errors_(std::move(errors)) {  // NOLINT(bugprone-throw-keyword-missing)
  what_ = "task_group: " + std::to_string(errors_.size()) + " child task(s) failed; first: " +
          (errors_.empty() ? std::string("(none)") : describe(errors_.front()));
}

namespace detail {

struct cancel_info {
  std::string reason;
  cancel_kind kind;
  std::source_location where;
};

// One child.  Allocated by spawn(), freed by whoever unlinks it for good (a
// reap once its task is done, or the relay itself at its end when the group
// was destroyed meanwhile), or by ~group_state for children that were
// abandoned.  All fields are guarded by group_state::mu.
struct group_entry {
  group_entry* prev = nullptr;
  group_entry* next = nullptr;
  task_core* core = nullptr;          // the relay task
  std::source_location where;         // the spawn() call
  std::unique_ptr<cancel_info> mark;  // cancelled by the group before it started
  bool started = false;               // its relay has begun (moved to `running`)
  bool group_ref = false;             // the group holds a reference on `core`
  bool cancel_sent = false;           // the group already cancelled it (running)
  bool failure_recorded = false;      // its failure is in group_state::errors
};

struct entry_list : intrusive_list<group_entry, &group_entry::next, &group_entry::prev> {
  std::size_t size = 0;
  void push_back(group_entry* e) noexcept {
    intrusive_list::push_back(e);
    ++size;
  }
  void erase(group_entry* e) noexcept {
    intrusive_list::erase(e);
    --size;
  }
};

// State shared by the group object, join(), and every relay (each holds a
// shared_ptr), so a relay never touches freed memory even when the group
// object is gone.
//
// Reference protocol on a child's core (why the group may touch it):
//   * spawn() takes a reference (group_ref) right after spawning, under `mu`,
//     before the relay can start (its first step takes `mu`).
//   * When the relay ends, its entry moves to `finished` with the reference;
//     join() (or a later relay's end) drops it once the task is done (kDone
//     seen with an acquire load), so that after join() every child's handle
//     reports done().
//   * A child that finishes without ever starting (cancelled through its
//     handle before it ran, or by shutdown) never runs its relay: join() finds
//     it done the same way and drops the reference then.
//   * Destruction with live children drops the references of children not yet
//     started, under `mu`, so before the relay's first step; a relay that ends
//     after that drops its own (it still runs, so it is never the last).
// The group never does a read-modify-write on a child's state word at any
// other moment: the handle owner's inline join finishes a child with a plain
// store (see handle_awaiter::await_resume), which must not race with one.
struct group_state {
  std::mutex mu;
  entry_list unstarted;  // spawned, relay not yet begun
  entry_list running;    // relay begun, not yet ended
  entry_list finished;   // relay ended (its last user code ran); task maybe not yet kDone
  std::vector<std::exception_ptr> errors;  // child failures, in order
  std::optional<cancel_info> mark;         // the group-wide cancellation, if any
  std::source_location created;            // where the group was constructed
  runtime_impl* rt = nullptr;              // the runtime of the children
  bool failed = false;                     // a child failed (siblings were cancelled)
  bool joining = false;                    // join() was called
  bool closed = false;                     // join() finished: spawn() refuses
  bool orphaned = false;                   // destroyed with live children
  bool join_waiting = false;               // join() waits on `changed` for `running` to empty
  // The scoped form (task_scope): the task running the scope, cancelled
  // (kind group) by the first child failure while the scope is open; null
  // for a plain group and once the scope closed.  The task is alive while
  // it is set: it runs the scope, which clears it before it ends.
  task_core* owner = nullptr;
  bool owner_cancelled = false;     // the first failure cancelled `owner`
  unsigned owner_base = 0;          // owner's cancelling() when the scope opened
  event changed;                    // set when `running` empties while join() waits
  std::condition_variable drained;  // orphaned: `running` emptied (blocking destructor)

  group_state() = default;
  group_state(const group_state&) = delete;
  group_state& operator=(const group_state&) = delete;
  ~group_state();

  // Under mu.
  void cancel_all_locked(cancel_kind kind, const std::string& reason, std::source_location where);
  // Under mu: drop the references of children not yet started; returns the
  // cores whose last reference that was (destroy them after unlocking).
  void release_unstarted_locked(std::vector<task_core*>& to_destroy);
  // Under mu: unlink children that finished without starting.
  void reap_unstarted_locked(std::vector<task_core*>& to_destroy);
  // Under mu: unlink ended children whose task is done (kDone published).
  void reap_finished_locked(std::vector<task_core*>& to_destroy);
};

namespace {

constexpr unsigned kYieldPolls = 16;  // polls by yield() before sleeping between polls

std::chrono::nanoseconds poll_delay(unsigned polls) noexcept {
  // 20 us, doubling, at most ~1.3 ms: a child that finished without starting is
  // rare (cancelled through its handle before it ran); the usual unstarted
  // child simply has not been picked up yet and starts within a few polls.
  unsigned shift = polls - kYieldPolls;
  if (shift > 6) shift = 6;
  return std::chrono::microseconds(20) * (1u << shift);
}

// Is the runtime of the calling worker shutting down?  Relaxed: a hint; a
// refused wait (it throws) sends us around the loop to look again.
bool runtime_stopping_here() noexcept {
  worker_hot* w = current_worker();
  return w != nullptr && w->stopping.load(std::memory_order_relaxed);
}

void destroy_all(std::vector<task_core*>& cores) noexcept {
  for (task_core* c : cores) destroy_task(c);
  cores.clear();
}

// Drop group_ref on a core that the relay will never release.  Under mu.
void drop_ref_locked(group_entry* e, std::vector<task_core*>& to_destroy) noexcept {
  e->group_ref = false;
  if (e->failure_recorded) {
    // Reported once (see group_on_end): if ours is the last reference, no
    // handle is left and the group's report is the only one.  Acquire: the
    // handle's release (an RMW) happened before.
    if (task_core::refs(e->core->state.load(std::memory_order_acquire)) == 1) {
      e->core->observed = true;
    }
  }
  // acq_rel: as release_ref; the destruction itself is deferred past mu
  // (destroying the frame runs user destructors).
  std::uint32_t prev = e->core->state.fetch_sub(task_core::kRefOne, std::memory_order_acq_rel);
  if (task_core::refs(prev) == 1) to_destroy.push_back(e->core);
}

task<void> rethrow_to_hook(std::vector<std::exception_ptr> errors) {
  throw task_group_error(std::move(errors));
  co_return;  // (makes this a coroutine)
}

// Failures the group recorded that nobody will read (join() never ran).
void report_unread(runtime_impl* rt, std::vector<std::exception_ptr> errors) noexcept {
  worker_hot* w = current_worker();
  // Only from a worker of the same runtime do we know the runtime is alive.
  // Relaxed: a hint; a spawn that misses it comes back cancelled and unrun
  // (then the failures are lost, as everything else of a runtime shutting
  // down that nobody awaits).
  if (w != nullptr && w->rt == rt && !w->stopping.load(std::memory_order_relaxed)) {
    try {
      // A detached task that fails: the runtime's unhandled-exception hook
      // gets the task_group_error.
      (void)weft::spawn(rethrow_to_hook(std::move(errors)));
      return;
    } catch (...) {
    }
  }
  task_group_error e(std::move(errors));
  std::fprintf(stderr, "weft: a task_group was destroyed without join(): %s\n", e.what());
}

}  // namespace

group_state::~group_state() {
  // Only entries that were abandoned (no reference held; their relay never
  // ran) can be left: a running relay or a held reference keeps us alive.
  for (entry_list* l : {&unstarted, &running, &finished}) {
    while (group_entry* e = l->head) {
      l->erase(e);
      delete e;
    }
  }
}

void group_state::cancel_all_locked(cancel_kind kind, const std::string& reason,
                                    std::source_location where) {
  if (!mark) mark = cancel_info{reason, kind, where};
  for (group_entry* e = unstarted.head; e != nullptr; e = e->next) {
    if (!e->mark) e->mark = std::make_unique<cancel_info>(cancel_info{reason, kind, where});
  }
  for (group_entry* e = running.head; e != nullptr; e = e->next) {
    if (e->cancel_sent) continue;
    e->cancel_sent = true;
    // The relay is between start and end (it needs mu to end): alive.
    request_cancel(e->core, reason, kind, where);
  }
}

void group_state::release_unstarted_locked(std::vector<task_core*>& to_destroy) {
  for (group_entry* e = unstarted.head; e != nullptr; e = e->next) {
    if (e->group_ref) drop_ref_locked(e, to_destroy);
  }
}

void group_state::reap_unstarted_locked(std::vector<task_core*>& to_destroy) {
  group_entry* e = unstarted.head;
  while (e != nullptr) {
    group_entry* next = e->next;
    // Acquire: pairs with complete_unstarted's release RMW (kDone).  Still in
    // `unstarted` and done: its relay never ran and never will.
    if (e->group_ref && (e->core->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
      unstarted.erase(e);
      drop_ref_locked(e, to_destroy);
      delete e;
    }
    e = next;
  }
}

void group_state::reap_finished_locked(std::vector<task_core*>& to_destroy) {
  group_entry* e = finished.head;
  while (e != nullptr) {
    group_entry* next = e->next;
    // Acquire: pairs with the release that published kDone (complete_task's
    // RMW, or the inline joiner's release store).  Only after it may we
    // modify the word (see the reference protocol).
    if ((e->core->state.load(std::memory_order_acquire) & task_core::kDone) != 0) {
      finished.erase(e);
      drop_ref_locked(e, to_destroy);
      delete e;
    }
    e = next;
  }
}

std::exception_ptr group_on_start(group_state& s, group_entry* e) {
  std::unique_ptr<cancel_info> mark;
  {
    std::lock_guard lk(s.mu);
    s.unstarted.erase(e);
    s.running.push_back(e);
    e->started = true;
    mark = std::move(e->mark);
  }
  if (!mark) return nullptr;
  return std::make_exception_ptr(cancelled_error(std::move(mark->reason), mark->kind, mark->where));
}

void group_on_end(group_state& s, group_entry* e, const std::exception_ptr& err) noexcept {
  const bool failure = err && !is_cancellation(err);
  std::string what = failure ? describe(err) : std::string();
  std::vector<task_core*> to_destroy;
  {
    std::lock_guard lk(s.mu);
    s.running.erase(e);
    if (failure) {
      if (!s.orphaned && !s.closed) {
        s.errors.push_back(err);
        e->failure_recorded = true;
        // Reported once: with no handle left (only our running reference and
        // group_ref), join()'s task_group_error is the one report; tell the
        // runtime so it does not report it again when the frame goes.  No
        // handle means nobody can take the result, so `observed` is ours.
        // Acquire: a handle dropped on another thread is fully gone.
        std::uint32_t st = e->core->state.load(std::memory_order_acquire);
        if (task_core::refs(st) == 1u + (e->group_ref ? 1u : 0u)) e->core->observed = true;
      }
      if (!s.failed) {
        s.failed = true;
        s.cancel_all_locked(cancel_kind::group, "sibling failed: " + what, e->where);
        if (s.owner != nullptr) {
          // Step cancel owner (task_scope): the body stops at its next
          // cancellation point; group_scope_exit withdraws this request again.
          s.owner_cancelled = true;
          request_cancel(s.owner, "task_scope: child failed: " + what, cancel_kind::group,
                         e->where);
        }
      }
    }
    // Earlier children that have published kDone meanwhile: let them go (keeps
    // a long-lived group's memory bounded without waking join()).
    s.reap_finished_locked(to_destroy);
    if (s.orphaned) {
      // Nobody will reap us: drop our own reference while we still run (so it
      // is never the last one, and never races an inline join's store).
      if (e->group_ref) release_ref(e->core);
      delete e;
    } else {
      s.finished.push_back(e);  // join() drops group_ref once we are done
    }
    if (s.running.empty()) {
      if (s.join_waiting) {
        s.join_waiting = false;
        s.changed.set();
      }
      if (s.orphaned) s.drained.notify_all();
    }
  }
  destroy_all(to_destroy);
}

namespace {

// spawn()'s steps, around the actual spawn (which happens under s.mu).
void group_admit_locked(group_state& s, group_entry* e) {
  if (s.closed) {
    throw usage_error("weft::task_group::spawn: the group is closed (its join() has finished)");
  }
  if (s.rt != nullptr && current_worker()->rt != s.rt) {
    throw usage_error("weft::task_group::spawn: all children must run on one runtime");
  }
  s.unstarted.push_back(e);
  if (s.mark) e->mark = std::make_unique<cancel_info>(*s.mark);
}

void group_adopt_locked(group_state& s, group_entry* e, task_core* core) {
  e->core = core;
  // Relaxed: our handle keeps the core alive; the relay's release (acq_rel,
  // after it took mu) is ordered after this by mu.
  core->state.fetch_add(task_core::kRefOne, std::memory_order_relaxed);
  e->group_ref = true;
  if (s.rt == nullptr) s.rt = current_worker()->rt;
}

}  // namespace

group_entry* group_new_entry(std::source_location where) {
  auto* e = new group_entry;
  e->where = where;
  return e;
}

void group_delete_entry(group_entry* e) noexcept { delete e; }

void group_spawn(group_state& s, group_entry* e, function_ref<task_core*()> start) {
  std::unique_lock lk(s.mu);
  try {
    group_admit_locked(s, e);  // throws usage_error when closed
  } catch (...) {
    lk.unlock();
    delete e;
    throw;
  }
  group_adopt_locked(s, e, start());
}

void throw_group_needs_worker() {
  throw usage_error(
      "weft::task_group::spawn called outside a weft task: children run on the current runtime");
}

namespace {
// Waits until every child has ended (the loop of join(), see the file
// comment).  Returns the first cancellation delivered to the awaiting task
// meanwhile (it cancelled every child with kind parent), or null.
task<std::exception_ptr> group_drain(std::shared_ptr<group_state> s) {
  std::exception_ptr cancel;  // the first cancellation of the task awaiting us
  unsigned polls = 0;
  std::vector<task_core*> to_destroy;
  for (;;) {
    // During shutdown weft refuses event waits and sleeps (they throw at
    // once), but yield() still reschedules: poll with yield() only, until the
    // runtime's shutdown requests have ended every child.
    const bool stopping = runtime_stopping_here();
    enum class next { done, wait_running, poll } what;
    bool finishing = false;  // some ended child has not yet published kDone: a short wait
    {
      std::lock_guard lk(s->mu);
      s->reap_unstarted_locked(to_destroy);
      s->reap_finished_locked(to_destroy);
      if (s->unstarted.empty() && s->running.empty() && s->finished.empty()) {
        what = next::done;
      } else if (!s->running.empty() && !stopping) {
        s->changed.reset();
        s->join_waiting = true;
        what = next::wait_running;
      } else {
        what = next::poll;
        finishing = !s->finished.empty();
      }
    }
    destroy_all(to_destroy);
    if (what == next::done) break;
    try {
      if (what == next::wait_running) {
        polls = 0;
        co_await s->changed.wait();
      } else if (stopping || finishing || ++polls <= kYieldPolls) {
        co_await yield();
      } else {
        co_await sleep_for(poll_delay(polls));
      }
    } catch (const cancelled_error& e) {
      // The owner was cancelled: cancel every child with its reason and
      // location, and keep waiting for them.
      if (!cancel) {
        cancel = std::current_exception();
        std::lock_guard lk(s->mu);
        s->cancel_all_locked(cancel_kind::parent, std::string(e.reason()), e.where());
      }
    }
  }
  co_return cancel;
}
}  // namespace

task<void> group_join(std::shared_ptr<group_state> s) {
  {
    std::lock_guard lk(s->mu);
    if (s->joining) throw usage_error("weft::task_group::join: already awaited");
    s->joining = true;
  }
  const std::exception_ptr cancel = co_await group_drain(s);
  std::vector<std::exception_ptr> errors;
  {
    std::lock_guard lk(s->mu);
    s->closed = true;
    errors.swap(s->errors);
  }
  if (!errors.empty()) {
    // The owner was cancelled and a child failed: the group's error is what
    // join() throws, and the owner's cancellation is not consumed by it -- it
    // stays pending and lands at the owner's next cancellation point
    // (asyncio 3.13, gh-116720).
    if (cancel) park_cancellation(cancel);
    throw task_group_error(std::move(errors));
  }
  if (cancel) std::rethrow_exception(cancel);
}

void group_scope_enter(const std::shared_ptr<group_state>& s) {
  worker_hot* w = current_worker();
  if (w == nullptr || w->current == nullptr)
    throw usage_error("weft::task_scope: must be awaited from a weft task");
  std::lock_guard lk(s->mu);
  s->owner = w->current;
  // Relaxed: a counter read by the task it counts.
  s->owner_base = w->current->cancel_count.load(std::memory_order_relaxed);
}

task<void> group_scope_exit(std::shared_ptr<group_state> s, std::exception_ptr body_error) {
  // Step cancel children: the body left by an exception (a cancellation
  // included): every child is cancelled, and awaited below.
  if (body_error) {
    std::lock_guard lk(s->mu);
    s->joining = true;
    if (is_cancellation(body_error)) {
      try {
        std::rethrow_exception(body_error);
      } catch (const cancelled_error& e) {
        s->cancel_all_locked(cancel_kind::parent, std::string(e.reason()), e.where());
      }
    } else {
      s->cancel_all_locked(cancel_kind::parent,
                           "task_scope: the body failed: " + describe(body_error), s->created);
    }
  }
  // Step drain: wait for every child, as join() does.
  const std::exception_ptr drained = co_await group_drain(s);
  std::vector<std::exception_ptr> errors;
  task_core* owner = nullptr;
  bool ours = false;
  unsigned base = 0;
  {
    std::lock_guard lk(s->mu);
    s->closed = true;
    errors.swap(s->errors);
    owner = std::exchange(s->owner, nullptr);  // step close: no child can cancel the owner now
    ours = s->owner_cancelled;
    base = s->owner_base;
  }
  // Step uncancel: withdraw the group's own request (asyncio's uncancel());
  // what remains above the count at entry came from outside.
  if (ours) (void)uncancel_core(owner);
  // Relaxed: a counter read by the task it counts.
  const bool outside = owner->cancel_count.load(std::memory_order_relaxed) > base;
  std::exception_ptr cancellation = drained;
  if (body_error) {
    if (is_cancellation(body_error)) {
      cancellation = body_error;
    } else {
      errors.push_back(body_error);  // the body's own failure joins the children's
    }
  }
  // Step report.
  if (!errors.empty()) {
    // An outside cancellation is not consumed by the group's error: it lands
    // at the owner's next cancellation point (asyncio re-cancels the parent).
    if (cancellation && outside) park_cancellation(cancellation);
    throw task_group_error(std::move(errors));
  }
  if (cancellation) std::rethrow_exception(cancellation);
}

void group_destroy(std::shared_ptr<group_state> s) noexcept {
  std::vector<task_core*> to_destroy;
  std::vector<std::exception_ptr> unread;
  runtime_impl* rt = nullptr;
  {
    std::unique_lock lk(s->mu);
    rt = s->rt;
    s->reap_unstarted_locked(to_destroy);
    if (!s->closed) unread.swap(s->errors);
    const bool live = !s->unstarted.empty() || !s->running.empty();
    if (live) {
      s->orphaned = true;
      if (!s->closed) {
        try {
          s->cancel_all_locked(cancel_kind::parent, "task_group destroyed", s->created);
        } catch (...) {
          // Out of memory for a cancel request: those children run on; they
          // still hold the state, nothing dangles.
        }
      }
      s->release_unstarted_locked(to_destroy);
    }
    s->closed = true;
    worker_hot* w = current_worker();
    const bool on_own_worker = w != nullptr && w->rt == rt;
    if (!on_own_worker) {
      // Not a worker of the children's runtime: wait (a latch) until every
      // started child has ended.  Children not yet started were cancelled
      // above and never run their body.
      s->drained.wait(lk, [&] { return s->running.empty(); });
    }
  }
  // Children that ended but have not yet published kDone are a few
  // instructions from it (no suspension point is left in them, and they need
  // nothing from us): wait for that, then drop our references.
  for (;;) {
    {
      std::lock_guard lk(s->mu);
      s->reap_finished_locked(to_destroy);
      if (s->finished.empty()) break;
    }
    std::this_thread::yield();
  }
  destroy_all(to_destroy);
  if (!unread.empty()) report_unread(rt, std::move(unread));
}

void throw_unstarted_child(const char* construct) {
  worker_hot* w = current_worker();
  // Relaxed: a hint; the shutdown's location is read through shutdown_cancellation,
  // which loads `stopping` with acquire first.
  if (w != nullptr && w->stopping.load(std::memory_order_relaxed))
    throw shutdown_cancellation(w->rt);
  throw cancelled_error(std::string(construct) + ": a task was cancelled before it started",
                        cancel_kind::parent);
}

void cancel_losers(task_group& g, std::size_t winner) {
  g.cancel_as(cancel_kind::group, "when_any: task " + std::to_string(winner) + " finished first");
}

task<void> run_children(const char* construct, function_ref<void(task_group&)> spawn_all,
                        const race_winner* race) {
  std::exception_ptr failure;
  {
    task_group g;
    std::exception_ptr spawn_error;
    try {
      spawn_all(g);
    } catch (...) {
      spawn_error = std::current_exception();
      g.cancel(std::string(construct) + ": spawn failed");
    }
    try {
      co_await g.join();
    } catch (const task_group_error& e) {
      failure = e.exceptions().front();  // fail fast: the first failure itself
    } catch (const cancelled_error&) {
      // Cancelled while the children were being awaited.  A when_any winner
      // that finished with a value or an error is not dropped: it is
      // reported, and the cancellation stays pending for the next
      // cancellation point.  Relaxed: join() (mutex + event) ordered the
      // winner's exchange and its writes before us.
      if (race == nullptr || !race->won.load(std::memory_order_relaxed) ||
          is_cancellation(race->error)) {
        throw;
      }
      park_cancellation(std::current_exception());
    }
    if (spawn_error) std::rethrow_exception(spawn_error);
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace detail

task_group::task_group(std::source_location where)
    : state_(std::make_shared<detail::group_state>()) {
  state_->created = where;
}

task_group::~task_group() { detail::group_destroy(std::move(state_)); }

void task_group::cancel_as(cancel_kind kind, const std::string& reason,
                           std::source_location where) {
  std::lock_guard lk(state_->mu);
  state_->cancel_all_locked(kind, reason, where);
}

std::size_t task_group::size() const {
  std::lock_guard lk(state_->mu);
  return state_->unstarted.size + state_->running.size;
}

task<void> when_all(std::vector<task<void>> ts) {
  return detail::when_all_vector<void>(std::move(ts));
}

}  // namespace weft
