# SPDX-License-Identifier: MIT
# Sourced by check.sh and readme_install.sh (tests/consumer/).  Not meant to be run.
#
# consumer_dirs [WEFT_SOURCE_DIR] [WORK_DIR]: the script's arguments.  Sets
# `here` (tests/consumer), `src` (default: the tree holding it) and `work`: a
# fresh WORK_DIR, emptied first, or a temporary directory removed at exit.
consumer_dirs() {
  here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
  src="$(cd "${1:-$here/../..}" && pwd)"
  work="${2:-}"
  if [[ -z "$work" ]]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/weft-consumer.XXXXXX")"
    # shellcheck disable=SC2064  # expanded now: $work is set
    trap "rm -rf '$work'" EXIT
  else
    rm -rf "$work"
    mkdir -p "$work"
  fi
}

die() {
  echo "FAIL: $*" >&2
  exit 1
}
