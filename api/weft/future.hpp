// SPDX-License-Identifier: MIT
// weft/future.hpp -- future<T>: a one-shot result that any thread settles and
// any number of weft tasks await (asyncio.Future).
//
//   weft::future<int> f;                          // asyncio: loop.create_future()
//   some_c_library_read(fd, &on_done, f.setter().release());  // settled on its thread
//   int n = co_await f;                           // a cancellation point
//
// Settling: set_value(v), set_exception(e) and cancel(reason) settle the future
// once, from any thread (the future itself, or a future_setter<T> that shares
// its state and may outlive it).  Each returns a settle_result: `delivered`
// (at least one awaiting task was woken with the outcome), `stored` (no task
// was waiting: the outcome stays for later awaits and reads), or
// `already_settled` (nothing changed).  cancel() of a settled future, and
// set_value/set_exception of a cancelled one, return `already_settled`: a
// setter racing a cancellation is harmless.  set_value/set_exception of a
// future that already holds a value or an exception is a bug (two producers)
// and throws usage_error (asyncio: InvalidStateError).
//
// Awaiting: `co_await f` suspends until the future is settled and gives a copy
// of the value (T copyable), rethrows the exception, or throws the
// cancelled_error the setter's cancel(reason) made (kind explicit_request,
// where() = the cancel() call).  Any number of tasks may await one future,
// each gets the outcome, and an awaited future stays readable (result(),
// exception(), another co_await).  A move-only T is read once:
// `co_await std::move(f)` or `std::move(f).result()` move the value out and
// leave `f` empty (for a copyable T these forms copy it, and empty `f` too).
//
// Cancellation: the await is a cancellation point.  Cancelling the awaiting
// task unregisters it from the future, which stays pending (unlike asyncio,
// whose task.cancel() also cancels the future it waits on: a weft future may
// have other awaiters).  A setter after that settles the future and reports
// `stored`; whether the awaiter got the value (`delivered`) or was cancelled
// is decided once, under the future's lock -- never both, never neither.
//
// Lifetimes: the future and its setters share a reference-counted state, and
// an awaiting task holds a reference too.  Destroying the future while tasks
// await it (through a reference) is safe: they go on waiting for a setter.
// When the last of the future and its setters goes away while the future is
// still pending, nobody can settle it any more: it is settled with a
// usage_error ("broken future"), which every awaiter then receives.
//
// Runtimes: awaiting works on a threaded runtime, a driven one (the wake-up
// is queued for the loop's next run_ready()) and a simulation.  A simulation
// runs on one OS thread: settling a future a simulated task awaits from
// another thread aborts with a message, as every wake-up from another thread
// does (weft/sim.hpp); setting it from a task or from the owning thread is
// fine.  get() blocks a thread that is not a worker until the future is
// settled (asyncio has no counterpart; concurrent.futures.Future.result()).
//
// Thread safety: settling, done(), cancelled() and the reads of a settled
// future may be called from any thread at once.  The future object itself
// is an ordinary C++ object: do not move or destroy it while another thread
// calls its members.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include <atomic>
#include <concepts>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <new>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "weft/detail/access.hpp"
#include "weft/detail/task_core.hpp"
#include "weft/errors.hpp"
#include "weft/task.hpp"

namespace weft {

// What a settling call did (see the header comment).
enum class settle_result : std::uint8_t {
  delivered,        // settled now; at least one waiting task was woken with it
  stored,           // settled now; no task was waiting: nobody took it yet
  already_settled,  // settled before: nothing changed
};

// "delivered", "stored", "already settled".
std::string_view to_string(settle_result r) noexcept;

template <class T>
class future;
template <class T>
class future_setter;

namespace detail {

// The state a future, its setters and its awaiting tasks share.  The
// non-template part (status, lock, waiters, error, cancellation) lives here;
// future_state<T> adds the value.  Protocol: docs/architecture.md, "Futures".
class future_state_base {
 public:
  // `status`: the claimed kind in the low bits (0 while pending), kPublished
  // once the outcome may be read.
  static constexpr std::uint8_t kPending = 0, kValue = 1, kException = 2, kCancelled = 3;
  static constexpr std::uint8_t kKindMask = 3, kPublished = 4;

  explicit future_state_base(std::source_location created) noexcept : created_(created) {}
  future_state_base(const future_state_base&) = delete;
  future_state_base& operator=(const future_state_base&) = delete;
  virtual ~future_state_base();

  // Reference counts: every future, setter and awaiting task holds one
  // reference; the future and its setters also hold a settler count each.
  void add_ref() noexcept {
    // Relaxed: made from a reference the caller holds; the drop that frees
    // the state is acq_rel (drop_ref).
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void drop_ref() noexcept;
  void add_settler() noexcept {
    add_ref();
    // Relaxed: as add_ref.
    settlers_.fetch_add(1, std::memory_order_relaxed);
  }
  // The last settler of a pending future settles it as broken.  Then drops
  // the reference.
  void drop_settler() noexcept;

  // Step 1 of settling: win the right to write the outcome.  False when the
  // future was settled (or is being settled) already; `prior` is then the
  // kind that was claimed.
  bool claim(std::uint8_t kind, std::uint8_t& prior) noexcept;
  // Step 3: publish the outcome written in step 2 and wake every waiter.
  settle_result publish() noexcept;
  // Steps 2 and 3 for a claim whose value could not be built: the future
  // holds `e` instead.
  settle_result publish_exception(std::exception_ptr e) noexcept;
  // claim + write + publish for set_exception and cancel (no value to build).
  settle_result settle_exception(std::exception_ptr e, std::source_location where);
  settle_result settle_cancel(std::string reason, std::source_location where);
  // A losing set_value/set_exception: usage_error for a second producer,
  // already_settled after a cancel().
  settle_result refuse(std::uint8_t prior, const char* what, std::source_location where) const;

  std::uint8_t status() const noexcept {
    // Acquire: pairs with publish()'s release; a caller that sees kPublished
    // sees the outcome.
    return status_.load(std::memory_order_acquire);
  }
  bool done() const noexcept { return (status() & kPublished) != 0; }
  // Blocks the calling thread (not a worker) until the future is settled.
  void wait_blocking() const;
  // Rethrows the exception, throws the cancelled_error; returns for a value.
  // Throws usage_error while pending.  Published futures only read.
  void check_value(const char* what) const;
  std::exception_ptr exception(const char* what) const;
  cancelled_error cancellation() const;

  // What a list wait on the future waits for: ready once published.
  static bool ready(void* self) noexcept;
  // usage_error: `what` of an empty future or setter; a read while pending.
  [[noreturn]] static void throw_empty(const char* what);
  [[noreturn]] static void throw_pending(const char* what);
  wait_list* waiters() noexcept { return &list_; }
  const std::source_location& created() const noexcept { return created_; }

 private:
  std::atomic<std::uint32_t> refs_{1};
  std::atomic<std::uint32_t> settlers_{1};
  std::atomic<std::uint8_t> status_{kPending};
  wait_list list_;
  // The outcome, written by the claim's winner before publish().
  std::exception_ptr error_;
  std::string reason_;
  std::source_location cancel_where_{};
  std::source_location created_;
};

template <class T>
class future_state final : public future_state_base {
 public:
  using future_state_base::future_state_base;
  ~future_state() override {
    if (has_value_) value().~T();
  }
  template <class... A>
  void emplace(A&&... a) {
    ::new (static_cast<void*>(buf_)) T(std::forward<A>(a)...);
    has_value_ = true;
  }
  T& value() noexcept { return *std::launder(reinterpret_cast<T*>(buf_)); }

 private:
  alignas(T) unsigned char buf_[sizeof(T)];
  bool has_value_ = false;
};

template <>
class future_state<void> final : public future_state_base {
 public:
  using future_state_base::future_state_base;
};

// set_value of a future and of a setter: claim, build the value, publish.
template <class T, class... A>
settle_result settle_value(future_state<T>* s, std::source_location where, A&&... a) {
  std::uint8_t prior = 0;
  if (!s->claim(future_state_base::kValue, prior)) return s->refuse(prior, "set_value", where);
  if constexpr (!std::is_void_v<T>) {
    try {
      s->emplace(std::forward<A>(a)...);
    } catch (...) {
      // The claim is ours: the future gets the exception the move threw, and
      // so does the caller.
      (void)s->publish_exception(std::current_exception());
      throw;
    }
  }
  return s->publish();
}

// The settling members future<T> and future_setter<T> share (asyncio:
// set_result, set_exception, cancel); `Self` gives the state with
// state(what), which throws usage_error when it is empty.
template <class T, class Self>
class future_settling {
 public:
  // See weft/future.hpp's header comment.  `where` names the call in a
  // usage_error, and for cancel() in the cancelled_error the awaiters get.
  template <class U = T>
    requires(!std::is_void_v<U>)
  settle_result set_value(std::type_identity_t<U> v,
                          std::source_location where = std::source_location::current()) const {
    return settle_value(self().state("set_value"), where, std::move(v));
  }
  template <class U = T>
    requires std::is_void_v<U>
  settle_result set_value(std::source_location where = std::source_location::current()) const {
    return settle_value(self().state("set_value"), where);
  }
  settle_result set_exception(std::exception_ptr e,
                              std::source_location where = std::source_location::current()) const {
    return self().state("set_exception")->settle_exception(std::move(e), where);
  }
  settle_result cancel(std::string reason = {},
                       std::source_location where = std::source_location::current()) const {
    return self().state("cancel")->settle_cancel(std::move(reason), where);
  }

 protected:
  future_settling() = default;

 private:
  const Self& self() const noexcept { return static_cast<const Self&>(*this); }
};

// The shared state, held by one reference.
template <class T>
class future_ref {
 public:
  future_ref() noexcept = default;
  explicit future_ref(future_state<T>* s) noexcept : state_(s) {}
  future_ref(future_ref&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  future_ref& operator=(future_ref&& o) noexcept {
    if (this != &o) {
      reset();
      state_ = std::exchange(o.state_, nullptr);
    }
    return *this;
  }
  ~future_ref() { reset(); }
  void reset() noexcept {
    if (state_ != nullptr) std::exchange(state_, nullptr)->drop_ref();
  }
  future_state<T>* get() const noexcept { return state_; }
  future_state<T>* operator->() const noexcept { return state_; }
  future_state<T>* release() noexcept { return std::exchange(state_, nullptr); }

 private:
  future_state<T>* state_ = nullptr;
};

// The outcome of a published future: the value (copied, or moved out when
// `Take`), or the exception / cancelled_error thrown.
template <class T, bool Take>
T read_outcome(future_state<T>* s) {
  // Only a move-only value is moved out: a copyable one may have other
  // readers at the same time (awaiters that began before the rvalue read).
  static_assert(!Take || !std::is_copy_constructible_v<T>);
  s->check_value("co_await");
  if constexpr (std::is_void_v<T>) {
    return;
  } else if constexpr (Take) {
    return std::move(s->value());
  } else {
    return s->value();
  }
}

// The await itself: a task of its own frame, run as part of the awaiting task
// (like co_await of a task), holding a reference to the state until it ends.
template <class T, bool Take>
task<T> await_future(future_ref<T> s) {
  // Settled already: no suspension, as asyncio's await of a done future (a
  // pending cancellation waits for the next cancellation point).
  if (s->done()) co_return read_outcome<T, Take>(s.get());
  for (;;) {
    // Named: holds atomics, must not be moved (see event::wait).
    list_wait_once once{s->waiters(), {&future_state_base::ready, nullptr, s.get()}};
    if (co_await once) break;
  }
  co_return read_outcome<T, Take>(s.get());
}

// What `co_await future` gives: runs await_future as a direct call of the
// awaiting task (task_awaiter), bound to the task's core at suspension.
template <class T>
struct future_awaiter {
  task<T> waiting;
  task_awaiter<T> inner{};
  bool await_ready() const noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> self) noexcept {
    inner = task_awaiter<T>{access::handle(waiting), self.promise().core};
    return inner.await_suspend(self);
  }
  T await_resume() { return inner.await_resume(); }
};

}  // namespace detail

// The setting side of a future, shareable with another thread: copies share
// the state, and it may outlive the future.  Settling through an empty setter
// (moved from) throws usage_error.  For a C callback's `void* ctx`: release()
// turns the setter into an opaque pointer that keeps its share, adopt() turns
// it back (once).
template <class T>
class future_setter : public detail::future_settling<T, future_setter<T>> {
 public:
  future_setter() noexcept = default;
  future_setter(const future_setter& o) noexcept
      : detail::future_settling<T, future_setter<T>>(), state_(o.state_) {
    if (state_ != nullptr) state_->add_settler();
  }
  future_setter(future_setter&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  future_setter& operator=(future_setter o) noexcept {
    std::swap(state_, o.state_);
    return *this;
  }
  ~future_setter() {
    if (state_ != nullptr) state_->drop_settler();
  }

  bool done() const { return state("done")->done(); }
  bool valid() const noexcept { return state_ != nullptr; }

  // The setter as an opaque pointer that keeps its share of the state (a C
  // callback's context); the setter is empty after.  Give it to adopt()
  // exactly once, with the same T, or the state leaks.
  void* release() noexcept { return std::exchange(state_, nullptr); }
  static future_setter adopt(void* released) noexcept {
    future_setter s;
    s.state_ = static_cast<detail::future_state<T>*>(released);
    return s;
  }

 private:
  friend class future<T>;
  friend class detail::future_settling<T, future_setter<T>>;
  explicit future_setter(detail::future_state<T>* s) noexcept : state_(s) {}
  detail::future_state<T>* state(const char* what) const {
    if (state_ == nullptr) detail::future_state_base::throw_empty(what);
    return state_;
  }
  detail::future_state<T>* state_ = nullptr;
};

// asyncio.Future: see the header comment.  Movable, not copyable (share the
// setting side with setter(), the result by awaiting or reading).  A
// moved-from future is empty: every member but valid() and the destructor
// throws usage_error.
template <class T = void>
class future : public detail::future_settling<T, future<T>> {
  // The rvalue reads move the value out only when T cannot be copied (then
  // they are its only reader); otherwise they copy it too.
  static constexpr bool kMoveOut = !std::is_void_v<T> && !std::is_copy_constructible_v<T>;

 public:
  // A pending future.  `created` names it in usage_error messages.
  explicit future(std::source_location created = std::source_location::current())
      : state_(new detail::future_state<T>(created)) {}
  future(future&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  future& operator=(future&& o) noexcept {
    if (this != &o) {
      if (state_ != nullptr) state_->drop_settler();
      state_ = std::exchange(o.state_, nullptr);
    }
    return *this;
  }
  future(const future&) = delete;
  future& operator=(const future&) = delete;
  ~future() {
    if (state_ != nullptr) state_->drop_settler();
  }

  // A setter sharing this future's state; any number, from any thread.
  future_setter<T> setter() const {
    detail::future_state<T>* s = state("setter");
    s->add_settler();
    return future_setter<T>(s);
  }

  bool valid() const noexcept { return state_ != nullptr; }
  // Settled (a value, an exception or a cancellation)?
  bool done() const { return state("done")->done(); }
  // Settled by cancel()?
  bool cancelled() const {
    const std::uint8_t st = state("cancelled")->status();
    return st == (detail::future_state_base::kCancelled | detail::future_state_base::kPublished);
  }

  // asyncio's result(): the value (a copy; readable any number of times),
  // or the exception rethrown, or the cancelled_error of cancel() thrown.
  // usage_error while pending.
  template <class U = T>
    requires(std::is_void_v<U> || std::copy_constructible<U>)
  U result() const& {
    detail::future_state<T>* s = state("result");
    if (!s->done()) detail::future_state_base::throw_pending("result");
    return detail::read_outcome<T, false>(s);
  }
  // The value moved out (move-only T) or copied; the future is empty after
  // (unless it was still pending: usage_error, and it is left as it was).
  T result() && {
    detail::future_state<T>* s = state("result");
    if (!s->done()) detail::future_state_base::throw_pending("result");
    state_ = nullptr;
    struct drop_share {
      detail::future_state<T>* s;
      ~drop_share() { s->drop_settler(); }
    } share{s};
    return detail::read_outcome<T, kMoveOut>(s);
  }
  // asyncio's exception(): the exception it was settled with, null for a
  // value; throws the cancelled_error when cancelled, usage_error while
  // pending.
  std::exception_ptr exception() const { return state("exception")->exception("exception"); }
  // The cancelled_error awaiters get, when cancelled (asyncio's cancel
  // message); std::nullopt otherwise.
  std::optional<cancelled_error> cancellation() const {
    if (!cancelled()) return std::nullopt;
    return state_->cancellation();
  }

  // Blocks the calling thread until the future is settled, then result().
  // Not on a worker thread (usage_error): await it there.
  template <class U = T>
    requires(std::is_void_v<U> || std::copy_constructible<U>)
  U get() const& {
    detail::future_state<T>* s = state("get");
    s->wait_blocking();
    return detail::read_outcome<T, false>(s);
  }
  T get() && {
    state("get")->wait_blocking();
    return std::move(*this).result();
  }

  // co_await f (T copyable: a copy) and co_await std::move(f) (moves a
  // move-only value out, copies a copyable one; the future is empty after).
  // A cancellation point.
  template <class U = T>
    requires(std::is_void_v<U> || std::copy_constructible<U>)
  detail::future_awaiter<T> operator co_await() const& {
    detail::future_state<T>* s = state("co_await");
    s->add_ref();
    return {detail::await_future<T, false>(detail::future_ref<T>(s))};
  }
  detail::future_awaiter<T> operator co_await() && {
    // The await holds the state; this future's settler share goes with it.
    detail::future_state<T>* s = release("co_await");
    s->add_ref();
    s->drop_settler();
    return {detail::await_future<T, kMoveOut>(detail::future_ref<T>(s))};
  }

 private:
  friend struct detail::access;  // tests look at the waiters
  friend class detail::future_settling<T, future<T>>;
  detail::future_state<T>* state(const char* what) const {
    if (state_ == nullptr) detail::future_state_base::throw_empty(what);
    return state_;
  }
  detail::future_state<T>* release(const char* what) {
    detail::future_state<T>* s = state(what);
    state_ = nullptr;
    return s;
  }
  detail::future_state<T>* state_;
};

}  // namespace weft
