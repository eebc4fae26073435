// SPDX-License-Identifier: MIT
// stress/internal.hpp -- what the scenarios and the round runner share: the
// registry of tracked tasks, the round context, and the helpers every
// scenario uses to spawn, cancel and observe a task.
//
// Rules the scenario code keeps (g++ 12 and C++20 coroutine pitfalls,
// docs/pitfalls.md):
//   * no co_await inside a catch handler (ill-formed): handlers record, the
//     awaiting happens after;
//   * no capturing lambda temporary in a co_await full-expression;
//   * coroutine parameters by value or pointer; a reference only to an object
//     in the awaiting frame of a direct await;
//   * no shared random generator between tasks (each task owns one, seeded
//     from its parent), so that on the real runtime the scenario's choices do
//     not depend on thread interleavings either.
#pragma once

#include <weft/weft.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "splitmix.hpp"  // runtime/: the project's one seeded generator
#include "stress.hpp"

namespace weft_stress {

// splitmix64 (runtime/splitmix.hpp), owned by one task; the seed is spread
// first, so that neighbouring seeds start far apart.
struct rng : weft::detail::splitmix64 {
  explicit rng(std::uint64_t seed) noexcept
      : splitmix64(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  bool chance(double p) noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }
};

inline std::uint64_t mix(std::uint64_t x) noexcept {
  return rng(x ^ 0xA5A5'5A5A'F00D'BEEFull).next();
}

// The scenario clock: virtual time inside a simulation's tasks, steady_clock
// elsewhere (weft::sim::now() does both).
inline std::int64_t clock_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(weft::sim::now().time_since_epoch())
      .count();
}
inline std::int64_t wall_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------ the registry

enum class task_state : std::uint8_t { created, running, suspended, finished };
const char* to_string(task_state s) noexcept;

// One tracked task.  Every field the watchdog reads while the tasks run is
// atomic.  `ready` publishes the plain identity fields written by make()
// (release there, acquire in the dump); the contract ledger's plain fields
// are guarded by the ledger's mutex.
struct record {
  std::atomic<bool> ready{false};
  std::uint64_t id = 0;
  std::uint32_t scenario_index = 0;
  const char* file = "";
  std::uint32_t line = 0;

  std::atomic<task_state> state{task_state::created};
  std::atomic<const char*> at{"not started"};  // where it is (what it awaits)
  std::atomic<std::uint32_t> bodies{0};        // body entered
  std::atomic<std::uint32_t> cleanups{0};      // body's guard destroyed
  std::atomic<std::uint32_t> taken{0};         // outcome observed by its owner
  std::atomic<std::uint8_t> outcome{0};        // 0 none, 1 value, 2 cancelled, 3 exception
  std::atomic<std::int64_t> cancel_ns{
      0};  // clock_ns() of the first cancel() that returned true while it ran
  std::atomic<std::int64_t> finish_ns{0};        // clock_ns() when its body ended
  std::atomic<bool> cancel_before_start{false};  // a cancel() returned true before the body began
  std::atomic<bool> cancel_sent{false};
  std::atomic<bool> infinite{false};    // waits until cancelled
  std::atomic<bool> saw_cancel{false};  // its body caught a cancelled_error
  std::atomic<bool> refused{false};     // ... and returned a value instead
  std::atomic<bool> threw{false};       // its body threw its planned failure

  // The contract ledger (see there).  `parent`: the tracked task that spawned
  // it and takes its outcome (null for the round's drivers and outside
  // spawns); written by make() before `ready`.
  record* parent = nullptr;
  // Its handle reported completed_despite_cancel() when its outcome was taken.
  std::atomic<bool> despite{false};
  // Guarded by the ledger's mutex: the tracked requests made for it, and the
  // ledger clock of its last observation of a cancelled_error.
  std::vector<std::uint64_t> requests;
  std::uint64_t last_observed = 0;
};

class registry {
 public:
  static constexpr std::size_t kChunk = 4096;
  static constexpr std::size_t kMaxChunks = 4096;  // 16 M records per round

  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  record* make(std::uint32_t scenario_index, std::source_location where, record* parent = nullptr);
  std::uint64_t size() const noexcept;
  record* at(std::uint64_t i) const noexcept;  // null when not (yet) allocated

 private:
  std::unique_ptr<std::atomic<record*>[]> chunks_;
  std::atomic<std::uint64_t> next_{0};
  std::mutex grow_;
};

// ------------------------------------------------------------ counters

// Process-wide figures for progress lines and the summary (relaxed atomics:
// counters that publish nothing).
struct scenario_figures {
  std::atomic<std::uint64_t> spawned{0}, values{0}, cancelled{0}, errors{0}, refused{0},
      timeouts{0}, cancels{0}, cancels_late_false{0};
};

struct figures {
  // Built-in scenarios, the round's own tasks (the drivers), user scenarios.
  std::array<scenario_figures, kUserBase + kMaxUserScenarios> per;
  std::atomic<std::uint64_t> taken{0};
  std::atomic<std::uint64_t> steals{0};
  std::atomic<std::uint64_t> resume_points{0};
  std::atomic<std::uint64_t> rounds{0};
  std::atomic<std::uint64_t> violations{0};
  std::atomic<std::int64_t> max_stretch_ns{0};
  std::atomic<std::uint64_t> started_after_cancel{0};  // real runtime: a cancel raced the start
};
figures& global_figures();

inline void add(std::atomic<std::uint64_t>& a, std::uint64_t d = 1) noexcept {
  a.fetch_add(d, std::memory_order_relaxed);
}
void note_stretch(std::int64_t ns) noexcept;

// ------------------------------------------------------------ the contract ledger
//
// docs/cancellation.md, "The contract": every cancel() that returned true ends
// in exactly one of (a) a cancelled_error observed by the task it was made for,
// (b) forwarded down the await chain and observed there, (c) observed by
// nobody, the task having completed without reaching a cancellation point --
// its handle then reports completed_despite_cancel() (and a forwarded request
// comes back to the task it was made for, where it is (a) again).
//
// Every tracked cancel() is a numbered request whose number rides in its
// reason ("<reason> [#N]"): a forwarded request keeps kind and reason, so a
// cancelled_error caught anywhere names the request it delivers.  The
// scenarios report every cancelled_error they catch (observe()) with the task
// that caught it; a cancelled_error object rethrown further up is the same
// object and counts once.  At the end of the round each accepted request must
// have been delivered exactly once (by one object) to its task or to a task
// below it (a descendant in the tracked tree: only an awaited task gets a
// forwarded request), or -- never delivered -- its task's handle reported
// completed_despite_cancel().  Several requests pending at once merge into one
// delivery (the latest reason wins, and it may be a request the tool did not
// make: a timeout, a sibling's failure, the simulation's cancel_at): a request
// with no delivery of its own counts as merged when, after it was made, its
// task or a task below it caught a cancelled_error that could have carried it.
// That rule is lenient (it can take an unrelated delivery for a merge), never
// strict, so the check raises no false alarm on the real runtime either; the
// tagged deliveries, the double deliveries and the lost requests it reports
// are exact.
struct request_entry {
  record* target = nullptr;
  std::uint64_t made = 0;    // ledger clock just before cancel() was called
  std::uint64_t landed = 0;  // ledger clock just after it returned true (0: not yet / false)
  bool accepted = false;     // cancel() returned true
  bool merged = false;       // resolved by a delivery that could have carried it
  std::string reason;        // the tagged reason
  std::vector<std::exception_ptr> deliveries;  // distinct cancelled_error objects with its tag
  std::vector<record*> observers;              // the task that caught each
};

struct contract_ledger {
  // The ledger clock orders requests and observations across threads: seq_cst
  // RMWs on one atomic, so a later tick happens after an earlier one.
  std::atomic<std::uint64_t> clock{0};
  std::mutex mu;
  std::vector<request_entry> requests;  // request N at N - 1; guarded by mu
  // Every cancelled_error object observed (by address; `keep` holds them, so
  // that no address is reused within the round); guarded by mu.
  std::unordered_set<const void*> seen;
  std::vector<std::exception_ptr> keep;
};

// ------------------------------------------------------------ a round

struct round_ctx {
  const config* cfg = nullptr;
  std::uint64_t seed = 0;
  bool sim = false;
  bool strict_start = false;  // a cancel-before-start is exact (simulation)
  std::int64_t cancel_bound_ns = 0;
  std::uint64_t cancel_at = 0;  // the simulation's cancel_points mode is on
  registry reg;
  std::array<std::atomic<std::uint64_t>, kUserBase + kMaxUserScenarios> spawned{};  // this round
  weft::runtime* rt = nullptr;
  weft::event never_set;  // infinite waits wait on this

  std::mutex mu;  // guards `violations`
  std::vector<std::string> violations;
  std::atomic<std::uint64_t> unhandled{0};
  std::atomic<std::uint64_t> progress{0};  // outcomes taken this round
  contract_ledger ledger;
  // This round ends by shutdown() (decided before the round starts): scenario
  // rules that assume no cancellation from outside hold only in other rounds.
  bool shutdown_round = false;
  // The context of each selected user scenario (config::user), made before
  // the runtime and destroyed after the scenarios' checks.
  std::vector<std::unique_ptr<weft::stress::context>> user;

  void violation(const record* r, const std::string& what);
};

std::string describe(const record& r);

// ---- the contract ledger's operations (engine.cpp)

// A tick of the ledger clock (its new value).
std::uint64_t ledger_tick(round_ctx* c) noexcept;
// A new numbered request for `r`: returns its number and the tagged reason.
std::uint64_t open_request(round_ctx* c, record* r, const char* reason, std::string* tagged);
// cancel() of request `n` returned `accepted`.
void close_request(round_ctx* c, std::uint64_t n, bool accepted);
// `observer` caught the cancelled_error `e` (anything else is ignored) at
// ledger clock `at` (0: now).  `at_delivery`: caught where it was thrown into
// the observer (a cancellation point, or a body that let it out), rather than
// taken as the finished task's outcome by its owner.
void observe(round_ctx* c, record* observer, const std::exception_ptr& e, bool at_delivery = true,
             std::uint64_t at = 0);
// Is a tracked request for `r` pending for its next cancellation point?  True
// when one landed (cancel() returned true) before ledger clock `since` and `r`
// has caught no cancelled_error since that request was made.
bool expect_pending(round_ctx* c, record* r, std::uint64_t since);
// The request number in a tagged reason (0: none).
std::uint64_t request_of(std::string_view reason) noexcept;
// The end-of-round check over every request.
void check_contract(round_ctx* c);

// Index of the scenario bit (0..9); kScenarioCount for the round's own tasks.
std::uint32_t scenario_index(std::uint32_t bit) noexcept;

// ------------------------------------------------------------ task helpers

// The first statement of every tracked body: counts the body (exactly once),
// checks that no successful cancel-before-start preceded it (exact in a
// simulation), and counts the cleanup when the body's scope ends, however it
// ends.
class body_guard {
 public:
  body_guard(round_ctx* c, record* r);
  ~body_guard();
  body_guard(const body_guard&) = delete;
  body_guard& operator=(const body_guard&) = delete;

 private:
  record* r_;
};

// Marks the record suspended at `what` before an await and running after it,
// and measures the stretch since the last resume point (wall time).
class resume_meter {
 public:
  explicit resume_meter(record* r) noexcept : r_(r), since_(wall_ns()) {}
  void before(const char* what) noexcept {
    note_stretch(wall_ns() - since_);
    r_->at.store(what, std::memory_order_relaxed);
    r_->state.store(task_state::suspended, std::memory_order_relaxed);
  }
  void after() noexcept {
    r_->state.store(task_state::running, std::memory_order_relaxed);
    since_ = wall_ns();
  }

 private:
  record* r_;
  std::int64_t since_;
};

// cancel() with the bookkeeping the invariants need.  Returns cancel()'s answer.
template <class T>
bool cancel_tracked(round_ctx* c, record* r, weft::join_handle<T>& h, const char* reason) {
  std::string tagged;
  const std::uint64_t n = open_request(c, r, reason, &tagged);
  const std::uint32_t bodies = r->bodies.load(std::memory_order_acquire);
  const bool ok = h.cancel(std::move(tagged));
  close_request(c, n, ok);
  r->cancel_sent.store(true, std::memory_order_relaxed);
  add(global_figures().per[r->scenario_index].cancels);
  if (ok) {
    if (bodies == 0) {
      r->cancel_before_start.store(true, std::memory_order_release);
    } else if (r->cleanups.load(std::memory_order_acquire) == 0 &&
               (!c->sim || weft::sim::in_simulation())) {
      // (In a simulation, only a cancel() from inside its tasks reads virtual
      // time; the driving thread's "outside" cancels are not timed.)
      std::int64_t zero = 0;
      r->cancel_ns.compare_exchange_strong(zero, clock_ns(), std::memory_order_relaxed);
    }
  }
  if (c->sim)
    weft::sim::note(std::string(reason) + " [#" + std::to_string(n) + "] -> " +
                    (ok ? "true" : "false") + " (" + describe(*r) + ")");
  return ok;
}

// What take() found.
enum class got : std::uint8_t { value, cancelled, error };

template <class T>
struct taken_value {
  got kind = got::error;
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
  std::exception_ptr error;  // the outcome, when it was not a value
};

// The owner took `r`'s outcome (`kind`); `handle_cancelled` and `despite` are
// what its handle's cancelled() and completed_despite_cancel() said then.
void record_taken(round_ctx* c, record* r, got kind, bool handle_cancelled, bool despite);
template <class T>
void record_taken(round_ctx* c, record* r, got kind, const weft::join_handle<T>& h) {
  record_taken(c, r, kind, h.cancelled(), h.completed_despite_cancel());
}
// The owner of `r` caught its outcome `e` (an exception) outside take().
void note_outcome(round_ctx* c, record* r, const std::exception_ptr& e);
// `self` (the running tracked task; null for the untracked round root) caught
// the cancelled_error `e` for itself: the ledger learns of it, and the first
// one is kept in *own for the task to rethrow once it has wound down.
void keep_own(round_ctx* c, record* self, std::exception_ptr* own, std::exception_ptr e);

// Take the outcome of `h` exactly once, whatever cancellations the calling
// task (`self`) receives meanwhile.  A cancelled_error out of `co_await h` is
// either h's outcome or a request for the caller delivered at the await (the
// outcome then stays in h); awaiting again tells: "already taken"
// (usage_error) means the previous one was the outcome.  The caller's own
// cancellations are reported to the ledger as delivered to `self` and
// collected in *own (the first one kept) for it to rethrow once everything it
// owns was observed; h's outcome is reported as observed by h's task.  With
// `forwarded_is_own`, a caller whose own cancellation was forwarded to h (so
// that h's cancellation is really the caller's) sees cancelling() > 0 and gets
// it in *own too.
// Is `e` (a cancelled_error) the cancellation `h` ended with?
bool same_cancellation(const std::exception_ptr& e, const std::optional<weft::cancelled_error>& c);

template <class T>
weft::task<taken_value<T>> take(round_ctx* c, record* self, record* r, weft::join_handle<T>* h,
                                std::exception_ptr* own, std::exception_ptr first = nullptr,
                                bool forwarded_is_own = true) {
  taken_value<T> out;
  // cancelled_errors out of `co_await *h`, each with the ledger clock it was caught at
  std::vector<std::pair<std::exception_ptr, std::uint64_t>> cancels;
  if (first) cancels.emplace_back(first, ledger_tick(c));
  for (bool done = false; !done;) {
    std::exception_ptr caught;
    bool already_taken = false;
    try {
      if constexpr (std::is_void_v<T>) {
        co_await *h;
        out.value.emplace(true);
      } else {
        out.value.emplace(co_await *h);
      }
      out.kind = got::value;
      done = true;
    } catch (const weft::usage_error&) {
      already_taken = true;
    } catch (const weft::cancelled_error&) {
      caught = std::current_exception();
    } catch (...) {
      out.kind = got::error;  // exceptions other than cancellations are always the outcome
      out.error = std::current_exception();
      done = true;
    }
    if (already_taken) {
      if (cancels.empty()) {
        c->violation(r, "the outcome was already taken before its owner took it");
        co_return out;
      }
      // One of the cancelled_errors was the outcome (the one h ended with);
      // the others were requests for us.
      out.kind = got::cancelled;
      const auto mine = h->cancellation();
      std::size_t which = cancels.size() - 1;
      for (std::size_t i = 0; i < cancels.size(); ++i) {
        if (same_cancellation(cancels[i].first, mine)) {
          which = i;
          break;
        }
      }
      out.error = cancels[which].first;
      observe(c, r, out.error, /*at_delivery=*/false, cancels[which].second);
      cancels.erase(cancels.begin() + static_cast<std::ptrdiff_t>(which));
      done = true;
    } else if (caught) {
      // Await again: "already taken" tells it was the outcome.
      cancels.emplace_back(caught, ledger_tick(c));
    }
  }
  for (auto& [e, at] : cancels) {
    observe(c, self, e, /*at_delivery=*/true, at);
    if (!*own) *own = e;
  }
  if (forwarded_is_own && out.kind == got::cancelled && !*own &&
      weft::this_task::cancelling() > 0) {
    // A cancellation of ours went to the task we awaited (forwarding): it is
    // ours as much as h's.
    *own = std::make_exception_ptr(weft::cancelled_error(
        "a cancellation forwarded to an awaited task", weft::cancel_kind::explicit_request));
  }
  record_taken(c, r, out.kind, *h);
  co_return out;
}

}  // namespace weft_stress

namespace weft::stress::detail {
// The engine's side of weft::stress::context (engine.cpp).
struct context_access {
  // The context of user scenario `i` (config::user) in round `c`.
  static std::unique_ptr<context> make(weft_stress::round_ctx* c, std::uint32_t i,
                                       std::uint64_t seed);
};
}  // namespace weft::stress::detail
