#!/usr/bin/env bash
# Configures and builds lodge into BUILD_DIR (default build/), extra meson options after it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ -d "$dir" ] && [ -f "$dir/build.ninja" ]; then
  meson configure "$dir" "$@" >/dev/null
else
  meson setup "$dir" "$@" >/dev/null
fi
# Quiet on success; on failure the compiler's own words, which CI logs would otherwise lose.
ninja -C "$dir" >"$dir/ninja.log" 2>&1 || { tail -n 60 "$dir/ninja.log"; exit 1; }
