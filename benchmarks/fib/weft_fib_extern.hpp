// SPDX-License-Identifier: MIT
// fib/weft_fib_extern.hpp -- the spawn-form fib of fib/weft_fib.hpp spelled
// as users write coroutines: declared here, defined (not inline, external
// linkage) in fib/weft_fib_extern.cpp.  fib_compare measures both spellings:
// a compiler may optimise the two differently (docs/benchmarks.md).
#pragma once

#include <weft/weft.hpp>

namespace fib_bench {

weft::task<long> fib_weft_extern(int n);

}  // namespace fib_bench
