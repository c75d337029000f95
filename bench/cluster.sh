#!/bin/bash
# bench/cluster.sh [-n RUNS] [-o RESULTS_DIR]
#
# Failover and planned-move times of a lodge container under Pacemaker, median of RUNS runs
# (default 3) of the tier-3 suite (tests/tier3/run-tier3.sh: three Debian nodes in
# systemd-nspawn with corosync and pacemaker, the container an ocf:lodge:container resource
# with a 5 s monitor, stonith-enabled=false). Each run boots a fresh cluster and measures:
#   restart   its PID 1 killed -> running again on the same node (a monitor notices, Pacemaker
#             stops and starts it)
#   move      `pcs node standby` of its node -> running on another (graceful stop, then start)
#   failover  its node's PID 1 SIGKILLed (a power cut) -> running on another node (corosync's
#             token timeout, Pacemaker's transition, the start)
# each from the action to the moment lodged on the new node reports it running (polled every
# 0.2 s). Writes RESULTS_DIR/cluster-<date>.md (default bench/results/). Must run as root,
# after a build (LODGE_BUILD_DIR, default build/) and with the tier-3 tarball
# ($LODGE_TIER3_TARBALL, scripts/test.sh makes it).
set -uo pipefail
export LC_ALL=C
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_options 3 "$@"
require_root
export LODGE_BUILD_DIR=$build
T=$(mktemp -d /tmp/lodge-clusterbench.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
export LODGE_TIER3_TIMINGS=$T/timings
for ((i = 1; i <= runs; i++)); do
    echo "== run $i of $runs"
    bash "$top/tests/tier3/run-tier3.sh" >"$T/run$i.log" 2>&1
    rc=$?
    grep -E '^(ok|not ok) - (Pacemaker restarted|standby moved|c1 runs on .* after)|^# tier3' "$T/run$i.log"
    [[ $rc -eq 77 ]] && { grep '^SKIP' "$T/run$i.log"; exit 77; }
    if [[ $rc -ne 0 ]]; then
        mkdir -p "$resdir"
        cp "$T/run$i.log" "$resdir/cluster-failed-run-$(date -u +%Y%m%dT%H%M%SZ).log"
        echo "run $i failed (log kept in $resdir; its numbers are kept where it measured them)"
    fi
done
[[ -s $T/timings ]] || { echo "no timings measured"; exit 1; }
stats() { # METRIC -> "min median max n"
    sed -n "s/.*$1=\\([0-9.][0-9.]*\\).*/\\1/p" "$T/timings" | sort -n | awk '{v[NR] = $1}
        END {
            if (!NR) { print "- - - 0"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f %.1f %.1f %d\n", v[1], m, v[NR], NR
        }'
}
mkdir -p "$resdir"
out=$resdir/cluster-$(date -u +%Y%m%dT%H%M%SZ).md
{
    echo "# lodge under Pacemaker: restart, planned move, failover"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $runs runs of tests/tier3/run-tier3.sh:"
    echo "three Debian 12 nodes (systemd in systemd-nspawn, corosync 3 knet, pacemaker 2.1),"
    echo "a busybox container as ocf:lodge:container (monitor every 5 s), stonith-enabled=false."
    echo "Seconds from the action until lodged on the node that takes over reports it running."
    echo
    echo "| event | min | median | max | samples |"
    echo "|---|---|---|---|---|"
    for m in restart move failover; do
        read -r mn md mx n < <(stats "$m")
        case $m in
        restart) what="PID 1 killed, restarted in place" ;;
        move) what="node put in standby, moved (graceful stop + start)" ;;
        failover) what="node powered off (PID 1 SIGKILLed), started elsewhere" ;;
        esac
        echo "| $what | $mn | $md | $mx | $n |"
    done
} >"$out"
cat "$out"
echo "written to $out"
