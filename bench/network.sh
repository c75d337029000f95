#!/usr/bin/env bash
# Managed network numbers (lodge-network(7)): time from `lodgectl start` to a DHCP lease in a
# busybox guest (udhcpc) and, with LODGE_DEBIAN_TARBALL, in a Debian guest (systemd-networkd),
# then N containers (default 100) on one network, all with leases and names (each NAME.lodge
# asked of the network's dnsmasq). With the Debian guest and Debian's lxd installed, LXD 5.0 on
# a bridge of its own (what lxdbr0 is) runs the same Debian rootfs in the same rounds, round by
# round after lodge: LXD is started by hand with its state in the temporary directory, as
# bench/compare does. lodged runs on a private dbus-daemon with its state in a temporary
# directory; everything either made is removed.
# A benchmark, not a test: it prints numbers. Usage: bench/network.sh [BUILD] (as root)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
count=${LODGE_BENCH_N:-100}
rounds=${LODGE_BENCH_ROUNDS:-10}
T=$(mktemp -d /tmp/lodge-bench-net.XXXXXX)
chmod 755 "$T"
net=lbn$$
net=${net:0:14}
ctl=$build/lodgectl
lxnet=lbx$$
lxnet=${lxnet:0:15}
LXD_PID=
# What LXD leaves behind (its empty nftables table, its monitors' cgroup) goes unless it was
# there before.
had_lxd_table=0; nft list table inet lxd >/dev/null 2>&1 && had_lxd_table=1
had_lxc_pivot=0; [ -e /sys/fs/cgroup/unified/lxc.pivot ] && had_lxc_pivot=1
# What the bench made in LXD besides its instances.
lxd_forget_network() {
  timeout 60 lxc image delete deb >/dev/null 2>&1
  timeout 60 lxc profile device remove default eth0 >/dev/null 2>&1
  timeout 60 lxc network delete "$lxnet" >/dev/null 2>&1
}
cleanup() {
  set +e
  lxd_stop lxd_forget_network
  ip link del "$lxnet" 2>/dev/null
  if [ -n "$LXD_PID" ]; then
    [ "$had_lxd_table" = 1 ] || nft delete table inet lxd 2>/dev/null
    [ "$had_lxc_pivot" = 1 ] || for d in /sys/fs/cgroup/*/lxc.pivot; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  fi
  if [ -n "${LODGED_PID:-}" ]; then
    "$ctl" list -q 2>/dev/null | xargs -r "$ctl" delete --force >/dev/null 2>&1
    "$ctl" network delete "$net" >/dev/null 2>&1
    kill "$LODGED_PID" 2>/dev/null; wait "$LODGED_PID" 2>/dev/null
  fi
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null
  [ -f "$T/run/networks/$net/dnsmasq.pid" ] && kill "$(cat "$T/run/networks/$net/dnsmasq.pid")" 2>/dev/null
  ip link del "$net" 2>/dev/null
  remove_cgroups "lodge-bench-net-$$"
  [ -n "${FORWARD4:-}" ] && echo "$FORWARD4" > /proc/sys/net/ipv4/ip_forward
  [ -n "${FORWARD6:-}" ] && echo "$FORWARD6" > /proc/sys/net/ipv6/conf/all/forwarding
  rm -rf "$T"
}
trap cleanup EXIT
FORWARD4=$(cat /proc/sys/net/ipv4/ip_forward)
FORWARD6=$(cat /proc/sys/net/ipv6/conf/all/forwarding)
private_bus "$T"
bench_env "$T" net
export LODGE_IDLE_TIMEOUT=0
start_lodged "$T"

now_ms() { date +%s%3N; }
summary() { sort -n | awk -v what="$1" '{a[NR]=$1} END {printf "%s: min %d median %d max %d ms (%d runs)\n", what, a[1], a[int((NR+1)/2)], a[NR], NR}'; }

cat > "$T/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in bound|renew)
  busybox ip addr flush dev "$interface" scope global
  busybox ip addr add "$ip/$mask" dev "$interface"
  : > /etc/resolv.conf; for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
EOF
put_script() { "$ctl" exec "$1" -- /bin/sh -c 'cat > /udhcpc.sh; chmod 755 /udhcpc.sh' < "$T/udhcpc.sh"; }
lease() { "$ctl" exec "$1" -- busybox udhcpc -i eth0 -s /udhcpc.sh -q -n -t 60 -T 1 -A 1 >/dev/null 2>&1; }

echo "# lodge managed network ($(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1 /proc/loadavg))"
"$ctl" network create "$net" >/dev/null
echo "network $net: $("$ctl" network get "$net" ipv4.address), $("$ctl" network get "$net" ipv6.address)"
prefix=$("$ctl" network get "$net" ipv4.address); prefix=${prefix%.*}.

# Start to lease, busybox: the script is put in place while stopped would need the rootfs, so
# each round's clock starts at `lodgectl start` and includes the exec that writes it.
times=()
"$ctl" create bb --network "$net" >/dev/null
for i in $(seq "$rounds"); do
  t0=$(now_ms)
  "$ctl" start bb
  put_script bb
  lease bb
  times+=($(($(now_ms) - t0)))
  "$ctl" stop --force bb
done
printf '%s\n' "${times[@]}" | summary "busybox: lodgectl start to DHCP lease (udhcpc)"
"$ctl" delete --force bb

# No udev in a minbase rootfs: networkd must see /sys read-only to skip waiting for it. Both
# managers' guests get the same networkd setup.
networkd_dhcp() { # ROOTFS
  printf '[Match]\nName=eth0\n[Network]\nDHCP=yes\n' > "$1/etc/systemd/network/50-eth0.network"
  [ -e "$1/lib/systemd/systemd-udevd" ] || { mkdir -p "$1/etc/systemd/system/systemd-networkd.service.d"
    printf '[Service]\nReadOnlyPaths=/sys\n' > "$1/etc/systemd/system/systemd-networkd.service.d/no-udev.conf"; }
  systemctl --root="$1" enable systemd-networkd.service >/dev/null 2>&1
}
start_lxd() {
  lxd_start >>"$T/lxd.out" 2>&1 || return 1
  # lxdbr0 as `lxd init` makes it (NAT, dnsmasq, an auto ULA), under a name of its own. LXD's
  # own IPv4 `auto` fails on some hosts ("Failed to automatically find an unused IPv4
  # subnet": it pings candidates); the /24 comes from lodge's `auto` (a network made and
  # deleted for it), so it overlaps nothing either.
  "$ctl" network create "${net}x" ipv6.address=none >/dev/null
  local subnet
  subnet=$("$ctl" network get "${net}x" ipv4.address)
  "$ctl" network delete "${net}x" >/dev/null
  lxd_preseed "" "$lxnet" "$subnet" >>"$T/lxd.out" 2>&1
}
if [ -n "${LODGE_DEBIAN_TARBALL:-}" ] && [ -f "$LODGE_DEBIAN_TARBALL" ]; then
  "$ctl" create deb "$LODGE_DEBIAN_TARBALL" --network "$net" >/dev/null
  networkd_dhcp "$T/state/containers/deb/rootfs"
  lxd_ok=0
  if command -v lxd >/dev/null && getent group lxd >/dev/null && start_lxd; then
    if lxd_import_rootfs "$LODGE_DEBIAN_TARBALL" deb >>"$T/lxd.out" 2>&1 &&
       lxc init deb deb >>"$T/lxd.out" 2>&1; then
      networkd_dhcp "$LXD_DIR/storage-pools/default/containers/deb/rootfs"
      lxd_ok=1
      lxprefix=$(lxc network get "$lxnet" ipv4.address); lxprefix=${lxprefix%.*}.
      echo "LXD $(lxd --version) network $lxnet: $(lxc network get "$lxnet" ipv4.address)"
    else
      echo "note: LXD could not import or create the Debian guest (see $T/lxd.out); lodge alone"
    fi
  else
    echo "note: LXD is not installed or did not start; lodge alone ($(tail -n 1 "$T/lxd.out" 2>/dev/null))"
  fi
  times=() lxtimes=()
  for i in $(seq "${LODGE_BENCH_DEB_ROUNDS:-5}"); do
    t0=$(now_ms)
    "$ctl" start deb
    until "$ctl" list --json | grep -q "\"$prefix"; do :; done
    times+=($(($(now_ms) - t0)))
    "$ctl" stop deb --timeout 30 >/dev/null
    if [ "$lxd_ok" = 1 ]; then
      t0=$(now_ms)
      lxc start deb >/dev/null
      until lxc list deb -c 4 --format csv | grep -q "$lxprefix"; do :; done
      lxtimes+=($(($(now_ms) - t0)))
      lxc stop deb --timeout 30 >/dev/null
    fi
  done
  printf '%s\n' "${times[@]}" | summary "Debian (systemd-networkd), lodge: lodgectl start to DHCP lease"
  if [ "$lxd_ok" = 1 ]; then
    printf '%s\n' "${lxtimes[@]}" | summary "Debian (systemd-networkd), LXD $lxnet: lxc start to DHCP lease"
  fi
  "$ctl" delete --force deb
  if [ "$lxd_ok" = 1 ]; then lxc delete --force deb >/dev/null; fi
fi

# N containers on one network, all with a lease and a name.
t0=$(now_ms)
for i in $(seq "$count"); do "$ctl" create "c$i" --network "$net" >/dev/null; done
for i in $(seq "$count"); do "$ctl" start "c$i"; done
pids=()
for i in $(seq "$count"); do put_script "c$i"; lease "c$i" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || true; done
t1=$(now_ms)
leases=$("$ctl" network list-leases "$net" --json | { grep -o '"hostname":"c[0-9]*"' || true; } | wc -l)
# Every name asked of the network's dnsmasq (on the bridge's address), and from inside c1.
dns=$("$ctl" network get "$net" ipv4.address); dns=${dns%/*}
named=0 named_c1=0
for i in $(seq "$count"); do
  busybox nslookup "c$i.lodge" "$dns" 2>/dev/null | grep -q "$prefix" && named=$((named + 1))
  "$ctl" exec c1 -- busybox nslookup "c$i.lodge" 2>/dev/null | grep -q "$prefix" && named_c1=$((named_c1 + 1))
done
echo "$count containers on one network: created, started and leased in $((t1 - t0)) ms; $leases leases; $named names resolve through the network's dnsmasq ($named_c1 from inside c1)"
