#!/bin/bash
# Tier 3: lodge containers as resources of a real Pacemaker/Corosync cluster (lodge-cluster(7)).
# Three Debian 12 nodes booted with systemd in systemd-nspawn (the tier-2 recipe three times),
# on a bridge made here, with corosync, pacemaker and pcs from Debian and lodge installed by
# `meson install`; a host directory bind-mounted into all three at /var/lib/lodge/containers
# is their shared filesystem. Checked: a container resource runs on exactly one node and the
# others show it "remote" and refuse to start it; lodgectl cluster status and lodgectl -H;
# Pacemaker restarts it when its PID 1 is killed; standby moves it with a graceful stop; a
# node powered off (its PID 1 killed: a power cut) has it started on another node in time.
# Fencing is off (stonith-enabled=false): there is nothing to fence in this bed.
#
# Environment: LODGE_BUILD_DIR (meson's build dir, set by tests/meson.build),
# LODGE_TIER3_TARBALL (default /var/cache/lodge-tests/debian-bookworm-tier3.tar.zst, made by
# scripts/test.sh with tests/fixtures/make-debian-rootfs.sh), LODGE_TIER3_TIMINGS (a file the
# measured times are appended to, for bench/cluster.sh).
# Exit: 0 all checks passed, 1 a check failed, 77 skipped (the reason is printed).

# Functions called through poll/trap look unreachable to shellcheck.
# shellcheck disable=SC2317
set -uo pipefail

tarball=${LODGE_TIER3_TARBALL:-/var/cache/lodge-tests/debian-bookworm-tier3.tar.zst}
build=${LODGE_BUILD_DIR:-}
timings=${LODGE_TIER3_TIMINGS:-}
# Bounds (seconds) the cluster must meet; generous for a loaded 2-core machine.
failover_bound=90 # node powered off -> container running on another node
move_bound=90     # standby -> container running on another node
restart_bound=60  # PID 1 killed -> container running again

# shellcheck source=tests/lib/nspawn-guest.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../lib/nspawn-guest.sh"
check_host "$tarball" ip

id=$$
bridge=lt3br$id
subnet=198.18.0 # only on the bridge made here, which has no address and no uplink
work=$(mktemp -d /var/tmp/lodge-tier3.XXXXXX) || exit 1
chmod 0755 "$work"
base=$work/base
shared=$work/shared/containers
nodes=(1 2 3)
declare -A machine nspawn_pid cp_pid
for n in "${nodes[@]}"; do machine[$n]=t3n$n-$id; done

# --- cleanup: a power cut for every node (they are throwaway), then remove everything -----------
node_alive() { [[ -n ${nspawn_pid[$1]:-} ]] && kill -0 "${nspawn_pid[$1]}" 2>/dev/null; }
wait_nspawn() { wait_exit "${nspawn_pid[$1]}" "$2"; } # NODE SECONDS
power_cut() { # NODE: SIGKILL to its PID 1 ends its pid namespace, and every process in it, at once
    [[ -n ${cp_pid[$1]:-} ]] && kill -KILL "${cp_pid[$1]}" 2>/dev/null
    wait_nspawn "$1" 30 || { kill -KILL "${nspawn_pid[$1]}" 2>/dev/null; wait_nspawn "$1" 10; }
}
cleanup() {
    local t0=$SECONDS n r
    for n in "${nodes[@]}"; do
        node_alive "$n" && power_cut "$n"
        [[ -n ${nspawn_pid[$n]:-} ]] && wait "${nspawn_pid[$n]}" 2>/dev/null
        remove_guest "${machine[$n]}"
        mountpoint -q "$work/n$n/root" && umount "$work/n$n/root"
    done
    ip link del "$bridge" 2>/dev/null
    rm -rf --one-file-system "$work"
    echo "# cleanup took $((SECONDS - t0)) s"
}
on_exit cleanup

# --- checks (pass, fail, expect, expect_match, poll: nspawn-guest.sh) ----------------------------
# A command on node N, in all its namespaces, with a clean environment; bounded.
g() { in_guest 120 "${cp_pid[$1]}" "${@:2}"; } # NODE COMMAND...
now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
# c1's state as lodged on node N reports it.
state_on() { g "$1" lodgectl show c1 --json 2>/dev/null | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("state", ""))
except Exception: print("")'; }
leader_on() { g "$1" lodgectl show c1 --json 2>/dev/null | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("leader", 0))
except Exception: print(0)'; }
alive_nodes() { for n in "${nodes[@]}"; do node_alive "$n" && echo "$n"; done; }
# The nodes whose lodged says c1 is running, as "n1 n3".
running_on() {
    local n out=
    for n in $(alive_nodes); do
        [[ $(state_on "$n") == running ]] && out+="n$n "
    done
    echo "${out% }"
}
runs_elsewhere_than() { local r; r=$(running_on); [[ -n $r && $r != *"$1"* && $r != *" "* ]]; }
runs_on_one() { local r; r=$(running_on); [[ -n $r && $r != *" "* ]]; }
# Where Pacemaker says the resource runs.
pcmk_location() { g "$1" crm_resource --locate --resource c1 2>/dev/null | sed -n 's/.*running on: *//p' | xargs; }

t_start=$SECONDS

# --- the nodes' common tree: the tarball, lodge, and the cluster's configuration ----------------
ip link add "$bridge" type bridge 2>/dev/null || skip "cannot create a bridge here"
ip link set "$bridge" up || exit 1
mkdir -p "$base" "$shared"
chmod 0700 "$shared"
unpack_guest "$tarball" "$base"
for tool in corosync pacemakerd pcs crm_mon; do
    [[ -n $(find "$base/usr/sbin" "$base/usr/bin" -maxdepth 1 -name "$tool" 2>/dev/null) ]] ||
        skip "the tier-3 rootfs has no $tool (rebuild it with scripts/test.sh)"
done
install_lodge "$base"
[[ -x $base/usr/lib/ocf/resource.d/lodge/container ]] ||
    { echo "meson install did not install ocf:lodge:container"; exit 1; }
mkdir -p "$base/var/lib/lodge/containers"
{
    echo "127.0.0.1 localhost"
    for n in "${nodes[@]}"; do echo "$subnet.$n n$n"; done
} >"$base/etc/hosts"
# Corosync 3 (knet) over the bridge; no crypto: the bridge reaches nothing else.
cat >"$base/etc/corosync/corosync.conf" <<EOC
totem {
    version: 2
    cluster_name: lodge-t3
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
$(for n in "${nodes[@]}"; do printf '    node {\n        ring0_addr: %s\n        name: n%s\n        nodeid: %s\n    }\n' "$subnet.$n" "$n" "$n"; done)
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_syslog: yes
    to_stderr: no
    to_logfile: no
}
EOC
# The node's address, before corosync looks for itself in the nodelist.
cat >"$base/etc/systemd/system/t3-net.service" <<'EOU'
[Unit]
Description=tier-3 node address on host0
Before=corosync.service network-online.target
[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/etc/t3-net.env
ExecStart=/sbin/ip link set host0 up
ExecStart=/sbin/ip addr add ${ADDRESS} dev host0
[Install]
WantedBy=multi-user.target
EOU
mkdir -p "$base/etc/systemd/system/corosync.service.d"
printf '[Unit]\nWants=t3-net.service\nAfter=t3-net.service\n' \
    >"$base/etc/systemd/system/corosync.service.d/t3-net.conf"
systemctl --root="$base" enable t3-net.service corosync.service pacemaker.service ssh.service \
    lodged.socket lodged.service >"$work/enable.log" 2>&1 ||
    { cat "$work/enable.log"; echo "cannot enable the nodes' units"; exit 1; }
# pcsd is not used (pcs works on the local CIB): it only costs memory and boot time.
systemctl --root="$base" mask pcsd.service pcsd-ruby.service >/dev/null 2>&1
mkdir -p "$base/root/.ssh"
chmod 0700 "$base/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C lodge-tier3 -f "$base/root/.ssh/id_ed25519" >/dev/null ||
    { echo "ssh-keygen failed"; exit 1; }
cp "$base/root/.ssh/id_ed25519.pub" "$base/root/.ssh/authorized_keys"
printf 'Host n*\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n' \
    >"$base/root/.ssh/config"
echo "# node tree ready in $((SECONDS - t_start)) s"

# --- boot three nodes, each an overlay of the common tree ----------------------------------------
for n in "${nodes[@]}"; do
    mkdir -p "$work/n$n/upper" "$work/n$n/work" "$work/n$n/root"
    mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/n$n/upper,workdir=$work/n$n/work" \
        "$work/n$n/root" || skip "cannot mount an overlay of the node tree here"
    echo "n$n" >"$work/n$n/root/etc/hostname"
    echo "ADDRESS=$subnet.$n/24" >"$work/n$n/root/etc/t3-net.env"
    boot_guest "$work/n$n/root" "${machine[$n]}" "$work/n$n/console" \
        --network-bridge="$bridge" --bind="$shared:/var/lib/lodge/containers"
    nspawn_pid[$n]=$guest_pid
done
find_init() {
    cp_pid[$1]=$(guest_init "${nspawn_pid[$1]}")
    [[ -n ${cp_pid[$1]} ]]
}
for n in "${nodes[@]}"; do
    if ! poll 120 find_init "$n"; then
        tail -n 30 "$work/n$n/console"
        node_alive "$n" || skip "systemd-nspawn cannot boot a node here (console above)"
        echo "node n$n did not boot"
        exit 1
    fi
done
for n in "${nodes[@]}"; do
    poll 240 g "$n" systemctl is-system-running --wait >/dev/null
    state=$(g "$n" systemctl is-system-running)
    [[ $state == running ]] || { g "$n" systemctl --failed --no-legend; }
    expect_match "node n$n boots" "$state" '^(running|degraded)$'
done
for n in "${nodes[@]}"; do
    if [[ $(g "$n" systemctl is-active corosync.service) != active ]]; then
        g "$n" journalctl -u corosync -u t3-net --no-pager | tail -n 30
        skip "corosync cannot run on node n$n here (its log above)"
    fi
done
echo "# booted after $((SECONDS - t_start)) s"

# --- the cluster ------------------------------------------------------------------------------
cluster_ready() {
    g 1 lodgectl cluster status --json 2>/dev/null | python3 -c 'import json,sys
j = json.load(sys.stdin)
ok = j["dc"] and j["quorate"] and [n["state"] for n in j["nodes"]] == ["online"] * 3
sys.exit(0 if ok else 1)'
}
if ! poll 180 cluster_ready; then
    g 1 crm_mon -1 2>&1 | head -30
    fail "the three nodes form a quorate cluster with a DC"
    exit 1
fi
pass "the three nodes form a quorate cluster with a DC ($((SECONDS - t_start)) s)"
echo "# NOTE: fencing is disabled in this test bed (stonith-enabled=false): the nodes are"
echo "#       containers with nothing to fence. Never run a real cluster without fencing."
g 1 pcs property set stonith-enabled=false || fail "pcs property set stonith-enabled=false"
g 1 pcs resource defaults update resource-stickiness=100 >/dev/null ||
    fail "pcs resource defaults update resource-stickiness=100"

# --- a container on the shared filesystem, as a resource --------------------------------------
out=$(g 1 lodgectl create c1 2>&1) || fail "lodgectl create c1 on n1: $out"
g 1 lodgectl config set c1 boot.host_shutdown_timeout=20 >/dev/null || fail "config set c1"
# lodged reads the containers on disk when it starts (lodge-cluster(7)).
for n in 2 3; do g "$n" systemctl restart lodged.service || fail "restart lodged on n$n"; done
for n in "${nodes[@]}"; do
    expect "n$n sees c1 stopped before it is a resource" "$(state_on "$n")" stopped
done
g 1 pcs resource create c1 ocf:lodge:container name=c1 stop_timeout=20 \
    op monitor interval=5s timeout=30s op start timeout=90s op stop timeout=60s ||
    fail "pcs resource create c1 ocf:lodge:container"
if poll 120 runs_on_one; then
    owner=$(running_on)
    pass "c1 runs on exactly one node: $owner"
else
    fail "c1 runs on exactly one node: '$(running_on)'"
    g 1 crm_mon -1 -f 2>&1 | head -40
    exit 1
fi
o=${owner#n}
expect "Pacemaker locates c1 on $owner" "$(pcmk_location 1)" "$owner"
others=()
for n in "${nodes[@]}"; do [[ $n == "$o" ]] || others+=("$n"); done
for n in "${others[@]}"; do
    expect "n$n shows c1 as remote" "$(state_on "$n")" remote
done
n=${others[0]}
out=$(g "$n" lodgectl start c1 2>&1) && fail "n$n started c1, which $owner runs"
expect_match "a start on n$n is refused, naming $owner" "$out" "is running on $owner \\(machine-id"
expect "c1 still runs on $owner alone" "$(running_on)" "$owner"

# --- lodgectl cluster status and lodgectl -H ---------------------------------------------------
out=$(g "$n" lodgectl cluster status 2>&1)
expect_match "lodgectl cluster status on n$n shows c1 started on $owner" "$out" \
    "c1 +c1 +Started +$owner"
expect_match "lodgectl cluster status says fencing is off" "$out" "stonith DISABLED"
out=$(g "$n" lodgectl -H "$owner" list --no-legend 2>&1)
expect_match "lodgectl -H $owner list (from n$n) shows c1 running" "$out" '^c1 +running '
out=$(g "$o" lodgectl -H "n$n" status c1 2>&1)
expect_match "lodgectl -H n$n status c1 (from $owner) shows it remote, owned by $owner" "$out" \
    "State: remote \\(running on $owner "
out=$(g "$n" lodgectl -H "$owner" cluster status --no-legend 2>&1)
expect_match "lodgectl -H $owner cluster status" "$out" "c1 +c1 +Started +$owner"

# --- PID 1 killed: Pacemaker restarts it -------------------------------------------------------
leader=$(leader_on "$o")
[[ $leader -gt 0 ]] || fail "c1 has a PID 1 on $owner"
t0=$(now)
g "$o" kill -KILL "$leader"
restarted() { local l; l=$(leader_on "$o"); [[ $l -gt 0 && $l != "$leader" ]]; }
if poll "$restart_bound" restarted; then
    t_restart=$(elapsed "$t0" "$(now)")
    pass "Pacemaker restarted c1 on $owner ${t_restart} s after its PID 1 was killed (bound ${restart_bound} s)"
else
    fail "c1 did not come back on $owner within ${restart_bound} s of its PID 1's death"
fi
failcount=$(g 1 crm_failcount --query --resource c1 --node "$owner" 2>/dev/null | sed -n 's/.*value=//p')
expect_match "Pacemaker counted the failure (it, not lodge, restarted c1)" "$failcount" '^[1-9]'
expect "c1 runs on $owner alone" "$(running_on)" "$owner"
g 1 pcs resource cleanup c1 >/dev/null 2>&1

# --- standby: a graceful stop, then a start elsewhere -------------------------------------------
stops_before=$(g "$o" grep -c 'lodge-busybox: shutting down' /var/log/lodge/c1/console.log)
t0=$(now)
g 1 pcs node standby "$owner" || fail "pcs node standby $owner"
if poll "$move_bound" runs_elsewhere_than "$owner"; then
    t_move=$(elapsed "$t0" "$(now)")
    new=$(running_on)
    pass "standby moved c1 from $owner to $new in ${t_move} s (bound ${move_bound} s)"
else
    fail "c1 did not move off $owner within ${move_bound} s of its standby"
    new=
fi
stops_after=$(g "$o" grep -c 'lodge-busybox: shutting down' /var/log/lodge/c1/console.log)
expect "c1's init on $owner ran its shutdown actions (a graceful stop)" "$stops_after" \
    $((stops_before + 1))
last=$(g "$o" grep -E 'Stopping container|did not stop in time' /var/log/lodge/c1/lodge.log | tail -n 2)
if [[ $last == *'Stopping container "c1"'* && $last != *"did not stop in time"* ]]; then
    pass "c1 was stopped on $owner with its stop signal, not killed"
else
    fail "c1's last stop on $owner: $last"
fi
expect "$owner shows c1 as remote once it runs on $new" "$(state_on "$o")" remote
g 1 pcs node unstandby "$owner" || fail "pcs node unstandby $owner"
# Stickiness keeps it where it is.
expect "c1 stays on $new after unstandby" "$(running_on)" "$new"

# --- power off the node running it -------------------------------------------------------------
if [[ -n $new ]]; then
    victim=${new#n}
    echo "# powering $new off: SIGKILL to its PID 1, no shutdown (a power cut)"
    t0=$(now)
    power_cut "$victim"
    if poll "$failover_bound" runs_elsewhere_than "$new"; then
        t_failover=$(elapsed "$t0" "$(now)")
        pass "c1 runs on $(running_on) ${t_failover} s after $new lost power (bound ${failover_bound} s)"
    else
        fail "c1 was not started elsewhere within ${failover_bound} s of $new's power cut"
        survivor=$(alive_nodes | head -1)
        g "$survivor" crm_mon -1 -f 2>&1 | head -40
    fi
    survivor=$(alive_nodes | head -1)
    expect_match "the cluster sees $new offline" \
        "$(g "$survivor" lodgectl cluster status --no-legend 2>&1)" "$new +offline"
    expect "c1 runs on exactly one of the surviving nodes" "$(running_on | wc -w)" 1
fi

if [[ -n $timings ]]; then
    echo "restart=${t_restart:-} move=${t_move:-} failover=${t_failover:-}" >>"$timings"
fi
echo "# tier3: $failures failed, $((SECONDS - t_start)) s (stonith-enabled=false)"
if ((failures > 0)); then
    for n in $(alive_nodes); do
        echo "--- n$n: crm_mon ---"
        g "$n" crm_mon -1 -f 2>&1 | head -30
        break
    done
    exit 1
fi
exit 0
