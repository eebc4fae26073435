// SPDX-License-Identifier: MIT
// weft/detail/seam.hpp -- the seam: every function the compiled runtime
// (runtime/*.cpp) exports to the installed headers, in one list.
//
// Not part of the public API.  A header never reaches into the runtime's
// private structures (runtime_impl, worker); it calls one of these.  Each
// group names the file that defines it.
//
// What stays inline in the headers instead, and why: the operations every
// spawn, join and resume pays for, where a call would cost more than the work.
//   * the deque (detail/deque.hpp): a spawn from a worker is a push onto its
//     own deque, a join of a task nobody stole is a take from it;
//   * spawn_here (task.hpp): build the task's core in its frame, push, and
//     wake a sleeper only when one is parked;
//   * the join fast path (task.hpp, handle_awaiter/task_awaiter): take the
//     child back from the deque and run it inline, no atomic RMW when no
//     cancel was forwarded and nobody watches it;
//   * the resume check (maybe_cancel, task.hpp): two relaxed loads;
//   * the frame cache (alloc_frame_fast/free_frame_fast, detail/task_core.hpp):
//     a worker's free list per size class;
//   * throw_taken (detail/task_core.hpp): a cancellation point throws in the
//     task's own frame, where the catch usually is;
//   * the fork-join form's fork, call, join and frame stack (fork.hpp,
//     detail/fork_stack.hpp): a push, a bump and a take where nothing is stolen.
// Everything else -- every slow path, every lock, every list -- is behind a
// function below, or behind an out-of-line member of a detail type declared
// in the headers: task_core::lock_hook, wait_list::lock/push_back/erase,
// timer_node::interrupt, list_wait::interrupt (cancel_delivery.cpp, sync.cpp,
// sleep.cpp), wait_registration (timeout.cpp), completion_order (wait.cpp) and
// future_state_base (future.hpp, future.cpp).
//
// The types these functions take are defined in detail/task_core.hpp (task_core,
// promise_base, the wait nodes), except runtime_impl, which no header defines.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <source_location>
#include <string>
#include <vector>

#include "weft/errors.hpp"

namespace weft {
template <class T>
class task;
class task_group;
class cancellation_token;
enum class return_when;
class cancellation_registration;
}  // namespace weft

namespace weft::detail {

struct cancel_request;
struct fork_block;
struct fork_frame;
struct fork_stack;
struct fork_tree;
struct list_resource;
struct list_wait;
struct promise_base;
struct runtime_impl;
struct task_core;
struct timer_node;
struct wait_list;
struct task_extras;
struct done_callback;
struct worker_hot;
struct trace_ring;
struct group_state;
struct group_entry;
struct race_winner;
class task_ref;
template <class Sig>
class function_ref;

// ---- workers and spawning (runtime.cpp) ----

// The worker the calling thread is, or null.  Never inlined: a coroutine may
// resume on another thread, and compilers have cached thread-local addresses
// across co_await (see docs/architecture.md, "Finding the current worker").
[[gnu::noinline]] worker_hot* current_worker() noexcept;
// The runtime a spawn goes to: `rt`, or (null) the calling worker's.  Throws
// usage_error on a thread that is not a worker when `rt` is null.
runtime_impl* resolve_runtime(runtime_impl* rt);
// Make a freshly created task runnable on `rt`.  When the runtime is shutting
// down, completes it at once as cancelled ("shutdown") instead.
void submit_spawn(runtime_impl* rt, task_core* core) noexcept;
// Tracing on (worker_hot::trace): the spawn's flow start, recorded by the
// spawning thread before the task is published (runtime/trace.cpp).  `w`:
// the spawning worker, or null.
void trace_spawn(runtime_impl* rt, worker_hot* w, task_core* core) noexcept;
// Wake a parked worker of `rt` (a spawn saw sleepers).
void wake_one(runtime_impl* rt) noexcept;
// Re-queue a suspended chain (yield, trampoline, wake-ups).
void schedule_yield(task_core* core) noexcept;
void schedule_wake(task_core* core) noexcept;
// Misuse checks: throw usage_error when called on a worker of `rt` (any
// runtime when null).  Compares the pointer only: `rt` may be gone.
void require_not_worker(const runtime_impl* rt, const char* what);

// ---- frame memory (alloc.cpp) ----

// Slow paths: a worker whose cache has no block of the class (refill from
// the system allocator), a full cache, frames too big to cache, threads that
// are not workers, and sanitizer builds (system allocator, so that ASan sees
// every frame).  The fast paths are inline in detail/task_core.hpp.
void* alloc_frame(std::size_t size);
void free_frame(void* p, std::size_t size) noexcept;

// ---- completion (completion.cpp) and destruction (destroy.cpp) ----

// After the task wrote its outcome: DONE, wake the joiner, release the running
// reference.  Returns the coroutine to transfer to (or noop).
std::coroutine_handle<> complete_task(task_core* core) noexcept;
// Finish a task that never started because it was cancelled (or the runtime
// stops): outcome cancelled, joiner woken, frame released as needed.
void complete_unstarted(task_core* core, cancel_request* req) noexcept;
// About to start `core` and maybe_cancel() said a request may be pending:
// take it and complete the task unstarted (true), or find none (false: run it).
bool cancel_before_start(task_core* core) noexcept;
// The inline-join path when a forwarded cancel or a watcher may be involved:
// kDone and the running reference with an RMW, then fire watchers.
void finish_inline_atomic(task_core* core) noexcept;
// The list of tasks watching `core` (shield), created on first use.
task_extras* watch_list(task_core* core);
// What a list wait on a task's completion waits for (shield): `obj` is the
// task_core; ready once it finished; nothing to take.
bool watch_ready(void* obj) noexcept;
// Runs `cb` once when `core` finishes: on the completing thread, or here when
// it finished already.  Takes ownership of `cb`.
void add_done_callback(task_core* core, done_callback* cb) noexcept;
// Runs and deletes a list of callbacks (linked through next).
void run_done_callbacks(done_callback* list) noexcept;
// A named spawn: the task's extras with its name, before it is published.
void attach_name(task_core* core, std::string name);
// The task's name ("" when it has none).  The caller keeps the core alive.
std::string task_name(const task_core* core);
// A task_handle's reference.  take_handle_ref makes the first one: it also
// sets kWatched (making the extras if needed), so that an inline join of the
// task, which otherwise ends it with a plain store, uses an RMW that cannot
// lose a concurrent copy's add_ref.  The caller keeps the core alive.
void take_handle_ref(task_core* core);
void add_ref(task_core* core) noexcept;
// What a done callback threw: to the unhandled-exception report, naming the task.
void report_callback_error(task_core* core, const std::exception_ptr& e) noexcept;
// result() / exception() of a handle: usage_error unless the task finished
// and its outcome was not taken; marks the outcome retrieved.
void check_settled(task_core* core);
// Drop one reference; destroys the frame (and reports an unobserved
// exception) when it was the last.
void release_ref(task_core* core) noexcept;
// The last reference is gone: report an unobserved exception, destroy the
// frame.  destroy.cpp.
void destroy_task(task_core* core) noexcept;

// ---- runtime::stats (stats.cpp) ----

// A spawned task ends by `e` (outcome cancelled) or by another exception
// (failed), on the calling thread: counted by kind, and the cancellation
// latency samples its error carries are recorded.
void meter_cancelled(task_core* core, const cancelled_error& e) noexcept;
void meter_failed(task_core* core) noexcept;

// ---- cancel delivery (cancel_delivery.cpp) ----

bool request_cancel(task_core* core, std::string reason, cancel_kind kind,
                    std::source_location where);
// request_cancel with no reason: the request is interned (nothing allocated,
// no string passed along).  join_handle::cancel() comes here when the reason
// is empty: about 25 fewer instructions per call than passing the empty
// string along (callgrind, clang 19).
bool request_cancel_plain(task_core* core, cancel_kind kind, std::source_location where);
// Take the request pending on `core`, or on one of its inline joiners
// (forwarding it down, as asyncio does); null when there is none.  Also
// produces the one "shutdown" request of a stopping runtime.
cancel_request* take_pending(task_core* core) noexcept;
// Like take_pending but only looks, consumes nothing.
bool cancel_visible(const task_core* core) noexcept;
// The cancelled_error for a taken request (frees the request).  Cancellation
// points throw it with throw_taken, inline: the unwinder then starts in the
// task's own frame, where the catch usually is.  Each extra frame between the
// throw and the catch cost 0.15-0.65 us with cold caches (a probe, clang 19),
// up to half of what delivering a cancel to a sleeping task takes.
cancelled_error cancelled_error_of(cancel_request* req);
// join_handle::uncancel(): cancelling() - 1; at zero an undelivered request
// is withdrawn too.
unsigned uncancel_core(task_core* core) noexcept;
// Blocking waits.  register_wait installs `hook` (a wait_node*, or a
// task_core*|1 forward) on `core` and forward hooks on its inline joiners, all
// under their hook locks; it returns a taken cancellation request instead (and
// installs nothing) when one is pending anywhere on the chain.
cancel_request* register_wait(task_core* core, std::uintptr_t hook) noexcept;
void unregister_wait(task_core* core) noexcept;
// Give a request that register_wait returned back to the task, whose wait is
// refused: its await_resume delivers it.  The one "shutdown" request is
// dropped and made again by take_pending (shutdown_seen reset); any other goes
// back on the task's own slot, under the hook lock, as every store of a
// request into `pending` does.
void park_request(task_core* core, cancel_request* req) noexcept;
// Put a cancellation that was delivered to the running task back on it,
// pending, uncounted: its next cancellation point delivers it again.  For
// constructs that caught a cancellation and must report something else first
// (task_group::join's group error, wait_for's answer).  `err` holds a
// cancelled_error; anything else, or no running task, is ignored.
void park_cancellation(const std::exception_ptr& err) noexcept;
// `err` holds a cancelled_error.
bool is_cancellation(const std::exception_ptr& err) noexcept;
// A join of `target` by `waiter` ended.  A request that was forwarded down to
// `target` (or further) and that nobody took goes back to `waiter`, pending,
// uncounted (it was counted when made): the join's resume delivers it.
void reclaim_forwarded(task_core* waiter, task_core* target) noexcept;
// The task finished with a value or an exception while a cancel request was
// still undelivered to it (made on it, or forwarded to it and sent back).
bool completed_despite_cancel(task_core* core) noexcept;

// ---- joins (join.cpp) ----

// Slow path of co_await handle: the target is running elsewhere (or was
// stolen).  Returns the coroutine to continue with: noop to suspend, `self`
// when the target finished meanwhile.
std::coroutine_handle<> join_slow(task_core* core, task_core* target,
                                  std::coroutine_handle<> self) noexcept;
// Blocking join from a thread that is not a worker.
void join_blocking(task_core* core);
// The outcome of a spawned task, for the awaiter/joiner: rethrows exceptions
// and cancellation.  Marks it observed.
[[noreturn]] void rethrow_outcome(promise_base& p);
// The cancelled_error a task that finished by cancellation ended with.
cancelled_error cancellation_of(const promise_base& p);
// Misuse of a handle or a task (usage_error, with the rule it broke).
[[noreturn]] void throw_invalid_handle();
[[noreturn]] void throw_self_join();
[[noreturn]] void throw_already_taken();
[[noreturn]] void throw_empty_task();
// co_await of a handle whose outcome a thread's join() claimed.
[[noreturn]] void throw_joined_by_thread();

// ---- sleeps (sleep.cpp) and the clock (timer.cpp) ----

// The runtime's clock: steady_clock, in nanoseconds.
std::uint64_t now_ns() noexcept;
// co_await sleep: returns false when the task must not suspend (a request was
// pending, or the runtime refused the timer: claim kRefused).
bool sleep_suspend(task_core* core, timer_node* node, std::coroutine_handle<> self) noexcept;
// After a sleep: the request to deliver (the awaiter throws it: throw_taken),
// or null; throws the shutdown cancellation when the runtime refused the
// timer and no request is pending.
cancel_request* sleep_resume(task_core* core, timer_node* node);

// ---- list waits: event, semaphore, watchers (sync.cpp) ----

// Returns true when the task must suspend.
bool list_wait_suspend(task_core* core, list_wait* node, std::coroutine_handle<> self,
                       wait_list* list, const list_resource& what) noexcept;
// After a list wait: true when the list's owner ended it (the resource is
// ours); else false, with `deliver` set to the request to throw (the awaiter
// throws it: throw_taken), or null when a cancel that woke it was withdrawn.
// Throws the shutdown cancellation when the runtime refused the wait and
// nothing is pending.
bool list_wait_resume(task_core* core, list_wait* node, cancel_request*& deliver);
// End the wait of every node in `list` that can still be claimed (under the
// list's lock, which the caller holds); `grant(obj)` is called for each node
// it wins, and returns false to stop (no more of the resource).
void list_wake(wait_list* list, bool (*grant)(void*), void* obj) noexcept;

// ---- deadlines: wait_for, wait_until (timeout.cpp) ----

// now_ns() + d, saturated; <= now for d <= 0.
std::uint64_t deadline_after(std::chrono::nanoseconds d) noexcept;
std::uint64_t deadline_at(std::chrono::steady_clock::time_point tp) noexcept;

// Sleeps until `deadline`, then cancels `target` with kind timeout.  Holds its
// reference to `target` (taken by the waiter) until its frame is destroyed, so
// it may outlive the waiter: the waiter cancels it and lets it go instead of
// waiting for it (its own cancellation must not be swallowed by that wait).
task<void> deadline_canceller(task_ref target, std::uint64_t deadline, std::source_location where);

// After the join in a wait threw `err`: timeout_error when it is this wait's
// own timeout -- the deadline passed, the task ended by a timeout
// cancellation, and the waiting task was not cancelled itself (`own`: no
// request was pending when the wait began, none was made for the waiter
// during it, and no wait on the waiter expired during it).  Otherwise `err`
// goes on unchanged: a timeout of an enclosing wait is that wait's to report
// (asyncio's nested timeouts).
[[noreturn]] void rethrow_timeout_or(const std::exception_ptr& err, std::uint64_t deadline,
                                     bool own);

// The running task (or a task running it inline) is waited on by a wait whose
// deadline has passed.  (A wait compares this at its start and at its end.)
bool enclosing_wait_expired() noexcept;

// ---- waiting on many tasks: wait, as_completed, gather_outcomes (wait.cpp) ----

// `core` (null: an empty handle) when it can be waited on; else usage_error
// naming `construct`: an empty handle, or one whose outcome was taken.
task_core* checked_core(task_core* core, const char* construct);
// Waits until `when` holds for the tasks of `cores`, or until `deadline`
// (now_ns() clock; kEndOfTime: none).  Gives, for each core, whether it had
// finished (1) or not (0).  Takes and cancels nothing.  usage_error when
// `cores` is empty.
task<std::vector<char>> wait_cores(std::vector<task_core*> cores, return_when when,
                                   std::uint64_t deadline);
// gather_outcomes' wait: for every task; when the gathering task is
// cancelled, cancels those still running (kind parent, with its reason and
// location), waits for all of them (no further request interrupts that
// wait), and rethrows its cancellation.
task<void> gather_wait(std::vector<task_core*> cores);
// wait_for(task, d) whose deadline had passed before the task could start:
// timeout_error chained from the cancellation the task would have been
// delivered (kind timeout, reason "timeout", at `where`).
[[noreturn]] void throw_expired_unstarted(std::source_location where);

// ---- timeout scopes: timeout, timeout_at (timeout.cpp; docs/architecture.md,
// "Timeout scopes") ----

class scope_state;

// A scope's deadline on the now_ns() clock: `d` after now (saturated at the
// end of the clock), at or before now for d <= 0 (clamped at 0, so that
// when() reports the past as asyncio does), kNever for nanoseconds::max().
std::uint64_t scope_deadline_after(std::chrono::nanoseconds d) noexcept;

// Begin a scope in the running task: delivers a cancellation already pending
// on it (entering is a cancellation point), records its cancelling(), and
// arms the deadline (a request at once when it has passed).  usage_error
// outside a task.
std::shared_ptr<scope_state> scope_enter(std::uint64_t deadline, std::source_location where);
// The block has ended: disarm the deadline (waiting out a request that is
// being made at this moment) and, if the scope's deadline fired, withdraw its
// request (uncancel).  True when the scope owns the block's cancellation: its
// deadline fired and the task's cancelling() is back at its value at entry.
bool scope_leave(scope_state& s) noexcept;
// The scope's frame is destroyed without the block having ended (its task
// was destroyed while suspended in it): disarm only.
void scope_abandon(scope_state& s) noexcept;
// `err` ended a block whose scope owns its cancellation: timeout_error
// chained from a cancelled_error (except the runtime's "shutdown", which goes
// through), else `err` itself.
[[noreturn]] void rethrow_scope_error(const std::exception_ptr& err);

// ---- task groups and when_all / when_any (task_group.cpp) ----

// spawn(): a new entry for a child spawned at `where` (freed by the group).
group_entry* group_new_entry(std::source_location where);
void group_delete_entry(group_entry* e) noexcept;
// spawn(), under the group's lock: admits `e` (usage_error when the group is
// closed or the caller is on another runtime; `e` is freed then), calls
// `start` (which spawns the relay and gives its core), and adopts that core.
void group_spawn(group_state& s, group_entry* e, function_ref<task_core*()> start);
[[noreturn]] void throw_group_needs_worker();
// The relay's two calls.  on_start returns the cancellation the child must
// start with (the group cancelled it before it ran), or null.
std::exception_ptr group_on_start(group_state& s, group_entry* e);
void group_on_end(group_state& s, group_entry* e, const std::exception_ptr& err) noexcept;
task<void> group_join(std::shared_ptr<group_state> s);
void group_destroy(std::shared_ptr<group_state> s) noexcept;
// task_scope: the running task becomes the group's owner (a child failure
// cancels it); at the end every child is cancelled if the body failed,
// awaited, and the outcome composed (weft/task_group.hpp, task_scope).
void group_scope_enter(const std::shared_ptr<group_state>& s);
task<void> group_scope_exit(std::shared_ptr<group_state> s, std::exception_ptr body_error);

// The skeleton of when_all and when_any: a task_group, the children that
// `spawn_all` spawns into it (a spawn failure cancels those already spawned
// and is rethrown after they finished), and a join that fails fast: the first
// child failure itself is rethrown (not a task_group_error).  A cancellation
// of the awaiting task during the join is rethrown -- unless `race` (when_any;
// null for when_all) has a winner that finished with a value or an exception
// other than a cancellation: then the cancellation is parked for the next
// cancellation point and the skeleton returns, so the winner is reported.
// `construct` ("when_all", "when_any") names the caller in the spawn-failure
// cancellation.
task<void> run_children(const char* construct, function_ref<void(task_group&)> spawn_all,
                        const race_winner* race);
// when_any: cancel the children that lost to `winner`.
void cancel_losers(task_group& g, std::size_t winner);
// A when_all / when_any child that never ran (its relay was cancelled before
// it started, as every spawn is once the runtime shuts down) left its slot
// empty, and no failure or cancellation was recorded: throws that
// cancellation -- the runtime's "shutdown" when it is stopping, else a
// cancelled_error of kind parent naming `construct`.
[[noreturn]] void throw_unstarted_child(const char* construct);

// ---- fork-join frames (fork.cpp) ----

// Frame memory: a worker whose stack segment is full (a new segment), a
// thread that is not a worker or a frame too large for a segment (the system
// allocator, marked kHeap); and the owner's pop that crosses back into the
// segment below.
void* fork_alloc_slow(worker_hot* w, std::size_t size);
void fork_free_heap(fork_block* b) noexcept;
void fork_stack_step_down(fork_stack& s) noexcept;
// A forked child finished off the fast path: count it at its parent's join;
// the last one resumes the parent (or finishes it, when its body ended).
std::coroutine_handle<> fork_child_done_slow(fork_frame* parent, worker_hot* w) noexcept;
// The root frame finished: back to the task that awaited the tree.
std::coroutine_handle<> fork_finish_root(fork_frame* f) noexcept;
// yield() / a spent slice in a fork frame: to the back of the line.
void fork_requeue(fork_frame* f) noexcept;
// A cancellation point of a fork frame saw a possible cancellation: if the
// tree is cancelled (taking the task's request, or the shutdown, first),
// throw cancelled_error of kind `parent`.
void fork_deliver(fork_frame* f);
[[noreturn]] void fork_rethrow_child_error(fork_frame* f);
// The task's co_await of the tree resumes: throws the tree's exception, or
// the task's own request when the tree was cancelled by it.  A request the
// tree took but did not end by goes back to the task (its next cancellation
// point).
void fork_tree_end(fork_tree* t, std::exception_ptr& error);

// ---- cancellation sources (cancel_source.cpp) ----

// A registration that cancels `core` when `tok` is cancelled; `ref` keeps
// the frame alive while it may (bind(); spawn(task, token) needs none).
cancellation_registration make_core_registration(const cancellation_token& tok, task_core* core,
                                                 std::optional<task_ref> ref);

}  // namespace weft::detail
