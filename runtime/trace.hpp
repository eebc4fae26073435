// SPDX-License-Identifier: MIT
// runtime/trace.hpp -- trace export's hooks (trace.cpp): the worker loops,
// spawns, cancel requests and deliveries record events here while
// runtime_options::trace (or WEFT_TRACE) is on.  Off, each hook is one test
// of a pointer that is null.  Internal to runtime/.
#pragma once

#include "runtime_impl.hpp"

namespace weft::detail {

// start(): from runtime_options::trace, else WEFT_TRACE.  Opens the file;
// when it cannot, says so on stderr and leaves tracing off.  Sets
// runtime_impl::trace and each worker's ring before any thread runs.
void trace_setup(runtime_impl* rt);
// After the runtime stopped (its workers joined, or its simulation or driven
// loop ended): writes the file, once.  A write error goes to stderr.
void trace_finish(runtime_impl* rt) noexcept;
// run() inside a slice, with the flows that end there (a first run, a steal).
bool trace_run(runtime_impl* rt, worker* w, const runtime_impl::found_work& f);
// A cancel request made on `core` (before it is handed over), and one taken
// by `core` at a resume point (its delivery), on the calling thread.
void trace_cancel_request(task_core* core, const cancel_request* r) noexcept;
void trace_delivery(task_core* core, const cancel_request* r) noexcept;
// The name the calling thread has in traces (its thread_name metadata), when
// it is not a worker; else the system's name of the thread.  Static text.
void trace_name_thread(const char* name) noexcept;

// The worker loops' run (threaded, simulated, driven).
inline bool run_from_loop(runtime_impl* rt, worker* w, const runtime_impl::found_work& f) {
  if (w->trace != nullptr) [[unlikely]]
    return trace_run(rt, w, f);
  return rt->run(w, f.task);
}

}  // namespace weft::detail
