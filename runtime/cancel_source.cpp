// SPDX-License-Identifier: MIT
// runtime/cancel_source.cpp -- cancellation_source / token / registration.
//
// Built on std::stop_source / std::stop_callback, which already give the hard
// guarantees (a callback runs exactly once; registration racing request_stop
// is safe; a deregistration waits for a callback running elsewhere).  weft adds
// the provenance: who cancelled (kind), why (reason), and where.
//
// Publication protocol (named steps):
//   claim:    the first cancel() wins `claimed` (exchange; losers return false).
//   record:   the winner writes reason / kind / where (plain fields, written
//             exactly once).
//   publish:  the winner calls stop.request_stop().  Readers look at the fields
//             only after stop_requested() is true; request_stop() returning
//             true synchronises with a stop_requested() that returns true
//             (std [thread.stoptoken.intro]), and a callback runs after the
//             request, so every reader of a cancelled state sees `record`.
#include "weft/cancellation.hpp"

#include <mutex>

namespace weft::detail {

struct cancel_source_state {
  std::stop_source stop;
  // Claim flag: see "claim" above.
  std::atomic<bool> claimed{false};
  // Written once by the claimant before "publish"; read only after it.
  std::string reason;
  cancel_kind kind = cancel_kind::explicit_request;
  std::source_location where;

  // A child source follows its parent through a callback on the parent's
  // token.  Declared last: destroyed first, so the callback (which uses this
  // object) is deregistered -- and waited for -- before anything it touches
  // is destroyed.
  std::shared_ptr<cancel_source_state> parent;
  struct follow_parent {
    cancel_source_state* child;
    void operator()() noexcept {
      const cancel_source_state& p = *child->parent;
      child->cancel(p.reason, cancel_kind::parent, p.where);
    }
  };
  std::optional<std::stop_callback<follow_parent>> parent_link;
  // A source made from a std::stop_token follows it the same way (declared
  // last for the same reason).
  struct follow_stop {
    cancel_source_state* self;
    std::string reason;
    std::source_location where;
    void operator()() noexcept {
      try {
        self->cancel(std::move(reason), cancel_kind::explicit_request, where);
      } catch (...) {
        // cancel() allocates nothing that can throw here (the reason is
        // moved): nothing to report.
      }
    }
  };
  std::optional<std::stop_callback<follow_stop>> stop_link;

  bool cancel(std::string why, cancel_kind k, std::source_location loc) {
    // claim.  acq_rel: losers need nothing from the winner (they return
    // false); a plain exchange is enough, acq_rel keeps TSan's model simple.
    if (claimed.exchange(true, std::memory_order_acq_rel)) return false;
    // record.
    reason = std::move(why);
    kind = k;
    where = loc;
    // publish.
    stop.request_stop();
    return true;
  }
  bool requested() const noexcept { return stop.stop_requested(); }
};

namespace {

// What a core registration runs: cancel the task with the source's values.
struct cancel_core_fn {
  cancel_source_state* state;  // kept alive by the registration's stop_token
  task_core* core;
  std::optional<task_ref> ref;  // bind(): keeps the frame; spawn(task, token): none needed
  void operator()() noexcept {
    try {
      request_cancel(core, state->reason, state->kind, state->where);
    } catch (...) {
      // request_cancel allocates the request: out of memory here cannot be
      // reported from inside a stop callback.  Leave the task running.
    }
  }
};

}  // namespace

cancellation_registration make_core_registration(const cancellation_token& tok, task_core* core,
                                                 std::optional<task_ref> ref) {
  if (!tok.can_be_cancelled()) return {};
  // The stop_token inside the std::stop_callback keeps the std stop state
  // alive, not ours: hold our state through the callback's shared owner.
  struct holder {
    std::shared_ptr<cancel_source_state> keep;
    cancel_core_fn fn;
    void operator()() noexcept { fn(); }
  };
  const auto& state = access::state(tok);
  holder h{state, cancel_core_fn{state.get(), core, std::move(ref)}};
  erased_callback cb{std::make_unique<callback_impl<holder>>(std::move(h))};
  return access::make<cancellation_registration>(
      std::make_unique<registration_impl>(tok.stop_token(), std::move(cb)));
}

std::stop_token task_stop_token(task_core* core) {
  promise_base* p = owner_of(core);
  // Only the task itself writes `stop`: reading it here needs no lock.
  if (p->stop == nullptr) {
    auto* s = new std::stop_source();
    core->lock_hook();  // hand_over reads `stop` under this lock
    p->stop = s;
    core->unlock_hook();
  }
  std::stop_token t = p->stop->get_token();
  // A request that arrived before the source was published found none: it
  // is still pending (or the shutdown is due), so the stop is requested now.
  // One that arrives later finds the source (hand_over).
  if (cancel_visible(core)) p->stop->request_stop();
  return t;
}

}  // namespace weft::detail

namespace weft {

bool cancellation_token::cancel_requested() const noexcept { return state_ && state_->requested(); }

std::string_view cancellation_token::reason() const noexcept {
  if (!cancel_requested()) return {};
  return state_->reason;
}

cancel_kind cancellation_token::kind() const noexcept {
  if (!cancel_requested()) return cancel_kind::explicit_request;
  return state_->kind;
}

std::source_location cancellation_token::where() const noexcept {
  if (!cancel_requested()) return {};
  return state_->where;
}

void cancellation_token::throw_if_cancel_requested() const {
  if (cancel_requested()) throw cancelled_error(state_->reason, state_->kind, state_->where);
}

std::stop_token cancellation_token::stop_token() const noexcept {
  if (!state_) return {};
  return state_->stop.get_token();
}

cancellation_source::cancellation_source()
    : state_(std::make_shared<detail::cancel_source_state>()) {}

cancellation_source::cancellation_source(const cancellation_token& parent)
    : state_(std::make_shared<detail::cancel_source_state>()) {
  if (!parent.can_be_cancelled()) return;
  state_->parent = detail::access::state(parent);
  // Runs follow_parent at once when the parent is already cancelled.
  state_->parent_link.emplace(parent.stop_token(),
                              detail::cancel_source_state::follow_parent{state_.get()});
}

cancellation_source::cancellation_source(std::stop_token follow, std::string reason,
                                         std::source_location where)
    : state_(std::make_shared<detail::cancel_source_state>()) {
  if (!follow.stop_possible()) return;
  // Runs follow_stop at once when the stop was already requested.
  state_->stop_link.emplace(std::move(follow), detail::cancel_source_state::follow_stop{
                                                   state_.get(), std::move(reason), where});
}

bool cancellation_source::cancel(std::string reason, std::source_location where) {
  return state_->cancel(std::move(reason), cancel_kind::explicit_request, where);
}

}  // namespace weft
