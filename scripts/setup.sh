#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install what building and testing weft needs, from Debian packages, when missing.
# Quick and silent-ish when everything is already there (dpkg-query only).
# Works as root; otherwise uses sudo when it exists.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libtbb-dev libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-19 libclang-rt-19-dev llvm
  clang-format-19 clang-tidy-19
  python3-matplotlib nlohmann-json3-dev
)

missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  if [[ "$status" != ii* ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: not root and no sudo; install them as root with apt-get" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
