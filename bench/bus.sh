#!/usr/bin/env bash
# lodged's bus API numbers: cold bus activation, warm ListContainers with 100 containers
# defined, and `lodgectl start` until running. A private dbus-daemon activates lodged from a
# service file, as the system bus does on a host without systemd. Usage: bench/bus.sh [BUILD]
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
T=$(mktemp -d /tmp/lodge-bench-bus.XXXXXX)
chmod 755 "$T"
cleanup() {
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null || true
  pkill -f "$T/" 2>/dev/null || true
  remove_cgroups "lodge-bench-bus-$$"
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/services"
bench_env "$T" bus
export LODGE_IDLE_TIMEOUT=1
# The activated lodged gets its environment from this wrapper.
cat > "$T/lodged-wrapper" <<WRAP
#!/bin/sh
export LODGE_STATE_DIR=$LODGE_STATE_DIR LODGE_RUNTIME_DIR=$LODGE_RUNTIME_DIR LODGE_LOG_DIR=$LODGE_LOG_DIR
export LODGE_LXCFS_DIR=$LODGE_LXCFS_DIR LODGE_SUPERVISOR=$LODGE_SUPERVISOR LODGE_CGROUP_ROOT=$LODGE_CGROUP_ROOT
export LODGE_EXEC_HELPER=$LODGE_EXEC_HELPER
export LODGE_IDLE_TIMEOUT=\${LODGE_IDLE_TIMEOUT:-1}
exec $build/lodged 2>>$T/lodged.log
WRAP
chmod +x "$T/lodged-wrapper"
printf '[D-BUS Service]\nName=io.lodge1\nExec=%s\nUser=root\n' "$T/lodged-wrapper" > "$T/services/io.lodge1.service"
private_bus "$T"
bench=$build/bench/bench-bus
ctl=$build/lodgectl

wait_lodged_gone() { while pgrep -f "$build/lodged" -P 1 >/dev/null || pgrep -f "$T/lodged-wrapper" >/dev/null; do :; done; }

echo "# lodged bus API ($(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1 /proc/loadavg))"
cold=()
for i in $(seq 10); do
  wait_lodged_gone
  cold+=("$("$bench" cold)")
  # lodged exits after 1 s of idleness; the next round starts it cold again.
done
printf '%s\n' "${cold[@]}" | sort -n | awk '{a[NR]=$1} END {printf "cold activation + first ListContainers (0 containers): min %.1f median %.1f max %.1f ms (%d runs)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'

export LODGE_IDLE_TIMEOUT=0
for i in $(seq 100); do "$ctl" create "b$i" >/dev/null; done
echo "warm ListContainers, 100 containers defined: $("$bench" warm 2000)"

cold=()
for i in $(seq 5); do
  pkill -f "$build/lodged" || true
  wait_lodged_gone
  cold+=("$("$bench" cold)")
done
printf '%s\n' "${cold[@]}" | sort -n | awk '{a[NR]=$1} END {printf "cold activation + first ListContainers (100 containers): min %.1f median %.1f max %.1f ms (%d runs)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'

st=()
for i in $(seq 10); do
  t0=$EPOCHREALTIME
  "$ctl" start b1
  t1=$EPOCHREALTIME
  st+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b-a)*1000}')")
  "$ctl" stop --force b1
done
printf '%s\n' "${st[@]}" | sort -n | awk '{a[NR]=$1} END {printf "lodgectl start -> running (busybox, unprivileged): min %.1f median %.1f max %.1f ms (%d runs)\n", a[1], a[int((NR+1)/2)], a[NR], NR}'
