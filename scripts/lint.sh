#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Lint: the licence line of every source file, formatting (.clang-format) and
# clang-tidy (.clang-tidy).  Fails on any finding.
#
#   bash scripts/lint.sh           all three
#   bash scripts/lint.sh spdx      every source file git tracks (*.hpp *.cpp *.h *.sh *.py
#                                  *.cmake *.in CMakeLists.txt .ci/run) has the line
#                                  "SPDX-License-Identifier: MIT" first (second after a #! line)
#   bash scripts/lint.sh format    clang-format-19 --dry-run --Werror over the C++ files of
#                                  api/ runtime/ tests/ stress/ benchmarks/ examples/
#   bash scripts/lint.sh tidy      clang-tidy-19 over the runtime/ and stress/ translation
#                                  units (and the api/, runtime/, stress/ headers they include),
#                                  from build/lint/compile_commands.json (clang++-19)
#
# To fix formatting: clang-format-19 -i FILE.  Takes about 2-3 minutes on 2
# cores, nearly all of it clang-tidy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

what="${1:-all}"
case "$what" in
  all | spdx | format | tidy) ;;
  *)
    echo "usage: $0 [all|spdx|format|tidy]" >&2
    exit 2
    ;;
esac

for tool in clang-format-19 clang-tidy-19 python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found (run scripts/setup.sh)" >&2
    exit 1
  fi
done

jobs="$(nproc 2>/dev/null || echo 2)"
failed=0

if [[ "$what" == all || "$what" == spdx ]]; then
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t sources < <(git ls-files -- '*.hpp' '*.cpp' '*.h' '*.sh' '*.py' '*.cmake' '*.in' \
      '*CMakeLists.txt' .ci/run)
    missing=()
    for f in "${sources[@]}"; do
      [[ -f "$f" ]] || continue # deleted in the work tree, not yet in the index
      first="$(head -n 1 "$f")"
      if [[ "$first" == '#!'* ]]; then
        first="$(sed -n 2p "$f")"
      fi
      if [[ "$first" != *'SPDX-License-Identifier: MIT'* ]]; then
        missing+=("$f")
      fi
    done
    echo "lint: SPDX-License-Identifier over ${#sources[@]} files"
    if [[ ${#missing[@]} -gt 0 ]]; then
      printf '  %s\n' "${missing[@]}"
      echo "lint: FAILED: ${#missing[@]} file(s) without 'SPDX-License-Identifier: MIT' on their" \
        "first line (second after #!)"
      failed=1
    else
      echo "lint: licence lines OK"
    fi
  else
    echo "lint: not a git checkout: the SPDX check needs git ls-files; skipped"
  fi
fi

if [[ "$what" == all || "$what" == format ]]; then
  mapfile -t sources < <(find api runtime tests stress benchmarks examples -type f \
    \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) | sort)
  echo "lint: clang-format-19 --dry-run over ${#sources[@]} files"
  log="$(mktemp)"
  if ! clang-format-19 --dry-run --Werror "${sources[@]}" >"$log" 2>&1; then
    cat "$log"
    n="$(grep -c ': error: code should be clang-formatted' "$log" || true)"
    echo "lint: FAILED: $n place(s) not formatted as .clang-format says (clang-format-19 -i FILE)"
    failed=1
  else
    echo "lint: formatting OK"
  fi
  rm -f "$log"
fi

if [[ "$what" == all || "$what" == tidy ]]; then
  build=build/lint
  # Only a compilation database is needed, nothing is built.  Tests, benchmarks
  # and examples are off: clang-tidy runs over runtime/ and stress/ only.
  weft_configure "$build" clang++-19 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DWEFT_BUILD_STRESS=ON -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCHMARKS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_INSTALL=OFF >/dev/null
  # The database lists each runtime file once per library variant (the stress
  # tool's deliberately broken runtimes, compiled with -DWEFT_MUTANT=<name>).  Keep
  # the plain compile of each file once, so that each is checked once.
  mkdir -p "$build/tidy"
  python3 - "$build/compile_commands.json" "$build/tidy/compile_commands.json" \
    "$build/tidy/files.txt" "$PWD" <<'EOF'
import json, os, sys
src, dst, files, root = sys.argv[1:]
seen, keep = set(), []
for e in json.load(open(src)):
    f = os.path.relpath(e["file"], root)
    cmd = e.get("command") or " ".join(e.get("arguments", []))
    if not f.startswith(("runtime/", "stress/")) or "-DWEFT_MUTANT=" in cmd or f in seen:
        continue
    seen.add(f)
    keep.append(e)
json.dump(keep, open(dst, "w"), indent=1)
open(files, "w").write("".join(e["file"] + "\n" for e in keep))
EOF
  n="$(wc -l <"$build/tidy/files.txt")"
  echo "lint: clang-tidy-19 over $n translation units ($jobs at a time)"
  rm -f "$build/tidy/"*.log
  tidy_ok=1
  if ! xargs -P "$jobs" -I{} sh -c \
    'clang-tidy-19 -p "$1" --quiet "$2" >"$1/$(basename "$2").log" 2>&1' \
    _ "$build/tidy" {} <"$build/tidy/files.txt"; then
    tidy_ok=0
  fi
  findings="$(cat "$build/tidy/"*.log | grep -E ': (warning|error): ' | sort -u || true)"
  if [[ $tidy_ok -eq 0 || -n "$findings" ]]; then
    cat "$build/tidy/"*.log | grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' || true
    echo "lint: FAILED: $(printf '%s\n' "$findings" | grep -c . || true) clang-tidy finding(s)"
    failed=1
  else
    echo "lint: clang-tidy OK"
  fi
fi

exit "$failed"
