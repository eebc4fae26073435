// SPDX-License-Identifier: MIT
// runtime/future.cpp -- future<T>'s shared state: settling from any thread,
// waking its awaiters, reading the outcome, the references that keep it alive.
//
// The protocol (docs/architecture.md, "Futures"):
//   claim:    a setter wins the right to write the outcome with a CAS of
//             `status` from kPending to its kind; a loser changes nothing;
//   write:    the winner writes the value, exception or cancellation, alone;
//   publish:  under the waiters' lock, kPublished is or-ed into `status`
//             (release) and every armed waiter is claimed and woken
//             (list_wake); the count of woken waiters says `delivered` or
//             `stored`;
//   await:    a task waits with a list_wait on the same lock (runtime/sync.cpp):
//             either it sees kPublished there and claims itself, or it is
//             linked before publish and woken by it, or cancel() claims it
//             first and unlinks it -- one of the three, decided by the
//             node's claim;
//   read:     after kPublished (acquire, or the lock) the outcome is immutable
//             and read by anyone, as often as wanted (a copy each time).
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#include "weft/future.hpp"

namespace weft {

std::string_view to_string(settle_result r) noexcept {
  switch (r) {
    case settle_result::delivered:
      return "delivered";
    case settle_result::stored:
      return "stored";
    case settle_result::already_settled:
      return "already settled";
  }
  return "?";
}

}  // namespace weft

namespace weft::detail {

namespace {

std::string site(const std::source_location& w) {
  return std::string(w.file_name()) + ":" + std::to_string(w.line());
}

// list_wake's grant for a future: every waiter gets the outcome; counts them.
bool grant_counting(void* woken) noexcept {
  ++*static_cast<unsigned*>(woken);
  return true;
}

}  // namespace

future_state_base::~future_state_base() = default;

void future_state_base::drop_ref() noexcept {
  // acq_rel: the last drop sees every other holder's writes (release half of
  // theirs) before it deletes the state.
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

void future_state_base::drop_settler() noexcept {
  // acq_rel: as drop_ref; the last settler decides whether the future is
  // broken, after every other settler is done with it.
  if (settlers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::uint8_t prior = 0;
    if (claim(kException, prior)) {
      try {
        error_ = std::make_exception_ptr(usage_error(
            "weft::future (made at " + site(created_) +
            "): broken -- the future and every future_setter of it were destroyed before it "
            "was settled"));
      } catch (...) {
        error_ = std::current_exception();  // std::bad_alloc: still an exception
      }
      (void)publish();
    }
  }
  drop_ref();
}

bool future_state_base::claim(std::uint8_t kind, std::uint8_t& prior) noexcept {
  std::uint8_t expected = kPending;
  // Relaxed: decides only who writes the outcome (a single RMW order);
  // nothing is published by it -- publish()'s release does that.
  if (status_.compare_exchange_strong(expected, kind, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
    return true;
  }
  prior = static_cast<std::uint8_t>(expected & kKindMask);
  return false;
}

settle_result future_state_base::publish() noexcept {
  unsigned woken = 0;
  list_.lock();
  // Release: pairs with status()'s acquire load (done(), the reads) and with
  // wait_blocking(); ready() reads it under this lock.
  status_.fetch_or(kPublished, std::memory_order_release);
  list_wake(&list_, &grant_counting, &woken);
  list_.unlock();
  // The caller holds a reference: the state is alive here.
  status_.notify_all();
  return woken > 0 ? settle_result::delivered : settle_result::stored;
}

settle_result future_state_base::publish_exception(std::exception_ptr e) noexcept {
  // Relaxed: only the claim's winner writes `status` before publish(), whose
  // release carries this store.
  status_.store(kException, std::memory_order_relaxed);
  error_ = std::move(e);
  return publish();
}

settle_result future_state_base::settle_exception(std::exception_ptr e,
                                                  std::source_location where) {
  if (e == nullptr) {
    throw usage_error("weft::future::set_exception at " + site(where) + ": a null exception_ptr");
  }
  std::uint8_t prior = 0;
  if (!claim(kException, prior)) return refuse(prior, "set_exception", where);
  error_ = std::move(e);
  return publish();
}

settle_result future_state_base::settle_cancel(std::string reason, std::source_location where) {
  std::uint8_t prior = 0;
  if (!claim(kCancelled, prior)) return settle_result::already_settled;  // asyncio: False
  reason_ = std::move(reason);
  cancel_where_ = where;
  return publish();
}

settle_result future_state_base::refuse(std::uint8_t prior, const char* what,
                                        std::source_location where) const {
  if (prior == kCancelled) return settle_result::already_settled;
  throw usage_error(std::string("weft::future::") + what + " at " + site(where) +
                    ": the future (made at " + site(created_) + ") already holds " +
                    (prior == kValue ? "a value" : "an exception") +
                    "; a future is settled once (asyncio: InvalidStateError)");
}

void future_state_base::wait_blocking() const {
  require_not_worker(nullptr, "weft::future::get");
  for (;;) {
    // Acquire: pairs with publish()'s release.
    const std::uint8_t st = status_.load(std::memory_order_acquire);
    if ((st & kPublished) != 0) return;
    // Acquire: as above; returns once `status` differs from `st` (claimed,
    // then published: the loop looks again).
    status_.wait(st, std::memory_order_acquire);
  }
}

void future_state_base::check_value(const char* what) const {
  const std::uint8_t st = status();
  if ((st & kPublished) == 0) throw_pending(what);
  switch (st & kKindMask) {
    case kException:
      std::rethrow_exception(error_);
    case kCancelled:
      throw cancellation();
    default:
      return;
  }
}

std::exception_ptr future_state_base::exception(const char* what) const {
  const std::uint8_t st = status();
  if ((st & kPublished) == 0) throw_pending(what);
  switch (st & kKindMask) {
    case kException:
      return error_;
    case kCancelled:
      throw cancellation();  // asyncio: exception() of a cancelled future raises
    default:
      return nullptr;
  }
}

cancelled_error future_state_base::cancellation() const {
  return cancelled_error(reason_, cancel_kind::explicit_request, cancel_where_);
}

bool future_state_base::ready(void* self) noexcept {
  // Relaxed: under the waiters' lock, which publish() holds when it sets it.
  return (static_cast<future_state_base*>(self)->status_.load(std::memory_order_relaxed) &
          kPublished) != 0;
}

void future_state_base::throw_empty(const char* what) {
  throw usage_error(std::string("weft::future: ") + what +
                    " of an empty future or future_setter (moved from, released, or read out)");
}

void future_state_base::throw_pending(const char* what) {
  throw usage_error(std::string("weft::future::") + what +
                    ": the future is not settled yet (asyncio: InvalidStateError); await it, "
                    "or get() it from a thread that is not a worker");
}

}  // namespace weft::detail
