// SPDX-License-Identifier: MIT
// peer/libfork_pool.cpp -- the lf::lazy_pool behind peer_libfork::pool.
#include <string>

#include "peer/libfork_impl.hpp"

namespace peer_libfork {

pool::pool(unsigned workers) : workers_(workers), impl_(std::make_unique<impl>(workers)) {}

pool::~pool() = default;

std::string version() {
  return "libfork " + std::to_string(LF_VERSION_MAJOR) + "." + std::to_string(LF_VERSION_MINOR) +
         "." + std::to_string(LF_VERSION_PATCH);
}

}  // namespace peer_libfork
