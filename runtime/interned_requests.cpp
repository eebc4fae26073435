// SPDX-License-Identifier: MIT
// runtime/interned_requests.cpp -- the shared request of a cancel() without a
// reason, one per call site and kind, so that cancelling many tasks allocates
// nothing.
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cancel_delivery.hpp"

namespace weft::detail {

namespace {

// Interned requests: one per (call site, kind), made on first use and kept
// for the life of the process (a program has finitely many cancel() call
// sites).  Looked up in a small per-thread cache first, so that a loop that
// cancels many tasks from one line takes no lock and allocates nothing.
struct intern_key {
  const char* file;
  const char* function;
  std::uint_least32_t line;
  std::uint_least32_t column;
  cancel_kind kind;
  bool operator==(const intern_key&) const = default;
};
intern_key key_of(cancel_kind kind, const std::source_location& where) noexcept {
  return {where.file_name(), where.function_name(), where.line(), where.column(), kind};
}
struct intern_hash {
  std::size_t operator()(const intern_key& k) const noexcept {
    std::size_t h = std::hash<const void*>()(k.file) ^ (std::hash<const void*>()(k.function) << 1);
    return h ^ (std::size_t{k.line} << 20) ^ (std::size_t{k.column} << 8) ^
           static_cast<std::size_t>(k.kind);
  }
};
struct intern_table {
  std::mutex mu;
  std::unordered_map<intern_key, cancel_request*, intern_hash> map;  // guarded by mu
};
intern_table& interned() {
  // Never destroyed: requests may be read by threads that outlive static
  // destruction (detached handles of a runtime that is never shut down).
  static intern_table* t = new intern_table;
  return *t;
}
constexpr std::size_t kInternCacheSlots = 8;
struct intern_cache_slot {
  intern_key key{};
  cancel_request* req = nullptr;
};
thread_local intern_cache_slot t_intern_cache[kInternCacheSlots];

}  // namespace

cancel_request* interned_request(cancel_kind kind, std::source_location where) {
  const intern_key k = key_of(kind, where);
  intern_cache_slot& slot = t_intern_cache[intern_hash()(k) % kInternCacheSlots];
  if (slot.req != nullptr && slot.key == k) return slot.req;
  intern_table& t = interned();
  cancel_request* r;
  {
    std::lock_guard lk(t.mu);
    auto [it, fresh] = t.map.try_emplace(k, nullptr);
    if (fresh) it->second = new cancel_request{std::string(), kind, where, true};
    r = it->second;
  }
  slot = {k, r};
  return r;
}

}  // namespace weft::detail
