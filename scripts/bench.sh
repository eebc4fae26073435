#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the benchmarks in Release and run the whole suite: weft and oneTBB
# interleaved in each program, 1 and 2 workers, >= 5 repetitions (3 with
# --quick).  Writes
#   build/bench/raw/*.json, *.txt   what each program wrote / printed
#   build/bench/results.json        all of it merged, plus the machine and load
#   build/bench/results.md          medians, ratios, issue-4 targets vs measured
#   build/bench/img/*.png           time and speedup per problem, latency CDFs
#
#   bash scripts/bench.sh [--quick]           # clang-19 (the default)
#   CXX=g++ bash scripts/bench.sh             # another compiler (named in every output)
#   WEFT_LIBFORK_DIR=/path/to/libfork bash scripts/bench.sh
#                                             # with libfork beside oneTBB, and slow_mode
#
# The default compiler is clang-19: weft's fork-join path takes about 16% fewer
# instructions with it than with g++ 12 (callgrind, fib), and clang lowers
# symmetric transfer to guaranteed tail calls (docs/benchmarks.md).
#
# --quick is a smoke run (about a minute): smaller problems, 10^3 latency
# samples, 3 repetitions.  See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help)
      sed -n '2,21p' "$0"
      exit 0
      ;;
    *)
      echo "bench.sh: unknown argument '$arg' (usage: bash scripts/bench.sh [--quick])" >&2
      exit 2
      ;;
  esac
done

bash scripts/setup.sh

# Debian's python3 (where setup.sh installed python3-matplotlib), even when
# another python3 (pyenv, a venv) comes first in PATH.
py=python3
if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  py=/usr/bin/python3
fi

cxx="${CXX:-clang++-19}"
build=build/bench
weft_configure "$build" "$cxx" \
  -DCMAKE_BUILD_TYPE=Release \
  -DWEFT_SANITIZE= \
  -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCHMARKS=ON \
  -DWEFT_LIBFORK_DIR="${WEFT_LIBFORK_DIR:-}"
cmake --build "$build" -j2 --target weft_benchmarks

bin="$build/benchmarks"
raw="$build/raw"
rm -rf "$raw" "$build/img"
mkdir -p "$raw"

# Processes other than this run using a noticeable share of a CPU right now
# (top's second sample, over one second).
busy_processes() {
  top -b -n 2 -d 1 -w 200 2>/dev/null |
    awk '/^top -/ { block++ } block == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 10 && $12 != "top" {
           printf "%s%s %s%%", sep, $12, $9; sep = ", " }'
}

started="$(date '+%Y-%m-%d %H:%M')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
busy_before="$(busy_processes || true)"
echo "bench: load average before: $load_before; busy: ${busy_before:-none}"

status=0
run() {  # run NAME PROGRAM ARGS...  (a failed check is reported, the suite goes on)
  local name="$1" prog="$2"
  shift 2
  echo
  echo "== $prog $*"
  if ! "$bin/$prog" "$@" --json="$raw/$name.json" 2>&1 | tee "$raw/$name.txt"; then
    echo "bench: $prog FAILED (see $raw/$name.txt)" >&2
    status=1
  fi
}

q=()
if [[ $quick -eq 1 ]]; then q=(--quick); fi
if [[ $quick -eq 1 ]]; then
  run fib fib_compare --quick
else
  run fib fib_compare --n=35 --reps=5
fi
run skynet skynet_bench "${q[@]}"
run nqueens nqueens_bench "${q[@]}"
run uts uts_bench "${q[@]}"
run cancel_latency cancel_latency "${q[@]}"
run mass_cancel mass_cancel "${q[@]}"
run memory memory_bench "${q[@]}"
if [[ -n "${WEFT_LIBFORK_DIR:-}" ]]; then
  run slow_mode slow_mode "${q[@]}"
fi

echo
echo "== weft_micro"
if [[ $quick -eq 1 ]]; then micro=(--benchmark_repetitions=3 --benchmark_min_time=0.05)
else micro=(--benchmark_repetitions=5 --benchmark_min_time=0.2); fi
if ! "$bin/weft_micro" "${micro[@]}" --benchmark_report_aggregates_only=true \
    --benchmark_out="$raw/micro.json" --benchmark_out_format=json 2>&1 | tee "$raw/micro.txt"; then
  echo "bench: weft_micro FAILED" >&2
  status=1
fi

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
busy_after="$(busy_processes || true)"
echo
echo "bench: load average after: $load_after; busy: ${busy_after:-none}"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# What the measured library differs from the commit in: tracked files changed,
# and untracked sources that the runtime/*.cpp glob compiles in.
changed="$(git status --porcelain -- api runtime CMakeLists.txt 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"
dirty=false
if [[ -n "$changed" ]]; then dirty=true; fi
# The commit of the libfork copy, when it is a git checkout of its own.
libfork_commit=""
if [[ -n "${WEFT_LIBFORK_DIR:-}" && -e "$WEFT_LIBFORK_DIR/.git" ]]; then
  libfork_commit="$(git -C "$WEFT_LIBFORK_DIR" rev-parse --short HEAD 2>/dev/null || true)"
fi
STARTED="$started" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" BUSY_BEFORE="$busy_before" \
BUSY_AFTER="$busy_after" COMMIT="$commit" DIRTY="$dirty" CHANGED="$changed" QUICK="$quick" \
COMPILER="$("$cxx" --version | head -n1)" LIBFORK_DIR="${WEFT_LIBFORK_DIR:-}" \
LIBFORK_COMMIT="$libfork_commit" \
"$py" - "$raw/meta.json" <<'EOF'
import json, os, subprocess, sys, datetime
cpu = "?"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
meta = {
    "started": os.environ["STARTED"],
    "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or 0),
    "cpu": cpu,
    "kernel": os.uname().release,
    "compiler_version": os.environ["COMPILER"],
    "load_before": os.environ["LOAD_BEFORE"],
    "load_after": os.environ["LOAD_AFTER"],
    "busy_before": os.environ["BUSY_BEFORE"],
    "busy_after": os.environ["BUSY_AFTER"],
    "commit": os.environ["COMMIT"],
    "dirty": os.environ["DIRTY"] == "true",
    "changed_files": os.environ["CHANGED"].split(),
    "quick": os.environ["QUICK"] == "1",
}
if os.environ["LIBFORK_DIR"]:
    meta["libfork_dir"] = os.environ["LIBFORK_DIR"]
    meta["libfork_commit"] = os.environ["LIBFORK_COMMIT"] or "unknown (not a git checkout)"
with open(sys.argv[1], "w") as f:
    json.dump(meta, f, indent=1)
EOF

"$py" benchmarks/report.py "$raw" "$build" || status=1
echo "bench: results in $build/results.md, $build/results.json, plots in $build/img/"
exit $status
