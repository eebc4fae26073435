#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Chaos stress: build weft and weft-stress with WEFT_CHAOS=ON (random yields
# and short delays at the runtime's atomics and park points) and run the
# real-runtime stress tests, ctest label `stress`.
#
#   bash scripts/stress.sh chaos        g++ -O2,     chaos points on -> build/chaos
#   bash scripts/stress.sh chaos-tsan   clang-19 TSan, chaos points on -> build/chaos-tsan
#
# Only the library, the tool and the user-scenario example (weft-stress-bank,
# stress/examples/bank.cpp) are built (tests, examples and benchmarks off).
# Extra arguments go to ctest.  WEFT_STRESS_DURATION (default 20s) sets how
# long each stress test runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

name="${1:-}"
case "$name" in
  chaos)      cxx=g++;        sanitize="";   flags="-O2 -g -DNDEBUG" ;;
  chaos-tsan) cxx=clang++-19; sanitize=tsan; flags="-O1 -g"; export CC=clang-19 CXX=clang++-19 ;;
  *)
    echo "usage: $0 <chaos|chaos-tsan> [ctest args...]" >&2
    exit 2 ;;
esac
shift

bash scripts/setup.sh

build="build/$name"
weft_configure "$build" "$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
  -DWEFT_SANITIZE="$sanitize" -DWEFT_CHAOS=ON \
  -DWEFT_STRESS_DURATION="${WEFT_STRESS_DURATION:-20s}" \
  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCHMARKS=OFF \
  -DWEFT_BUILD_STRESS=ON -DWEFT_INSTALL=OFF
cmake --build "$build" -j2 --target weft-stress weft-stress-bank

sym="$(weft_symbolizer_option)"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp$sym${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
ctest --test-dir "$build" --output-on-failure -L stress "$@"
