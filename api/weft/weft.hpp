// SPDX-License-Identifier: MIT
// weft/weft.hpp -- everything: #include <weft/weft.hpp>.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#include "weft/blocking.hpp"
#include "weft/cancellation.hpp"
#include "weft/errors.hpp"
#include "weft/fork.hpp"
#include "weft/future.hpp"
#include "weft/runtime.hpp"
#include "weft/sync.hpp"
#include "weft/task.hpp"
#include "weft/task_group.hpp"
#include "weft/timeout.hpp"
#include "weft/wait.hpp"
