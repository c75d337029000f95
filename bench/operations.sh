#!/usr/bin/env bash
# Does long work block lodged? (issue 13's number: ListContainers p99 < 20 ms while a 250 MB
# rootfs tarball imports and 20 containers start.) A private dbus-daemon and lodged; first the
# quiet ListContainers latency, then the same while the import and the 20 starts run at once.
# Usage: bench/operations.sh [BUILD] [TARBALL_MB]; LODGE_BENCH_BUS=path/to/bench-bus to measure
# another build's lodged with this tree's client.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
mb=${2:-250}
T=$(mktemp -d /tmp/lodge-bench-ops.XXXXXX)
chmod 755 "$T"
cleanup() {
  [ -n "${LODGED_PID:-}" ] && kill "$LODGED_PID" 2>/dev/null || true
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null || true
  for i in $(seq 20); do "$build/lodgectl" stop --force "s$i" >/dev/null 2>&1 || true; done
  pkill -f "$T/" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/; do find "$h/lodge-bench-ops-$$" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/policy" "$T/src"
cp "$top/dbus/io.lodge1.conf" "$T/policy/"
export LODGE_STATE_DIR=$T/state LODGE_RUNTIME_DIR=$T/run LODGE_LOG_DIR=$T/log LODGE_LXCFS_DIR=$T/nolxcfs
export LODGE_SUPERVISOR=$build/lodge-supervisor LODGE_CGROUP_ROOT=lodge-bench-ops-$$ LODGE_IDLE_TIMEOUT=0
sed -e "s#<listen>.*</listen>#<listen>unix:path=$T/bus</listen>#" \
    -e "s#<includedir>system.d</includedir>#<includedir>$T/policy</includedir>#" \
    -e "s#<includedir>/etc/dbus-1/system.d</includedir>##" \
    -e 's#<pidfile>.*</pidfile>##' -e 's#<user>.*</user>##' -e 's#<servicehelper>.*</servicehelper>##' \
    /usr/share/dbus-1/system.conf > "$T/bus.conf"
dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile --print-address=1 > "$T/address" 2>/dev/null &
DBUS_PID=$!
while [ ! -S "$T/bus" ]; do kill -0 $DBUS_PID; done  # dbus-daemon gives no other readiness event
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$T/bus
"$build/lodged" 2>>"$T/lodged.log" &
LODGED_PID=$!
ctl=$build/lodgectl
# bench-bus of this tree ("busy" times every call, the first too) against either lodged.
bench=${LODGE_BENCH_BUS:-$build/bench/bench-bus}
until "$ctl" list >/dev/null 2>&1; do kill -0 $LODGED_PID; done

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
