#!/usr/bin/env bash
# Does long work block lodged? (issue 13's number: ListContainers p99 < 20 ms while a 250 MB
# rootfs tarball imports and 20 containers start.) A private dbus-daemon and lodged; first the
# quiet ListContainers latency, then the same while the import and the 20 starts run at once.
# Usage: bench/operations.sh [BUILD] [TARBALL_MB]; LODGE_BENCH_BUS=path/to/bench-bus to measure
# another build's lodged with this tree's client.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
mb=${2:-250}
T=$(mktemp -d /tmp/lodge-bench-ops.XXXXXX)
chmod 755 "$T"
cleanup() {
  # The containers first, while lodged still answers.
  for i in $(seq 20); do "$build/lodgectl" stop --force "s$i" >/dev/null 2>&1 || true; done
  [ -n "${LODGED_PID:-}" ] && kill "$LODGED_PID" 2>/dev/null || true
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null || true
  pkill -f "$T/" 2>/dev/null || true
  remove_cgroups "lodge-bench-ops-$$"
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/src"
bench_env "$T" ops
export LODGE_IDLE_TIMEOUT=0
private_bus "$T"
start_lodged "$T"
ctl=$build/lodgectl
# bench-bus of this tree ("busy" times every call, the first too) against either lodged.
bench=${LODGE_BENCH_BUS:-$build/bench/bench-bus}

# A busybox rootfs plus $mb MB of incompressible data, gzip'd: extraction is mostly gunzip
# and writes, as with a real image.
bash "$top/tests/fixtures/make-busybox-rootfs.sh" "$T/src/rootfs"
head -c "${mb}M" /dev/urandom > "$T/src/rootfs/payload"
tar -C "$T/src/rootfs" -czf "$T/src/big.tar.gz" .
rm -rf "$T/src/rootfs"
for i in $(seq 20); do "$ctl" create "s$i" >/dev/null; done

echo "# lodged under long work ($(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1 /proc/loadavg))"
echo "quiet ListContainers: $("$bench" busy 500)"
t0=$EPOCHREALTIME
"$ctl" create big "$T/src/big.tar.gz" >/dev/null &
import=$!
pids=()
for i in $(seq 20); do "$ctl" start "s$i" & pids+=($!); done
# ListContainers in a loop for as long as the import runs (at least 200 calls).
busy=$("$bench" busy 200)
while kill -0 $import 2>/dev/null; do busy="$busy"$'\n'"$("$bench" busy 200)"; done
wait $import
t1=$EPOCHREALTIME
wait "${pids[@]}"
echo "ListContainers during a ${mb} MB import and 20 starts (per 200 calls):"
echo "$busy" | sed 's/^/  /'
awk -v a="$t0" -v b="$t1" 'BEGIN {printf "import of %s MB took %.1f s\n", '"$mb"', b-a}'
echo "running: $("$ctl" list --no-legend | grep -c running) of 20"
