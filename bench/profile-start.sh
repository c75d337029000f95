#!/usr/bin/env bash
# bench/profile-start.sh [BUILD] [RUNS] [OUT_DIR]
#
# One `lodgectl start` of a busybox container, RUNS times (default 5), three ways: under
# `strace -f -ttt -T` attached to lodged (it follows the supervisor lodged starts and the
# container's setup child up to /sbin/init's exec): the supervisor's system calls counted by
# kind; under `perf trace -a` (no ptrace stops): a timeline of the start's milestones from
# lodgectl's exec, and the kernel time per system call of the supervisor's processes. Then
# `perf stat` of start+stop, and `perf record -a` over RUNS*4 starts: CPU by command. The raw
# traces stay in OUT_DIR (default: a temp dir, printed). Wall times move with the machine's
# load; the counts do not.
# Unprivileged first, then privileged. As root; a private bus and lodged, state in a temp dir,
# cgroups under lodge-prof-$$ (removed afterwards).
set -uo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${1:-$top/build}
build=$(cd "$build" && pwd)
RUNS=${2:-5}
T=$(mktemp -d /tmp/lodge-prof.XXXXXX)
OUT=${3:-$T/out}
mkdir -p "$OUT"
chmod 0755 "$T"
U=lodge-prof-$$
CTL=$build/lodgectl
die() { echo "profile-start: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root"
for c in strace perf; do command -v $c >/dev/null || die "$c missing"; done

export LODGE_STATE_DIR=$T/state LODGE_RUNTIME_DIR=$T/run LODGE_LOG_DIR=$T/log
export LODGE_LXCFS_DIR=$T/nolxcfs LODGE_SUPERVISOR=$build/lodge-supervisor
export LODGE_EXEC_HELPER=$build/lodge-exec LODGE_CGROUP_ROOT=$U LODGE_IDLE_TIMEOUT=0

cleanup() {
    local n
    for n in p1 p2; do "$CTL" stop --force "$n" >/dev/null 2>&1; done
    [[ -n ${LODGED_PID:-} ]] && kill "$LODGED_PID" 2>/dev/null && wait "$LODGED_PID" 2>/dev/null
    [[ -n ${DBUS_PID:-} ]] && kill "$DBUS_PID" 2>/dev/null && wait "$DBUS_PID" 2>/dev/null
    for d in /sys/fs/cgroup/*/"$U" /sys/fs/cgroup/"$U"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    umount "$LODGE_RUNTIME_DIR" 2>/dev/null
    if ! findmnt -rn -o TARGET | grep -q "^$T/"; then
        find "$T" -mindepth 1 -maxdepth 1 ! -name out -exec rm -rf --one-file-system {} +
        rmdir "$T" 2>/dev/null
    fi
}
trap cleanup EXIT

bus=$T/bus
mkdir -p "$bus/policy" "$bus/services" "$LODGE_RUNTIME_DIR"
# /run/lodge is a tmpfs under systemd; on ext4 the rename of state.json costs milliseconds.
mount -t tmpfs -o mode=0700 lodge-prof-run "$LODGE_RUNTIME_DIR" || die "tmpfs on $LODGE_RUNTIME_DIR"
cp "$top/dbus/io.lodge1.conf" "$bus/policy/"
sh "$top/scripts/private-bus-conf.sh" "$bus" >"$bus/bus.conf"
mkfifo "$bus/address"
dbus-daemon --config-file="$bus/bus.conf" --nofork --nopidfile --print-address=1 \
    >"$bus/address" 2>/dev/null &
DBUS_PID=$!
read -r address <"$bus/address"
export DBUS_SYSTEM_BUS_ADDRESS=${address%%,*}
"$build/lodged" 2>>"$T/lodged.log" &
LODGED_PID=$!
until "$CTL" list >/dev/null 2>&1; do
    kill -0 "$LODGED_PID" 2>/dev/null || die "lodged died"
    sleep 0.02
done
bash "$top/tests/fixtures/make-busybox-rootfs.sh" "$T/rootfs" >/dev/null || die "rootfs"
"$CTL" create p1 "$T/rootfs" >/dev/null || die "create p1"
"$CTL" create p2 "$T/rootfs" >/dev/null || die "create p2"
"$CTL" config set p2 security.privileged=true >/dev/null || die "config p2"
# One start each first: page cache, lodged's first-use setup.
for n in p1 p2; do "$CTL" start "$n" >/dev/null && "$CTL" stop --force "$n" >/dev/null; done

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# summarize TRACE: the supervisor's processes (everything after lodged's vfork) by syscall.
summarize() {
    perl -e '
        my (%count, %us, $t0, $tend, %first);
        while (<>) {
            next unless /^(\d+)\s+(\d+\.\d+)\s+(\w+)\(/;
            my ($pid, $t, $sc) = ($1, $2, $3);
            my $d = /<(\d+\.\d+)>\s*$/ ? $1 : 0;
            $t0 //= $t if $sc eq "execve" && /lodge-supervisor/;
            next unless defined $t0;
            $count{$sc}++; $us{$sc} += $d * 1e6;
            $tend = $t;
        }
        my $total = 0; $total += $_ for values %count;
        printf "  supervisor+setup: %d syscalls, %.1f ms from its exec to the last traced call\n",
            $total, ($tend - $t0) * 1000;
        for my $s (sort { $count{$b} <=> $count{$a} } keys %count) {
            printf "    %-18s %5d %8.0f us\n", $s, $count{$s}, $us{$s};
        }' "$1"
}
# timeline PTRACE: time stamps (ms from lodgectl's exec) of the start's milestones.
timeline() {
    perl -e '
        my ($t0, %pid, @out, $sup, $child, $setup);
        sub mark { my ($t, $what) = @_; push @out, sprintf("    %7.2f  %s", $t - $t0, $what); }
        while (<>) {
            next unless /^\s*(\d+\.\d+)\s+\(\s*[\d.]*\s*(?:ms)?\):\s+(\S+)\/(\d+)\s+([\w:]+)\(/;
            my ($t, $comm, $p, $ev) = ($1, $2, $3, $4);
            next if /continued\]/;
            if (!defined $t0) { next unless $comm eq "lodgectl" && $ev eq "sched:sched_process_exec"; $t0 = $t; mark($t, "lodgectl exec"); next; }
            if ($comm eq "lodgectl" && $ev eq "connect" && !$pid{connect}++) { mark($t, "lodgectl connects to the bus"); }
            if ($comm eq "lodged" && $ev eq "clone3" || $comm eq "lodged" && $ev eq "clone") { mark($t, "lodged vforks") unless $pid{vf}++; }
            if ($comm =~ /^lodge-superv/ && $ev eq "sched:sched_process_exec" && !$sup) { $sup = $p; mark($t, "supervisor exec"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "clone3" && $p == ($sup // -1) && !$pid{det}++) { mark($t, "supervisor forks its detached self"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "bpf" && !$pid{bpf}++) { mark($t, "device program: first bpf()"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "mkdir" && $p != ($sup // -1) && !$pid{mkdir}++) { $child = $p; mark($t, "detached supervisor: first mkdir"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "chown" && !$pid{chown}++) { mark($t, "delegation: first chown"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "socketpair" && !$pid{sp}++) { mark($t, "spawn_container"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "clone3" && $p == ($child // -1) && !$pid{init}++) { mark($t, "clone3 of the container (namespaces)"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "fsopen" && !$pid{fsopen}++) { mark($t, "setup child: first fsopen (mounts)"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "pivot_root") { mark($t, "setup child: pivot_root"); }
            if ($comm =~ /^lodge-superv/ && $ev eq "seccomp" && !$pid{sc}++) { mark($t, "setup child: seccomp"); }
            if ($comm eq "init" && $ev eq "sched:sched_process_exec") { mark($t, "/sbin/init exec"); }
            if ($comm eq "lodgectl" && $ev eq "sched:sched_process_exit") { mark($t, "lodgectl exits"); }
        }
        print "$_\n" for @out;' "$1"
}
for n in p1 p2; do
    for ((r = 1; r <= RUNS; r++)); do
        log=$OUT/$n-$r.strace
        strace -f -ttt -T -y -s 96 -o "$log" -p "$LODGED_PID" 2>"$T/strace.err" &
        sp=$!
        until grep -q attached "$T/strace.err" 2>/dev/null; do sleep 0.01; done
        "$CTL" start "$n" >/dev/null || die "start $n"
        kill -INT "$sp"; wait "$sp" 2>/dev/null
        : >"$T/strace.err"
        "$CTL" stop --force "$n" >/dev/null
        echo "$n run $r ($(cut -d' ' -f1 /proc/loadavg)):"
        summarize "$log"
        # The same start under perf trace (no ptrace stops): the phases' wall times.
        perf trace -a -e 'sched:sched_process_exec,sched:sched_process_exit,clone3,execve,mkdir,chown,bpf,socketpair,fsopen,pivot_root,seccomp,connect,exit_group,sendmsg' \
            -o "$OUT/$n-$r.ptrace" -- "$CTL" start "$n" >/dev/null 2>&1 || die "start $n (perf trace)"
        "$CTL" stop --force "$n" >/dev/null
        timeline "$OUT/$n-$r.ptrace"
        # And once more for the kernel time per system call of every process in the start.
        perf trace -a -s -o "$OUT/$n-$r.psummary" -- "$CTL" start "$n" >/dev/null 2>&1 ||
            die "start $n (perf trace -s)"
        "$CTL" stop --force "$n" >/dev/null
        # The supervisor's processes' kernel time, summed by system call (top 12).
        awk '/^ lodge-superviso \(/ {on = 1; next} /^ [^ ].* \([0-9]+\), [0-9]+ events/ {on = 0}
            on && $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ {n[$1] += $2; ms[$1] += $4}
            END {for (s in n) printf "%s %d %.3f\n", s, n[s], ms[s]}' "$OUT/$n-$r.psummary" |
            sort -k3 -rn | head -12 | awk '{printf "    kernel %-16s %5d calls %7.3f ms\n", $1, $2, $3}'
    done
    # CPU time of the whole start (lodgectl, lodged's share is not in it: only the client tree).
    perf stat -r "$RUNS" -e task-clock,context-switches,page-faults -o "$OUT/$n.perfstat" -- \
        sh -c "'$CTL' start $n >/dev/null && '$CTL' stop --force $n >/dev/null" || true
    grep -E "task-clock|elapsed" "$OUT/$n.perfstat" | sed "s/^/  $n start+stop: /"
    # Where the CPU goes, system-wide over RUNS*4 starts: by command, then the supervisor's by
    # symbol (kernel included).
    perf record -q -a -g -F 4999 -o "$OUT/$n.perf.data" -- sh -c "for i in \$(seq $((RUNS * 4))); do
        '$CTL' start $n >/dev/null && '$CTL' stop --force $n >/dev/null; done" 2>/dev/null || true
    perf report -i "$OUT/$n.perf.data" --no-children --sort comm --stdio 2>/dev/null |
        grep -E "^ +[0-9]" | head -12 | sed "s/^/  $n cpu by comm: /"
    perf report -i "$OUT/$n.perf.data" --no-children --comm lodge-superviso --sort dso,sym \
        --stdio -g none 2>/dev/null | grep -E "^ +[0-9]" | head -40 > "$OUT/$n.supervisor-symbols"
done
echo "traces in $OUT"
