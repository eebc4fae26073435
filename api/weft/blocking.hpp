// SPDX-License-Identifier: MIT
// weft/blocking.hpp -- run a blocking call off the workers (asyncio.to_thread).
//
//   std::string text = co_await weft::blocking([&] { return read_whole_file(path); });
//   co_await weft::blocking([](std::stop_token st) { poll_device_until(st); });
//
// `fn` runs on a thread of the runtime's blocking pool, never on a worker: the
// worker runs other tasks meanwhile.  The pool is bounded
// (runtime_options::blocking_threads); its threads start when first needed
// and leave after an idle keep-alive; calls beyond the bound wait their turn
// in FIFO order.  fn's value or exception comes back through the co_await
// (void and move-only results too).  fn is copied or moved into the call;
// it must not return a reference.
//
// If fn can be called with a std::stop_token, it is: the token is requested
// when the awaiting task is cancelled (any cancel request it takes while it
// waits, the runtime's "shutdown" included) and when the runtime shuts down.
//
// With g++ 12, name a lambda that captures owning state (a shared_ptr, a
// std::string) and move it in: g++ 12 destroys a capturing lambda temporary in
// a co_await's full-expression twice (docs/pitfalls.md).
//
// Cancellation of the awaiting task (co_await blocking(...) is a
// cancellation point):
//   * a request already pending when the co_await begins is delivered there,
//     and fn never runs;
//   * a call still queued behind the bound when the request arrives is taken
//     out of the queue and never runs; the request is delivered at once;
//   * on_cancel::wait (the default): fn's stop token is requested, the task
//     keeps waiting until fn returns, and then gets the cancelled_error; fn's
//     value (or exception) is destroyed unseen.  So whatever fn references
//     outlives it, and nothing runs after the task moved on.  Further requests
//     during that wait are counted (cancelling()) but add no second delivery;
//   * on_cancel::abandon: fn's stop token is requested and the cancelled_error
//     is delivered at once; fn finishes on its own, its value or exception is
//     discarded on the pool thread.  fn must then own everything it uses
//     (capture by value), since the awaiting frame may be gone before it
//     returns.
// A cancel that arrives after fn returned and woke the task (the race with
// completion) stays pending: the task gets fn's value and the request is
// delivered at its next cancellation point (or, when there is none, its
// handle reports completed_despite_cancel()).
//
// Shutdown: a waiting task takes its "shutdown" (its fn's stop token is
// requested) and, in wait mode, waits on for fn; shutdown() waits for it and
// reports it as blocked.  After the tasks, shutdown() requests the stop token
// of every call still running (abandoned ones) and joins the pool's threads:
// a blocking call that ignores its stop token holds the shutdown until it
// returns.
//
// Where: inside a task of a threaded runtime.  Awaited on a simulation
// runtime it throws usage_error: a pool thread cannot wake a simulated task
// (a simulation belongs to one thread and must replay exactly).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "weft/cancellation.hpp"
#include "weft/detail/task_core.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

// What a cancellation of the awaiting task does to a blocking call.
enum class on_cancel : std::uint8_t {
  wait,     // request fn's stop token, wait for fn to return, then deliver
  abandon,  // request fn's stop token, deliver at once, let fn finish alone
};

namespace detail {

// One blocking call, shared by the awaiting task and the pool (two
// references).  The pool thread runs run(), then ends the task's wait through
// `list` (the same list wait an event uses: cancel() and shutdown interrupt
// it like any other).
struct blocking_job {
  std::atomic<std::uint32_t> refs{2};
  wait_list list;
  bool done = false;  // guarded by list's lock
  std::stop_source stop;
  // The pool's queue, or its list of running calls (a call is in one at a
  // time; `queued` says which); guarded by the pool's mutex.
  blocking_job* next = nullptr;
  blocking_job* prev = nullptr;
  bool queued = false;
  virtual void run() noexcept = 0;
  virtual ~blocking_job() = default;
  blocking_job() = default;
  blocking_job(const blocking_job&) = delete;
  blocking_job& operator=(const blocking_job&) = delete;
};

// runtime/blocking.cpp.  Queue `job` on the pool of the runtime running
// `core` (usage_error on a simulation runtime; the job is not queued then).
void blocking_submit(task_core* core, blocking_job* job);
// Take a job that has not started out of the queue: true when it was still
// queued (it will never run; the pool's reference is dropped).
bool blocking_withdraw(task_core* core, blocking_job* job) noexcept;
// Drop one reference; the last one destroys the job.
void blocking_release(blocking_job* job) noexcept;
// list_resource::ready for a job's list: fn has returned.
bool blocking_done(void* job) noexcept;

template <class F, class R>
struct blocking_call final : blocking_job {
  explicit blocking_call(F&& f) : fn(std::move(f)) {}
  F fn;
  std::optional<std::conditional_t<std::is_void_v<R>, char, R>> value;
  std::exception_ptr error;
  void run() noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        invoke();
        value.emplace();
      } else {
        value.emplace(invoke());
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
  decltype(auto) invoke() {
    if constexpr (std::is_invocable_v<F&, std::stop_token>) {
      return std::invoke(fn, stop.get_token());
    } else {
      return std::invoke(fn);
    }
  }
  R take() {
    if (error) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<R>) return std::move(*value);
  }
};

template <class F>
using blocking_result_t =
    std::conditional_t<std::is_invocable_v<F&, std::stop_token>,
                       std::invoke_result<F&, std::stop_token>, std::invoke_result<F&>>::type;

struct blocking_ref {
  blocking_job* job;
  ~blocking_ref() { blocking_release(job); }
};

template <class F, class R>
task<R> blocking_body(F fn, on_cancel mode) {
  task_core* self = co_await current_core_tag{};
  deliver_if_pending(self);  // a cancellation point: a pending request wins before fn runs
  auto* call = new blocking_call<F, R>(std::move(fn));
  blocking_ref ref{call};
  try {
    blocking_submit(self, call);
  } catch (...) {
    blocking_release(call);  // the pool's reference: never queued
    throw;
  }
  std::exception_ptr cancel;
  for (;;) {
    bool ended = false;
    try {
      // Named: it holds atomics and must not be moved (see event::wait).
      list_wait_once once{&call->list, {&blocking_done, nullptr, call}};
      ended = co_await once;
    } catch (const cancelled_error&) {
      if (!cancel) cancel = std::current_exception();
      call->stop.request_stop();
      if (blocking_withdraw(self, call) || mode == on_cancel::abandon)
        std::rethrow_exception(cancel);
    }
    if (ended) break;
  }
  if (cancel) std::rethrow_exception(cancel);
  co_return call->take();
}

}  // namespace detail

// Run `fn()` -- or `fn(stop_token)` when it takes one -- on the runtime's
// blocking pool and await its result.  See the file comment.
template <class F>
auto blocking(F&& fn, on_cancel mode = on_cancel::wait) {
  using D = std::decay_t<F>;
  static_assert(std::is_invocable_v<D&> || std::is_invocable_v<D&, std::stop_token>,
                "weft::blocking needs a callable taking no arguments or a std::stop_token");
  using R = detail::blocking_result_t<D>;
  static_assert(!std::is_reference_v<R>,
                "weft::blocking: fn must return a value, not a reference (it is moved across "
                "threads)");
  return detail::blocking_body<D, R>(D(std::forward<F>(fn)), mode);
}

}  // namespace weft
