#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build weft with g++ and run the whole test suite (ctest).  Extra arguments go
# to ctest, e.g.  bash scripts/test.sh -R Cancel
#
# WEFT_REQUIRE_DEV_DEPS=ON: a developer dependency that is missing stops the
# configure here (a plain configure would skip the tests, benchmarks or stress
# tool with a message and build the rest), so CI cannot pass without them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

bash scripts/setup.sh

build=build/test
weft_configure "$build" g++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g -DNDEBUG" \
  -DWEFT_SANITIZE= \
  -DWEFT_BUILD_TESTS=ON -DWEFT_BUILD_EXAMPLES=ON -DWEFT_BUILD_BENCHMARKS=ON \
  -DWEFT_BUILD_STRESS=ON -DWEFT_REQUIRE_DEV_DEPS=ON
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure --no-tests=error -j2 "$@"
