#!/usr/bin/env bash
# Managed network numbers (lodge-network(7)): time from `lodgectl start` to a DHCP lease in a
# busybox guest (udhcpc) and, with LODGE_DEBIAN_TARBALL, in a Debian guest (systemd-networkd),
# then N containers (default 100) on one network, all with leases and names. lodged runs on a
# private dbus-daemon with its state in a temporary directory; everything it made is removed.
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
net=${net:0:15}
ctl=$build/lodgectl
cleanup() {
  set +e
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

if [ -n "${LODGE_DEBIAN_TARBALL:-}" ] && [ -f "$LODGE_DEBIAN_TARBALL" ]; then
  "$ctl" create deb "$LODGE_DEBIAN_TARBALL" --network "$net" >/dev/null
  root=$T/state/containers/deb/rootfs
  printf '[Match]\nName=eth0\n[Network]\nDHCP=yes\n' > "$root/etc/systemd/network/50-eth0.network"
  # No udev in a minbase rootfs: networkd must see /sys read-only to skip waiting for it.
  [ -e "$root/lib/systemd/systemd-udevd" ] || { mkdir -p "$root/etc/systemd/system/systemd-networkd.service.d"
    printf '[Service]\nReadOnlyPaths=/sys\n' > "$root/etc/systemd/system/systemd-networkd.service.d/no-udev.conf"; }
  systemctl --root="$root" enable systemd-networkd.service >/dev/null 2>&1
  times=()
  for i in $(seq 3); do
    t0=$(now_ms)
    "$ctl" start deb
    until "$ctl" list --json | grep -q "\"$prefix"; do :; done
    times+=($(($(now_ms) - t0)))
    "$ctl" stop deb --timeout 30 >/dev/null
  done
  printf '%s\n' "${times[@]}" | summary "Debian (systemd-networkd): lodgectl start to DHCP lease"
  "$ctl" delete --force deb
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
named=0
for i in $(seq "$count"); do
  "$ctl" exec c1 -- busybox nslookup "c$i.lodge" 2>/dev/null | grep -q "$prefix" && named=$((named + 1))
done
echo "$count containers on one network: created, started and leased in $((t1 - t0)) ms; $leases leases; $named names resolve from c1"
