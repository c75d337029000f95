# shellcheck shell=bash
# The recipe tier 2 and tier 3 boot Debian guests with: systemd-nspawn on a host where PID 1 is
# not systemd (nspawn without machined, each guest in a cgroup of its own), lodge installed into
# the guest's tree by `meson install`, and the checks' TAP-like output. Sourced by
# tests/tier2/run-tier2.sh and tests/tier3/run-tier3.sh; reads $build (meson's build dir) and
# $work (the run's scratch directory), and sets cgroup_roots and guest_pid for them.
# shellcheck disable=SC2154,SC2034

skip() {
    echo "SKIP: $*"
    exit 77
}

# check_host TARBALL TOOL...: skips unless we are root, TARBALL and a built lodge exist, the
# tools nspawn needs and TOOL... are installed, and the host does not run systemd; sets
# cgroup_roots to the hierarchies a guest needs a cgroup of its own in.
check_host() {
    local tarball=$1 tool
    shift
    [[ $EUID -eq 0 ]] || skip "needs root"
    [[ -f $tarball ]] || skip "no guest rootfs at $tarball (scripts/test.sh builds it)"
    [[ -n $build && -f $build/lodged ]] || skip "LODGE_BUILD_DIR does not hold a built lodge"
    for tool in systemd-nspawn nsenter zstd meson python3 timeout setsid "$@"; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
    # On a systemd host nspawn would be started through systemd-run instead.
    [[ -d /run/systemd/system ]] && skip "the host runs systemd; this recipe is for hosts without it"
    if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        cgroup_roots=(/sys/fs/cgroup)
    else
        [[ -d /sys/fs/cgroup/unified && -d /sys/fs/cgroup/systemd ]] ||
            skip "cgroup v1 host without the unified and name=systemd hierarchies"
        cgroup_roots=(/sys/fs/cgroup/unified /sys/fs/cgroup/systemd)
    fi
}

# --- checks ----------------------------------------------------------------------------------
failures=0
pass() { echo "ok - $*"; }
fail() {
    echo "not ok - $*"
    failures=$((failures + 1))
}
expect() { # expect DESCRIPTION GOT WANT
    if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}
expect_match() { # expect_match DESCRIPTION TEXT REGEX
    if [[ $2 =~ $3 ]]; then pass "$1"; else fail "$1: '$2' does not match /$3/"; fi
}
check() { # check DESCRIPTION FAILURE-TEXT COMMAND...: passes when COMMAND succeeds
    local what=$1 why=$2
    shift 2
    if "$@"; then pass "$what"; else fail "$what: $why"; fi
}
# A guest's systemd offers no event a test outside can wait on: poll, bounded.
poll() { # poll SECONDS COMMAND...: true once COMMAND succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# --- the guest's tree ------------------------------------------------------------------------
# unpack_guest TARBALL ROOT: the tarball unpacked at ROOT.
unpack_guest() {
    mkdir -p "$2"
    zstd -dc "$1" | tar -x --numeric-owner --xattrs --xattrs-include='*' --acls -C "$2" ||
        { echo "cannot unpack $1"; exit 1; }
}

# install_lodge ROOT: lodge installed into ROOT (meson install; its log in $work).
install_lodge() {
    local root=$1 bin lib policy
    meson install -C "$build" --no-rebuild --quiet --destdir "$root" >"$work/install.log" 2>&1 ||
        { cat "$work/install.log"; echo "meson install failed"; exit 1; }
    # Both are Debian 12: any library lodge links that the tarball lacks (an ASan runtime, say)
    # comes from the host as it is.
    for bin in lodged lodgectl lodge-supervisor; do
        ldd "$build/$bin" | awk '/=> \// { print $3 }'
    done | sort -u | while read -r lib; do
        [[ -e $root$lib ]] || { mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib" &&
            echo "note: copied $lib from the host"; }
    done
    # dbus-daemon reads policies from /usr/share/dbus-1/system.d and /etc/dbus-1/system.d only.
    policy=$(cd "$root" && find usr etc -name io.lodge1.conf -path '*dbus-1/system.d*' | head -1)
    case $policy in
    usr/share/dbus-1/system.d/* | etc/dbus-1/system.d/*) ;;
    *)
        echo "note: the bus policy was installed as '/$policy', where dbus-daemon does not look;" \
            "copied to /etc/dbus-1/system.d"
        mkdir -p "$root/etc/dbus-1/system.d"
        cp "$root/$policy" "$root/etc/dbus-1/system.d/" || { echo "no io.lodge1.conf installed"; exit 1; }
        ;;
    esac
}

# in_guest SECONDS INIT-PID COMMAND...: COMMAND in all the namespaces of the guest whose init is
# INIT-PID, with a clean environment, killed after SECONDS.
in_guest() {
    local limit=$1 init=$2
    shift 2
    timeout --kill-after=5 "$limit" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root nsenter -t "$init" -a -- "$@"
}

# on_exit CLEANUP: runs CLEANUP when the script ends, on an interrupt or a TERM too.
on_exit() {
    # shellcheck disable=SC2064 # the name, now
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# --- booting and powering off ----------------------------------------------------------------
# boot_guest ROOT MACHINE CONSOLE NSPAWN-OPTION...: boots ROOT in the background, its output to
# CONSOLE; sets guest_pid to nspawn's pid. nspawn without machined (--register=no --keep-unit)
# makes payload/ below its caller's cgroup: so it starts from cgroup MACHINE, of its own, in
# every hierarchy of cgroup_roots.
boot_guest() {
    local root=$1 machine=$2 console=$3 r
    shift 3
    for r in "${cgroup_roots[@]}"; do mkdir -p "$r/$machine" || exit 1; done
    # shellcheck disable=SC2016
    setsid bash -c 'root=$0 machine=$1 count=$2
        shift 2
        for r in "${@:1:count}"; do echo $$ >"$r/$machine/cgroup.procs" || exit 1; done
        shift "$count"
        exec systemd-nspawn -q -b -D "$root" --machine="$machine" --register=no --keep-unit \
            --console=read-only "$@"' \
        "$root" "$machine" "${#cgroup_roots[@]}" "${cgroup_roots[@]}" "$@" >"$console" 2>&1 </dev/null &
    guest_pid=$!
}

# guest_init NSPAWN-PID: the pid of the guest's systemd (nspawn's child once it runs it), or "".
guest_init() {
    ps -o pid=,comm= --ppid "$1" | awk '$2 == "systemd" { print $1 }'
}

# wait_exit PID SECONDS: true once PID (our child) has exited; `wait` cannot time out, so
# timeout(1) around `tail --pid` bounds the wait.
wait_exit() {
    timeout "$2" tail --pid="$1" -f /dev/null 2>/dev/null
    ! kill -0 "$1" 2>/dev/null
}

# remove_guest MACHINE: its cgroups (once empty) and nspawn's propagation directory.
remove_guest() {
    local r
    for r in "${cgroup_roots[@]}"; do
        [[ -d $r/$1 ]] && find "$r/$1" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d $r/$1 ]] && echo "WARNING: cgroup $r/$1 could not be removed"
    done
    rm -rf "/run/systemd/nspawn/propagate/$1"
}
