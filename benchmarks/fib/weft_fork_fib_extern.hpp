// SPDX-License-Identifier: MIT
// fib/weft_fork_fib_extern.hpp -- the fork-join fib of fib/weft_fork_fib.hpp
// spelled as users write coroutines: declared here, defined (not inline,
// external linkage) in fib/weft_fork_fib_extern.cpp.  fib_compare measures
// both spellings, as it does for the spawn form (fib/weft_fib_extern.hpp).
#pragma once

#include <weft/weft.hpp>

namespace fib_bench {

weft::fork_task<long> fib_fork_extern(int n);

}  // namespace fib_bench
