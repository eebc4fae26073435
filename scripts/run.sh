#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: build weft (Release) and run the seed example (asyncio's
# cancel-a-sleeping-worker program, done with weft), then fib(30) with weft and
# with oneTBB task_group side by side.  Extra arguments go to fib_compare.
# The compiler is clang++-19 (as for scripts/bench.sh: weft's fork-join path is
# markedly faster with it, docs/benchmarks.md); CXX=g++ bash scripts/run.sh for
# another.  With WEFT_LIBFORK_DIR set (a copy of libfork, docs/benchmarks.md)
# fib_compare has a libfork column too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

bash scripts/setup.sh

build=build/release
weft_configure "$build" "${CXX:-clang++-19}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DWEFT_SANITIZE= \
  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=ON -DWEFT_BUILD_BENCHMARKS=ON \
  -DWEFT_LIBFORK_DIR="${WEFT_LIBFORK_DIR:-}"
cmake --build "$build" -j2

run_exe() {
  local exe="$1"
  shift
  if [[ ! -x "$exe" ]]; then
    echo "run.sh: $exe was not built (no such target in examples/ or benchmarks/ CMakeLists.txt?)" >&2
    exit 1
  fi
  echo "== $exe $*"
  "$exe" "$@"
  echo
}

run_exe "$build/examples/seed_cancel"
run_exe "$build/benchmarks/fib_compare" --quick "$@"
