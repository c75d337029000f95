#!/bin/bash
# Tier 2: lodge installed into a booted Debian systemd (systemd-nspawn, as
# /work/shared/reference/test-environment.md "Tier 2" describes) and checked
# there as an administrator would use it: socket and bus activation, transient
# scopes in machine.slice with Delegate=yes and their limits, machined,
# lodge@.service, a restart of lodged, a managed network (dnsmasq as a transient
# unit, NAME.lodge through systemd-resolved, bridge and table rebuilt by a restarted
# lodged), a stop of the scope from outside, and a poweroff of the whole system.
#
#   run-tier2.sh hybrid|unified
#
# hybrid: the guest gets the host's hybrid cgroup layout (v1 controllers
# read-only); unified: SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1, a pure cgroup2 guest
# as on a stock Debian 12 host (no controllers: limits are set, not enforced).
#
# Environment: LODGE_BUILD_DIR (meson's build dir, set by tests/meson.build),
# LODGE_TIER2_TARBALL (default /var/cache/lodge-tests/debian-bookworm-tier2.tar.zst,
# made by scripts/test.sh with tests/fixtures/make-debian-rootfs.sh).
# Exit: 0 all checks passed, 1 a check failed, 77 skipped (the reason is printed).

# Functions called through poll/trap look unreachable to shellcheck.
# shellcheck disable=SC2317
set -uo pipefail

mode=${1:-hybrid}
tarball=${LODGE_TIER2_TARBALL:-/var/cache/lodge-tests/debian-bookworm-tier2.tar.zst}
build=${LODGE_BUILD_DIR:-}

# shellcheck source=tests/lib/nspawn-guest.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../lib/nspawn-guest.sh"
[[ $mode == hybrid || $mode == unified ]] || { echo "usage: $0 hybrid|unified" >&2; exit 2; }
check_host "$tarball"
[[ ${cgroup_roots[*]} == /sys/fs/cgroup && $mode != unified ]] &&
    skip "a pure cgroup2 host has no hybrid layout to give the guest"

machine=lodge-t2-$mode-$$
work=$(mktemp -d /var/tmp/lodge-tier2.XXXXXX) || exit 1
root=$work/root
nspawn_pid=
cp_pid=

# --- cleanup: power the guest off, then remove everything made here ----------
guest_alive() { [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; }
wait_nspawn() { wait_exit "$nspawn_pid" "$1"; } # SECONDS
cleanup() {
    local t0=$SECONDS
    if guest_alive; then
        [[ -n $cp_pid ]] && timeout 10 nsenter -t "$cp_pid" -a systemctl poweroff 2>/dev/null
        wait_nspawn 60 || { kill -KILL "$nspawn_pid" 2>/dev/null; wait_nspawn 10; }
    fi
    [[ -n $nspawn_pid ]] && wait "$nspawn_pid" 2>/dev/null
    remove_guest "$machine"
    rm -rf --one-file-system "$work"
    echo "# cleanup took $((SECONDS - t0)) s"
}
on_exit cleanup

# --- checks (pass, fail, expect, expect_match, check, poll: nspawn-guest.sh) ---------
# A command inside the guest, in all its namespaces, with a clean environment; bounded.
g() { in_guest 60 "$cp_pid" "$@"; }
json_field() { # json_field FIELD < JSON
    python3 -c 'import json,sys
try: print(json.load(sys.stdin).get(sys.argv[1], ""))
except Exception: print("")' "$1"
}
t_start=$SECONDS

# --- the guest's root filesystem -------------------------------------------------
unpack_guest "$tarball" "$root"
install_lodge "$root"
systemctl --root="$root" enable lodged.socket lodged.service >"$work/enable.log" 2>&1 ||
    { cat "$work/enable.log"; echo "cannot enable lodged.socket"; exit 1; }
echo "# rootfs ready in $((SECONDS - t_start)) s"

# --- boot --------------------------------------------------------------------------
[[ $mode == unified ]] && export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
boot_guest "$root" "$machine" "$work/console" --private-network
nspawn_pid=$guest_pid
find_init() {
    cp_pid=$(guest_init "$nspawn_pid")
    [[ -n $cp_pid ]]
}
if ! poll 120 find_init; then
    tail -n 30 "$work/console"
    echo "the guest did not boot"
    exit 1
fi
# is-system-running fails at once while the guest's manager is not reachable yet.
poll 180 g systemctl is-system-running --wait >/dev/null
state=$(g systemctl is-system-running)
if [[ $state != running ]]; then
    g systemctl --failed --no-legend
    tail -n 30 "$work/console"
fi
expect "the guest boots ($mode cgroups)" "$state" running
echo "# booted after $((SECONDS - t_start)) s"

# --- the installed units lint clean ---------------------------------------------------
verify=$(g systemd-analyze verify --man=no lodged.socket lodged.service lodge@lint.service \
    lodge-image-refresh.timer lodge-image-refresh.service 2>&1)
expect "systemd-analyze verify of the installed units is clean" "$verify" ""

# --- socket activation ------------------------------------------------------------
expect "lodged.socket listens" "$(g systemctl is-active lodged.socket)" active
expect "lodged.service does not run before anyone asks" "$(g systemctl is-active lodged.service)" inactive
# The first request from outside any container: it starts lodged, which answers it (500: the
# caller is in no container lodged knows; from here it is in no pid namespace lodged can see).
out=$(python3 -c 'import socket,sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n")
print(s.recv(4096).decode().split("\r\n")[0])
s.close()' "/proc/$cp_pid/root/run/lodge/devlxd/sock") || fail "cannot talk to /run/lodge/devlxd/sock"
expect "a caller in no container gets 500" "$out" "HTTP/1.1 500 Internal Server Error"
is_active() { [[ $(g systemctl is-active "$1") == "$2" ]]; }
poll 120 is_active lodged.service active
expect "the first connection to the devlxd socket starts lodged.service" \
    "$(g systemctl is-active lodged.service)" active

# --- bus activation ---------------------------------------------------------------
# Bus activation from a stopped lodged.
g systemctl stop lodged.socket lodged.service
g systemctl start lodged.socket
expect "lodged.service stopped" "$(g systemctl is-active lodged.service)" inactive
out=$(g busctl call io.lodge1 /io/lodge1 io.lodge1.Manager ListContainers 2>&1)
expect_match "ListContainers by bus activation answers" "$out" '^a\(ssuo\) 0'
expect "bus activation started lodged.service" "$(g systemctl is-active lodged.service)" active

# --- lodge-image-refresh.timer: the due auto-update checks wake a stopped lodged -----------
g systemctl enable --now lodge-image-refresh.timer >/dev/null 2>&1 ||
    fail "systemctl enable --now lodge-image-refresh.timer"
expect "lodge-image-refresh.timer is active" \
    "$(g systemctl is-active lodge-image-refresh.timer)" active
expect_match "lodge-image-refresh.timer has its next run set" \
    "$(g systemctl show -P NextElapseUSecRealtime lodge-image-refresh.timer)" '[0-9]'
# A sanitizer build's lodgectl ends with LeakSanitizer, which needs ptrace: the unit's system
# call filter (rightly) denies it, and the leak check then waits forever. Leaks are checked by
# the integration tests; here the unit's sandbox is what is tested.
if ldd "$build/lodgectl" 2>/dev/null | grep -q libasan; then
    g sh -c 'mkdir -p /run/systemd/system/lodge-image-refresh.service.d &&
        printf "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n" \
            > /run/systemd/system/lodge-image-refresh.service.d/sanitizer.conf &&
        systemctl daemon-reload' || fail "sanitizer drop-in for lodge-image-refresh.service"
fi
g systemctl stop lodged.service
g rm -f /var/lib/lodge/image-refresh.json
expect "lodged.service stopped before the refresh" "$(g systemctl is-active lodged.service)" inactive
out=$(g systemctl start lodge-image-refresh.service 2>&1) ||
    fail "systemctl start lodge-image-refresh.service: $out"
# Result alone says success for a unit that never finished: the main process must have exited 0.
unit_field() { g systemctl show -P "$1" lodge-image-refresh.service; }
expect "lodge-image-refresh.service ran and succeeded" \
    "$(unit_field Result) $(unit_field ExecMainCode) $(unit_field ExecMainStatus)" "success 1 0"
expect "lodge-image-refresh.service woke lodged through the bus" \
    "$(g systemctl is-active lodged.service)" active
expect "lodged recorded the due refresh" \
    "$(g test -s /var/lib/lodge/image-refresh.json && echo recorded)" recorded

# --- a container in its scope --------------------------------------------------------
g lodgectl create c1 >/dev/null || fail "lodgectl create c1"
g lodgectl config set c1 limits.processes=500 >/dev/null || fail "config set before start"
out=$(g lodgectl start c1 2>&1) || fail "lodgectl start c1: $out"
scope_prop() { g systemctl show -P "$2" "$1"; }
expect "lodge-c1.scope is active" "$(scope_prop lodge-c1.scope ActiveState)" active
expect "lodge-c1.scope is in machine.slice" "$(scope_prop lodge-c1.scope Slice)" machine.slice
expect "lodge-c1.scope is delegated" "$(scope_prop lodge-c1.scope Delegate)" yes
expect "the scope itself has no task limit (the supervisor is outside the guest's)" \
    "$(scope_prop lodge-c1.scope TasksMax)" infinity
expect "the scope is closed to devices but the allow-list" \
    "$(scope_prop lodge-c1.scope DevicePolicy)" closed
expect_match "the scope allows /dev/null (char 1:3)" "$(scope_prop lodge-c1.scope DeviceAllow)" \
    '/dev/char/1:3 rwm'
expect "the container's stop timeout (30 s) plus a margin is the scope's" \
    "$(scope_prop lodge-c1.scope TimeoutStopUSec)" 35s
expect_match "lodge-c1.scope stops before the bus does" "$(scope_prop lodge-c1.scope After)" \
    '(^| )dbus\.service( |$)'
controller=$(scope_prop lodge-c1.scope Controller)
expect_match "the scope has a controller" "$controller" '^:[0-9]+\.[0-9]+$'
leader=$(g lodgectl show c1 --json | json_field leader)
expect_match "c1 has a PID 1" "$leader" '^[1-9][0-9]*$'
# The scope's cgroup, in the guest's cgroup2 tree (/sys/fs/cgroup/unified when hybrid).
cgroot=/sys/fs/cgroup
[[ $mode == hybrid ]] && cgroot=/sys/fs/cgroup/unified
scope_cg=$cgroot$(scope_prop lodge-c1.scope ControlGroup)
expect "lodge-c1.scope's cgroup" "$scope_cg" $cgroot/machine.slice/lodge-c1.scope
procs=$(g cat "$scope_cg/payload/cgroup.procs" | tr '\n' ' ')
expect_match "c1's PID 1 is in lodge-c1.scope/payload" " $procs" " $leader "
sup=$(g cat /run/lodge/containers/c1/state.json | json_field supervisor_pid)
expect "the supervisor is alone in lodge-c1.scope/supervisor" \
    "$(g cat "$scope_cg/supervisor/cgroup.procs" | tr '\n' ' ')" "$sup "
expect "lodge-c1.scope itself holds no process" "$(g cat "$scope_cg/cgroup.procs")" ""

# limits.* on the payload cgroup, which the supervisor writes (nspawn on this hybrid host gives
# the guest read-only v1 controllers or a cgroup2 without controllers: nowhere to put them).
payload_cg=$scope_cg/payload
if [[ $mode == hybrid ]] || ! g test -e "$payload_cg/memory.max"; then
    pass "# SKIP no memory, pids and cpu controllers on the tier-2 guest's cgroup2 ($mode)"
else
    expect "limits.processes set before the start is the payload's pids.max" \
        "$(g cat "$payload_cg/pids.max")" 500
    g lodgectl config set c1 limits.memory=256MiB >/dev/null || fail "config set limits.memory"
    expect "limits.memory=256MiB is the running payload's memory.max" \
        "$(g cat "$payload_cg/memory.max")" 268435456
    g lodgectl config set c1 limits.cpu=1 >/dev/null || fail "config set limits.cpu=1"
    expect "limits.cpu=1 is a 1-CPU quota" "$(g cat "$payload_cg/cpu.max")" "100000 100000"
    g lodgectl config unset c1 limits.memory >/dev/null || fail "config unset limits.memory"
    expect "unset limits.memory is memory.max=max" "$(g cat "$payload_cg/memory.max")" max
    g lodgectl config unset c1 limits.cpu >/dev/null || fail "config unset limits.cpu"
    expect "the scope itself has no memory limit" "$(scope_prop lodge-c1.scope MemoryMax)" infinity
fi

# The device allow-list in force for c1 (unprivileged): a node for the guest's own root disk
# (or a loop device) in the rootfs opens nothing, /dev/null does.
disk=$(g findmnt -no MAJ:MIN / 2>/dev/null | tr -d ' ')
[[ -z $disk || $disk == 0:* ]] && disk=7:0
rootfs=/var/lib/lodge/containers/c1/rootfs
if g mknod -m 0600 "$rootfs/root/disk" b "${disk%%:*}" "${disk##*:}"; then
    out=$(g lodgectl exec c1 -- sh -c 'head -c 512 /root/disk >/dev/null && echo read-ok || echo read-denied; echo x >/dev/null && echo null-ok' 2>&1)
    expect_match "c1 cannot open a disk node in its rootfs" "$out" 'read-denied'
    expect_match "c1 can open /dev/null" "$out" 'null-ok'
    g rm -f "$rootfs/root/disk"
else
    pass "# SKIP the tier-2 guest may not mknod a block node (its own device policy)"
fi

# --- the guest API from inside c1, served by the socket-activated lodged -------------------
if [[ -n ${LODGE_DEVLXD_CLIENT:-} && -x $LODGE_DEVLXD_CLIENT ]]; then
    cp "$LODGE_DEVLXD_CLIENT" "$root/var/lib/lodge/containers/c1/rootfs/devlxd-client"
    g lodgectl config set c1 user.tier2=yes >/dev/null || fail "config set user.tier2"
    out=$(g lodgectl exec c1 -- /devlxd-client GET /1.0/config/user.tier2 2>&1)
    expect "GET /1.0/config/user.tier2 from inside c1" "$out" $'STATUS 200\nCONTENT-TYPE application/octet-stream\n\nyes'
    out=$(g lodgectl exec c1 -- /devlxd-client GET /1.0/meta-data 2>&1)
    iid=$(g lodgectl config get c1 volatile.cloud-init.instance-id 2>&1)
    expect_match "c1 has an instance-id (a UUID)" "$iid" '^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$'
    expect "GET /1.0/meta-data from inside c1" "$out" $'STATUS 200\nCONTENT-TYPE application/octet-stream\n\ninstance-id: '"$iid"$'\nlocal-hostname: c1'
fi

# --- starts that fail leave nothing behind ------------------------------------------------
# A unit of the scope's name that is not ours: lodged gives up, and its supervisor, still held
# before its first step, exits without having made anything.
g lodgectl create c3 >/dev/null || fail "lodgectl create c3"
g setsid -f systemd-run --quiet --scope --unit=lodge-c3 -- sleep 600 </dev/null >/dev/null 2>&1
poll 60 is_active lodge-c3.scope active || fail "cannot make a blocking lodge-c3.scope"
out=$(g lodgectl start c3 2>&1) && fail "c3 started although lodge-c3.scope was taken"
echo "# lodgectl start c3: $out"
expect_match "the failed start names the scope" "$out" 'lodge-c3\.scope'
expect "c3 is not running" "$(g lodgectl show c3 --json | json_field state)" error
check "no supervisor of c3 is left over" "its control socket exists" \
    g test ! -e /run/lodge/containers/c3/control
g systemctl stop lodge-c3.scope
# A supervisor that fails after the scope exists: its scope goes away with it.
g lodgectl create c4 >/dev/null || fail "lodgectl create c4"
g rm -f /var/lib/lodge/containers/c4/rootfs/sbin/init
out=$(g lodgectl start c4 2>&1) && fail "c4 started without /sbin/init"
echo "# lodgectl start c4: $out"
expect_match "the failed start of c4 names /sbin/init" "$out" '/sbin/init'
# PID 1 notices the empty cgroup on its own; there is no event to wait for from here.
poll 60 is_active lodge-c4.scope inactive
expect "c4's scope is gone" "$(scope_prop lodge-c4.scope ActiveState)" inactive

# --- machined -------------------------------------------------------------------------
out=$(g machinectl list --no-legend 2>&1)
expect_match "machinectl list shows c1" "$out" '(^|'$'\n'')c1 +container +lodge'
out=$(g machinectl status c1 --no-pager 2>&1)
expect_match "machinectl status c1 names its unit" "$out" 'Unit: lodge-c1\.scope'
expect_match "machinectl status c1 names its leader" "$out" "Leader: $leader "

# --- lodge@.service ---------------------------------------------------------------------
g lodgectl create c2 >/dev/null || fail "lodgectl create c2"
g systemctl start lodge@c2.service || fail "systemctl start lodge@c2.service"
expect "lodge@c2.service starts c2" "$(g lodgectl show c2 --json | json_field state)" running
expect "c2 runs in lodge-c2.scope" "$(scope_prop lodge-c2.scope ActiveState)" active

# --- lodged restart ------------------------------------------------------------------------
old_lodged=$(scope_prop lodged.service MainPID)
g systemctl restart lodged.service || fail "systemctl restart lodged"
new_lodged=$(scope_prop lodged.service MainPID)
check "lodged restarted" "MainPID $old_lodged, then $new_lodged" \
    test "$new_lodged" != 0 -a "$new_lodged" != "$old_lodged"
expect "after a restart of lodged c1 is running" "$(g lodgectl show c1 --json | json_field state)" running
expect_match "after a restart of lodged c1's PID 1 is the same" \
    "$(g lodgectl show c1 --json | json_field leader)" "^$leader\$"
check "c1's PID 1 lives on" "it is gone" g kill -0 "$leader"
out=$(g lodgectl status c1 2>&1)
expect_match "lodgectl status c1 says running" "$out" 'State: running'

# --- a managed network: dnsmasq as a transient unit, NAME.lodge through resolved, and the
# bridge and table rebuilt by a restarted lodged (lodge-network(7)) -------------------------
if ! g sh -c 'command -v dnsmasq && command -v nft' >/dev/null 2>&1; then
    pass "# SKIP the tier-2 image has no dnsmasq or nft (scripts/test.sh adds dnsmasq-base and nftables to it)"
else
    out=$(g lodgectl network create lodgebr0 2>&1) || fail "lodgectl network create lodgebr0: $out"
    expect "dnsmasq runs as the transient unit lodge-dnsmasq-lodgebr0.service" \
        "$(scope_prop lodge-dnsmasq-lodgebr0.service ActiveState)" active
    main=$(scope_prop lodge-dnsmasq-lodgebr0.service MainPID)
    expect "the unit's main process is dnsmasq" "$(g cat "/proc/$main/comm" 2>&1)" dnsmasq
    has_table() { g nft list table inet lodge >/dev/null 2>&1; }
    check "lodge's nftables table inet lodge is loaded" "nft lists no such table" has_table
    cidr=$(g lodgectl network get lodgebr0 ipv4.address)
    expect_match "lodgebr0 got an auto /24" "$cidr" '^[0-9.]+/24$'
    fixed=${cidr%.*}.50
    g lodgectl create c5 >/dev/null || fail "lodgectl create c5"
    g lodgectl device add c5 eth0 nic network=lodgebr0 "ipv4.address=$fixed" >/dev/null ||
        fail "device add c5 eth0 on lodgebr0"
    lease() { # a DHCP lease for c5's eth0 through the network's dnsmasq
        g lodgectl exec c5 -- sh -c 'printf "#!/bin/sh\nexit 0\n" >/tmp/udhcpc.sh &&
            chmod 755 /tmp/udhcpc.sh && busybox udhcpc -i eth0 -q -n -t 15 -T 2 -s /tmp/udhcpc.sh' \
            >/dev/null 2>&1
    }
    out=$(g lodgectl start c5 2>&1) || fail "lodgectl start c5: $out"
    check "c5 gets a DHCP lease on lodgebr0" "udhcpc got none" lease
    expect_match "the lease is c5's static address" "$(g lodgectl network list-leases lodgebr0 2>&1)" \
        "$fixed"
    resolve() { g resolvectl query --legend=no c5.lodge 2>&1; }
    if [[ $(g systemctl is-active systemd-resolved.service) != active ]]; then
        pass "# SKIP systemd-resolved does not run in the tier-2 image: the host's NAME.lodge is not checked"
    else
        expect_match "resolved has lodgebr0's dnsmasq as its DNS server" \
            "$(g resolvectl dns lodgebr0 2>&1)" "${cidr%/*}"
        expect_match "the host resolves c5.lodge through systemd-resolved" "$(resolve)" "$fixed"
    fi
    # A proxy device's forwarder lives in the container's scope, so a restart of
    # lodged.service (which kills its own cgroup) leaves it serving.
    g lodgectl exec c5 -- sh -c 'mkdir -p /www && echo tier2-proxy >/www/index.html &&
        busybox httpd -p 127.0.0.1:80 -h /www' || fail "busybox httpd in c5"
    out=$(g lodgectl device add c5 web proxy listen=tcp:127.0.0.1:18080 connect=tcp:127.0.0.1:80 2>&1) ||
        fail "device add c5 web proxy: $out"
    fetch() { g busybox wget -qO- http://127.0.0.1:18080/index.html 2>&1; }
    expect "the host's 127.0.0.1:18080 reaches c5's httpd" "$(fetch)" tier2-proxy
    fwd=$(g head -n 1 /run/lodge/proxies/c5/web)
    expect_match "the forwarder sits in lodge-c5.scope" "$(g cat "/proc/$fwd/cgroup" 2>&1)" \
        'lodge-c5\.scope/supervisor'
    g systemctl restart lodged.service || fail "systemctl restart lodged.service"
    check "the forwarder outlives a restart of lodged.service" "it is gone" g kill -0 "$fwd"
    expect "the restarted lodged adopts it" "$(g head -n 1 /run/lodge/proxies/c5/web)" "$fwd"
    expect "127.0.0.1:18080 still reaches c5" "$(fetch)" tier2-proxy
    # What a reboot of the host takes away: lodged puts it back when it starts.
    g lodgectl stop c5 --force >/dev/null 2>&1
    fwd_gone() { ! g kill -0 "$fwd" 2>/dev/null; }
    check "the forwarder ended with c5" "it still runs" poll 30 fwd_gone
    g systemctl stop lodged.service
    g ip link del lodgebr0
    g nft delete table inet lodge
    g systemctl stop lodge-dnsmasq-lodgebr0.service
    g systemctl start lodged.service || fail "systemctl start lodged.service"
    expect "lodged restarted" "$(scope_prop lodged.service ActiveState)" active
    check "the bridge lodgebr0 is back after lodged's restart" "it is missing" \
        g test -e /sys/class/net/lodgebr0
    check "the table inet lodge is back after lodged's restart" "it is missing" has_table
    expect "dnsmasq's unit is back after lodged's restart" \
        "$(scope_prop lodge-dnsmasq-lodgebr0.service ActiveState)" active
    out=$(g lodgectl start c5 2>&1) || fail "lodgectl start c5 again: $out"
    check "c5 gets a lease again on the rebuilt network" "udhcpc got none" lease
    if [[ $(g systemctl is-active systemd-resolved.service) == active ]]; then
        expect_match "the host resolves c5.lodge after the rebuild" "$(resolve)" "$fixed"
    fi
    g lodgectl delete --force c5 >/dev/null 2>&1
    out=$(g lodgectl network delete lodgebr0 2>&1) || fail "network delete lodgebr0: $out"
    expect "network delete stops dnsmasq's unit" \
        "$(scope_prop lodge-dnsmasq-lodgebr0.service ActiveState)" inactive
fi

# --- systemctl stop lodge-c1.scope: the stop signal, not a kill ---------------------------
expect "lodge-c1.scope runs before the stop" "$(scope_prop lodge-c1.scope ActiveState)" active
t0=$SECONDS
g systemctl stop lodge-c1.scope || fail "systemctl stop lodge-c1.scope"
took=$((SECONDS - t0))
expect "lodge-c1.scope is gone" "$(scope_prop lodge-c1.scope ActiveState)" inactive
log=$(g cat /var/log/lodge/c1/lodge.log)
expect_match "systemd asked c1's supervisor to stop (RequestStop)" "$log" 'systemd asks to stop'
expect_match "the supervisor sent c1 its stop signal" "$log" 'Stopping container "c1" with SIG'
expect_match "c1's init ran its shutdown actions" "$(g cat /var/log/lodge/c1/console.log)" \
    'lodge-busybox: shutting down'
expect "c1 stopped cleanly" "$(g cat /run/lodge/containers/c1/state.json | json_field reason)" stopped
check "the stop took ${took}s, less than the 30 s timeout" "the timeout, not the guest, ended it" \
    test "$took" -lt 30
expect "lodgectl says c1 stopped" "$(g lodgectl show c1 --json | json_field state)" stopped
machine_gone() { ! g machinectl show c1 >/dev/null 2>&1; }
check "machined forgot c1 with its scope" "it still knows c1" poll 60 machine_gone

# --- poweroff: every running container gets its stop signal --------------------------------
out=$(g lodgectl start c1 2>&1) || fail "lodgectl start c1 again: $out"
expect "c1 runs again" "$(g lodgectl show c1 --json | json_field state)" running
before_c1=$(grep -c 'lodge-busybox: shutting down' "$root/var/log/lodge/c1/console.log")
before_c2=$(grep -c 'lodge-busybox: shutting down' "$root/var/log/lodge/c2/console.log")
asked_c1=$(grep -c 'systemd asks to stop' "$root/var/log/lodge/c1/lodge.log")
t0=$SECONDS
g systemctl poweroff
if wait_nspawn 90; then
    pass "the guest powered off in $((SECONDS - t0)) s"
else
    fail "the guest did not power off within 90 s"
fi
after_c1=$(grep -c 'lodge-busybox: shutting down' "$root/var/log/lodge/c1/console.log")
after_c2=$(grep -c 'lodge-busybox: shutting down' "$root/var/log/lodge/c2/console.log")
expect "poweroff: c1's init ran its shutdown actions" "$after_c1" $((before_c1 + 1))
expect "poweroff: c2's init ran its shutdown actions" "$after_c2" $((before_c2 + 1))
# c1 was started by hand, so only its scope's stop can have stopped it.
expect "poweroff: systemd asked c1's supervisor to stop" \
    "$(grep -c 'systemd asks to stop' "$root/var/log/lodge/c1/lodge.log")" $((asked_c1 + 1))
for c in c1 c2; do
    last=$(grep -E 'Stopping container|did not stop in time|PID 1 ended' \
        "$root/var/log/lodge/$c/lodge.log" | tail -n 2 | tr '\n' ' ')
    if [[ $last == *"Stopping container \"$c\""* && $last != *"did not stop in time"* ]]; then
        pass "poweroff: $c was stopped with its stop signal"
    else
        fail "poweroff: $c's last stop: $last"
    fi
done

echo "# $mode: $failures failed, $((SECONDS - t_start)) s"
if ((failures > 0)); then
    echo "--- guest console (tail) ---"
    tail -n 40 "$work/console"
    exit 1
fi
exit 0
