// SPDX-License-Identifier: MIT
// stress/engine.cpp -- rounds, invariants, progress, watchdog, summary.
//
// A round: a fresh runtime (real, or a simulation seeded with the round's
// seed), the selected scenarios run to completion -- or cut short by
// shutdown() in a shutdown round --, the runtime destroyed, and then the
// invariants checked over every tracked task of the round:
//   * its outcome was observed exactly once (taken == 1);
//   * its body ran at most once, and its cleanup exactly as often (the body's
//     guard was destroyed once per body);
//   * in a simulation: no body ran after a cancel() that returned true while
//     the body had not begun (exact there: one thread);
//   * a cancel() that returned true while the body ran was observed (the body
//     ended) within the bound;
//   * the live-frame count is back to what it was before the round;
//   * nothing reached the unhandled-exception hook;
//   * the cancellation contract: every tracked cancel() that returned true was
//     delivered exactly once to its task or to a task below it, or its task
//     completed despite it (the contract ledger, internal.hpp);
// plus what the scenarios check as they go (values, timeouts, groups).
#include <weft/weft.hpp>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "internal.hpp"
#include "scenarios.hpp"

namespace weft_stress {

namespace {

constexpr const char* kNames[kScenarioCount] = {"storm",   "cancel",  "timeout",  "checkpoint",
                                                "group",   "cleanup", "shutdown", "outside",
                                                "compose", "fork"};

std::string strprintf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace

// ------------------------------------------------------------ names

const char* scenario_name(std::uint32_t bit) noexcept {
  for (std::uint32_t i = 0; i < kScenarioCount; ++i)
    if (bit == (1u << i)) return kNames[i];
  return "round";
}

std::uint32_t scenario_index(std::uint32_t bit) noexcept {
  for (std::uint32_t i = 0; i < kScenarioCount; ++i)
    if (bit == (1u << i)) return i;
  return kScenarioCount;
}

bool parse_scenarios(const std::string& text, std::uint32_t* bits, std::string* error) {
  std::uint32_t out = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string name = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (name.empty()) continue;
    if (name == "all") {
      out |= kAllScenarios;
    } else if (name == "core") {
      out |= kCoreScenarios;
    } else {
      bool found = false;
      for (std::uint32_t i = 0; i < kScenarioCount; ++i) {
        if (name == kNames[i]) {
          out |= 1u << i;
          found = true;
        }
      }
      if (!found) {
        *error = "unknown scenario '" + name +
                 "' (storm, cancel, timeout, checkpoint, group, cleanup, shutdown, outside, "
                 "compose, fork, core, all)";
        return false;
      }
    }
  }
  if (out == 0) {
    *error = "no scenario selected";
    return false;
  }
  *bits = out;
  return true;
}

std::string scenario_list(std::uint32_t bits) {
  std::string s;
  for (std::uint32_t i = 0; i < kScenarioCount; ++i) {
    if ((bits & (1u << i)) == 0) continue;
    if (!s.empty()) s += ",";
    s += kNames[i];
  }
  return s;
}

namespace {
constexpr const char* kComposeNames[kComposeCaseCount] = {
    "nested", "group", "when_all", "when_any", "shield", "awaited", "self"};
}  // namespace

bool parse_compose_cases(const std::string& text, std::uint32_t* bits, std::string* error) {
  std::uint32_t out = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string name = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (name.empty()) continue;
    if (name == "all") {
      out |= kAllComposeCases;
      continue;
    }
    bool found = false;
    for (std::uint32_t i = 0; i < kComposeCaseCount; ++i) {
      if (name == kComposeNames[i]) {
        out |= 1u << i;
        found = true;
      }
    }
    if (!found) {
      *error = "unknown compose case '" + name +
               "' (nested, group, when_all, when_any, shield, awaited, self, all)";
      return false;
    }
  }
  if (out == 0) {
    *error = "no compose case selected";
    return false;
  }
  *bits = out;
  return true;
}

std::string compose_case_list(std::uint32_t bits) {
  if (bits == kAllComposeCases) return "all";
  std::string s;
  for (std::uint32_t i = 0; i < kComposeCaseCount; ++i) {
    if ((bits & (1u << i)) == 0) continue;
    if (!s.empty()) s += ",";
    s += kComposeNames[i];
  }
  return s;
}

const char* to_string(task_state s) noexcept {
  switch (s) {
    case task_state::created:
      return "not started (or ended unstarted)";
    case task_state::running:
      return "running";
    case task_state::suspended:
      return "suspended";
    case task_state::finished:
      return "finished";
  }
  return "?";
}

// ------------------------------------------------------------ registry

registry::registry() : chunks_(new std::atomic<record*>[kMaxChunks]) {
  for (std::size_t i = 0; i < kMaxChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

registry::~registry() {
  for (std::size_t i = 0; i < kMaxChunks; ++i) delete[] chunks_[i].load(std::memory_order_relaxed);
}

record* registry::make(std::uint32_t si, std::source_location where, record* parent) {
  // Relaxed: only a unique index is needed; the record is published by `ready`.
  const std::uint64_t i = next_.fetch_add(1, std::memory_order_relaxed);
  const std::size_t c = i / kChunk;
  if (c >= kMaxChunks) {
    std::fprintf(stderr, "weft-stress: more than %zu tasks in one round; lower --tasks\n",
                 kChunk * kMaxChunks);
    std::abort();
  }
  // Acquire: pairs with the release store below (another thread's new chunk).
  record* chunk = chunks_[c].load(std::memory_order_acquire);
  if (chunk == nullptr) {
    std::lock_guard lk(grow_);
    chunk = chunks_[c].load(std::memory_order_relaxed);  // Relaxed: under grow_
    if (chunk == nullptr) {
      chunk = new record[kChunk];
      // Release: the constructed records are visible to every later reader.
      chunks_[c].store(chunk, std::memory_order_release);
    }
  }
  record* r = &chunk[i % kChunk];
  r->id = i + 1;
  r->scenario_index = si;
  r->file = where.file_name();
  r->line = where.line();
  r->parent = parent;
  // Release: publishes the fields above to the watchdog's dump (acquire).
  r->ready.store(true, std::memory_order_release);
  return r;
}

std::uint64_t registry::size() const noexcept {
  // Relaxed: a count for reports; records are published by their `ready`.
  return next_.load(std::memory_order_relaxed);
}

record* registry::at(std::uint64_t i) const noexcept {
  // Acquire: pairs with make()'s release store of the chunk.
  record* chunk = chunks_[i / kChunk].load(std::memory_order_acquire);
  if (chunk == nullptr) return nullptr;
  record* r = &chunk[i % kChunk];
  // Acquire: pairs with make()'s release store of `ready`.
  return r->ready.load(std::memory_order_acquire) ? r : nullptr;
}

// ------------------------------------------------------------ figures

figures& global_figures() {
  static figures f;
  return f;
}

void note_stretch(std::int64_t ns) noexcept {
  auto& m = global_figures().max_stretch_ns;
  // Relaxed: a maximum for reports.
  std::int64_t cur = m.load(std::memory_order_relaxed);
  while (ns > cur && !m.compare_exchange_weak(cur, ns, std::memory_order_relaxed)) {
  }
}

std::string describe(const record& r) {
  const char* file = r.file;
  if (const char* slash = std::strrchr(file, '/')) file = slash + 1;
  // Relaxed loads throughout: a snapshot for a message.
  const task_state st = r.state.load(std::memory_order_relaxed);
  const std::string where = st == task_state::created
                                ? std::string()
                                : strprintf(" at \"%s\"", r.at.load(std::memory_order_relaxed));
  return strprintf(
      "t%" PRIu64 " [%s] spawned at %s:%u, %s%s, bodies %u, cleanups %u, taken %u%s%s%s", r.id,
      r.scenario_index < kScenarioCount ? kNames[r.scenario_index] : "round", file, r.line,
      to_string(st), where.c_str(), r.bodies.load(std::memory_order_relaxed),
      r.cleanups.load(std::memory_order_relaxed), r.taken.load(std::memory_order_relaxed),
      r.cancel_sent.load(std::memory_order_relaxed) ? ", cancel sent" : "",
      r.cancel_before_start.load(std::memory_order_relaxed) ? " (before start)" : "",
      r.infinite.load(std::memory_order_relaxed) ? ", waits until cancelled" : "");
}

void round_ctx::violation(const record* r, const std::string& what) {
  std::string text = r != nullptr ? what + ": " + describe(*r) : what;
  if (sim) weft::sim::note("VIOLATION: " + text);
  add(global_figures().violations);
  std::lock_guard lk(mu);
  if (violations.size() < 200) violations.push_back(std::move(text));
}

bool same_cancellation(const std::exception_ptr& e, const std::optional<weft::cancelled_error>& c) {
  if (!c) return false;
  try {
    std::rethrow_exception(e);
  } catch (const weft::cancelled_error& x) {
    return x.kind() == c->kind() && x.reason() == c->reason() &&
           x.where().line() == c->where().line() &&
           std::string_view(x.where().file_name()) == c->where().file_name();
  } catch (...) {
  }
  return false;
}

body_guard::body_guard(round_ctx* c, record* r) : r_(r) {
  // acq_rel: orders the body's start after a cancel_tracked that read 0.
  if (r->bodies.fetch_add(1, std::memory_order_acq_rel) != 0)
    c->violation(r, "a task body ran twice");
  if (c->strict_start && r->cancel_before_start.load(std::memory_order_acquire)) {
    c->violation(r, "the body ran although cancel() returned true before it started");
  } else if (r->cancel_before_start.load(std::memory_order_acquire)) {
    add(global_figures().started_after_cancel);  // real runtime: the cancel raced the start
  }
  r->state.store(task_state::running, std::memory_order_relaxed);
  r->at.store("in its body", std::memory_order_relaxed);
  if (c->sim) weft::sim::note("body of t" + std::to_string(r->id) + " begins");
}

body_guard::~body_guard() {
  r_->finish_ns.store(clock_ns(), std::memory_order_relaxed);
  r_->state.store(task_state::finished, std::memory_order_relaxed);
  // Release: the fields above are visible to whoever reads the count.
  r_->cleanups.fetch_add(1, std::memory_order_release);
}

void record_taken(round_ctx* c, record* r, got kind, bool handle_cancelled, bool despite) {
  if (r->taken.fetch_add(1, std::memory_order_acq_rel) != 0)
    c->violation(r, "the outcome was observed twice");
  r->outcome.store(static_cast<std::uint8_t>(1 + static_cast<int>(kind)),
                   std::memory_order_relaxed);
  // Relaxed: read by the end-of-round check, after the runtime's workers
  // were joined.
  r->despite.store(despite, std::memory_order_relaxed);
  auto& f = global_figures();
  auto& p = f.per[r->scenario_index];
  add(kind == got::value ? p.values : kind == got::cancelled ? p.cancelled : p.errors);
  add(f.taken);
  add(c->progress);
  if ((kind == got::cancelled) != handle_cancelled)
    c->violation(r, "join_handle::cancelled() disagrees with the outcome taken");
  if (despite && kind == got::cancelled)
    c->violation(r, "completed_despite_cancel() is true for a task that ended cancelled");
}

void note_outcome(round_ctx* c, record* r, const std::exception_ptr& e) {
  observe(c, r, e, /*at_delivery=*/false);
}

void keep_own(round_ctx* c, record* self, std::exception_ptr* own, std::exception_ptr e) {
  observe(c, self, e);
  if (!*own) *own = std::move(e);
}

// ------------------------------------------------------------ the contract ledger

std::uint64_t ledger_tick(round_ctx* c) noexcept {
  // seq_cst: one total order of requests and observations; each tick reads
  // the previous one's value, so an earlier tick happens before a later one
  // (pairs with every other tick of the round).
  return c->ledger.clock.fetch_add(1, std::memory_order_seq_cst) + 1;
}

std::uint64_t request_of(std::string_view reason) noexcept {
  const std::size_t open = reason.rfind(" [#");
  if (open == std::string_view::npos || reason.empty() || reason.back() != ']') return 0;
  std::uint64_t n = 0;
  for (std::size_t i = open + 3; i + 1 < reason.size(); ++i) {
    if (reason[i] < '0' || reason[i] > '9') return 0;
    n = n * 10 + static_cast<std::uint64_t>(reason[i] - '0');
  }
  return n;
}

std::uint64_t open_request(round_ctx* c, record* r, const char* reason, std::string* tagged) {
  const std::uint64_t made = ledger_tick(c);
  std::lock_guard lk(c->ledger.mu);
  auto& reqs = c->ledger.requests;
  const std::uint64_t n = reqs.size() + 1;
  *tagged = std::string(reason) + " [#" + std::to_string(n) + "]";
  request_entry q;
  q.target = r;
  q.made = made;
  q.reason = *tagged;
  reqs.push_back(std::move(q));
  r->requests.push_back(n);
  return n;
}

void close_request(round_ctx* c, std::uint64_t n, bool accepted) {
  const std::uint64_t landed = accepted ? ledger_tick(c) : 0;
  std::lock_guard lk(c->ledger.mu);
  request_entry& q = c->ledger.requests[n - 1];
  q.accepted = accepted;
  q.landed = landed;
}

void observe(round_ctx* c, record* observer, const std::exception_ptr& e, bool at_delivery,
             std::uint64_t at) {
  if (!e) return;
  weft::cancel_kind kind = weft::cancel_kind::explicit_request;
  std::uint64_t n = 0;
  const void* object = nullptr;
  try {
    std::rethrow_exception(e);
  } catch (const weft::cancelled_error& x) {
    kind = x.kind();
    n = request_of(x.reason());
    object = &x;  // rethrow_exception throws the stored object itself (libstdc++)
  } catch (...) {
    return;
  }
  if (at == 0) at = ledger_tick(c);
  std::lock_guard lk(c->ledger.mu);
  // The same object again -- rethrown further up, or taken as the outcome
  // of the task that let it out: one delivery, counted where first seen.
  if (!c->ledger.seen.insert(object).second) return;
  c->ledger.keep.push_back(e);  // keeps the address unique until the round ends
  if (observer != nullptr && at_delivery && at > observer->last_observed)
    observer->last_observed = at;
  auto& reqs = c->ledger.requests;
  if (n != 0 && n <= reqs.size()) {
    // Kind parent: a group passing its owner's cancellation on to the
    // children, each a request of its own (the owner took this one).
    if (kind == weft::cancel_kind::explicit_request) {
      reqs[n - 1].deliveries.push_back(e);
      reqs[n - 1].observers.push_back(observer);
    }
  }
  if (observer == nullptr) return;
  // Merges: requests made before this delivery that it could have carried --
  // the observer's own (a construct that holds a cancellation drops the ones
  // delivered after it, as task_group::join does) and those of the tasks above
  // it (a request forwarded down lands in the awaited task, where a later one
  // may replace it).  A group's copy (kind parent) and a shutdown request,
  // which every task gets for itself, carry only what was the observer's.
  const bool up = kind != weft::cancel_kind::parent && kind != weft::cancel_kind::shutdown;
  for (record* t = observer; t != nullptr; t = up ? t->parent : nullptr) {
    for (std::uint64_t m : t->requests) {
      request_entry& q = reqs[m - 1];
      if (m != n && q.deliveries.empty() && q.made < at) q.merged = true;
    }
  }
}

bool expect_pending(round_ctx* c, record* r, std::uint64_t since) {
  std::lock_guard lk(c->ledger.mu);
  for (std::uint64_t m : r->requests) {
    const request_entry& q = c->ledger.requests[m - 1];
    if (q.accepted && q.landed != 0 && q.landed < since && r->last_observed < q.made) return true;
  }
  return false;
}

namespace {
bool is_below(const record* o, const record* t) noexcept {
  for (; o != nullptr; o = o->parent)
    if (o == t) return true;
  return false;
}
std::string name_of(const record* r) {
  return r == nullptr ? std::string("the round's root task") : "t" + std::to_string(r->id);
}
}  // namespace

void check_contract(round_ctx* c) {
  std::vector<std::pair<record*, std::string>> found;
  {
    std::lock_guard lk(c->ledger.mu);
    const auto& reqs = c->ledger.requests;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const request_entry& q = reqs[i];
      const std::string id = "request #" + std::to_string(i + 1) + " (\"" + q.reason + "\")";
      if (!q.accepted) {
        if (!q.deliveries.empty())
          found.emplace_back(q.target, "contract: " + id + " was delivered to " +
                                           name_of(q.observers[0]) +
                                           " although cancel() returned false");
        continue;
      }
      if (q.deliveries.size() > 1) {
        std::string who;
        for (const record* o : q.observers) {
          if (!who.empty()) who += ", ";
          who += name_of(o);
        }
        std::string what = "contract: " + id;
        what += " was delivered " + std::to_string(q.deliveries.size()) + " times (to ";
        what += who;
        what += "); a request is delivered once";
        found.emplace_back(q.target, std::move(what));
      } else if (q.deliveries.size() == 1) {
        const record* o = q.observers[0];
        if (!is_below(o, q.target)) {
          const bool up = o != nullptr && is_below(q.target, o);
          found.emplace_back(
              q.target, "contract: " + id + " was delivered to " + name_of(o) +
                            (up ? ", which awaits the task it was made for: a request made on a "
                                  "task is never passed up to whoever awaits it"
                                : ", which is neither the task it was made for nor below it"));
        }
      } else if (!q.merged && !q.target->despite.load(std::memory_order_relaxed)) {
        // (Relaxed: the round's runtime is destroyed; its workers were joined.)
        const auto outcome = q.target->outcome.load(std::memory_order_relaxed);
        // On a real runtime a request may land after the task's last
        // cancellation point while it unwinds another cancellation: it ends
        // cancelled, and the handle reports cancelled(), not "despite".  In a
        // simulation a tracked request is made only while its task is
        // suspended (or by the task itself), so there it stays a loss.
        if (!c->sim && outcome == 2) continue;
        found.emplace_back(q.target,
                           "contract: " + id +
                               " was lost: cancel() returned true, yet no task observed it and "
                               "the handle does not report completed_despite_cancel() (the task "
                               "ended " +
                               (outcome == 1   ? "with a value"
                                : outcome == 2 ? "cancelled"
                                               : "with an exception") +
                               ")");
      }
    }
  }
  for (auto& [r, what] : found) c->violation(r, what);
}

// ------------------------------------------------------------ one round

namespace {

// The round the watchdog and the progress line may look at.
std::mutex g_live_mu;
round_ctx* g_live_ctx = nullptr;     // guarded by g_live_mu
weft::runtime* g_live_rt = nullptr;  // guarded by g_live_mu

struct live_round {
  live_round(round_ctx* c, weft::runtime* rt) {
    std::lock_guard lk(g_live_mu);
    g_live_ctx = c;
    g_live_rt = rt;
  }
  ~live_round() {
    std::lock_guard lk(g_live_mu);
    g_live_ctx = nullptr;
    g_live_rt = nullptr;
  }
};

// Every tracked task whose body has not ended (not started, running or
// suspended: where it waits, where it was spawned), then a count of those that
// ended but whose owner has not taken the outcome yet.
void dump_registry(FILE* f, round_ctx& c, std::size_t max) {
  std::size_t shown = 0, unfinished = 0, untaken = 0;
  const std::uint64_t n = c.reg.size();
  for (std::uint64_t i = 0; i < n; ++i) {
    record* r = c.reg.at(i);
    if (r == nullptr) continue;
    // Relaxed: a snapshot.
    const bool ended = r->state.load(std::memory_order_relaxed) == task_state::finished ||
                       (r->bodies.load(std::memory_order_relaxed) == 0 &&
                        r->taken.load(std::memory_order_relaxed) != 0);
    if (ended) {
      if (r->taken.load(std::memory_order_relaxed) == 0) ++untaken;
      continue;
    }
    ++unfinished;
    if (shown++ < max) std::fprintf(f, "  %s\n", describe(*r).c_str());
  }
  if (shown > max) std::fprintf(f, "  ... and %zu more\n", shown - max);
  std::fprintf(f,
               "  (%zu of %" PRIu64
               " tracked tasks have not finished; %zu more finished but "
               "their owner has not taken the outcome)\n",
               unfinished, n, untaken);
}

// Outside threads (real runtime): spawn, cancel some, join every handle.
void outside_thread(round_ctx* c, weft::runtime* rt, std::uint64_t seed, unsigned n) {
  rng rr(seed);
  const auto si = scenario_index(kOutside);
  struct item {
    record* r;
    weft::join_handle<std::uint64_t> h;
    bool late_cancel;
  };
  std::vector<item> items;
  for (unsigned i = 0; i < n; ++i) {
    record* r = c->reg.make(si, std::source_location::current());
    add(global_figures().per[si].spawned);
    add(c->spawned[si]);
    items.push_back({r, rt->spawn(outside_work(c, r, rr.next())), false});
    item& it = items.back();
    if (rr.chance(c->cfg->cancel_rate)) {
      if (rr.below(2) == 0) {
        cancel_tracked(c, it.r, it.h, "outside: right after spawn");
      } else {
        it.late_cancel = true;
      }
    }
    if (i % 8 == 7) {
      for (auto& x : items) {
        if (!x.late_cancel) continue;
        x.late_cancel = false;
        cancel_tracked(c, x.r, x.h, "outside: later");
      }
    }
  }
  for (auto& x : items) {
    // Relaxed: both flags were set by this thread (infinite by outside_work
    // when it built the task, cancel_sent by cancel_tracked), so it sees them.
    if (x.r->infinite.load(std::memory_order_relaxed) &&
        !x.r->cancel_sent.load(std::memory_order_relaxed))
      cancel_tracked(c, x.r, x.h, "outside: wind-down");
  }
  for (auto& x : items) {
    got kind = got::value;
    try {
      (void)x.h.join();
    } catch (const weft::cancelled_error&) {
      kind = got::cancelled;  // from a thread, every exception is the outcome
      note_outcome(c, x.r, std::current_exception());
    } catch (...) {
      kind = got::error;
    }
    record_taken(c, x.r, kind, x.h);
  }
}

std::uint64_t derived_pct_steps(const config& cfg) {
  if (cfg.pct_steps != 0) return cfg.pct_steps;
  std::uint64_t per = 0;
  for (std::uint32_t i = 0; i < kScenarioCount; ++i)
    if (cfg.scenarios & (1u << i)) ++per;
  return std::max<std::uint64_t>(100, per * cfg.tasks * 6);
}

}  // namespace

// The runtime of one round: its workers, slice and unhandled-exception hook
// (a violation), and in a simulation the round's seed, policy and trace.
weft::runtime_options round_options(const config& cfg, round_ctx* c, std::uint64_t seed,
                                    std::uint64_t cancel_at, std::vector<weft::sim::event>* trace) {
  weft::runtime_options o;
  o.workers = cfg.workers;
  o.time_slice = cfg.time_slice;
  o.unhandled_exception = [c](const std::exception_ptr& e) {
    add(c->unhandled);
    c->violation(nullptr,
                 "an exception reached the unhandled-exception hook: " + weft::describe(e));
  };
  if (cfg.sim) {
    weft::sim::options so;
    so.seed = seed;
    so.schedule = cfg.policy;
    so.pct_depth = cfg.pct_depth;
    so.pct_steps = derived_pct_steps(cfg);
    so.cancel_at = cancel_at;
    so.trace = trace;
    so.max_steps = 20'000'000;
    o.simulation = so;
  }
  return o;
}

// The invariants over every tracked task of a finished round: each outcome
// taken once, each body run at most once and cleaned up, each cancellation
// observed within the bound.  Returns how many tasks were tracked.
std::uint64_t check_records(round_ctx* c) {
  const std::uint64_t n = c->reg.size();
  for (std::uint64_t i = 0; i < n; ++i) {
    record* r = c->reg.at(i);
    if (r == nullptr) continue;
    // Relaxed, here and below: the round's runtime is shut down and its
    // workers joined, which orders every write of the tasks before these.
    const auto taken = r->taken.load(std::memory_order_relaxed);
    const auto bodies = r->bodies.load(std::memory_order_relaxed);
    const auto cleanups = r->cleanups.load(std::memory_order_relaxed);
    if (taken != 1) c->violation(r, strprintf("outcome observed %u times (want exactly 1)", taken));
    if (bodies > 1) c->violation(r, "the body ran more than once");
    if (cleanups != bodies)
      c->violation(r, strprintf("cleanup ran %u times for %u bodies", cleanups, bodies));
    const std::int64_t cancel_ns = r->cancel_ns.load(std::memory_order_relaxed);
    const std::int64_t finish_ns = r->finish_ns.load(std::memory_order_relaxed);
    if (cancel_ns != 0 && finish_ns != 0 && finish_ns - cancel_ns > c->cancel_bound_ns) {
      c->violation(r,
                   strprintf("the cancellation was observed %.3f s after cancel() (bound %.3f s)",
                             (finish_ns - cancel_ns) / 1e9, c->cancel_bound_ns / 1e9));
    }
  }
  return n;
}

round_report run_round(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at,
                       std::vector<weft::sim::event>* trace) {
  round_report rep;
  rep.seed = seed;
  rep.cancel_at = cancel_at;
  auto core = std::make_unique<round_ctx>();  // outlives the runtime (never_set)
  round_ctx* c = core.get();
  c->cfg = &cfg;
  c->seed = seed;
  c->sim = cfg.sim;
  c->strict_start = cfg.sim;
  c->cancel_at = cancel_at;
  c->cancel_bound_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(cfg.cancel_bound).count();
  const std::int64_t frames_before = weft::diagnostics::live_frames();
  rng rr(seed ^ 0x0B5E'55ED'F00Dull);
  {
    weft::runtime rt(round_options(cfg, c, seed, cancel_at, trace));
    c->rt = &rt;
    live_round live(c, &rt);

    // Outside: threads on the real runtime; the driving thread between
    // slices of the run in a simulation.
    std::vector<std::thread> outside;
    struct outside_item {
      record* r;
      weft::join_handle<std::uint64_t> h;
    };
    std::vector<outside_item> sim_outside;
    const bool with_outside = (cfg.scenarios & kOutside) != 0;
    // Shutdown under load: every round when it is the only scenario (the
    // load is then every core scenario), else every other round.  Decided
    // before the round starts, so that the scenarios know.
    const bool shutdown_only = (cfg.scenarios & ~(kShutdown | kOutside)) == 0;
    c->shutdown_round = (cfg.scenarios & kShutdown) && (shutdown_only || rr.below(2) == 0);
    const unsigned outside_n = std::max(2u, cfg.tasks / 2);
    auto spawn_outside_batch = [&](unsigned n) {
      const auto si = scenario_index(kOutside);
      for (unsigned i = 0; i < n; ++i) {
        record* r = c->reg.make(si, std::source_location::current());
        add(global_figures().per[si].spawned);
        add(c->spawned[si]);
        sim_outside.push_back({r, rt.spawn(outside_work(c, r, rr.next()))});
        if (rr.chance(cfg.cancel_rate))
          cancel_tracked(c, sim_outside.back().r, sim_outside.back().h,
                         "outside: right after spawn");
      }
    };
    if (with_outside && !cfg.sim) {
      for (unsigned t = 0; t < 2; ++t) {
        const std::uint64_t s = rr.next();
        outside.emplace_back(outside_thread, c, &rt, s, outside_n);
      }
    }
    if (with_outside && cfg.sim) spawn_outside_batch(outside_n / 2);

    auto root = rt.spawn(round_root(c));
    try {
      if (with_outside && cfg.sim) {
        // A slice of the run, then more spawns and cancels from "outside".
        weft::sim::run(rt, 1 + rr.below(derived_pct_steps(cfg) / 2 + 1));
        spawn_outside_batch(outside_n - outside_n / 2);
        for (auto& x : sim_outside)
          // Relaxed: the simulation is single-threaded (this thread set it).
          if (rr.chance(cfg.cancel_rate) && !x.r->cancel_sent.load(std::memory_order_relaxed))
            cancel_tracked(c, x.r, x.h, "outside: later");
      }
      if (c->shutdown_round) {
        // Shutdown under load, at a random moment.
        if (cfg.sim) {
          weft::sim::run(rt, 1 + rr.below(derived_pct_steps(cfg)));
        } else {
          const std::uint64_t want = 1 + rr.below(std::max<std::uint64_t>(cfg.tasks, 2));
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (c->progress.load(std::memory_order_relaxed) < want && !root.done() &&
                 std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
          }
        }
        const std::int64_t t0 = wall_ns();
        const std::uint64_t v0 = weft::sim::stats(rt).virtual_ns;
        rt.shutdown();
        const std::int64_t took =
            cfg.sim ? static_cast<std::int64_t>(weft::sim::stats(rt).virtual_ns - v0)
                    : wall_ns() - t0;
        if (took > c->cancel_bound_ns)
          c->violation(nullptr, strprintf("shutdown() took %.3f s (bound %.3f s)", took / 1e9,
                                          c->cancel_bound_ns / 1e9));
      }
      try {
        root.join();
      } catch (const weft::cancelled_error&) {
        // cancel_points hit the root, or the shutdown did
      }
      for (auto& x : sim_outside) {
        got kind = got::value;
        try {
          (void)x.h.join();
        } catch (const weft::cancelled_error&) {
          kind = got::cancelled;
          note_outcome(c, x.r, std::current_exception());
        } catch (const weft::sim::failure&) {
          throw;
        } catch (...) {
          kind = got::error;
        }
        record_taken(c, x.r, kind, x.h);
      }
    } catch (const weft::sim::failure& f) {
      rep.hang = true;
      c->violation(nullptr, f.what());
    }
    for (auto& t : outside) t.join();
    if (cfg.sim) {
      const auto st = weft::sim::stats(rt);
      rep.resume_points = st.resume_points;
      add(global_figures().resume_points, st.resume_points);
      if (cancel_at != 0 && !st.cancel_delivered && !rep.hang) {
        c->violation(nullptr, strprintf("resume point %" PRIu64
                                        " was never reached: this replay diverged from the run "
                                        "that counted it",
                                        cancel_at));
      }
    }
    add(global_figures().steals, rt.stats().steals);
    sim_outside.clear();
    root = {};
    static std::atomic<int> dumps{0};  // the first three hangs of a run only
    if (rep.hang && !cfg.quiet && dumps.fetch_add(1, std::memory_order_relaxed) < 3) {
      std::fprintf(stderr,
                   "weft-stress: seed %" PRIu64
                   ": the simulation reports a hang.  Tracked tasks not finished:\n",
                   seed);
      dump_registry(stderr, *c, 40);
    }
    c->rt = nullptr;
  }  // the runtime shuts down and is destroyed here

  rep.tasks = check_records(c);
  check_contract(c);
  const std::int64_t frames_after = weft::diagnostics::live_frames();
  if (frames_after != frames_before) {
    c->violation(nullptr, strprintf("%lld coroutine frame(s) leaked (live_frames() did not come "
                                    "back to its value before the round)",
                                    static_cast<long long>(frames_after - frames_before)));
  }
  add(global_figures().rounds);
  rep.violations = std::move(c->violations);
  return rep;
}

// ------------------------------------------------------------ a run

std::string replay_command(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at) {
  std::string s = strprintf("weft-stress --sim --seed=%" PRIu64
                            " --iterations=1 --workers=%u "
                            "--scenario=%s --tasks=%u --cancel_rate=%g",
                            seed, cfg.workers, scenario_list(cfg.scenarios).c_str(), cfg.tasks,
                            cfg.cancel_rate);
  if (cfg.policy == weft::sim::policy::pct)
    s += strprintf(" --sim_policy=pct --pct_depth=%u --pct_steps=%" PRIu64, cfg.pct_depth,
                   derived_pct_steps(cfg));
  if ((cfg.scenarios & kCompose) != 0 && cfg.compose_cases != kAllComposeCases)
    s += " --compose=" + compose_case_list(cfg.compose_cases);
  if (cancel_at != 0) s += strprintf(" --cancel_at=%" PRIu64, cancel_at);
  s += " --trace=trace.txt";
  return s;
}

namespace {

std::atomic<bool> g_run_done{false};
std::atomic<std::int64_t> g_round_started_ns{0};
std::atomic<std::uint64_t> g_round_seed{0};

void print_config(const config& cfg, FILE* f) {
  const std::string duration = std::isinf(cfg.duration.count())
                                   ? std::string("none")
                                   : strprintf("%.1fs", cfg.duration.count());
  std::fprintf(
      f, "weft-stress: seed=%" PRIu64 " mode=%s workers=%u duration=%s iterations=%" PRIu64 "%s\n",
      cfg.seed, cfg.sim ? "simulation" : "real", cfg.workers, duration.c_str(), cfg.iterations,
      cfg.iterations == 0 ? " (until the duration)" : "");
  std::fprintf(f,
               "  scenarios=%s tasks=%u cancel_rate=%.2f cancel_bound=%.3fs watchdog=%.0fs "
               "time_slice=%lldus\n",
               scenario_list(cfg.scenarios).c_str(), cfg.tasks, cfg.cancel_rate,
               cfg.cancel_bound.count(), cfg.watchdog.count(),
               static_cast<long long>(cfg.time_slice.count()));
  if ((cfg.scenarios & kCompose) != 0 && cfg.compose_cases != kAllComposeCases)
    std::fprintf(f, "  compose cases=%s\n", compose_case_list(cfg.compose_cases).c_str());
  if (cfg.sim) {
    std::fprintf(f,
                 "  simulation: policy=%s pct_depth=%u pct_steps=%" PRIu64
                 " explore=%s%s cancel_at=%" PRIu64 " trace=%s\n",
                 cfg.policy == weft::sim::policy::pct ? "pct" : "random", cfg.pct_depth,
                 derived_pct_steps(cfg),
                 cfg.explore == explore_mode::cancel_points ? "cancel_points" : "none",
                 cfg.explore == explore_mode::cancel_points
                     ? strprintf(" (max %" PRIu64 " per seed)", cfg.max_cancel_points).c_str()
                     : "",
                 cfg.cancel_at, cfg.trace_path.empty() ? "-" : cfg.trace_path.c_str());
  }
#if defined(WEFT_CHAOS)
  std::fprintf(
      f, "  chaos build: random yields and delays at the runtime's atomics and park points\n");
#endif
  std::fflush(f);
}

std::string fmt_count(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

std::uint64_t total(std::atomic<std::uint64_t> scenario_figures::* m) {
  std::uint64_t t = 0;
  for (auto& p : global_figures().per) t += (p.*m).load(std::memory_order_relaxed);
  return t;
}

void progress_line(const config& cfg, double secs, std::uint64_t seeds) {
  auto& f = global_figures();
  std::uint64_t steals = f.steals.load(std::memory_order_relaxed);
  {
    std::lock_guard lk(g_live_mu);
    if (g_live_rt != nullptr) steals += g_live_rt->stats().steals;
  }
  const std::uint64_t done = f.taken.load(std::memory_order_relaxed);
  std::fprintf(cfg.out,
               "[%7.1fs] %s %s  tasks done %s (%s/s)  cancels %s  timeouts %s  steals %s  "
               "max stretch %.3f ms  violations %s\n",
               secs, cfg.sim ? "seeds" : "rounds", fmt_count(seeds).c_str(),
               fmt_count(done).c_str(),
               fmt_count(static_cast<std::uint64_t>(done / std::max(secs, 1e-9))).c_str(),
               fmt_count(total(&scenario_figures::cancels)).c_str(),
               fmt_count(total(&scenario_figures::timeouts)).c_str(), fmt_count(steals).c_str(),
               f.max_stretch_ns.load(std::memory_order_relaxed) / 1e6,
               fmt_count(f.violations.load(std::memory_order_relaxed)).c_str());
  std::fflush(cfg.out);
}

void write_trace(const config& cfg, std::uint64_t seed, std::uint64_t cancel_at,
                 const std::vector<weft::sim::event>& trace, const round_report& rep) {
  std::ofstream out(cfg.trace_path);
  out << "# weft-stress trace: seed " << seed << ", cancel_at " << cancel_at << ", " << trace.size()
      << " events\n# replay: " << replay_command(cfg, seed, cancel_at) << "\n";
  for (const auto& v : rep.violations) out << "# violation: " << v << "\n";
  for (const auto& e : trace) out << e.to_string() << "\n";
  std::fprintf(cfg.out, "trace of seed %" PRIu64 " written to %s (%zu events)\n", seed,
               cfg.trace_path.c_str(), trace.size());
}

void watchdog_main(const config* cfg) {
  using namespace std::chrono;
  const auto limit = duration_cast<nanoseconds>(cfg->watchdog).count();
  while (!g_run_done.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(milliseconds(100));
    const std::int64_t started = g_round_started_ns.load(std::memory_order_acquire);
    if (started == 0 || wall_ns() - started < limit) continue;
    std::fprintf(stderr,
                 "\nweft-stress: WATCHDOG: round with seed %" PRIu64
                 " has run for more than %.0f s: a hang.  Tracked tasks not finished:\n",
                 g_round_seed.load(std::memory_order_relaxed), cfg->watchdog.count());
    {
      std::lock_guard lk(g_live_mu);
      if (g_live_ctx != nullptr) dump_registry(stderr, *g_live_ctx, 200);
      if (g_live_rt != nullptr) {
        auto st = g_live_rt->stats();
        std::fprintf(stderr,
                     "  runtime: steals %" PRIu64 ", parks %" PRIu64 ", injected %" PRIu64 "\n",
                     st.steals, st.parks, st.injected);
      }
    }
    if (cfg->sim)
      // Relaxed: a number for the message; stored before the round's start
      // time, whose release store the acquire load above pairs with.
      std::fprintf(stderr, "  replay: %s\n",
                   replay_command(*cfg, g_round_seed.load(std::memory_order_relaxed), 0).c_str());
    std::fflush(stderr);
    std::_Exit(3);
  }
}

}  // namespace

// One run's failures: each seed (and cancel point) that broke an invariant.
struct failure_t {
  std::uint64_t seed, cancel_at;
  std::vector<std::string> violations;
  bool hang;
};
constexpr std::size_t kMaxFailures = 20;  // a run stops collecting (and running) here

// The per-scenario table and the run's totals.  `stopped_early`: the run
// ended because kMaxFailures rounds failed.  Called after the rounds ended and
// the reporter joined: the counters are read relaxed (ordered by the joins).
void print_summary(const config& cfg, double secs, std::uint64_t seeds, std::uint64_t rounds,
                   std::uint64_t replays_checked, bool stopped_early) {
  FILE* out = cfg.out;
  auto& g = global_figures();
  std::fprintf(out, "\n%-11s %10s %10s %10s %8s %8s %9s %9s\n", "scenario", "tasks", "values",
               "cancelled", "errors", "refused", "timeouts", "cancels");
  for (std::uint32_t i = 0; i <= kScenarioCount; ++i) {
    auto& p = g.per[i];
    if (p.spawned.load(std::memory_order_relaxed) == 0) continue;
    std::fprintf(out, "%-11s %10s %10s %10s %8s %8s %9s %9s\n",
                 i < kScenarioCount ? kNames[i] : "(drivers)",
                 fmt_count(p.spawned.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.values.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.cancelled.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.errors.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.refused.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.timeouts.load(std::memory_order_relaxed)).c_str(),
                 fmt_count(p.cancels.load(std::memory_order_relaxed)).c_str());
  }
  const std::uint64_t tasks = total(&scenario_figures::spawned);
  std::fprintf(out, "%-11s %10s %10s %10s %8s %8s %9s %9s\n", "total", fmt_count(tasks).c_str(),
               fmt_count(total(&scenario_figures::values)).c_str(),
               fmt_count(total(&scenario_figures::cancelled)).c_str(),
               fmt_count(total(&scenario_figures::errors)).c_str(),
               fmt_count(total(&scenario_figures::refused)).c_str(),
               fmt_count(total(&scenario_figures::timeouts)).c_str(),
               fmt_count(total(&scenario_figures::cancels)).c_str());
  std::fprintf(out,
               "\n%s: %" PRIu64 " in %.2f s (%.1f/s); rounds %" PRIu64
               "; tasks %.0f/s; steals %s; "
               "max stretch between resume points %.3f ms\n",
               cfg.sim ? "seeds" : "rounds", seeds, secs, seeds / secs, rounds, tasks / secs,
               fmt_count(g.steals.load(std::memory_order_relaxed)).c_str(),
               g.max_stretch_ns.load(std::memory_order_relaxed) / 1e6);
  if (cfg.iterations != 0 && seeds < cfg.iterations && !stopped_early)
    std::fprintf(out,
                 "note: --duration (%.1f s) ended the run after %" PRIu64 " of %" PRIu64
                 " %s; give a longer --duration to run them all\n",
                 cfg.duration.count(), seeds, cfg.iterations, cfg.sim ? "seeds" : "rounds");
  if (cfg.sim)
    std::fprintf(
        out, "resume points %s (%.0f/s)%s\n",
        fmt_count(g.resume_points.load(std::memory_order_relaxed)).c_str(),
        g.resume_points.load(std::memory_order_relaxed) / secs,
        replays_checked != 0
            ? strprintf("; %" PRIu64 " seeds run twice with identical traces", replays_checked)
                  .c_str()
            : "");
  else
    std::fprintf(out,
                 "bodies that began after a cancel() that found them unstarted (a race on a real "
                 "runtime): %s\n",
                 fmt_count(g.started_after_cancel.load(std::memory_order_relaxed)).c_str());
}

// "all invariants held", or each failure with the command that replays it.
void print_failures(const config& cfg, const std::vector<failure_t>& failures) {
  FILE* out = cfg.out;
  if (failures.empty()) {
    std::fprintf(out, "all invariants held\n");
  } else {
    std::fprintf(out, "\nINVARIANT VIOLATIONS in %zu round(s):\n", failures.size());
    for (const auto& f : failures) {
      std::fprintf(out, "  seed %" PRIu64 "%s%s:\n", f.seed,
                   f.cancel_at ? strprintf(" cancel_at %" PRIu64, f.cancel_at).c_str() : "",
                   f.hang ? " (hang)" : "");
      std::size_t k = 0;
      for (const auto& v : f.violations) {
        if (++k > 8) {
          std::fprintf(out, "    ... %zu more\n", f.violations.size() - 8);
          break;
        }
        std::fprintf(out, "    %s\n", v.c_str());
      }
      if (cfg.sim)
        std::fprintf(out, "    replay: %s\n", replay_command(cfg, f.seed, f.cancel_at).c_str());
    }
  }
}

// The run as JSON (--json).
void write_json(const config& cfg, double secs, std::uint64_t seeds, std::uint64_t rounds, int code,
                const std::vector<failure_t>& failures) {
  FILE* out = cfg.out;
  auto& g = global_figures();
  const std::uint64_t tasks = total(&scenario_figures::spawned);
  std::ofstream j(cfg.json_path);
  j << "{\n  \"seed\": " << cfg.seed << ",\n  \"mode\": \"" << (cfg.sim ? "simulation" : "real")
    << "\",\n  \"workers\": " << cfg.workers << ",\n  \"scenarios\": \""
    << scenario_list(cfg.scenarios) << "\",\n  \"tasks_per_scenario\": " << cfg.tasks
    << ",\n  \"cancel_rate\": " << cfg.cancel_rate << ",\n  \"seconds\": " << secs
    << ",\n  \"rounds\": " << rounds << ",\n  \"seeds\": " << seeds
    << ",\n  \"seeds_per_second\": " << seeds / secs << ",\n  \"tasks\": " << tasks
    << ",\n  \"tasks_per_second\": " << tasks / secs
    << ",\n  \"steals\": " << g.steals.load(std::memory_order_relaxed)
    << ",\n  \"resume_points\": " << g.resume_points.load(std::memory_order_relaxed)
    << ",\n  \"max_stretch_ms\": " << g.max_stretch_ns.load(std::memory_order_relaxed) / 1e6
    << ",\n  \"violations\": " << g.violations.load(std::memory_order_relaxed)
    << ",\n  \"exit_code\": " << code << ",\n  \"per_scenario\": {";
  bool first = true;
  for (std::uint32_t i = 0; i <= kScenarioCount; ++i) {
    auto& p = g.per[i];
    if (p.spawned.load(std::memory_order_relaxed) == 0) continue;
    j << (first ? "\n" : ",\n") << "    \"" << (i < kScenarioCount ? kNames[i] : "drivers")
      << "\": {\"tasks\": " << p.spawned.load(std::memory_order_relaxed)
      << ", \"values\": " << p.values.load(std::memory_order_relaxed)
      << ", \"cancelled\": " << p.cancelled.load(std::memory_order_relaxed)
      << ", \"errors\": " << p.errors.load(std::memory_order_relaxed)
      << ", \"refused\": " << p.refused.load(std::memory_order_relaxed)
      << ", \"timeouts\": " << p.timeouts.load(std::memory_order_relaxed)
      << ", \"cancels\": " << p.cancels.load(std::memory_order_relaxed) << "}";
    first = false;
  }
  j << "\n  },\n  \"failures\": [";
  first = true;
  for (const auto& f : failures) {
    j << (first ? "\n" : ",\n") << "    {\"seed\": " << f.seed << ", \"cancel_at\": " << f.cancel_at
      << ", \"first\": \"";
    for (char ch : f.violations.empty() ? std::string() : f.violations.front()) {
      if (ch == '"' || ch == '\\') j << '\\';
      j << ch;
    }
    j << "\"}";
    first = false;
  }
  j << "\n  ]\n}\n";
  std::fprintf(out, "JSON summary written to %s\n", cfg.json_path.c_str());
}

int run(const config& cfg) {
  using namespace std::chrono;
  FILE* out = cfg.out;
  print_config(cfg, out);
  const auto t0 = steady_clock::now();
  auto elapsed = [&] { return duration<double>(steady_clock::now() - t0).count(); };

  std::thread dog(watchdog_main, &cfg);
  std::mutex rep_mu;
  std::condition_variable rep_cv;
  bool rep_stop = false;
  std::atomic<std::uint64_t> seeds{0};
  std::thread reporter([&] {
    std::unique_lock lk(rep_mu);
    while (!rep_stop) {
      rep_cv.wait_for(lk, cfg.progress_interval);
      if (rep_stop) break;
      // Relaxed: a progress counter.
      if (!cfg.quiet) progress_line(cfg, elapsed(), seeds.load(std::memory_order_relaxed));
    }
  });

  std::vector<failure_t> failures;
  std::uint64_t rounds = 0, hangs = 0;
  auto one = [&](std::uint64_t seed, std::uint64_t cancel_at,
                 std::vector<weft::sim::event>* trace) -> round_report {
    // Relaxed: published by the release store of the start time below.
    g_round_seed.store(seed, std::memory_order_relaxed);
    g_round_started_ns.store(wall_ns(), std::memory_order_release);
    round_report r = run_round(cfg, seed, cancel_at, trace);
    g_round_started_ns.store(0, std::memory_order_release);
    ++rounds;
    if (r.hang) ++hangs;
    if (!r.violations.empty() && failures.size() < kMaxFailures)
      failures.push_back({seed, cancel_at, r.violations, r.hang});
    return r;
  };
  const bool single = cfg.iterations == 1;
  std::vector<weft::sim::event> single_trace;
  std::uint64_t replays_checked = 0;
  // check_replay: the same seed twice, full traces compared event by event.
  auto replay_check = [&](std::uint64_t seed, std::uint64_t cancel_at) {
    std::vector<weft::sim::event> t1, t2;
    round_report a = one(seed, cancel_at, &t1);
    round_report b = run_round(cfg, seed, cancel_at, &t2);
    std::size_t i = 0;
    while (i < t1.size() && i < t2.size() && t1[i] == t2[i]) ++i;
    if (i == t1.size() && i == t2.size() && a.violations == b.violations) {
      ++replays_checked;
      return a;
    }
    std::string why =
        strprintf("replay diverged at event %zu of %zu/%zu: ", i, t1.size(), t2.size()) +
        (i < t1.size() ? t1[i].to_string() : std::string("(end)")) + " vs " +
        (i < t2.size() ? t2[i].to_string() : std::string("(end)"));
    if (failures.size() < kMaxFailures) failures.push_back({seed, cancel_at, {why}, false});
    add(global_figures().violations);
    return a;
  };
  for (std::uint64_t i = 0; cfg.iterations == 0 || i < cfg.iterations; ++i) {
    if (i > 0 && elapsed() >= cfg.duration.count()) break;
    const std::uint64_t seed = cfg.seed + i;
    const bool trace_this = cfg.sim && single && !cfg.trace_path.empty();
    round_report base = cfg.sim && cfg.check_replay && !trace_this
                            ? replay_check(seed, cfg.cancel_at)
                            : one(seed, cfg.cancel_at, trace_this ? &single_trace : nullptr);
    if (trace_this) write_trace(cfg, seed, cfg.cancel_at, single_trace, base);
    if (cfg.sim && cfg.explore == explore_mode::cancel_points && cfg.cancel_at == 0) {
      const std::uint64_t k_max = base.resume_points;
      const std::uint64_t count = std::min(k_max, cfg.max_cancel_points);
      for (std::uint64_t j = 1; j <= count; ++j) {
        const std::uint64_t k = count == k_max ? j : 1 + (j - 1) * k_max / count;
        (void)one(seed, k, nullptr);
        if (elapsed() >= cfg.duration.count() && cfg.iterations == 0) break;
      }
    }
    seeds.fetch_add(1, std::memory_order_relaxed);  // a counter (the reporter reads it)
    if (!failures.empty() && failures.size() >= kMaxFailures) break;
  }
  {
    std::lock_guard lk(rep_mu);
    rep_stop = true;
  }
  rep_cv.notify_all();
  reporter.join();
  // Every counter read from here on is read after the rounds ended and the
  // reporter joined (relaxed: counters, ordered by those joins).
  const double secs = elapsed();
  if (!cfg.quiet) progress_line(cfg, secs, seeds.load(std::memory_order_relaxed));

  // Replay the first failure with a trace (a simulation replays exactly).
  if (cfg.sim && !failures.empty() && !single) {
    const auto& f0 = failures.front();
    std::vector<weft::sim::event> trace;
    round_report again = run_round(cfg, f0.seed, f0.cancel_at, &trace);
    const bool same =
        again.violations.size() == f0.violations.size() &&
        std::equal(again.violations.begin(), again.violations.end(), f0.violations.begin());
    std::fprintf(out, "replay of seed %" PRIu64 "%s: %s\n", f0.seed,
                 f0.cancel_at ? strprintf(" (cancel_at %" PRIu64 ")", f0.cancel_at).c_str() : "",
                 same ? "the same violations again (deterministic)"
                      : "DIFFERENT violations -- the simulation is not deterministic here");
    if (!same) failures.push_back({f0.seed, f0.cancel_at, {"replay diverged"}, false});
    if (!cfg.trace_path.empty()) write_trace(cfg, f0.seed, f0.cancel_at, trace, again);
  }

  print_summary(cfg, secs, seeds.load(std::memory_order_relaxed), rounds, replays_checked,
                failures.size() >= kMaxFailures);
  const int code = failures.empty() ? 0 : (hangs > 0 ? 3 : 1);
  print_failures(cfg, failures);
  if (!cfg.json_path.empty()) {
    write_json(cfg, secs, seeds.load(std::memory_order_relaxed), rounds, code, failures);
  }
  std::fflush(out);
  g_run_done.store(true, std::memory_order_release);
  dog.join();
  return code;
}

}  // namespace weft_stress
