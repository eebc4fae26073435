// SPDX-License-Identifier: MIT
// weft/task_group.hpp -- structured concurrency: task_group (asyncio.TaskGroup),
// when_all and when_any.
//
//   weft::task_group g;
//   auto a = g.spawn(fetch(x));          // join_handle<T>, like weft::spawn
//   (void)g.spawn(fetch(y));             // the group alone looks after it
//   co_await g.join();                   // waits for all; see "Failure" below
//
//   auto [x, y] = co_await weft::when_all(fetch(x), fetch(y));
//   auto first  = co_await weft::when_any(fetch(x), fetch(y)); // first.index, first.value
//
// ---- task_group semantics ----
//
// Children.  spawn(t) starts `t` on the current runtime (from a weft task, as
// weft::spawn) and returns its join_handle; the handle works as usual (await,
// cancel, done...).  Each child runs inside a relay coroutine that awaits `t`
// directly (one extra frame, no extra task), so the group learns each outcome
// when the child finishes, in O(1).
//
// join().  `co_await g.join()` waits until every child has finished, children
// spawned meanwhile (e.g. by other children) included.  Then:
//   * if any child failed (finished with an exception other than
//     cancelled_error), it throws task_group_error holding every such failure,
//     in the order they happened;
//   * else, if the task awaiting join() was cancelled meanwhile, it rethrows
//     that cancelled_error (same kind, reason and location);
//   * else it returns.  Children that finished cancelled are not failures.
// join() may be awaited once; afterwards the group is closed and spawn()
// throws usage_error.  Children may spawn siblings while join() waits.
//
// Failure.  The first child that fails cancels every other child, running or
// not yet started, with cancel_kind::group, reason "sibling failed: <what()>"
// and, as the location, the spawn() call that started the failing child.
// Children spawned after that start already cancelled (their body never
// runs).  The task that owns the group is not cancelled: it learns of the
// failure from join().
//
// Cancelling the owner.  join() is a cancellation point: when the task
// awaiting it is cancelled, every child is cancelled with cancel_kind::parent
// and the owner's reason and location, join() keeps waiting until all of them
// have finished (further requests meanwhile change nothing), and then throws
// as described above.  cancel(reason) / cancel_as(...) cancel all children
// (and later ones) without cancelling the owner: join() then returns normally
// unless a child failed.
//
// Lifetime ("no child outlives its group").  In the joined path every child has
// finished before join() returns: its last user code ran, and its handle
// reports done().  (A child cancelled through its handle before it ever ran
// tells nobody; join() notices it by polling while nothing else is left to
// wait for: yield(), then sleeps from 20 us growing to about 1 ms.)  A group destroyed while
// children are still live -- its owner never awaited join(), typically because an exception unwound
// past it
// -- cannot co_await in its destructor.  It then:
//   1. cancels every child with cancel_kind::parent, reason
//      "task_group destroyed", and the location where the group was
//      constructed; children not yet started never run their body;
//   2. on a thread that is not a worker of the group's runtime: blocks until
//      every started child has finished (a latch-like wait), so no child
//      outlives the group;
//      on a worker of that runtime: does not block on running children
//      (blocking a worker could deadlock it; it only spins through the few
//      instructions between a child's last user code and its completion);
//      the cancelled children finish on their own moments later.
//      They hold the group's reference-counted state, so nothing they touch
//      dangles.  This is the one case where a child outlives the group
//      object: write `co_await g.join()` on every path to avoid it.
//   3. never throws.  The owner sees only its own exception unwinding.
//      Child failures the group recorded but never reported (join() never
//      ran) reach the runtime's unhandled-exception hook as one
//      task_group_error, through a small detached task; failures after the
//      destruction reach the hook like those of any task whose handle was
//      dropped.
// During runtime shutdown weft refuses event waits and sleeps; join() then
// polls with yield() (which still reschedules) until every child has ended, so
// the guarantee holds during shutdown too; the owner's shutdown cancellation
// is forwarded to the children (cancel_kind::parent, reason "shutdown") and
// rethrown at the end.
//
// Exceptions reported once.  A child whose handle you discard
// (`(void)g.spawn(...)`) and that fails is reported by join()'s
// task_group_error only (the runtime's unhandled-exception hook does not see it
// too).  A handle you keep is yours: if you drop it without awaiting a failed
// child, the hook sees that failure as well, as for any handle.
//
// Thread safety: spawn(), cancel(), cancel_as(), size() may be called from
// any task of the group's runtime (e.g. children), concurrently.  join() once.
// The group itself is neither copyable nor movable.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "weft/detail/access.hpp"
#include "weft/detail/task_core.hpp"
#include "weft/errors.hpp"
#include "weft/sync.hpp"
#include "weft/task.hpp"

namespace weft {

// Thrown by task_group::join() when children failed (asyncio's
// ExceptionGroup).  Holds every child failure, in the order they happened.
class task_group_error : public std::exception {
 public:
  explicit task_group_error(std::vector<std::exception_ptr> errors);
  // Every child failure (never empty, never a cancelled_error).
  const std::vector<std::exception_ptr>& exceptions() const noexcept { return errors_; }
  std::size_t size() const noexcept { return errors_.size(); }
  // "task_group: <n> child task(s) failed; first: <what() of the first>".
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  std::vector<std::exception_ptr> errors_;
  std::string what_;
};

class task_group;

namespace detail {

// The state shared by a group, its join() and its children's relays, and one
// child's entry in it: defined in runtime/task_group.cpp, where everything
// that takes its lock, walks its lists or sets its event lives.  The header
// keeps only what depends on the user's types: making a child's relay frame.
struct group_state;
struct group_entry;

// A borrowed callable (it must outlive the call), so that code which depends
// on the user's types can be called from the runtime side.
template <class Sig>
class function_ref;
template <class R, class... A>
class function_ref<R(A...)> {
 public:
  // Implicit: it is a parameter type, built from the caller's lambda.
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, function_ref> &&
             std::is_invocable_r_v<R, F&, A...>)
  function_ref(F&& f) noexcept
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

// The winner of a when_any: the first child to finish (value, exception or
// cancellation).  The value's type is the caller's (race_state<V>).
struct race_winner {
  std::atomic<bool> won{false};
  std::size_t index = 0;     // written by the winner, read after join()
  std::exception_ptr error;  // likewise
};

template <class T>
task<T> group_relay(std::shared_ptr<group_state> s, group_entry* e, task<T> t) {
  outcome_slot<T> outcome;
  outcome.error = group_on_start(*s, e);
  if (!outcome.error) {
    task<T> body = std::move(t);  // freed as soon as it finished
    co_await capture(std::move(body), outcome);
  }
  group_on_end(*s, e, outcome.error);  // last touch of the group for this child
  co_return outcome.take();
}

}  // namespace detail

class task_group {
 public:
  // `where` names the group in the "task_group destroyed" cancellation.
  explicit task_group(std::source_location where = std::source_location::current());
  // See "Lifetime" in the file comment.
  ~task_group();
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;

  // Spawn `t` as a child (see the file comment).  From a weft task only
  // (usage_error elsewhere, or on another runtime than earlier children), and
  // not after join() finished (usage_error).  During runtime shutdown the
  // handle comes back already cancelled, like weft::spawn.
  template <class T>
  join_handle<T> spawn(task<T> t, std::source_location where = std::source_location::current()) {
    return spawn_named(std::move(t), nullptr, where);
  }
  // With options (spawn_options: a name), as weft::spawn.
  template <class T>
  join_handle<T> spawn(task<T> t, spawn_options opts,
                       std::source_location where = std::source_location::current()) {
    return spawn_named(std::move(t), &opts, where);
  }

  // Wait for every child (see the file comment).  Await it once.
  task<void> join() { return detail::group_join(state_); }

  // Cancel every child, and every child spawned later, with
  // cancel_kind::explicit_request (cancel) or `kind` (cancel_as).  The owner
  // is not cancelled; join() returns normally unless a child failed.  Only the
  // first group-wide cancellation is kept for children spawned later.
  void cancel(const std::string& reason = {},
              std::source_location where = std::source_location::current()) {
    cancel_as(cancel_kind::explicit_request, reason, where);
  }
  void cancel_as(cancel_kind kind, const std::string& reason,
                 std::source_location where = std::source_location::current());

  // Children not yet finished (a snapshot).
  std::size_t size() const;

 private:
  friend struct detail::access;
  template <class T>
  join_handle<T> spawn_named(task<T> t, spawn_options* named, std::source_location where) {
    if (!detail::spawnable(t)) detail::throw_empty_task();
    if (detail::current_worker() == nullptr) detail::throw_group_needs_worker();
    detail::group_entry* e = detail::group_new_entry(where);
    task<T> relay;
    try {
      relay = detail::group_relay<T>(state_, e, std::move(t));
    } catch (...) {
      detail::group_delete_entry(e);
      throw;
    }
    std::unique_ptr<detail::task_extras> extras(detail::named_extras(named));
    join_handle<T> h;
    // Under the group's lock (the relay may run on a thief at once, but its
    // first step needs that lock).  Cannot throw: we are on a worker.  When
    // the group refuses the child, `relay` (and the child) are destroyed
    // with this frame, outside the lock.
    detail::group_spawn(*state_, e, [&]() noexcept -> detail::task_core* {
      h = detail::spawn_here(std::move(relay), where, extras.release());
      return &detail::access::core(h);
    });
    return h;
  }
  std::shared_ptr<detail::group_state> state_;
};

// ---- task_scope: the structured form (asyncio.TaskGroup, Trio's nursery) ----
//
//   int n = co_await weft::task_scope([&](weft::task_group& g) -> weft::task<int> {
//     (void)g.spawn(fetch(x));
//     (void)g.spawn(fetch(y));
//     co_return 2;  // the scope then waits for both
//   });
//
// The body runs in the awaiting task (a call, not a new task), with a group
// whose children are spawned as with task_group::spawn.  The body is part of
// the group:
//   * a child's failure cancels the siblings (kind group) and the body too, at
//     its next cancellation point (kind group, reason "task_scope: child
//     failed: <what()>", the failing child's spawn site as location);
//   * when the body ends -- by co_return, by an exception, or by a
//     cancellation -- the scope waits for every child; if the body left by an
//     exception it first cancels them (kind parent).  No child outlives the
//     scope on any path;
//   * then: the child failures, and the body's own exception after them (not
//     a cancellation), are thrown as one task_group_error (a nested scope's
//     task_group_error is one of them: errors nest as asyncio's
//     ExceptionGroups do); else a cancellation from outside the scope is
//     rethrown; else the body's value is returned.
//   * a cancellation the scope made (the failure's) is withdrawn at the end
//     (uncancel(): this_task::cancelling() is back to its value at entry); one
//     from outside always gets out: it is rethrown, or -- when a
//     task_group_error is thrown instead -- left pending, to land at the
//     task's next cancellation point (asyncio 3.13).
// Awaiting the scope's group's join() in the body is allowed (it waits for
// the children spawned so far); the scope still waits at the end.  Must be
// awaited from a weft task (usage_error).  Prefer task_scope; task_group
// alone is for a group whose owner must keep running when a child fails, or
// whose children outlive one block of code.
template <class F, class R = std::invoke_result_t<F&, task_group&>>
  requires std::is_invocable_v<F&, task_group&>
R task_scope(F body, std::source_location where = std::source_location::current()) {
  using T = typename R::value_type;
  task_group g(where);
  detail::group_scope_enter(detail::access::state(g));
  detail::outcome_slot<T> out;
  co_await detail::capture(body(g), out);
  co_await detail::group_scope_exit(detail::access::state(g), out.error);
  co_return out.take();
}

// ---- when_all / when_any ----

// The value a task<T> contributes to a heterogeneous result: T, or
// std::monostate for task<void>.
template <class T>
using when_value_t = typename detail::outcome_slot<T>::value_type;

// when_any's result: which task finished first (its position in the
// arguments / vector) and its value.
template <class T>
struct when_any_result {
  std::size_t index;
  T value;
};

namespace detail {

// The first child of a when_all that ended by cancellation (asyncio.gather
// treats a cancelled child as if it raised CancelledError).  A group counts
// such a child as no failure, so without this when_all would return with that
// child's slot empty.
struct first_cancellation {
  std::atomic<bool> taken{false};
  std::exception_ptr error;  // written by the first recorder, read after join()
  void record(std::exception_ptr e) noexcept {
    // acq_rel: one recorder; join() (mutex + event) publishes `error` to the
    // reader.
    if (!taken.exchange(true, std::memory_order_acq_rel)) error = std::move(e);
  }
  // After the join: rethrows the recorded cancellation (a slot is empty);
  // else, when a child never ran, its cancellation (throw_unstarted_child).
  void rethrow_unless(bool every_child_ran) const {
    if (error) std::rethrow_exception(error);
    if (!every_child_ran) throw_unstarted_child("when_all");
  }
};

// A when_all child: `t`'s outcome goes to `slot`; a failure or cancellation
// also ends the child with it (the group sees it).
template <class T>
task<void> store_result(outcome_slot<T>* slot, first_cancellation* cancelled, task<T> t) {
  co_await capture(std::move(t), *slot);
  if (slot->error) {
    if (is_cancellation(slot->error)) cancelled->record(slot->error);
    std::rethrow_exception(slot->error);
  }
}

// First to finish (value, exception or cancellation) wins `won`.
template <class V>
struct race_state : race_winner {
  std::optional<V> value;  // written by the winner, read after join()
};

// A when_any child.  Hetero: V is a std::variant and the value goes in
// alternative I.
template <bool Hetero, std::size_t I, class T, class V>
task<void> race_one(race_state<V>* st, task_group* g, std::size_t index, task<T> t) {
  outcome_slot<T> outcome;
  co_await capture(std::move(t), outcome);
  // acq_rel: the one winner; join() (mutex + event) publishes its writes.
  if (st->won.exchange(true, std::memory_order_acq_rel)) co_return;  // a loser: outcome dropped
  st->index = index;
  if (outcome.error) {
    st->error = outcome.error;
  } else if constexpr (Hetero) {
    st->value.emplace(std::in_place_index<I>, std::move(*outcome.value));
  } else {
    st->value.emplace(std::move(*outcome.value));
  }
  cancel_losers(*g, index);
}

// when_any's answer after the join: the winner's exception, or its index and
// value.
template <class V>
when_any_result<V> take_winner(race_state<V>& st) {
  if (st.error) std::rethrow_exception(st.error);
  if (!st.value) throw_unstarted_child("when_any");  // no child ever ran
  return when_any_result<V>{st.index, std::move(*st.value)};
}

// g.spawn(make(I, t)) for the I-th task of a pack (I a std::integral_constant)
// and for the i-th task of a vector, in order.
template <class Make, class... Ts>
void spawn_each(task_group& g, Make make, task<Ts>&... ts) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((void)g.spawn(make(std::integral_constant<std::size_t, I>{}, std::move(ts))), ...);
  }(std::index_sequence_for<Ts...>{});
}

template <class Make, class T>
void spawn_each(task_group& g, Make make, std::vector<task<T>>& ts) {
  for (std::size_t i = 0; i < ts.size(); ++i) (void)g.spawn(make(i, std::move(ts[i])));
}

// when_all over a vector: the values in the vector's order, or nothing for
// task<void>.
template <class T>
task<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>> when_all_vector(
    std::vector<task<T>> ts) {
  std::vector<outcome_slot<T>> slots(ts.size());
  first_cancellation cancelled;
  co_await run_children(
      "when_all",
      [&](task_group& g) {
        spawn_each(
            g,
            [&](std::size_t i, task<T> t) {
              return store_result<T>(&slots[i], &cancelled, std::move(t));
            },
            ts);
      },
      nullptr);
  cancelled.rethrow_unless(
      std::all_of(slots.begin(), slots.end(), [](const auto& s) { return s.value.has_value(); }));
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> out;
    out.reserve(slots.size());
    for (auto& s : slots) out.push_back(std::move(*s.value));
    co_return out;
  }
}

}  // namespace detail

// Run every task concurrently (children of an internal task_group) and give
// all their values, in argument order; void tasks give std::monostate.  Fails
// fast: the first failure cancels the others (cancel_kind::group), waits for
// them, and rethrows that failure itself (not a task_group_error).  A task
// that ends by a cancellation of its own (its body let a cancelled_error out,
// e.g. it awaited a handle someone cancelled) is reported like asyncio.gather
// does: once all have finished, that cancelled_error is rethrown.  Cancelling
// the awaiting task cancels them all (cancel_kind::parent), waits, and
// rethrows the cancellation.  Must be awaited from a weft task.
template <class... Ts>
task<std::tuple<when_value_t<Ts>...>> when_all(task<Ts>... ts) {
  std::tuple<detail::outcome_slot<Ts>...> slots;
  detail::first_cancellation cancelled;
  co_await detail::run_children(
      "when_all",
      [&](task_group& g) {
        detail::spawn_each(
            g,
            [&](auto i, auto t) {
              return detail::store_result(&std::get<i>(slots), &cancelled, std::move(t));
            },
            ts...);
      },
      nullptr);
  cancelled.rethrow_unless(
      std::apply([](const auto&... s) { return (s.value.has_value() && ...); }, slots));
  co_return std::apply(
      [](auto&... s) { return std::tuple<when_value_t<Ts>...>(std::move(*s.value)...); }, slots);
}

// when_all over a vector: the values in the vector's order.
template <class T>
  requires(!std::is_void_v<T>)
task<std::vector<T>> when_all(std::vector<task<T>> ts) {
  return detail::when_all_vector<T>(std::move(ts));
}

// when_all over a vector of task<void>: completes (or fails fast) like the
// others; there are no values to give.
task<void> when_all(std::vector<task<void>> ts);

// Run every task concurrently; the first to finish wins: its index and value
// are returned -- or, if it finished with an exception (cancelled_error
// included), that exception is rethrown -- after every other task was
// cancelled (cancel_kind::group, reason "when_any: task <i> finished first")
// and has finished.  The outcomes of the others are dropped.  The value is a
// std::variant whose active alternative is `index` (void tasks give
// std::monostate).  Cancelling the awaiting task cancels all of them
// (cancel_kind::parent), waits, and rethrows the cancellation -- unless a
// winner had already finished with a value or an exception other than a
// cancellation: then that outcome is given as above, and the cancellation
// stays pending until the awaiting task's next cancellation point (nothing is
// dropped).  At least one task (usage_error otherwise).
template <class... Ts>
  requires(sizeof...(Ts) > 0)
task<when_any_result<std::variant<when_value_t<Ts>...>>> when_any(task<Ts>... ts) {
  using V = std::variant<when_value_t<Ts>...>;
  detail::race_state<V> st;
  co_await detail::run_children(
      "when_any",
      [&](task_group& g) {
        detail::spawn_each(
            g,
            [&](auto i, auto t) {
              using T = typename decltype(t)::value_type;
              return detail::race_one<true, i, T, V>(&st, &g, i, std::move(t));
            },
            ts...);
      },
      &st);
  co_return detail::take_winner(st);
}

// when_any over a vector: the winner's position in the vector and its value
// (std::monostate for task<void>).
template <class T>
task<when_any_result<when_value_t<T>>> when_any(std::vector<task<T>> ts) {
  using V = when_value_t<T>;
  if (ts.empty()) throw usage_error("weft::when_any: no tasks");
  detail::race_state<V> st;
  co_await detail::run_children(
      "when_any",
      [&](task_group& g) {
        detail::spawn_each(
            g,
            [&](std::size_t i, task<T> t) {
              return detail::race_one<false, 0, T, V>(&st, &g, i, std::move(t));
            },
            ts);
      },
      &st);
  co_return detail::take_winner(st);
}

}  // namespace weft
