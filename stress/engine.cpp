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
#include <cctype>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
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

bool parse_scenarios(const std::string& text, const std::vector<weft::stress::scenario>& user,
                     std::uint32_t* bits, std::vector<const weft::stress::scenario*>* chosen,
                     std::string* error) {
  std::uint32_t out = 0;
  std::vector<const weft::stress::scenario*> picked;
  auto pick = [&](const weft::stress::scenario* s) {
    if (std::find(picked.begin(), picked.end(), s) == picked.end()) picked.push_back(s);
  };
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string name = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (name.empty()) continue;
    if (name == "all") {
      out |= kAllScenarios;
      for (const auto& u : user)
        if (!u.only_by_name) pick(&u);
      continue;
    }
    if (name == "core") {
      out |= kCoreScenarios;
      continue;
    }
    bool found = false;
    for (std::uint32_t i = 0; i < kScenarioCount; ++i) {
      if (name == kNames[i]) {
        out |= 1u << i;
        found = true;
      }
    }
    for (const auto& u : user) {
      if (name == u.name) {
        pick(&u);
        found = true;
      }
    }
    if (!found) {
      *error = "unknown scenario '" + name + "' (";
      for (const auto& u : user) {
        *error += u.name;
        *error += ", ";
      }
      *error +=
          "storm, cancel, timeout, checkpoint, group, cleanup, shutdown, outside, compose, fork, "
          "core, all)";
      return false;
    }
  }
  if (out == 0 && picked.empty()) {
    *error = "no scenario selected";
    return false;
  }
  *bits = out;
  *chosen = std::move(picked);
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

std::string scenario_list(const config& cfg) {
  std::string s;
  for (const auto* u : cfg.user) {
    if (!s.empty()) s += ",";
    s += u->name;
  }
  const std::string builtin = scenario_list(cfg.scenarios);
  if (!s.empty() && !builtin.empty()) s += ",";
  return s + builtin;
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

// ------------------------------------------------------------ weft::stress::context

}  // namespace weft_stress

namespace weft::stress {

context::~context() = default;

std::uint64_t context::next() noexcept {
  weft::detail::splitmix64 g(gen_);  // gen_ is the generator's state
  const std::uint64_t v = g.next();
  gen_ = g.state;
  return v;
}

std::uint64_t context::below(std::uint64_t n) noexcept { return n == 0 ? 0 : next() % n; }

bool context::chance(double p) noexcept {
  return static_cast<double>(next() >> 11) * 0x1.0p-53 < p;
}

unsigned context::tasks() const noexcept {
  return static_cast<weft_stress::round_ctx*>(engine_)->cfg->tasks;
}

double context::cancel_rate() const noexcept {
  return static_cast<weft_stress::round_ctx*>(engine_)->cfg->cancel_rate;
}

bool context::simulated() const noexcept {
  return static_cast<weft_stress::round_ctx*>(engine_)->sim;
}

bool context::cut_short() const noexcept {
  const auto* c = static_cast<weft_stress::round_ctx*>(engine_);
  return c->shutdown_round || c->cancel_at != 0;
}

void context::violation(const std::string& what) {
  auto* c = static_cast<weft_stress::round_ctx*>(engine_);
  c->violation(nullptr, c->cfg->user[index_]->name + ": " + what);
}

void context::note(std::string text) {
  if (static_cast<weft_stress::round_ctx*>(engine_)->sim && weft::sim::in_simulation())
    weft::sim::note(std::move(text));
}

void context::spawned(std::uint64_t n) noexcept {
  auto* c = static_cast<weft_stress::round_ctx*>(engine_);
  weft_stress::add(weft_stress::global_figures().per[weft_stress::kUserBase + index_].spawned, n);
  weft_stress::add(c->spawned[weft_stress::kUserBase + index_], n);
}

void context::ended(ending how) noexcept {
  auto& f = weft_stress::global_figures();
  auto& p = f.per[weft_stress::kUserBase + index_];
  weft_stress::add(how == ending::value       ? p.values
                   : how == ending::cancelled ? p.cancelled
                                              : p.errors);
  weft_stress::add(f.taken);
  weft_stress::add(static_cast<weft_stress::round_ctx*>(engine_)->progress);
}

void context::count_cancel(const std::string& reason, bool ok) {
  weft_stress::add(weft_stress::global_figures().per[weft_stress::kUserBase + index_].cancels);
  note(reason + " -> " + (ok ? "true" : "false"));
}

std::unique_ptr<context> detail::context_access::make(weft_stress::round_ctx* c, std::uint32_t i,
                                                      std::uint64_t seed) {
  std::unique_ptr<context> x(new context);
  x->engine_ = c;
  x->index_ = i;
  // The scenario's seed: the round's, mixed with its name (so that adding a
  // scenario to the selection does not change another's choices).
  std::uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a over the name
  for (unsigned char ch : c->cfg->user[i]->name) h = (h ^ ch) * 0x100000001B3ull;
  x->seed_ = weft_stress::mix(seed ^ h);
  x->gen_ = weft_stress::mix(x->seed_);
  return x;
}

}  // namespace weft::stress

namespace weft_stress {

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
std::string dump_registry(round_ctx& c, std::size_t max) {
  std::string out;
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
    if (shown++ < max) out += "  " + describe(*r) + "\n";
  }
  if (shown > max) out += strprintf("  ... and %zu more\n", shown - max);
  out += strprintf("  (%zu of %" PRIu64
                   " tracked tasks have not finished; %zu more finished but "
                   "their owner has not taken the outcome)\n",
                   unfinished, n, untaken);
  return out;
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
  per += cfg.user.size();
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
  for (std::uint32_t i = 0; i < cfg.user.size(); ++i)
    c->user.push_back(weft::stress::detail::context_access::make(c, i, seed));
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
    const bool shutdown_only = (cfg.scenarios & ~(kShutdown | kOutside)) == 0 && cfg.user.empty();
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
    add(global_figures().steals, rt.stats().total.steals);
    sim_outside.clear();
    root = {};
    static std::atomic<int> dumps{0};  // the first three hangs of a run only
    if (rep.hang && !cfg.quiet && dumps.fetch_add(1, std::memory_order_relaxed) < 3) {
      std::fprintf(stderr,
                   "weft-stress: seed %" PRIu64
                   ": the simulation reports a hang.  Tracked tasks not finished:\n",
                   seed);
      std::fputs(dump_registry(*c, 40).c_str(), stderr);
    }
    c->rt = nullptr;
  }  // the runtime shuts down and is destroyed here

  rep.tasks = check_records(c);
  check_contract(c);
  // The user scenarios' own invariants; an exception out of a check is one too.
  for (std::uint32_t i = 0; i < cfg.user.size(); ++i) {
    const weft::stress::scenario& u = *cfg.user[i];
    if (!u.check) continue;
    try {
      u.check(*c->user[i]);
    } catch (...) {
      c->violation(nullptr,
                   u.name + ": its check threw " + weft::describe(std::current_exception()));
    }
  }
  c->user.clear();
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
  std::string s = strprintf("%s%s --seed=%" PRIu64
                            " --iterations=1 --workers=%u "
                            "--scenario=%s --tasks=%u --cancel_rate=%g",
                            cfg.program.c_str(), cfg.sim ? " --sim" : "", seed, cfg.workers,
                            scenario_list(cfg).c_str(), cfg.tasks, cfg.cancel_rate);
  if (cfg.sim && cfg.policy == weft::sim::policy::pct)
    s += strprintf(" --sim_policy=pct --pct_depth=%u --pct_steps=%" PRIu64, cfg.pct_depth,
                   derived_pct_steps(cfg));
  if ((cfg.scenarios & kCompose) != 0 && cfg.compose_cases != kAllComposeCases)
    s += " --compose=" + compose_case_list(cfg.compose_cases);
  if (cancel_at != 0) s += strprintf(" --cancel_at=%" PRIu64, cancel_at);
  if (cfg.sim) s += " --trace=trace.txt";
  return s;
}

namespace {

std::atomic<bool> g_run_done{false};
std::atomic<std::int64_t> g_round_started_ns{0};
std::atomic<std::uint64_t> g_round_seed{0};

// The figures' row names: built-in scenarios, the drivers, user scenarios.
std::string figure_name(const config& cfg, std::uint32_t i, bool json) {
  if (i < kScenarioCount) return kNames[i];
  if (i == kScenarioCount) return json ? "drivers" : "(drivers)";
  return cfg.user[i - kUserBase]->name;
}
std::uint32_t figure_rows(const config& cfg) {
  return kUserBase + static_cast<std::uint32_t>(cfg.user.size());
}

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
               scenario_list(cfg).c_str(), cfg.tasks, cfg.cancel_rate, cfg.cancel_bound.count(),
               cfg.watchdog.count(), static_cast<long long>(cfg.time_slice.count()));
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

// 75 s -> "1m15s", 3700 s -> "1h01m", 8.2 s -> "8s".
std::string fmt_span(double secs) {
  if (!(secs >= 0) || std::isinf(secs)) return "?";
  const auto t = static_cast<std::uint64_t>(std::llround(secs));
  if (t >= 3600) return strprintf("%" PRIu64 "h%02" PRIu64 "m", t / 3600, t % 3600 / 60);
  if (t >= 60) return strprintf("%" PRIu64 "m%02" PRIu64 "s", t / 60, t % 60);
  return strprintf("%" PRIu64 "s", t);
}

// A run's figures start at zero (a program may run more than once).  Called
// before the run's threads start (relaxed stores: they publish nothing).
void reset_figures() {
  auto& g = global_figures();
  for (auto& p : g.per) {
    for (auto* m : {&p.spawned, &p.values, &p.cancelled, &p.errors, &p.refused, &p.timeouts,
                    &p.cancels, &p.cancels_late_false})
      m->store(0, std::memory_order_relaxed);
  }
  for (auto* m :
       {&g.taken, &g.steals, &g.resume_points, &g.rounds, &g.violations, &g.started_after_cancel})
    m->store(0, std::memory_order_relaxed);
  g.max_stretch_ns.store(0, std::memory_order_relaxed);
}

std::uint64_t total(std::atomic<std::uint64_t> scenario_figures::* m) {
  std::uint64_t t = 0;
  for (auto& p : global_figures().per) t += (p.*m).load(std::memory_order_relaxed);
  return t;
}

// How far the run is: "seeds 1,234 of 10,000 (12%), 1m05s left" -- the time
// left from --duration, or estimated from the rate so far for a counted run
// (whichever ends it first).
std::string progress_of(const config& cfg, double secs, std::uint64_t seeds) {
  std::string s = strprintf("%s %s", cfg.sim ? "seeds" : "rounds", fmt_count(seeds).c_str());
  const double by_duration = cfg.duration.count() - secs;
  double left = by_duration;
  bool estimate = false;
  if (cfg.iterations != 0) {
    s += strprintf(" of %s (%.0f%%)", fmt_count(cfg.iterations).c_str(),
                   100.0 * static_cast<double>(seeds) / static_cast<double>(cfg.iterations));
    if (seeds >= cfg.iterations) return s + ", 0s left";
    if (seeds != 0) {
      const double rate = static_cast<double>(seeds) / std::max(secs, 1e-9);
      const double by_rate = static_cast<double>(cfg.iterations - seeds) / rate;
      estimate = by_rate < by_duration;
      left = std::min(left, by_rate);
    }
  }
  if (std::isinf(left)) return s + ", time left not known yet";
  return s + ", " + (estimate ? "about " : "") + fmt_span(std::max(left, 0.0)) + " left";
}

void progress_line(const config& cfg, double secs, std::uint64_t seeds) {
  auto& f = global_figures();
  std::uint64_t steals = f.steals.load(std::memory_order_relaxed);
  {
    std::lock_guard lk(g_live_mu);
    if (g_live_rt != nullptr) steals += g_live_rt->stats().total.steals;
  }
  const std::uint64_t done = f.taken.load(std::memory_order_relaxed);
  std::fprintf(cfg.out,
               "[%7.1fs] %s  tasks done %s (%s/s)  cancels %s  timeouts %s  steals %s  "
               "max stretch %.3f ms  violations %s\n",
               secs, progress_of(cfg, secs, seeds).c_str(), fmt_count(done).c_str(),
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

// One run's failures: each seed (and cancel point) that broke an invariant.
struct failure_t {
  std::uint64_t seed, cancel_at;
  std::vector<std::string> violations;
  bool hang;
};
constexpr std::size_t kMaxFailures = 20;  // a run stops collecting (and running) here

// What the JSON report says beyond the counters; filled as the run goes, so
// that the watchdog can write it when a round hangs.  Guarded by g_report_mu.
struct run_state {
  const config* cfg = nullptr;
  std::chrono::steady_clock::time_point t0;
  std::vector<failure_t> failures;
  std::uint64_t rounds = 0;
  std::uint64_t seeds = 0;
};
std::mutex g_report_mu;
run_state* g_report = nullptr;  // the run in progress; guarded by g_report_mu

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20)
          out += strprintf("\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(ch)));
        else
          out += ch;
    }
  }
  return out + "\"";
}

// The watchdog's finding, for the JSON report.
struct hang_t {
  std::uint64_t seed = 0;
  double seconds = 0;
  std::string dump;
};

// The run as JSON (--json), on every way the run ends: `code` is the exit
// code; `hang` the watchdog's finding, if it fired.
void write_json(const config& cfg, double secs, std::uint64_t seeds, std::uint64_t rounds, int code,
                const std::vector<failure_t>& failures, const hang_t* hang) {
  auto& g = global_figures();
  const std::uint64_t tasks = total(&scenario_figures::spawned);
  const double per_sec = secs > 0 ? 1.0 / secs : 0.0;
  std::ofstream j(cfg.json_path);
  j << "{\n  \"seed\": " << cfg.seed << ",\n  \"mode\": \"" << (cfg.sim ? "simulation" : "real")
    << "\",\n  \"workers\": " << cfg.workers
    << ",\n  \"scenarios\": " << json_string(scenario_list(cfg))
    << ",\n  \"tasks_per_scenario\": " << cfg.tasks << ",\n  \"cancel_rate\": " << cfg.cancel_rate
    << ",\n  \"iterations\": " << cfg.iterations << ",\n  \"seconds\": " << secs
    << ",\n  \"rounds\": " << rounds << ",\n  \"seeds\": " << seeds
    << ",\n  \"seeds_per_second\": " << static_cast<double>(seeds) * per_sec
    << ",\n  \"tasks\": " << tasks
    << ",\n  \"tasks_per_second\": " << static_cast<double>(tasks) * per_sec
    << ",\n  \"steals\": " << g.steals.load(std::memory_order_relaxed)
    << ",\n  \"resume_points\": " << g.resume_points.load(std::memory_order_relaxed)
    << ",\n  \"max_stretch_ms\": " << g.max_stretch_ns.load(std::memory_order_relaxed) / 1e6
    << ",\n  \"violations\": " << g.violations.load(std::memory_order_relaxed)
    << ",\n  \"exit_code\": " << code << ",\n  \"result\": \""
    << (code == 0   ? "passed"
        : code == 1 ? "violation"
        : code == 3 ? "hang"
                    : "error")
    << "\",\n  \"per_scenario\": {";
  bool first = true;
  for (std::uint32_t i = 0; i < figure_rows(cfg); ++i) {
    auto& p = g.per[i];
    if (p.spawned.load(std::memory_order_relaxed) == 0) continue;
    j << (first ? "\n" : ",\n") << "    " << json_string(figure_name(cfg, i, true))
      << ": {\"tasks\": " << p.spawned.load(std::memory_order_relaxed)
      << ", \"values\": " << p.values.load(std::memory_order_relaxed)
      << ", \"cancelled\": " << p.cancelled.load(std::memory_order_relaxed)
      << ", \"errors\": " << p.errors.load(std::memory_order_relaxed)
      << ", \"refused\": " << p.refused.load(std::memory_order_relaxed)
      << ", \"timeouts\": " << p.timeouts.load(std::memory_order_relaxed)
      << ", \"cancels\": " << p.cancels.load(std::memory_order_relaxed) << "}";
    first = false;
  }
  j << "\n  },\n  \"watchdog\": ";
  if (hang == nullptr) {
    j << "null";
  } else {
    j << "{\"seed\": " << hang->seed << ", \"seconds\": " << hang->seconds
      << ", \"replay\": " << json_string(replay_command(cfg, hang->seed, 0))
      << ", \"dump\": " << json_string(hang->dump) << "}";
  }
  j << ",\n  \"failures\": [";
  first = true;
  for (const auto& f : failures) {
    j << (first ? "\n" : ",\n") << "    {\"seed\": " << f.seed << ", \"cancel_at\": " << f.cancel_at
      << ", \"hang\": " << (f.hang ? "true" : "false")
      << ", \"replay\": " << json_string(replay_command(cfg, f.seed, f.cancel_at))
      << ", \"first\": " << json_string(f.violations.empty() ? "" : f.violations.front())
      << ", \"violations\": [";
    for (std::size_t k = 0; k < f.violations.size(); ++k)
      j << (k ? ", " : "") << json_string(f.violations[k]);
    j << "]}";
    first = false;
  }
  j << "\n  ]\n}\n";
  j.close();
  std::fprintf(cfg.out, "JSON summary written to %s\n", cfg.json_path.c_str());
}

void watchdog_main(const config* cfg) {
  using namespace std::chrono;
  const auto limit = duration_cast<nanoseconds>(cfg->watchdog).count();
  while (!g_run_done.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(milliseconds(100));
    const std::int64_t started = g_round_started_ns.load(std::memory_order_acquire);
    if (started == 0 || wall_ns() - started < limit) continue;
    // Relaxed: stored before the round's start time, whose release store the
    // acquire load above pairs with.
    hang_t hang;
    hang.seed = g_round_seed.load(std::memory_order_relaxed);
    hang.seconds = static_cast<double>(wall_ns() - started) / 1e9;
    {
      std::lock_guard lk(g_live_mu);
      // The stress tool's own list stays: it knows what dump() cannot (the
      // cancels it sent, the bodies that ended, the outcomes not taken yet);
      // the runtime's dump adds where each task is (running on which worker,
      // queued, sleeping, blocked, awaiting which).  A simulation may only be
      // dumped from its owner thread: not from here.
      if (g_live_ctx != nullptr) hang.dump = dump_registry(*g_live_ctx, 200);
      if (g_live_rt != nullptr && !cfg->sim) {
        try {
          hang.dump += g_live_rt->dump().to_string();
        } catch (...) {
          hang.dump += "  (runtime::dump() failed)\n";
        }
      }
      if (g_live_rt != nullptr) {
        auto st = g_live_rt->stats();
        hang.dump +=
            strprintf("  runtime: steals %" PRIu64 ", parks %" PRIu64 ", injected %" PRIu64 "\n",
                      st.total.steals, st.total.parks, st.total.injected);
      }
    }
    std::fprintf(stderr,
                 "\nweft-stress: WATCHDOG: round with seed %" PRIu64
                 " has run for more than %.0f s: a hang.  Tracked tasks not finished:\n%s",
                 hang.seed, cfg->watchdog.count(), hang.dump.c_str());
    std::fprintf(stderr, "  %s: %s\n", cfg->sim ? "replay" : "rerun",
                 replay_command(*cfg, hang.seed, 0).c_str());
    std::fflush(stderr);
    if (!cfg->json_path.empty()) {
      // The failures so far and the hang; the rounds still running are never
      // joined: the process ends here.
      std::lock_guard lk(g_report_mu);
      if (g_report != nullptr) {
        std::vector<failure_t> failures = g_report->failures;
        failures.push_back({hang.seed,
                            0,
                            {strprintf("hang: the round ran for more than %.0f s (--watchdog)",
                                       cfg->watchdog.count())},
                            true});
        const double secs = duration<double>(steady_clock::now() - g_report->t0).count();
        write_json(*cfg, secs, g_report->seeds, g_report->rounds, 3, failures, &hang);
      }
    }
    std::fflush(cfg->out);
    std::_Exit(3);
  }
}

// The per-scenario table and the run's totals.  `stopped_early`: the run
// ended because kMaxFailures rounds failed.  Called after the rounds ended and
// the reporter joined: the counters are read relaxed (ordered by the joins).
void print_summary(const config& cfg, double secs, std::uint64_t seeds, std::uint64_t rounds,
                   std::uint64_t replays_checked, bool stopped_early) {
  FILE* out = cfg.out;
  auto& g = global_figures();
  std::fprintf(out, "\n%-11s %10s %10s %10s %8s %8s %9s %9s\n", "scenario", "tasks", "values",
               "cancelled", "errors", "refused", "timeouts", "cancels");
  for (std::uint32_t i = 0; i < figure_rows(cfg); ++i) {
    auto& p = g.per[i];
    if (p.spawned.load(std::memory_order_relaxed) == 0) continue;
    std::fprintf(out, "%-11s %10s %10s %10s %8s %8s %9s %9s\n", figure_name(cfg, i, false).c_str(),
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
      std::fprintf(out, "    %s: %s\n", cfg.sim ? "replay" : "rerun (not exact)",
                   replay_command(cfg, f.seed, f.cancel_at).c_str());
    }
  }
}

}  // namespace

int run(const config& cfg) {
  using namespace std::chrono;
  FILE* out = cfg.out;
  print_config(cfg, out);
  const auto t0 = steady_clock::now();
  auto elapsed = [&] { return duration<double>(steady_clock::now() - t0).count(); };

  reset_figures();
  run_state state;
  state.cfg = &cfg;
  state.t0 = t0;
  {
    std::lock_guard lk(g_report_mu);
    g_report = &state;
  }
  g_run_done.store(false, std::memory_order_release);
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

  // `failures` and `rounds` are the main thread's; every change is copied
  // into `state` for the watchdog.
  std::vector<failure_t> failures;
  std::uint64_t rounds = 0, hangs = 0;
  auto add_failure = [&](failure_t f) {
    if (failures.size() >= kMaxFailures) return;
    failures.push_back(f);
    std::lock_guard lk(g_report_mu);
    state.failures.push_back(std::move(f));
  };
  auto one = [&](std::uint64_t seed, std::uint64_t cancel_at,
                 std::vector<weft::sim::event>* trace) -> round_report {
    // Relaxed: published by the release store of the start time below.
    g_round_seed.store(seed, std::memory_order_relaxed);
    g_round_started_ns.store(wall_ns(), std::memory_order_release);
    round_report r = run_round(cfg, seed, cancel_at, trace);
    g_round_started_ns.store(0, std::memory_order_release);
    ++rounds;
    {
      std::lock_guard lk(g_report_mu);
      state.rounds = rounds;
    }
    if (r.hang) ++hangs;
    if (!r.violations.empty()) add_failure({seed, cancel_at, r.violations, r.hang});
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
    add_failure({seed, cancel_at, {why}, false});
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
    const std::uint64_t done = seeds.fetch_add(1, std::memory_order_relaxed) + 1;  // a counter
    {
      std::lock_guard lk(g_report_mu);
      state.seeds = done;
    }
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
    const std::uint64_t seed0 = failures.front().seed;
    const std::uint64_t at0 = failures.front().cancel_at;
    std::vector<weft::sim::event> trace;
    round_report again = run_round(cfg, seed0, at0, &trace);
    const bool same = again.violations == failures.front().violations;
    std::fprintf(out, "replay of seed %" PRIu64 "%s: %s\n", seed0,
                 at0 ? strprintf(" (cancel_at %" PRIu64 ")", at0).c_str() : "",
                 same ? "the same violations again (deterministic)"
                      : "DIFFERENT violations -- the simulation is not deterministic here");
    if (!same) add_failure({seed0, at0, {"replay diverged"}, false});
    if (!cfg.trace_path.empty()) write_trace(cfg, seed0, at0, trace, again);
  }

  // The watchdog stops before the report is written: from here on, only
  // this thread writes it.
  g_run_done.store(true, std::memory_order_release);
  dog.join();
  print_summary(cfg, secs, seeds.load(std::memory_order_relaxed), rounds, replays_checked,
                failures.size() >= kMaxFailures);
  const int code = failures.empty() ? 0 : (hangs > 0 ? 3 : 1);
  print_failures(cfg, failures);
  if (!cfg.json_path.empty()) {
    write_json(cfg, secs, seeds.load(std::memory_order_relaxed), rounds, code, failures, nullptr);
  }
  std::fflush(out);
  {
    std::lock_guard lk(g_report_mu);
    g_report = nullptr;
  }
  return code;
}

int usage_error(const std::string& program, const std::string& json_path, const std::string& what) {
  std::string name = program;
  if (const auto slash = name.rfind('/'); slash != std::string::npos) name.erase(0, slash + 1);
  std::fprintf(stderr, "%s: %s (see --help)\n", name.c_str(), what.c_str());
  if (!json_path.empty()) {
    std::ofstream j(json_path);
    j << "{\n  \"exit_code\": 2,\n  \"result\": \"usage error\",\n  \"error\": "
      << json_string(what) << ",\n  \"failures\": []\n}\n";
  }
  return weft::stress::kUsageError;
}

}  // namespace weft_stress

// ------------------------------------------------------------ the public entry

int weft::stress::run(const config& given, const std::vector<scenario>& scenarios) {
  weft_stress::config cfg;
  static_cast<config&>(cfg) = given;
  auto bad = [&](const std::string& what) {
    return weft_stress::usage_error(given.program, given.json_path, what);
  };
  if (scenarios.size() > weft_stress::kMaxUserScenarios)
    return bad("more than " + std::to_string(weft_stress::kMaxUserScenarios) +
               " scenarios registered");
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    const std::string& n = scenarios[i].name;
    const bool ok_name = !n.empty() && std::all_of(n.begin(), n.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
    });
    if (!ok_name) return bad("scenario name '" + n + "': use letters, digits, '_' and '-'");
    std::uint32_t bits = 0;
    std::vector<const scenario*> none;
    std::string ignored;
    if (n == "all" || n == "core" || weft_stress::parse_scenarios(n, {}, &bits, &none, &ignored))
      return bad("scenario name '" + n + "' is taken by a built-in scenario");
    for (std::size_t k = 0; k < i; ++k)
      if (scenarios[k].name == n) return bad("scenario '" + n + "' registered twice");
    if (!scenarios[i].run) return bad("scenario '" + n + "' has no run function");
  }
  std::string error;
  // No selection: the registered scenarios, or (none registered) all.
  std::string selection = given.scenario;
  if (selection.empty()) {
    for (const auto& s : scenarios)
      if (!s.only_by_name) selection += (selection.empty() ? "" : ",") + s.name;
    if (selection.empty()) selection = "all";
  }
  if (!weft_stress::parse_scenarios(selection, scenarios, &cfg.scenarios, &cfg.user, &error))
    return bad(error);
  if (!weft_stress::parse_compose_cases(given.compose, &cfg.compose_cases, &error))
    return bad(error);
  if (cfg.workers == 0 || cfg.workers > 64) return bad("--workers must be 1..64");
  if (cfg.duration.count() < 0) return bad("--duration must not be negative");
  if (!(cfg.cancel_rate >= 0 && cfg.cancel_rate <= 1))
    return bad("--cancel_rate must be in [0, 1]");
  if (cfg.tasks == 0) return bad("--tasks must be at least 1");
  if (cfg.time_slice.count() <= 0) return bad("--time_slice must be positive");
  if (!(cfg.watchdog.count() > 0)) return bad("--watchdog must be positive");
  if (!(cfg.progress_interval.count() > 0)) return bad("--progress_interval must be positive");
  if (!cfg.sim &&
      (cfg.explore != explore_mode::none || cfg.cancel_at != 0 || !cfg.trace_path.empty() ||
       cfg.policy != weft::sim::policy::random || cfg.check_replay)) {
    return bad("--explore, --cancel_at, --trace, --check_replay and --sim_policy need --sim");
  }
  if (cfg.seed == 0) {
    std::random_device rd;
    cfg.seed = (static_cast<std::uint64_t>(rd()) << 32 | rd()) % 1'000'000'000 + 1;
  }
  // A count alone is run in full: a default time bound applies only to runs
  // that name no count (asking for 10^4 seeds and getting 2,000 is a trap).
  if (cfg.duration.count() == 0) {
    cfg.duration = cfg.iterations != 0
                       ? std::chrono::duration<double>(std::numeric_limits<double>::infinity())
                       : std::chrono::duration<double>(10.0);
  }
  return weft_stress::run(cfg);
}
