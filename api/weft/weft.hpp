// weft/weft.hpp -- everything: #include <weft/weft.hpp>.
#pragma once

#include "weft/errors.hpp"
#include "weft/runtime.hpp"
#include "weft/sync.hpp"
#include "weft/task.hpp"
#include "weft/timeout.hpp"
