// SPDX-License-Identifier: MIT
// weft/tbb.hpp -- run a oneTBB algorithm from a weft task.
//
//   long sum = co_await weft::tbb::run([&](tbb::task_group_context& ctx) {
//     return tbb::parallel_reduce(range, 0L, body, std::plus<>(), ctx);
//   });
//
// Not included by weft/weft.hpp, and the weft library does not link oneTBB:
// a program that includes this header links TBB::tbb itself.
//
// `fn(ctx)` runs on the runtime's blocking pool (weft/blocking.hpp), never
// on a weft worker: the pool thread enters oneTBB's arena as an external
// thread and works in it with oneTBB's own threads, while the weft workers go
// on with other tasks.  Pass `ctx` to every oneTBB algorithm fn starts.
//
// Cancellation: when the awaiting task is cancelled (any request it takes
// while it waits, "shutdown" included), ctx.cancel_group_execution() is
// called; oneTBB then starts no further chunks of the algorithms bound to
// ctx (chunks already running finish), the algorithm returns early, and the
// awaiting task gets cancelled_error once fn has returned (on_cancel::wait:
// fn's partial result is destroyed).  fn's value or exception comes back
// through the co_await otherwise.
//
// With an arena (`run(arena, fn)`), fn runs inside arena.execute(): a
// task_arena with max_concurrency caps the threads oneTBB puts on it (see
// docs/integration.md, "oneTBB from a task", for sizing both pools).
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <stop_token>
#include <type_traits>
#include <utility>

#include "weft/blocking.hpp"

namespace weft::tbb {

// Await `fn(ctx)` run off the workers, cancelled through `ctx`.
template <class F>
auto run(F&& fn) {
  static_assert(std::is_invocable_v<std::decay_t<F>&, ::tbb::task_group_context&>,
                "weft::tbb::run needs a callable taking tbb::task_group_context&");
  return weft::blocking([f = std::forward<F>(fn)](std::stop_token st) mutable {
    ::tbb::task_group_context ctx;
    std::stop_callback cancel(st, [&ctx] { ctx.cancel_group_execution(); });
    return f(ctx);
  });
}

// The same inside `arena` (which must outlive the co_await).
template <class F>
auto run(::tbb::task_arena& arena, F&& fn) {
  static_assert(std::is_invocable_v<std::decay_t<F>&, ::tbb::task_group_context&>,
                "weft::tbb::run needs a callable taking tbb::task_group_context&");
  return weft::blocking([a = &arena, f = std::forward<F>(fn)](std::stop_token st) mutable {
    ::tbb::task_group_context ctx;
    std::stop_callback cancel(st, [&ctx] { ctx.cancel_group_execution(); });
    return a->execute([&] { return f(ctx); });
  });
}

}  // namespace weft::tbb
