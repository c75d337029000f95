#!/bin/bash
# bench/start-stop.sh [-n RUNS] [-o RESULTS_DIR]
#
# Start/stop latency and supervisor memory of lodge versus LXC (lxc-start)
# and systemd-nspawn, for the same busybox root filesystem, in one run.
# Must run as root. Prints a markdown table and writes it, with a machine
# description, to RESULTS_DIR/start-stop-<date>.md (default bench/results/).
#
# Cases, each with its own copy of the same rootfs (tests/fixtures/
# make-busybox-rootfs.sh, plus an /etc/os-release so nspawn --boot accepts it):
#   lodge-priv    lodge-supervisor, "security.privileged": "true"
#   lodge-unpriv  lodge-supervisor, default config (user namespace, rootfs
#                 handed over through an idmapped mount)
#   lxc           lxc-start -d, privileged, lxcpath in the temp dir,
#                 common.conf minus its lxcfs hooks, lxc.net.0.type = empty,
#                 default /sbin/init
#   nspawn        systemd-nspawn --boot --private-network --register=no
#                 --keep-unit, privileged (no --private-users)
# and each with two inits: busybox init and the project's test init
# (build/tests/test-init), which powers off at once on SIGPWR/SIGRTMIN+3
# whereas busybox init's halt sleeps ~2 s by itself.
#
# What is timed (wall clock, $EPOCHREALTIME, no fork for a time stamp):
#   start  lodge:  fork+exec of lodge-supervisor -> its "READY <pid>" line on
#                  --notify-fd (written once PID 1 has been exec'd)
#          lxc:    lxc-start -d ... until it returns (the monitor reported
#                  RUNNING); "start+wait" adds lxc-wait -s RUNNING
#          nspawn: fork+exec of systemd-nspawn -> its READY=1 on
#                  $NOTIFY_SOCKET (sent right after the last barrier with
#                  the inner child, i.e. as PID 1 is exec'd)
#   stop   lodge:  "lodge-supervisor ctl NAME stop 30" until it returns
#                  (SIGPWR to PID 1, returns once PID 1 has ended)
#          lxc:    lxc-stop -n NAME until it returns (SIGPWR, waits STOPPED)
#          nspawn: busybox: kill -PWR <PID 1> (busybox ignores nspawn's own
#                  SIGRTMIN+3); test init: kill -TERM <nspawn> (nspawn's
#                  cooperative stop: SIGRTMIN+3 to PID 1); both until the
#                  nspawn process has exited (wait)
#   rss    VmRSS (KiB) of lodge-supervisor / "[lxc monitor]" / systemd-nspawn
#          while the container runs (after start, before stop)
#
# Runs are interleaved (per run: every tool, every init) so drift hits all
# tools alike. Nothing outside the temp dir, cgroups under lodge-bench-$$ and
# the tools' own per-container runtime files (/run/lxc/lock/<tmp>,
# /run/systemd/nspawn/propagate/<machine>, removed afterwards) is touched.
set -uo pipefail
export LC_ALL=C

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
supervisor_bench "$@"
for c in lxc-start lxc-stop lxc-wait lxc-info systemd-nspawn perl; do
    command -v "$c" >/dev/null || die "$c not found"
done
[[ -d /sys/fs/cgroup/unified && -d /sys/fs/cgroup/systemd ]] ||
    die "expects hybrid cgroups (/sys/fs/cgroup/unified and /sys/fs/cgroup/systemd)"

U=lodge-bench-$$                      # cgroup prefix, machine-name prefix
T=$(mktemp -d /tmp/lodge-bench.XXXXXX) || die "mktemp failed"
chmod 0755 "$T"                       # container root must traverse it
bench_t0=$EPOCHREALTIME

# Remember which shared runtime dirs exist, to remove only what we created.
had_run_lxc=0; [[ -e /run/lxc ]] && had_run_lxc=1
had_run_nspawn=0; [[ -e /run/systemd/nspawn ]] && had_run_nspawn=1

LODGE_NAMES=(lb-priv-bb lb-priv-ti lb-unpriv-bb lb-unpriv-ti)
LXC_NAMES=(lb-bb lb-ti)
declare -A sup_pid=() nspawn_pid=()
listener_pid=""

cleanup() {
    local rc=$? n p d
    trap - EXIT INT TERM
    for n in "${LODGE_NAMES[@]}"; do
        p=${sup_pid[$n]:-}
        [[ -n $p ]] && kill -0 "$p" 2>/dev/null || continue
        timeout 20 "$SUP" ctl "$n" stop-force >/dev/null 2>&1
        timeout 20 "$SUP" ctl "$n" wait >/dev/null 2>&1
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for n in "${LXC_NAMES[@]}"; do
        [[ -f $T/lxc/$n/config ]] || continue
        if [[ $(lxc-info -P "$T/lxc" -n "$n" -s -H 2>/dev/null) != STOPPED ]]; then
            timeout 20 lxc-stop -P "$T/lxc" -n "$n" -k >/dev/null 2>&1
        fi
    done
    for n in "${!nspawn_pid[@]}"; do
        p=${nspawn_pid[$n]}
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    [[ -n $listener_pid ]] && kill "$listener_pid" 2>/dev/null && wait "$listener_pid" 2>/dev/null
    exec 5<&- 2>/dev/null
    # Cgroups: lodge's, LXC's (lxc.cgroup.dir.*) and nspawn's all live under $U.
    for d in /sys/fs/cgroup/*/"$U"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d $d ]] && echo "start-stop.sh: could not remove cgroup $d" >&2
    done
    for n in bb ti; do rm -rf "/run/systemd/nspawn/propagate/$U-$n"; done
    rm -rf "/run/lxc/lock$T"
    ((had_run_lxc)) || { [[ -d /run/lxc ]] && find /run/lxc -depth -type d -empty -delete; }
    ((had_run_nspawn)) || { [[ -d /run/systemd/nspawn ]] &&
        find /run/systemd/nspawn -depth -type d -empty -delete; }
    # Never rm -rf across a mount point left behind by a tool.
    if findmnt -rn -o TARGET | grep -q "^$T/"; then
        findmnt -rn -o TARGET | grep "^$T/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
    fi
    if findmnt -rn -o TARGET | grep -q "^$T/"; then
        echo "start-stop.sh: mounts left under $T, not removing it" >&2
    else
        rm -rf --one-file-system "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Time stamps: $EPOCHREALTIME without the dot = microseconds; expanded inline
# (no command substitution, which would fork).
# Append a sample (integer) to $T/data/<case>.<metric>.
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# What the process alone costs: its private pages (shared library pages are counted once per
# machine, not per container).
priv_of() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s}' "/proc/$1/smaps_rollup" 2>/dev/null; }

# ---- rootfs ------------------------------------------------------------------
mkdir -p "$T/data" "$T/state/containers" "$T/lxc" "$T/nspawn" "$T/nolxcfs"
bash "$MKROOTFS" "$T/rootfs-bb" || die "building the busybox rootfs failed"
# systemd-nspawn --boot refuses a tree without os-release; harmless for others.
printf 'ID=busybox\nNAME="busybox (lodge bench)"\n' >"$T/rootfs-bb/etc/os-release"
cp -a "$T/rootfs-bb" "$T/rootfs-ti"
rm "$T/rootfs-ti/sbin/init" && cp "$TEST_INIT" "$T/rootfs-ti/sbin/init"
copy_rootfs() { cp -a "$T/rootfs-$1" "$2" || die "copying rootfs to $2 failed"; }

# ---- lodge -------------------------------------------------------------------
export LODGE_STATE_DIR=$T/state LODGE_RUNTIME_DIR=$T/run LODGE_LOG_DIR=$T/log \
    LODGE_LXCFS_DIR=$T/nolxcfs
for n in "${LODGE_NAMES[@]}"; do
    d=$T/state/containers/$n
    mkdir -p "$d"
    copy_rootfs "${n##*-}" "$d/rootfs"
    if [[ $n == lb-priv-* ]]; then cfg='{"security.privileged":"true"}'; else cfg='{}'; fi
    printf '{"name":"%s","config":%s,"devices":{}}\n' "$n" "$cfg" >"$d/config.json"
done
mkfifo "$T/lodge.fifo"

lodge_cycle() { # CASE NAME
    local c=$1 n=$2 t0 t1 line p1 sp st
    t0=${EPOCHREALTIME/[.,]/}
    setsid "$SUP" --notify-fd=3 --cgroup="$U/$n" "$n" \
        3>"$T/lodge.fifo" </dev/null >/dev/null 2>>"$T/lodge.stderr" &
    sp=$!
    sup_pid[$n]=$sp
    read -r -t 60 line <"$T/lodge.fifo"
    t1=${EPOCHREALTIME/[.,]/}
    [[ $line == "READY "* ]] || die "lodge $n: start failed: '${line}' (see $T/log/$n/lodge.log)"
    p1=${line#READY }
    rec "$c" start $((t1 - t0))
    # Status round trip (not timed) to be sure the supervisor is in its loop.
    st=$("$SUP" ctl "$n" status) || die "lodge $n: status failed"
    [[ $st == *'"state":"running"'* && $st == *"\"supervisor_pid\":$sp"[,\}]* ]] ||
        die "lodge $n: unexpected status (supervisor pid $sp): $st"
    rec "$c" rss "$(rss_of "$sp")"
    rec "$c" priv "$(priv_of "$sp")"
    t0=${EPOCHREALTIME/[.,]/}
    st=$("$SUP" ctl "$n" stop 30)
    t1=${EPOCHREALTIME/[.,]/}
    [[ $st == *'"state":"stopped"'* ]] || die "lodge $n: stop failed: $st"
    rec "$c" stop $((t1 - t0))
    kill -0 "$p1" 2>/dev/null && die "lodge $n: PID 1 ($p1) still alive after stop"
    wait "$sp"   # supervisor exits after the stop (event, not timed)
    unset "sup_pid[$n]"
}

# ---- LXC ---------------------------------------------------------------------
for n in "${LXC_NAMES[@]}"; do
    mkdir -p "$T/lxc/$n"
    copy_rootfs "${n##*-}" "$T/lxc/$n/rootfs"
    cat >"$T/lxc/$n/config" <<EOF
lxc.include = /usr/share/lxc/config/common.conf
# common.conf.d adds lxcfs hooks (host /var/lib/lxcfs); lodge runs without lxcfs
# here too, so clear them.
lxc.hook.mount =
lxc.hook.post-stop =
lxc.uts.name = $n
lxc.rootfs.path = dir:$T/lxc/$n/rootfs
lxc.net.0.type = empty
lxc.cgroup.dir.container = $U/lxc-$n/payload
lxc.cgroup.dir.monitor = $U/lxc-$n/monitor
lxc.cgroup.dir.monitor.pivot = $U/lxc-pivot
lxc.log.file = $T/lxc/$n/lxc.log
lxc.log.level = WARN
EOF
done

lxc_cycle() { # CASE NAME
    local c=$1 n=$2 t0 t1 t2 mon
    t0=${EPOCHREALTIME/[.,]/}
    lxc-start -P "$T/lxc" -n "$n" -d || die "lxc $n: lxc-start failed (see $T/lxc/$n/lxc.log)"
    t1=${EPOCHREALTIME/[.,]/}
    lxc-wait -P "$T/lxc" -n "$n" -s RUNNING -t 60 || die "lxc $n: not RUNNING"
    t2=${EPOCHREALTIME/[.,]/}
    rec "$c" start $((t1 - t0))
    rec "$c" start_wait $((t2 - t0))
    mon=$(lxc_monitor "$T/lxc" "$n") || die "lxc $n: no pid"
    [[ $(tr -d '\0' <"/proc/$mon/cmdline") == "[lxc monitor]"* ]] ||
        die "lxc $n: parent $mon of PID 1 is not the lxc monitor"
    rec "$c" rss "$(rss_of "$mon")"
    rec "$c" priv "$(priv_of "$mon")"
    lxc_stop_timed "$T/lxc" "$n" "$c" "$mon"
}

# ---- systemd-nspawn ----------------------------------------------------------
for n in bb ti; do copy_rootfs "$n" "$T/nspawn/$n"; done
# READY=1 from nspawn arrives on a datagram socket; perl (perl-base) relays
# it as a line "READY <leader pid>" into a fifo that stays open on fd 5.
cat >"$T/notify-listener.pl" <<'EOF'
use strict; use Socket;
socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
bind($s, pack_sockaddr_un($ARGV[0])) or die "bind: $!";
$| = 1; print "BOUND\n";
my $leader = 0;
while (defined(recv($s, my $buf, 4096, 0))) {
    $leader = $1 if $buf =~ /^X_NSPAWN_LEADER_PID=(\d+)$/m;
    print "READY $leader\n" if $buf =~ /^READY=1$/m;
}
EOF
mkfifo "$T/notify.fifo"
perl "$T/notify-listener.pl" "$T/notify.sock" >"$T/notify.fifo" &
listener_pid=$!
exec 5<"$T/notify.fifo"
read -r -t 10 line <&5 && [[ $line == BOUND ]] || die "notify listener did not start"

nspawn_cycle() { # CASE INIT(bb|ti)
    local c=$1 i=$2 m=$U-$2 cg t0 t1 line p1 np
    for cg in unified systemd; do mkdir -p "/sys/fs/cgroup/$cg/$U/nspawn-$i"; done
    t0=${EPOCHREALTIME/[.,]/}
    # nspawn must start in a cgroup of its own (hybrid layout, no systemd).
    (
        echo "$BASHPID" >"/sys/fs/cgroup/unified/$U/nspawn-$i/cgroup.procs" &&
            echo "$BASHPID" >"/sys/fs/cgroup/systemd/$U/nspawn-$i/cgroup.procs" || exit 99
        NOTIFY_SOCKET=$T/notify.sock exec systemd-nspawn -q --register=no --keep-unit \
            --private-network -M "$m" -D "$T/nspawn/$i" --boot
    ) </dev/null >>"$T/nspawn/$i.out" 2>&1 &
    np=$!
    nspawn_pid[$i]=$np
    read -r -t 60 line <&5
    t1=${EPOCHREALTIME/[.,]/}
    [[ $line == "READY "* ]] || die "nspawn $i: start failed (see $T/nspawn/$i.out)"
    p1=${line#READY }
    rec "$c" start $((t1 - t0))
    rec "$c" rss "$(rss_of "$np")"
    rec "$c" priv "$(priv_of "$np")"
    t0=${EPOCHREALTIME/[.,]/}
    if [[ $i == bb ]]; then kill -PWR "$p1"; else kill -TERM "$np"; fi
    wait "$np"
    t1=${EPOCHREALTIME/[.,]/}
    rec "$c" stop $((t1 - t0))
    unset "nspawn_pid[$i]"
    for cg in unified systemd; do
        find "/sys/fs/cgroup/$cg/$U/nspawn-$i" -depth -type d -exec rmdir {} +
    done
    rm -rf "/run/systemd/nspawn/propagate/$m"
}

# ---- runs --------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
    printf 'run %d/%d\n' "$r" "$runs" >&2
    for i in bb ti; do
        lodge_cycle "lodge-priv-$i" "lb-priv-$i"
        lodge_cycle "lodge-unpriv-$i" "lb-unpriv-$i"
        lxc_cycle "lxc-$i" "lb-$i"
        nspawn_cycle "nspawn-$i" "$i"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report ------------------------------------------------------------------
# cell CASE METRIC DIV FMT -> "median (min–max)"
cell() {
    local a
    read -r -a a <<<"$(stats "$T/data/$1.$2" "$3")"
    if [[ ${a[0]} == - ]]; then echo "–"; return; fi
    printf "$4 ($4–$4)" "${a[1]}" "${a[0]}" "${a[2]}"
}
median() { local a; read -r -a a <<<"$(stats "$T/data/$1.$2" 1)"; echo "${a[1]}"; }
ratio() { # CASE_A CASE_B METRIC
    local a b
    a=$(median "$1" "$3"); b=$(median "$2" "$3")
    [[ $a == - || $b == - ]] && { echo "–"; return; }
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
}
row() { # LABEL METRIC SUFFIX(bb|ti|"") DIV FMT
    local l=$1 m=$2 s=$3 d=$4 f=$5 c out=""
    local cases=(lodge-priv lodge-unpriv lxc nspawn)
    for c in "${cases[@]}"; do out+=" $(cell "$c${s:+-$s}" "$m" "$d" "$f") |"; done
    for c in lodge-priv lodge-unpriv; do
        out+=" $(ratio "$c${s:+-$s}" "lxc${s:+-$s}" "$m") |"
    done
    for c in lodge-priv lodge-unpriv; do
        out+=" $(ratio "$c${s:+-$s}" "nspawn${s:+-$s}" "$m") |"
    done
    echo "| $l |$out"
}
# RSS is pooled over both inits.
for c in lodge-priv lodge-unpriv lxc nspawn; do
    cat "$T/data/$c-bb.rss" "$T/data/$c-ti.rss" >"$T/data/$c.rss"
    cat "$T/data/$c-bb.priv" "$T/data/$c-ti.priv" >"$T/data/$c.priv"
done

bench_secs=$(awk -v a="$bench_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
report() {
    echo "# lodge start/stop benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $runs interleaved runs, took ${bench_secs} s"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), hybrid cgroups"
    echo "- lodge: $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?') (build: $build)"
    echo "- lxc: $(lxc-start --version), $(systemd-nspawn --version | head -n1)"
    echo "- load average before/after: $load_before / $load_after"
    echo
    echo "Cells: median (min–max). Times in ms, RSS in KiB. Ratios: medians, lodge ÷ other."
    echo
    echo "| metric | lodge priv | lodge unpriv | LXC (priv) | nspawn (priv) | lodge-priv/lxc | lodge-unpriv/lxc | lodge-priv/nspawn | lodge-unpriv/nspawn |"
    echo "|---|---|---|---|---|---|---|---|---|"
    row "start, busybox init" start bb 1000 "%.1f"
    row "start, test init" start ti 1000 "%.1f"
    row "LXC start + lxc-wait RUNNING, busybox" start_wait bb 1000 "%.1f"
    row "stop, busybox init (SIGPWR, halt has ~2 s of sleeps)" stop bb 1000 "%.0f"
    row "stop, test init (powers off at once)" stop ti 1000 "%.1f"
    row "RSS of supervisor / lxc monitor / systemd-nspawn" rss "" 1 "%.0f"
    row "private memory (Private_Clean+Private_Dirty) of the same" priv "" 1 "%.0f"
    echo
    echo "start: lodge = fork+exec of lodge-supervisor until its READY line (PID 1 exec'd);"
    echo "LXC = \`lxc-start -d\` until it returns (container RUNNING); nspawn = fork+exec of"
    echo "systemd-nspawn --boot until its READY=1 on \$NOTIFY_SOCKET (as PID 1 is exec'd)."
    echo "stop: lodge = \`lodge-supervisor ctl NAME stop 30\`; LXC = \`lxc-stop\` (both SIGPWR);"
    echo "nspawn busybox = \`kill -PWR\` to PID 1 (busybox ignores nspawn's SIGRTMIN+3),"
    echo "nspawn test init = \`kill -TERM\` to nspawn (SIGRTMIN+3 to PID 1); nspawn until it exited."
    echo "No network in any container (lodge default, lxc.net.0.type = empty, --private-network)."
}
mkdir -p "$resdir" || die "cannot create $resdir"
out=$resdir/start-stop-$(date -u +%Y%m%dT%H%M%SZ).md
report | tee "$out"
echo "written to $out" >&2
