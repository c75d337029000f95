# Shared by the bench scripts (sourced): the build's paths, the -n/-o options, root, a private
# system bus with lodged on it, the cgroups a bench made, LXC's monitor, and the recording and
# statistics helpers over $T/data/<case>.<metric> files.
# shellcheck shell=bash
# Its variables are for the scripts that source it.
# shellcheck disable=SC2034
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${LODGE_BUILD_DIR:-$top/build}
SUP=$build/lodge-supervisor
TEST_INIT=$build/tests/test-init
MKROOTFS=$top/tests/fixtures/make-busybox-rootfs.sh

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
require_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

# bench_options DEFAULT_RUNS ARG...: -n RUNS and -o RESULTS_DIR into runs and resdir.
bench_options() {
    local opt OPTIND=1
    runs=$1
    resdir=$here/results
    shift
    while getopts "n:o:h" opt; do
        case $opt in
        n) runs=$OPTARG ;;
        o) resdir=$OPTARG ;;
        *) bench_usage ;;
        esac
    done
    [[ $runs =~ ^[1-9][0-9]*$ ]] || bench_usage
}
bench_usage() { echo "usage: $0 [-n RUNS] [-o RESULTS_DIR]" >&2; exit 2; }

# For the benches that call lodge-supervisor directly: -n/-o (10 runs by default), root and
# the built supervisor and test init.
supervisor_bench() {
    local f
    bench_options 10 "$@"
    require_root
    for f in "$SUP" "$TEST_INIT"; do [[ -x $f ]] || die "$f missing (build first)"; done
}

# bench_env DIR NAME: lodge's state, runtime and log paths under DIR, no LXCFS, the build's
# supervisor and exec helper, and cgroups under lodge-bench-NAME-$$.
bench_env() {
    export LODGE_STATE_DIR=$1/state LODGE_RUNTIME_DIR=$1/run LODGE_LOG_DIR=$1/log
    export LODGE_LXCFS_DIR=$1/nolxcfs LODGE_CGROUP_ROOT=lodge-bench-$2-$$
    export LODGE_SUPERVISOR=$build/lodge-supervisor LODGE_EXEC_HELPER=$build/lodge-exec
}

# private_bus DIR: a dbus-daemon with lodge's policy listening on DIR/bus, services activated
# from DIR/services only (never a lodge installed on the host); DBUS_PID is its pid.
private_bus() {
    mkdir -p "$1/policy" "$1/services"
    cp "$top/dbus/io.lodge1.conf" "$1/policy/"
    sed -e "s#<listen>.*</listen>#<listen>unix:path=$1/bus</listen>#" \
        -e "s#<includedir>system.d</includedir>#<includedir>$1/policy</includedir>#" \
        -e "s#<includedir>/etc/dbus-1/system.d</includedir>##" \
        -e "s#<standard_system_servicedirs/>#<servicedir>$1/services</servicedir>#" \
        -e 's#<pidfile>.*</pidfile>##' -e 's#<user>.*</user>##' -e 's#<servicehelper>.*</servicehelper>##' \
        /usr/share/dbus-1/system.conf >"$1/bus.conf"
    dbus-daemon --config-file="$1/bus.conf" --nofork --nopidfile >/dev/null 2>&1 &
    DBUS_PID=$!
    while [[ ! -S $1/bus ]]; do kill -0 "$DBUS_PID" || die "dbus-daemon exited"; done # no readiness event
    export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$1/bus
}

# start_lodged DIR: the build's lodged on the private bus, its log in DIR/lodged.log; returns
# once it answers. LODGED_PID is its pid.
start_lodged() {
    "$build/lodged" 2>>"$1/lodged.log" &
    LODGED_PID=$!
    until "$build/lodgectl" list -q >/dev/null 2>&1; do kill -0 "$LODGED_PID" || die "lodged exited"; done
}

# remove_cgroups NAME: the (empty) cgroups a bench made under NAME, in every hierarchy; what
# cannot be removed stays (cleanup goes on; callers may run under set -e).
remove_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
        if [[ -d $d ]]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
}

# lxc_monitor LXCPATH NAME: the pid of the lxc monitor of running container NAME.
lxc_monitor() {
    local p1
    p1=$(lxc-info -P "$1" -n "$2" -p -H) || return 1
    awk '/^PPid:/ {print $2}' "/proc/$p1/status"
}
# lxc_stop_timed LXCPATH NAME CASE MONITOR: lxc-stop, timed as CASE's stop; then, untimed, the
# monitor's exit, so that it does not overlap the next case. The monitor is not our child and
# LXC gives no event for its exit: a bounded poll.
lxc_stop_timed() {
    local t0 t1 i
    t0=${EPOCHREALTIME/[.,]/}
    lxc-stop -P "$1" -n "$2" || die "lxc $2: lxc-stop failed"
    t1=${EPOCHREALTIME/[.,]/}
    rec "$3" stop $((t1 - t0))
    for ((i = 0; i < 2000; i++)); do
        kill -0 "$4" 2>/dev/null || break
        sleep 0.005
    done
}

rec() { echo "$3" >>"$T/data/$1.$2"; }
# stats FILE DIV [FMT] -> "min median max", each divided by DIV
stats() {
    [[ -s $1 ]] || { echo "- - -"; return; }
    sort -n "$1" | awk -v d="$2" -v f="${3:-%.6g}" '{v[NR] = $1}
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf f " " f " " f "\n", v[1] / d, m / d, v[NR] / d
        }'
}

# ---- LXD 5.0.2 started by hand, for the side-by-side benches (images, snapshots, network)

# lxd_start: lxd with its state in $T/lxd (LXD_DIR, exported), its log in $T/lxd.log and its
# output in $T/lxd.out; LXD_PID is its pid. Returns 1 when it does not come up. Environment
# for the daemon (SSL_CERT_FILE=...) goes before the call.
lxd_start() {
    export LXD_DIR=$T/lxd
    mkdir -p "$LXD_DIR"
    chmod 0711 "$LXD_DIR"
    setsid lxd --group lxd --logfile="$T/lxd.log" >>"$T/lxd.out" 2>&1 </dev/null &
    LXD_PID=$!
    timeout 60 lxd waitready --timeout=60 || { echo "lxd did not come up (see $T/lxd.log)" >&2; return 1; }
}

# lxd_preseed [POOL_DIR [BRIDGE SUBNET]]: `lxd init --preseed` with a dir pool "default" (in
# POOL_DIR, else LXD's own place) and the root disk in the default profile; with BRIDGE, a
# bridge as `lxd init` makes lxdbr0 (NAT, dnsmasq, an auto ULA) on the IPv4 SUBNET and eth0 on
# it in the default profile.
lxd_preseed() {
    local source=${1:-} bridge=${2:-} subnet=${3:-}
    {
        echo "config: {}"
        if [[ -n $bridge ]]; then
            printf 'networks:\n- name: %s\n  type: bridge\n  config:\n' "$bridge"
            printf '    ipv4.address: %s\n    ipv4.nat: "true"\n    ipv6.address: auto\n' "$subnet"
        else
            echo "networks: []"
        fi
        printf 'storage_pools:\n- name: default\n  driver: dir\n'
        if [[ -n $source ]]; then printf '  config:\n    source: %s\n' "$source"; fi
        printf 'profiles:\n- name: default\n  devices:\n'
        printf '    root: {path: /, pool: default, type: disk}\n'
        if [[ -n $bridge ]]; then printf '    eth0: {name: eth0, network: %s, type: nic}\n' "$bridge"; fi
    } | lxd init --preseed
}

# lxd_import_rootfs TARBALL ALIAS: a zstd rootfs tarball (the Debian test rootfs) imported as a
# split LXD image. Its output goes where the caller sends it.
lxd_import_rootfs() {
    mkdir -p "$T/lxdimg"
    printf 'architecture: x86_64\ncreation_date: %s\nproperties:\n  os: debian\n  release: bookworm\n' \
        "$(date +%s)" >"$T/lxdimg/metadata.yaml"
    tar -C "$T/lxdimg" -cf "$T/lxdimg/meta.tar" metadata.yaml
    zstd -q -d -c "$1" >"$T/lxdimg/rootfs.tar"
    local rc=0
    lxc image import "$T/lxdimg/meta.tar" "$T/lxdimg/rootfs.tar" --alias "$2" || rc=$?
    rm -f "$T/lxdimg/rootfs.tar"
    return "$rc"
}

# lxd_stop [CMD...]: every instance deleted, CMD run (what else the bench made in LXD), then the
# daemon shut down (killed if it will not go).
lxd_stop() {
    [[ -n ${LXD_PID:-} ]] && kill -0 "$LXD_PID" 2>/dev/null || return 0
    local n
    for n in $(timeout 60 lxc list --format csv -c n 2>/dev/null); do
        timeout 120 lxc delete --force "$n" >/dev/null 2>&1
    done
    if (($#)); then "$@"; fi
    timeout 60 lxd shutdown >/dev/null 2>&1
    kill -0 "$LXD_PID" 2>/dev/null && kill -KILL "$LXD_PID" 2>/dev/null
    return 0
}
