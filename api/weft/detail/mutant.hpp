// SPDX-License-Identifier: MIT
// weft/detail/mutant.hpp -- the test-only variants of the runtime ("mutants"),
// behind one switch.
//
// A build selects at most one with the compile definition WEFT_MUTANT=<name>.
// Production builds define none: then WEFT_MUTANT_IS(<name>) is 0 for every
// name and no mutant's code is compiled.  The top-level CMakeLists.txt builds
// them (weft_add_runtime_variant); they are never installed or exported.
//
//   name                       where                        caught by
//   no_wake_on_cancel          core.cpp, hand-over: cancel  tests/sim_catches_broken.cpp
//                              does not end a blocking wait
//   lost_cancel_before_start   runtime.cpp, run(): a task   tests/sim_catches_broken.cpp
//                              cancelled before it started
//                              runs its body anyway
//   no_reclaim                 core.cpp, reclaim_forwarded: tests/sim_catches_broken.cpp
//                              a cancel forwarded to an
//                              awaited task that finished
//                              without taking it is lost
//   deque_last_element         deque.hpp, take/take_if: the tests/deque_broken_check.cpp
//                              last item is taken without
//                              the CAS that races thieves
//   always_light_take          deque.hpp: fence_mode::       (not broken: lets
//                              asymmetric, a deque that      tests/deque_test.cpp race
//                              always takes light            light takes against steals)
//
// The first four are deliberately broken: the tests named above must catch
// them, which proves that the simulation's seeds and the deque stress can fail.
// An unknown name is a compile error; so is WEFT_MUTANT_IS in a file that does
// not include this header.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

#define WEFT_MUTANT_ID_no_wake_on_cancel 1
#define WEFT_MUTANT_ID_lost_cancel_before_start 2
#define WEFT_MUTANT_ID_no_reclaim 3
#define WEFT_MUTANT_ID_deque_last_element 4
#define WEFT_MUTANT_ID_always_light_take 5

#if defined(WEFT_MUTANT)
#define WEFT_MUTANT_CAT_(a, b) a##b
#define WEFT_MUTANT_CAT(a, b) WEFT_MUTANT_CAT_(a, b)
#define WEFT_MUTANT_SELECTED WEFT_MUTANT_CAT(WEFT_MUTANT_ID_, WEFT_MUTANT)
#if WEFT_MUTANT_SELECTED == 0
#error "WEFT_MUTANT names no known mutant (list in weft/detail/mutant.hpp)"
#endif
#define WEFT_MUTANT_IS(name) (WEFT_MUTANT_SELECTED == WEFT_MUTANT_ID_##name)
#else
#define WEFT_MUTANT_IS(name) 0
#endif
