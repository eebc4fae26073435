// SPDX-License-Identifier: MIT
// runtime/unhandled.cpp -- exceptions nobody observed, and the registry of
// live runtimes that tells whether a late report may still use its runtime's
// hook (a handle dropped after its runtime ends its task's frame then).
#include <cstdio>
#include <functional>
#include <mutex>
#include <set>
#include <string>

#include "cancel_delivery.hpp"

namespace weft::detail {

namespace {
// Runtimes alive, for the unhandled-exception hook of a task destroyed after
// its runtime (a handle dropped late).
std::mutex g_runtimes_mutex;
std::set<const runtime_impl*>& live_runtimes() {
  static std::set<const runtime_impl*> s;
  return s;
}
}  // namespace

[[gnu::noinline]] void report_unhandled(runtime_impl* rt, const std::exception_ptr& e,
                                        const task_core* core) noexcept {
  std::function<void(std::exception_ptr)> hook;
  {
    std::lock_guard lk(g_runtimes_mutex);
    if (rt != nullptr && live_runtimes().count(rt) != 0) hook = rt->options.unhandled_exception;
  }
  if (hook) {
    try {
      hook(e);
    } catch (...) {
      std::fputs("weft: the unhandled-exception hook threw; ignored\n", stderr);
    }
    return;
  }
  std::string who;
  if (core != nullptr) {
    try {
      const std::string name = task_name(core);
      who = " (task";
      if (!name.empty()) who += " \"" + name + "\"";
      who += std::string(", spawned at ") + core->where.file_name() + ":" +
             std::to_string(core->where.line()) + ")";
    } catch (...) {
      who.clear();  // no memory for the task's name: the exception is still reported
    }
  }
  std::fprintf(stderr, "weft: exception in a task nobody awaited: %s%s\n", describe(e).c_str(),
               who.c_str());
}

void report_callback_error(task_core* core, const std::exception_ptr& e) noexcept {
  report_unhandled(core->rt, e, core);
}

void register_runtime(const runtime_impl* rt) {
  std::lock_guard lk(g_runtimes_mutex);
  live_runtimes().insert(rt);
}
void unregister_runtime(const runtime_impl* rt) {
  std::lock_guard lk(g_runtimes_mutex);
  live_runtimes().erase(rt);
}
}  // namespace weft::detail
