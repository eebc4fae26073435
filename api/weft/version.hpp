// SPDX-License-Identifier: MIT
// weft/version.hpp -- weft's version, and the C++20 check that every weft
// header makes first (each includes this header before anything else).
//
//   #if WEFT_VERSION >= 100   // 0.1.0 or later
//
// The top-level CMakeLists.txt reads the three numbers below into
// project(VERSION), so the CMake package (weftConfigVersion.cmake), weft.pc and
// the shared library's SOVERSION always carry the version written here.
#pragma once

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

// MAJOR * 10000 + MINOR * 100 + PATCH: 0.1.0 is 100, 1.2.3 is 10203.
#define WEFT_VERSION (WEFT_VERSION_MAJOR * 10000 + WEFT_VERSION_MINOR * 100 + WEFT_VERSION_PATCH)

#define WEFT_DETAIL_STRINGIFY2(x) #x
#define WEFT_DETAIL_STRINGIFY(x) WEFT_DETAIL_STRINGIFY2(x)
// "MAJOR.MINOR.PATCH", e.g. "0.1.0".
#define WEFT_VERSION_STRING                 \
  WEFT_DETAIL_STRINGIFY(WEFT_VERSION_MAJOR) \
  "." WEFT_DETAIL_STRINGIFY(WEFT_VERSION_MINOR) "." WEFT_DETAIL_STRINGIFY(WEFT_VERSION_PATCH)

#if WEFT_VERSION_MINOR > 99 || WEFT_VERSION_PATCH > 99
#error "weft: WEFT_VERSION needs MINOR and PATCH below 100"
#endif

// weft is C++20 (coroutines, concepts, <stop_token>).  MSVC reports the
// language in _MSVC_LANG (its __cplusplus stays 199711L without
// /Zc:__cplusplus).
#if (defined(_MSVC_LANG) && _MSVC_LANG < 202002L) || (!defined(_MSVC_LANG) && __cplusplus < 202002L)
#error "weft needs C++20 or later: compile with -std=c++20 (MSVC: /std:c++20)"
// A missing include is fatal in every compiler: the build stops at the message
// above instead of burying it under the errors of the C++20 code that follows.
#include "weft: C++20 required"
#endif
