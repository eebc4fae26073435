# SPDX-License-Identifier: MIT
# Sourced by the scripts in this folder.  Not meant to be run.

# weft_configure BUILD_DIR CXX [cmake args...]
#
# Configure BUILD_DIR with Ninja and the C++ compiler CXX.  A build dir that an
# earlier configure set up with another compiler or generator is reset first
# (CMake would otherwise wipe its cache itself and drop the -D options given
# here).  Objects are kept whenever the compiler is unchanged.
weft_configure() {
  local build="$1" cxx="$2"
  shift 2
  local want have gen
  if ! want="$(command -v "$cxx")"; then
    echo "error: C++ compiler '$cxx' not found (run scripts/setup.sh)" >&2
    return 1
  fi
  if [[ -f "$build/CMakeCache.txt" ]]; then
    have="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")"
    gen="$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$build/CMakeCache.txt")"
    if [[ "$have" != "$want" || "$gen" != "Ninja" ]]; then
      echo "note: $build was configured with '${have:-?}' / '${gen:-?}'; resetting it for $want / Ninja"
      rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
    fi
  fi
  cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$want" "$@"
}

# weft_symbolizer_option: ":external_symbolizer_path=..." for TSAN_OPTIONS /
# ASAN_OPTIONS, or nothing (scripts/stress.sh; sanitize.sh does the same
# search itself).  clang-19's sanitizer runtime does not find Debian's
# llvm-symbolizer (package llvm) by itself; unsymbolized stacks would also keep
# the function-name suppressions in tests/tsan.supp from matching.
weft_symbolizer_option() {
  local s
  for s in /usr/lib/llvm-19/bin/llvm-symbolizer llvm-symbolizer-19 llvm-symbolizer; do
    if command -v "$s" >/dev/null 2>&1; then
      echo ":external_symbolizer_path=$(command -v "$s")"
      return
    fi
  done
}
