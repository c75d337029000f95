#!/bin/bash
# bench/nic.sh [-n RUNS] [-o RESULTS_DIR]
#
# Start (and stop) time of a container with 0, 1 and 4 nic devices, lodge versus LXC
# (lxc-start), side by side in one run, every nic a veth on the same bridge. Must run as root.
# Prints min/median/max and writes a markdown table to RESULTS_DIR/nic-<date>.md (default
# bench/results/).
#
# Both tools get the same busybox rootfs with the project's test init (build/tests/test-init,
# which powers off at once on SIGPWR), privileged, no lxcfs:
#   lodge  lodge-supervisor with devices {"nN": {type: nic, nictype: bridged, parent: BR}}
#          (veth created with its container end inside the container's netns, named, MAC set,
#          up, host end on BR, all before PID 1 runs)
#   lxc    lxc.net.N.type = veth, lxc.net.N.link = BR, lxc.net.N.flags = up, a 00:16:3e MAC;
#          0 nics: lxc.net.0.type = empty
# Timed (wall clock, $EPOCHREALTIME):
#   start  lodge: fork+exec of lodge-supervisor until its "READY <pid>" line (PID 1 exec'd);
#          lxc: `lxc-start -d` until it returns (container RUNNING)
#   stop   lodge: `lodge-supervisor ctl NAME stop 30` (returns once PID 1 ended and the host
#          ends are deleted); lxc: `lxc-stop` (SIGPWR, waits for STOPPED)
# Runs are interleaved (per run: each nic count, each tool). The bridge (lnb<pid>), cgroups
# under lodge-nicbench-$$ and the temp dir are removed afterwards; the link list is compared
# with the one from before and any veth left on the bridge is reported.
set -uo pipefail
export LC_ALL=C

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
supervisor_bench "$@"
if ! command -v lxc-start >/dev/null; then
    apt-get install -y --no-install-recommends lxc >&2 || die "cannot install lxc"
fi
for c in lxc-start lxc-stop lxc-info ip; do command -v "$c" >/dev/null || die "$c not found"; done

U=lodge-nicbench-$$
BR=lnb$$
T=$(mktemp -d /tmp/lodge-nicbench.XXXXXX) || die "mktemp failed"
chmod 0755 "$T"
had_run_lxc=0; [[ -e /run/lxc ]] && had_run_lxc=1
COUNTS=(0 1 4)
declare -A sup_pid=()

cleanup() {
    local rc=$? n p d
    trap - EXIT INT TERM
    for n in "${!sup_pid[@]}"; do
        p=${sup_pid[$n]}
        timeout 20 "$SUP" ctl "$n" stop-force >/dev/null 2>&1
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for k in "${COUNTS[@]}"; do
        n=nbx-$k
        [[ -f $T/lxc/$n/config ]] || continue
        [[ $(lxc-info -P "$T/lxc" -n "$n" -s -H 2>/dev/null) == STOPPED ]] ||
            timeout 20 lxc-stop -P "$T/lxc" -n "$n" -k >/dev/null 2>&1
    done
    ip link del "$BR" 2>/dev/null
    for d in /sys/fs/cgroup/*/"$U"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "/run/lxc/lock$T"
    ((had_run_lxc)) || { [[ -d /run/lxc ]] && find /run/lxc -depth -type d -empty -delete; }
    if findmnt -rn -o TARGET | grep -q "^$T/"; then
        findmnt -rn -o TARGET | grep "^$T/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
    fi
    findmnt -rn -o TARGET | grep -q "^$T/" || rm -rf --one-file-system "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

links() { ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort; }

mkdir -p "$T/data" "$T/state/containers" "$T/lxc" "$T/nolxcfs"
links >"$T/links.before"
ip link add "$BR" type bridge && ip link set "$BR" up || die "cannot create bridge $BR"
bash "$MKROOTFS" "$T/rootfs" >/dev/null || die "building the busybox rootfs failed"
rm "$T/rootfs/sbin/init" && cp "$TEST_INIT" "$T/rootfs/sbin/init"

# ---- lodge -------------------------------------------------------------------
export LODGE_STATE_DIR=$T/state LODGE_RUNTIME_DIR=$T/run LODGE_LOG_DIR=$T/log \
    LODGE_LXCFS_DIR=$T/nolxcfs
for k in "${COUNTS[@]}"; do
    n=nbl-$k d=$T/state/containers/nbl-$k devs=""
    mkdir -p "$d"
    cp -a "$T/rootfs" "$d/rootfs"
    for ((i = 0; i < k; i++)); do
        devs+="${devs:+,}\"n$i\":{\"type\":\"nic\",\"nictype\":\"bridged\",\"parent\":\"$BR\"}"
    done
    printf '{"name":"%s","config":{"security.privileged":"true"},"devices":{%s}}\n' \
        "$n" "$devs" >"$d/config.json"
done
mkfifo "$T/lodge.fifo"

lodge_cycle() { # NICS
    local k=$1 n=nbl-$1 t0 t1 line sp st
    t0=${EPOCHREALTIME/[.,]/}
    setsid "$SUP" --notify-fd=3 --cgroup="$U/$n" "$n" \
        3>"$T/lodge.fifo" </dev/null >/dev/null 2>>"$T/lodge.stderr" &
    sp=$!
    sup_pid[$n]=$sp
    read -r -t 60 line <"$T/lodge.fifo"
    t1=${EPOCHREALTIME/[.,]/}
    [[ $line == "READY "* ]] || die "lodge $n: start failed: '$line' (see $T/log/$n/lodge.log)"
    rec "lodge-$k" start $((t1 - t0))
    st=$("$SUP" ctl "$n" status)
    [[ $(grep -o '"host_name"' <<<"$st" | wc -l) -eq $k ]] || die "lodge $n: not $k nics: $st"
    t0=${EPOCHREALTIME/[.,]/}
    st=$("$SUP" ctl "$n" stop 30)
    t1=${EPOCHREALTIME/[.,]/}
    [[ $st == *'"state":"stopped"'* ]] || die "lodge $n: stop failed: $st"
    rec "lodge-$k" stop $((t1 - t0))
    wait "$sp"
    unset "sup_pid[$n]"
}

# ---- LXC ---------------------------------------------------------------------
for k in "${COUNTS[@]}"; do
    n=nbx-$k
    mkdir -p "$T/lxc/$n"
    cp -a "$T/rootfs" "$T/lxc/$n/rootfs"
    {
        echo "lxc.include = /usr/share/lxc/config/common.conf"
        echo "lxc.hook.mount ="
        echo "lxc.hook.post-stop ="
        echo "lxc.uts.name = $n"
        echo "lxc.rootfs.path = dir:$T/lxc/$n/rootfs"
        echo "lxc.cgroup.dir.container = $U/lxc-$n/payload"
        echo "lxc.cgroup.dir.monitor = $U/lxc-$n/monitor"
        echo "lxc.cgroup.dir.monitor.pivot = $U/lxc-pivot"
        echo "lxc.log.file = $T/lxc/$n/lxc.log"
        echo "lxc.log.level = WARN"
        ((k == 0)) && echo "lxc.net.0.type = empty"
        for ((i = 0; i < k; i++)); do
            printf 'lxc.net.%d.type = veth\nlxc.net.%d.link = %s\nlxc.net.%d.flags = up\n' \
                "$i" "$i" "$BR" "$i"
            printf 'lxc.net.%d.name = eth%d\nlxc.net.%d.hwaddr = 00:16:3e:%02x:%02x:%02x\n' \
                "$i" "$i" "$i" $((RANDOM % 256)) $((RANDOM % 256)) "$i"
        done
    } >"$T/lxc/$n/config"
done

lxc_cycle() { # NICS
    local k=$1 n=nbx-$1 t0 t1 mon
    t0=${EPOCHREALTIME/[.,]/}
    lxc-start -P "$T/lxc" -n "$n" -d || die "lxc $n: lxc-start failed (see $T/lxc/$n/lxc.log)"
    t1=${EPOCHREALTIME/[.,]/}
    rec "lxc-$k" start $((t1 - t0))
    mon=$(lxc_monitor "$T/lxc" "$n") || die "lxc $n: no pid"
    lxc_stop_timed "$T/lxc" "$n" "lxc-$k" "$mon"
}

# ---- runs --------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_t0=$EPOCHREALTIME
for ((r = 1; r <= runs; r++)); do
    printf 'run %d/%d\n' "$r" "$runs" >&2
    for k in "${COUNTS[@]}"; do
        lodge_cycle "$k"
        lxc_cycle "$k"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
bench_secs=$(awk -v a="$bench_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
left_on_bridge=$(ls "/sys/class/net/$BR/brif" | tr '\n' ' ')

# ---- report ------------------------------------------------------------------
cell() { local a; read -r -a a <<<"$(stats "$T/data/$1.$2" 1000 %.1f)"; echo "${a[0]} / ${a[1]} / ${a[2]}"; }
ratio() { # METRIC NICS
    local a b
    read -r -a a <<<"$(stats "$T/data/lodge-$2.$1" 1000 %.1f)"
    read -r -a b <<<"$(stats "$T/data/lxc-$2.$1" 1000 %.1f)"
    awk -v a="${a[1]}" -v b="${b[1]}" 'BEGIN { printf "%.2f", a / b }'
}
report() {
    echo "# lodge nic benchmark: start/stop with 0, 1 and 4 bridged nics"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $runs interleaved runs, took ${bench_secs} s"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
    echo "- lodge: $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?') (build: $build)"
    echo "- lxc: $(lxc-start --version); both privileged, test init, same bridge $BR"
    echo "- load average before/after: $load_before / $load_after"
    echo
    echo "Times in ms: min / median / max. Ratio: medians, lodge ÷ LXC."
    echo
    echo "| nics | lodge start | LXC start | start ratio | lodge stop | LXC stop | stop ratio |"
    echo "|---|---|---|---|---|---|---|"
    for k in "${COUNTS[@]}"; do
        echo "| $k | $(cell "lodge-$k" start) | $(cell "lxc-$k" start) | $(ratio start "$k") |" \
            "$(cell "lodge-$k" stop) | $(cell "lxc-$k" stop) | $(ratio stop "$k") |"
    done
    echo
    echo "start: lodge = fork+exec of lodge-supervisor until READY (PID 1 exec'd, nics up in the"
    echo "container); LXC = \`lxc-start -d\` until it returns. stop: lodge = \`lodge-supervisor ctl"
    echo "NAME stop 30\` (returns after the host ends are deleted); LXC = \`lxc-stop\`."
    echo
    echo "Ports left on the bridge after the runs: ${left_on_bridge:-none}."
}
mkdir -p "$resdir" || die "cannot create $resdir"
out=$resdir/nic-$(date -u +%Y%m%dT%H%M%SZ).md
report | tee "$out"
ip link del "$BR" 2>/dev/null
links >"$T/links.after"
if ! diff -q "$T/links.before" "$T/links.after" >/dev/null; then
    echo "nic.sh: host links differ from before (others may have changed them too):" >&2
    diff "$T/links.before" "$T/links.after" >&2
fi
echo "written to $out" >&2
