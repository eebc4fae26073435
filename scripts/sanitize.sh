#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build weft and its tests under a sanitizer and run them.
#
#   bash scripts/sanitize.sh tsan        clang-19, ThreadSanitizer
#   bash scripts/sanitize.sh asan-ubsan  clang-19, AddressSanitizer + UndefinedBehaviorSanitizer
#   bash scripts/sanitize.sh gcc-asan    g++,      AddressSanitizer
#
# Build dir: build/<name>.  Benchmarks are not built; the consumer test is skipped
# (it rebuilds weft without sanitizers).  Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

name="${1:-}"
case "$name" in
  tsan)       cc=clang-19; cxx=clang++-19; sanitize=tsan ;;
  asan-ubsan) cc=clang-19; cxx=clang++-19; sanitize=asan-ubsan ;;
  gcc-asan)   cc=gcc;      cxx=g++;        sanitize=asan ;;
  *)
    echo "usage: $0 <tsan|asan-ubsan|gcc-asan> [ctest args...]" >&2
    exit 2 ;;
esac
shift

bash scripts/setup.sh

build="build/$name"
# -O1 -g with assertions on: optimised enough for the sanitizer's cost, and
# keeps the checks in the code.
export CC="$cc" CXX="$cxx"
weft_configure "$build" "$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DWEFT_SANITIZE="$sanitize" \
  -DWEFT_BUILD_TESTS=ON -DWEFT_BUILD_EXAMPLES=ON -DWEFT_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j2

# Reports must be symbolized: tests/tsan.supp matches function names, and an
# unsymbolized report (frames "<null>") matches none of them.  The sanitizer
# runtime does not find a symbolizer by itself here ("WARNING: invalid path to
# external symbolizer!"; clang-19 is installed without llvm-19), so point it
# at one explicitly: llvm-19's if present, else any llvm-symbolizer.
symbolizer=""
for s in /usr/lib/llvm-19/bin/llvm-symbolizer llvm-symbolizer-19 llvm-symbolizer; do
  if p="$(command -v "$s" 2>/dev/null)"; then
    symbolizer="$p"
    break
  fi
done
sym=""
if [[ -n "$symbolizer" ]]; then
  sym=":external_symbolizer_path=$symbolizer"
else
  echo "warning: no llvm-symbolizer found: sanitizer reports stay unsymbolized and" \
       "tests/tsan.supp cannot match them" >&2
fi

# tests/tsan.supp: races TSan reports in uninstrumented libstdc++ (each one
# explained there).
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp$sym${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export ASAN_OPTIONS="detect_stack_use_after_return=1:detect_leaks=1:strict_init_order=1$sym${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1$sym${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
ctest --test-dir "$build" --output-on-failure -j2 -LE consumer "$@"
