#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# README.md's install commands, run as written on a machine that has only
# cmake, ninja and g++ (and pkg-config for the second block):
#
#   1. the ```sh blocks of README's "## Install" section are taken from README.md
#      (so the test and the page cannot drift apart): the first builds and
#      installs weft, the second compiles app.cpp with pkg-config;
#   2. the first runs verbatim in a copy of the source tree, with HOME set to a
#      scratch directory (it installs into $HOME/.local);
#   3. the second runs verbatim with tests/consumer/main.cpp as app.cpp; the
#      program it builds must run and print the expected line;
#   4. a CMake project (tests/consumer, find_package mode) builds and runs
#      against the same prefix.
#
# The minimal machine is simulated: this machine has GoogleTest, oneTBB, Google
# Benchmark and Abseil, so a toolchain file given through the environment
# (CMAKE_TOOLCHAIN_FILE, read by CMake 3.21+ when the command line names none)
# sets CMAKE_DISABLE_FIND_PACKAGE_<name> for the four of them; every other
# lookup is the real one.  The build must then say that it skipped each part
# that needs them, and still install the stress engine and weft-stress (which
# need only weft).
#
#   bash tests/consumer/readme_install.sh [WEFT_SOURCE_DIR] [WORK_DIR]
#
# Registered as the ctest test consumer_readme_install (label consumer).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
consumer_dirs "$@"

# 1. The sh blocks of the Install section, in order: block-1.sh, block-2.sh, ...
awk -v dir="$work" '
  /^## / { in_section = ($0 == "## Install") }
  in_section && /^```sh$/ { n++; file = dir "/block-" n ".sh"; printf "" > file; next }
  file != "" && /^```$/ { close(file); file = ""; next }
  file != "" { print >> file }
' "$src/README.md"
[[ -s "$work/block-1.sh" && -s "$work/block-2.sh" ]] ||
  die "README.md has no '## Install' section with two \`\`\`sh blocks"
grep -q 'cmake --install' "$work/block-1.sh" || die "README's first install block installs nothing"

# 2. A copy of the tree as a user gets it (no build directories, no .git).
mkdir -p "$work/src" "$work/home" "$work/app"
tar -C "$src" --exclude=./build --exclude=./.git -cf - . | tar -C "$work/src" -xf -

cat >"$work/minimal-machine.cmake" <<'EOF'
# Hides the developer dependencies this machine has (tests/consumer/readme_install.sh).
foreach(_pkg IN ITEMS GTest TBB benchmark absl)
  set(CMAKE_DISABLE_FIND_PACKAGE_${_pkg} ON)
endforeach()
EOF

# The environment of the minimal machine: nothing from the ctest run that
# could steer CMake or pkg-config, and -j2 (this machine's two cores are shared).
minimal_env=(env -u CXX -u CMAKE_GENERATOR -u CMAKE_PREFIX_PATH -u PKG_CONFIG_PATH -u CMAKE_BUILD_TYPE
  HOME="$work/home" CMAKE_TOOLCHAIN_FILE="$work/minimal-machine.cmake"
  CMAKE_BUILD_PARALLEL_LEVEL="${WEFT_CONSUMER_JOBS:-2}")

echo "=== README.md, ## Install, first block (run in a copy of the tree, HOME=$work/home):"
cat "$work/block-1.sh"
echo "==="
log="$work/block-1.log"
if ! (cd "$work/src" && nice "${minimal_env[@]}" bash -euo pipefail -x "$work/block-1.sh") \
  >"$log" 2>&1; then
  cat "$log"
  die "README's install commands failed on the minimal machine"
fi
grep -E '^\+ |weft:|Installing:.*(libweft|weft\.pc|weftConfig\.cmake|weft/weft\.hpp)' "$log"

for what in "GTest not found: tests not built" "TBB not found: benchmarks" \
  "benchmark not found: benchmarks"; do
  grep -q "weft: $what" "$log" || die "the configure did not say 'weft: $what'"
done
local_prefix="$work/home/.local"
for f in include/weft/weft.hpp include/weft/version.hpp lib/libweft.a \
  lib/cmake/weft/weftConfig.cmake lib/pkgconfig/weft.pc include/weft/stress.hpp \
  lib/libweft_stress.a bin/weft-stress; do
  [[ -f "$local_prefix/$f" ]] || die "$local_prefix/$f was not installed"
done

"$local_prefix/bin/weft-stress" --sim --seed=1 --iterations=3 --scenario=cancel --tasks=10 \
  --quiet | tail -n 1 || die "the installed weft-stress failed"

version="$(sed -n 's/^Version: //p' "$local_prefix/lib/pkgconfig/weft.pc")"
expected="weft $version consumer (unknown): block_on -> 42, every construct -> 100"

echo
echo "=== README.md, ## Install, second block (app.cpp = tests/consumer/main.cpp):"
cat "$work/block-2.sh"
echo "==="
cp "$here/main.cpp" "$work/app/app.cpp"
(cd "$work/app" && "${minimal_env[@]}" bash -euo pipefail -x "$work/block-2.sh") ||
  die "README's pkg-config commands failed"
out="$("$work/app/app")" || die "app exited with $?: $out"
echo "$out"
[[ "$out" == "$expected" ]] || die "app printed '$out', expected '$expected'"

echo
echo "=== find_package(weft) from $local_prefix (tests/consumer, package mode)"
"${minimal_env[@]}" cmake -S "$here" -B "$work/consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$local_prefix" -DWEFT_CONSUMER_MODE=package >"$work/consumer.log" 2>&1 ||
  {
    cat "$work/consumer.log"
    die "configuring tests/consumer against $local_prefix failed"
  }
grep 'found weft' "$work/consumer.log"
"${minimal_env[@]}" cmake --build "$work/consumer" >"$work/consumer-build.log" 2>&1 ||
  {
    cat "$work/consumer-build.log"
    die "building tests/consumer against $local_prefix failed"
  }
out="$("$work/consumer/weft_consumer")" || die "weft_consumer exited with $?: $out"
echo "$out"
[[ "$out" == "${expected/unknown/package}" ]] || die "weft_consumer printed '$out'"

echo
echo "readme install: PASS (README's commands as written, without GoogleTest, oneTBB," \
  "Google Benchmark and Abseil; pkg-config and find_package users of the result run)"
