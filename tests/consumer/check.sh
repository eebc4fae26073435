#!/usr/bin/env bash
# Build weft, install it into a temporary prefix, then build and run the consumer
# project both ways (add_subdirectory and find_package) and check what it prints.
#
#   bash tests/consumer/check.sh [WEFT_SOURCE_DIR] [WORK_DIR]
#
# Honours $CXX (compiler) and $CMAKE_GENERATOR (default Ninja when available).
# Registered as the ctest test consumer_builds_both_ways (label consumer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "${1:-$here/../..}" && pwd)"
work="${2:-}"
if [[ -z "$work" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/weft-consumer.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
else
  rm -rf "$work"
  mkdir -p "$work"
fi

gen_args=()
if [[ -n "${CMAKE_GENERATOR:-}" ]]; then
  gen_args=(-G "$CMAKE_GENERATOR")
elif command -v ninja >/dev/null 2>&1; then
  gen_args=(-G Ninja)
fi
cxx_args=()
if [[ -n "${CXX:-}" ]]; then
  cxx_args=(-DCMAKE_CXX_COMPILER="$CXX")
fi
jobs="${WEFT_CONSUMER_JOBS:-2}"
prefix="$work/prefix"

step() { printf '\n=== consumer check: %s\n' "$*"; }

step "build and install weft from $src into $prefix"
cmake -S "$src" -B "$work/weft-build" "${gen_args[@]}" "${cxx_args[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_BENCHMARKS=OFF -DWEFT_BUILD_EXAMPLES=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix"
cmake --build "$work/weft-build" --parallel "$jobs"
cmake --install "$work/weft-build"

for f in include/weft/weft.hpp include/weft/task.hpp include/weft/runtime.hpp; do
  [[ -f "$prefix/$f" ]] || { echo "FAIL: $prefix/$f was not installed" >&2; exit 1; }
done
config="$(find "$prefix" -name weftConfig.cmake -print -quit)"
[[ -n "$config" ]] || { echo "FAIL: no weftConfig.cmake under $prefix" >&2; exit 1; }
for f in weftConfigVersion.cmake weftTargets.cmake; do
  [[ -f "$(dirname "$config")/$f" ]] || { echo "FAIL: $f missing next to $config" >&2; exit 1; }
done

status=0
for mode in package subdirectory; do
  step "consumer, mode=$mode"
  cmake -S "$here" -B "$work/consumer-$mode" "${gen_args[@]}" "${cxx_args[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DWEFT_CONSUMER_MODE="$mode" \
    -DWEFT_SOURCE_DIR="$src" \
    -DCMAKE_PREFIX_PATH="$prefix"
  if [[ "$mode" == package ]]; then
    found="$(sed -n 's/^weft_DIR:PATH=//p' "$work/consumer-$mode/CMakeCache.txt")"
    if [[ "$found" != "$prefix"/* ]]; then
      echo "FAIL: find_package(weft) found '$found', not the one installed in $prefix" >&2
      exit 1
    fi
  fi
  cmake --build "$work/consumer-$mode" --parallel "$jobs"
  out="$("$work/consumer-$mode/weft_consumer")"
  echo "$out"
  expected="weft consumer ($mode): block_on -> 42"
  if [[ "$out" != "$expected" ]]; then
    echo "FAIL: mode=$mode printed '$out', expected '$expected'" >&2
    status=1
  fi
done

if [[ "$status" -eq 0 ]]; then
  echo "consumer check: PASS (package and subdirectory)"
fi
exit "$status"
