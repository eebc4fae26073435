// SPDX-License-Identifier: MIT
// weft/trace.hpp -- trace export: what runtime_options::trace sets.  The
// runtime records its workers' resume segments, spawns, steals and
// cancellations and writes them at shutdown as Chrome trace-event JSON, which
// Perfetto (ui.perfetto.dev) and chrome://tracing open.  docs/observability.md,
// "Trace export".
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <cstddef>
#include <string>

namespace weft {

struct trace_options {
  // Events each worker keeps (a ring per worker, and one more for the other
  // threads that spawn or cancel): once full, the oldest are overwritten and
  // the file says how many were dropped.  Each slot takes 112 bytes (an event,
  // a spawn mark and a text slot), allocated when the runtime starts: 1.75 MiB
  // per worker at the default; texts longer than 15 bytes (a task's name, a
  // cancel reason) take their length more.
  static constexpr std::size_t default_ring_capacity = 16384;
  // Above this the runtime's constructor throws std::invalid_argument.
  static constexpr std::size_t max_ring_capacity = std::size_t{1} << 26;
  // Where the JSON goes, written when the runtime shuts down (after its
  // workers stopped).  The file is opened (truncated) when the runtime
  // starts, so that a path that cannot be written is reported at once, on
  // stderr (the runtime then runs without tracing).  Empty: no trace, even
  // when WEFT_TRACE is set.
  std::string path;
  // 0: default_ring_capacity.
  std::size_t ring_capacity = default_ring_capacity;
};

}  // namespace weft
