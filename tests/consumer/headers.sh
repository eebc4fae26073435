#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The public headers as a user's strict build sees them, with g++ and clang-19:
#
#   1. every header under api/weft, each alone in a translation unit, and
#      tests/consumer/main.cpp (which instantiates the main templates) compile
#      with -std=c++20 and the flags below, warnings as errors;
#   2. every header alone under -std=c++17 fails, and its first error is
#      weft's own "weft needs C++20" (not one from the standard library).
#
#   bash tests/consumer/headers.sh [WEFT_SOURCE_DIR]
#
# The headers are included with -I, not -isystem, so that their warnings are
# reported (CMake hands an imported target's include directories to its users
# as -isystem, which hides them).  Registered as the ctest test
# consumer_headers_warning_clean (label consumer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "${1:-$here/../..}" && pwd)"
strict=(-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror)

compilers=(g++)
if command -v clang++-19 >/dev/null 2>&1; then
  compilers+=(clang++-19)
else
  echo "NOTE: clang++-19 is not installed: the headers are checked with g++ only"
fi

mapfile -t headers < <(cd "$src/api" && find weft -name '*.hpp' | sort)
[[ ${#headers[@]} -gt 0 ]] || { echo "FAIL: no headers under $src/api/weft" >&2; exit 1; }

failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

for cxx in "${compilers[@]}"; do
  echo "=== $cxx: $("$cxx" --version | head -n 1)"
  for h in "${headers[@]}"; do
    if ! out="$(printf '#include <%s>\n' "$h" |
      nice "$cxx" -std=c++20 "${strict[@]}" -I"$src/api" -x c++ -fsyntax-only - 2>&1)"; then
      printf '%s\n' "$out" >&2
      fail "$cxx -std=c++20: <$h> alone does not compile clean"
    fi
  done
  echo "$cxx: ${#headers[@]} headers alone, -std=c++20 ${strict[*]}: done"

  if ! nice "$cxx" -std=c++20 "${strict[@]}" -O2 -I"$src/api" -c "$here/main.cpp" -o /dev/null; then
    fail "$cxx -std=c++20: tests/consumer/main.cpp (the templates instantiated) does not compile clean"
  fi
  echo "$cxx: tests/consumer/main.cpp, -O2 -std=c++20 ${strict[*]}: done"

  for h in "${headers[@]}"; do
    if out="$(printf '#include <%s>\n' "$h" |
      "$cxx" -std=c++17 -I"$src/api" -x c++ -fsyntax-only - 2>&1)"; then
      fail "$cxx -std=c++17: <$h> compiled; it must stop with weft's C++20 error"
      continue
    fi
    first="$(printf '%s\n' "$out" | grep -m 1 -E ': (fatal )?error: ' || true)"
    if [[ "$first" != *'weft needs C++20'* ]]; then
      printf '%s\n' "$out" | head -n 20 >&2
      fail "$cxx -std=c++17: the first error for <$h> is not weft's: $first"
    fi
  done
  echo "$cxx: ${#headers[@]} headers alone, -std=c++17: each stops with: $first"
done

if [[ $failed -eq 0 ]]; then
  echo "headers check: PASS (${compilers[*]})"
fi
exit "$failed"
