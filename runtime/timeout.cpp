// runtime/timeout.cpp -- the out-of-line parts of wait_for / wait_until.
#include "weft/timeout.hpp"

#include <limits>

namespace weft::detail {

std::uint64_t deadline_after(std::chrono::nanoseconds d) noexcept {
  if (d.count() <= 0) return 0;  // already expired
  if (d == std::chrono::nanoseconds::max()) return kNever;
  std::uint64_t now = now_ns();
  auto ud = static_cast<std::uint64_t>(d.count());
  return ud >= kNever - now ? kNever : now + ud;  // saturates: never overflows
}

std::uint64_t deadline_at(std::chrono::steady_clock::time_point tp) noexcept {
  if (tp == std::chrono::steady_clock::time_point::max()) return kNever;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
  return ns <= 0 ? 0 : static_cast<std::uint64_t>(ns);
}

task<void> deadline_canceller(task_core* target, std::uint64_t deadline, bool* fired,
                              std::source_location where) {
  co_await sleep_tag{deadline, false};
  *fired = request_cancel(target, "timeout", cancel_kind::timeout, where);
}

void rethrow_timeout_or(std::exception_ptr err, bool fired) {
  if (fired) {
    try {
      std::rethrow_exception(err);
    } catch (const cancelled_error& e) {
      if (e.kind() == cancel_kind::timeout) throw timeout_error();
    } catch (...) {
    }
  }
  std::rethrow_exception(err);
}

}  // namespace weft::detail
