#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build weft as a shared library, install it into a temporary prefix, then
# build and run a project that uses it every supported way:
#
#   package       find_package(weft) against the installed prefix
#   subdirectory  add_subdirectory(weft) in a parent that installs and exports
#                 a library linking weft::weft (WEFT_INSTALL left unset)
#   downstream    after each of the two: a second project find_package()s the
#                 parent's export and runs the library's task
#   stress        the installed bin/weft-stress runs; in package mode the
#                 project builds its own stress program over weft::stress
#                 (stress.cpp, find_package(weft COMPONENTS stress)) and runs it
#   pkg-config    main.cpp compiled and linked with
#                 `pkg-config --cflags --libs weft` alone (no -std of its own)
#
# and check the version everywhere it is written (version.hpp, the program,
# weftConfigVersion.cmake and its compatibility rule, weft.pc, the SONAME).
#
#   bash tests/consumer/check.sh [WEFT_SOURCE_DIR] [WORK_DIR]
#
# Honours $CXX (compiler) and $CMAKE_GENERATOR (default Ninja when available).
# Registered as the ctest test consumer_builds_every_way (label consumer).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
consumer_dirs "$@"

gen_args=()
if [[ -n "${CMAKE_GENERATOR:-}" ]]; then
  gen_args=(-G "$CMAKE_GENERATOR")
elif command -v ninja >/dev/null 2>&1; then
  gen_args=(-G Ninja)
fi
cxx="${CXX:-c++}"
cxx_args=(-DCMAKE_CXX_COMPILER="$cxx")
jobs="${WEFT_CONSUMER_JOBS:-2}"
prefix="$work/prefix"

step() { printf '\n=== consumer check: %s\n' "$*"; }
command -v pkg-config >/dev/null 2>&1 || die "pkg-config is not installed (bash scripts/setup.sh)"

version="$(sed -n 's/^#define WEFT_VERSION_\(MAJOR\|MINOR\|PATCH\) \+\([0-9]\+\)$/\2/p' \
  "$src/api/weft/version.hpp" | paste -sd.)"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "no version in api/weft/version.hpp: '$version'"
major="${version%%.*}"
minor="${version#*.}"
minor="${minor%%.*}"

# expect_run NAME EXPECTED COMMAND...: runs the program, compares its output.
expect_run() {
  local name="$1" expected="$2" out
  shift 2
  out="$("$@")" || die "$name exited with $?: $out"
  echo "$out"
  [[ "$out" == "$expected" ]] || die "$name printed '$out', expected '$expected'"
}

step "build and install weft $version (shared) from $src into $prefix"
cmake -S "$src" -B "$work/weft-build" "${gen_args[@]}" "${cxx_args[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_BENCHMARKS=OFF -DWEFT_BUILD_EXAMPLES=OFF \
  -DWEFT_BUILD_STRESS=ON -DCMAKE_INSTALL_PREFIX="$prefix"
cmake --build "$work/weft-build" --parallel "$jobs"
cmake --install "$work/weft-build"

for f in include/weft/weft.hpp include/weft/version.hpp include/weft/task.hpp \
  include/weft/runtime.hpp include/weft/stress.hpp bin/weft-stress share/doc/weft/LICENSE; do
  [[ -f "$prefix/$f" ]] || die "$prefix/$f was not installed"
done
config="$(find "$prefix" -name weftConfig.cmake -print -quit)"
[[ -n "$config" ]] || die "no weftConfig.cmake under $prefix"
for f in weftConfigVersion.cmake weftTargets.cmake; do
  [[ -f "$(dirname "$config")/$f" ]] || die "$f missing next to $config"
done
pc="$(find "$prefix" -name weft.pc -print -quit)"
[[ -n "$pc" ]] || die "no weft.pc under $prefix"
so="$(find "$prefix" -name 'libweft.so' -print -quit)"
[[ -n "$so" ]] || die "no libweft.so under $prefix"
[[ -n "$(find "$prefix" -name 'libweft_stress.so' -print -quit)" ]] ||
  die "no libweft_stress.so under $prefix"

# expect_exit NAME CODE COMMAND...: the program must exit with CODE.
expect_exit() {
  local name="$1" code="$2" rc=0
  shift 2
  "$@" >"$work/expect_exit.log" 2>&1 || rc=$?
  [[ "$rc" == "$code" ]] || { cat "$work/expect_exit.log"; die "$name exited $rc, expected $code"; }
  tail -n 1 "$work/expect_exit.log"
}

step "the installed weft-stress: 5 seeds pass, a usage error exits 2"
expect_exit "weft-stress" 0 "$prefix/bin/weft-stress" --sim --seed=1 --iterations=5 \
  --scenario=cancel --tasks=20 --quiet
expect_exit "weft-stress --nonsense" 2 "$prefix/bin/weft-stress" --nonsense

step "version $version: weftConfigVersion.cmake, weft.pc, SONAME"
grep -q "set(PACKAGE_VERSION \"$version\")" "$(dirname "$config")/weftConfigVersion.cmake" ||
  die "weftConfigVersion.cmake does not say $version"
export PKG_CONFIG_PATH="$(dirname "$pc")"
[[ "$(pkg-config --modversion weft)" == "$version" ]] ||
  die "pkg-config --modversion weft: $(pkg-config --modversion weft), expected $version"
if [[ "$major" -eq 0 ]]; then
  soname="libweft.so.$major.$minor" # 0.x: a minor release may break the ABI
else
  soname="libweft.so.$major"
fi
readelf -d "$so" | grep -q "(SONAME).*\[$soname\]" ||
  die "SONAME of $so is not $soname: $(readelf -d "$so" | grep SONAME)"
echo "SONAME $soname, weftConfigVersion.cmake and weft.pc say $version"

# accepts MAJOR.MINOR: does the installed weftConfigVersion.cmake accept a
# find_package(weft MAJOR.MINOR)?  (Its inputs set as find_package sets them.)
accepts() {
  cat >"$work/accepts.cmake" <<EOF
set(PACKAGE_FIND_VERSION $1)
set(PACKAGE_FIND_VERSION_MAJOR ${1%%.*})
set(PACKAGE_FIND_VERSION_MINOR ${1#*.})
include("$(dirname "$config")/weftConfigVersion.cmake")
if(PACKAGE_VERSION_COMPATIBLE)
  message("yes")
endif()
EOF
  cmake -P "$work/accepts.cmake" 2>&1 | grep -qx yes
}
accepts "$major.$minor" || die "find_package(weft $major.$minor) rejects $version"
if [[ "$major" -eq 0 ]]; then
  # SameMinorVersion while 0.x: another minor is another ABI.
  ! accepts "0.$((minor + 1))" || die "find_package(weft 0.$((minor + 1))) accepts $version"
  if [[ "$minor" -gt 0 ]]; then
    ! accepts "0.$((minor - 1))" || die "find_package(weft 0.$((minor - 1))) accepts $version"
  fi
  echo "find_package(weft $major.$minor) accepts $version; another 0.x minor does not"
else
  ! accepts "$((major + 1)).0" || die "find_package(weft $((major + 1)).0) accepts $version"
  echo "find_package(weft $major.$minor) accepts $version; major $((major + 1)) does not"
fi

for mode in package subdirectory; do
  step "consumer, mode=$mode"
  build="$work/consumer-$mode"
  parent_prefix="$work/parent-$mode"
  if [[ "$mode" == package ]]; then
    how=(-DCMAKE_PREFIX_PATH="$prefix" -DWEFT_CONSUMER_STRESS=ON)
  else
    how=(-DWEFT_SOURCE_DIR="$src") # and no WEFT_* option: the defaults must do
  fi
  cmake -S "$here" -B "$build" "${gen_args[@]}" "${cxx_args[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DWEFT_CONSUMER_MODE="$mode" "${how[@]}" \
    -DCMAKE_INSTALL_PREFIX="$parent_prefix"
  if [[ "$mode" == package ]]; then
    found="$(sed -n 's/^weft_DIR:PATH=//p' "$build/CMakeCache.txt")"
    [[ "$found" == "$prefix"/* ]] ||
      die "find_package(weft) found '$found', not the one installed in $prefix"
  fi
  cmake --build "$build" --parallel "$jobs"
  expect_run "weft_consumer ($mode)" \
    "weft $version consumer ($mode): block_on -> 42, every construct -> 100" \
    "$build/weft_consumer"
  if [[ "$mode" == package ]]; then
    step "weft_consumer_stress: a scenario of the consumer's own on weft::stress"
    expect_exit "weft_consumer_stress" 0 "$build/weft_consumer_stress" --sim --seed=1 \
      --iterations=200 --tasks=50 --quiet
    grep -q 'scenarios=tally ' "$work/expect_exit.log" ||
      die "weft_consumer_stress did not run its scenario 'tally'"
    expect_exit "weft_consumer_stress (real runtime)" 0 "$build/weft_consumer_stress" \
      --seed=1 --duration=1s --tasks=50 --quiet
    expect_exit "weft_consumer_stress --scenario=nonsense" 2 "$build/weft_consumer_stress" \
      --scenario=nonsense
  fi

  step "install the consumer's export ($mode) into $parent_prefix, then a downstream project"
  cmake --install "$build"
  down_path="$parent_prefix"
  if [[ "$mode" == package ]]; then
    down_path="$parent_prefix;$prefix"
  fi
  cmake -S "$here/downstream" -B "$work/downstream-$mode" "${gen_args[@]}" "${cxx_args[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$down_path"
  if [[ "$mode" == subdirectory ]]; then
    # The parent installed weft beside its own library.
    found="$(sed -n 's/^weft_DIR:PATH=//p' "$work/downstream-$mode/CMakeCache.txt")"
    [[ "$found" == "$parent_prefix"/* ]] ||
      die "downstream found weft in '$found', not in the parent's prefix $parent_prefix"
  fi
  cmake --build "$work/downstream-$mode" --parallel "$jobs"
  expect_run "weft_downstream ($mode)" "weft downstream: weft_consumer::answer() -> 42" \
    "$work/downstream-$mode/weft_downstream"
done

step "pkg-config: $cxx main.cpp \$(pkg-config --cflags --libs weft), PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
flags="$(pkg-config --cflags --libs weft)"
echo "pkg-config --cflags --libs weft: $flags"
libdir="$(pkg-config --variable=libdir weft)"
[[ "$(realpath "$libdir")" == "$(realpath "$(dirname "$so")")" ]] ||
  die "weft.pc's libdir $libdir is not where libweft.so is ($(dirname "$so"))"
# shellcheck disable=SC2086  # the flags are words
"$cxx" '-DWEFT_CONSUMER_MODE_NAME="pkg-config"' "$here/main.cpp" $flags \
  -Wl,-rpath,"$libdir" -o "$work/consumer-pkg-config"
expect_run "weft_consumer (pkg-config)" \
  "weft $version consumer (pkg-config): block_on -> 42, every construct -> 100" \
  "$work/consumer-pkg-config"

echo
echo "consumer check: PASS (find_package, add_subdirectory with an exported parent, two" \
  "downstream projects, pkg-config; version $version everywhere)"
