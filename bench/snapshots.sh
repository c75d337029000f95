#!/usr/bin/env bash
# Snapshot and copy of the Debian test container (issue 15): wall time and bytes written, with
# lodge's state directory on three loop filesystems made here (ext4: a plain copy; XFS with
# reflink=1: cp --reflink clones extents; btrfs: a subvolume snapshot), side by side with
# `lxc snapshot` and `lxc copy` of LXD 5.0.2 on a dir pool on the ext4 one, in the same run.
# LXD is started by hand with its state in the temporary directory (as bench/compare does).
# Bytes written: the write_bytes delta of the daemon's /proc/PID/io (its workers and their cp
# or rsync are counted once reaped), and the growth of the filesystem's used blocks (df).
# Usage (as root): bench/snapshots.sh [BUILD] [ROUNDS]; a markdown table lands in
# bench/results/snapshots-<time>.md. Everything it made is removed at the end.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
rounds=${2:-3}
tarball=${LODGE_DEBIAN_TARBALL:-/var/cache/lodge-tests/debian-bookworm.tar.zst}
die() { echo "bench/snapshots.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -f "$tarball" ] || die "$tarball missing (the Debian test rootfs; set LODGE_DEBIAN_TARBALL)"
for f in lodged lodgectl lodge-supervisor; do [ -x "$build/$f" ] || die "$build/$f missing (build first)"; done
need=(xfsprogs btrfs-progs lxd lxc zstd dbus)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

T=$(mktemp -d /tmp/lodge-bench-snap.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/data"
LODGED_PID="" BUS_PID="" LXD_PID=""
cleanup() {
  set +e
  if [ -n "$LODGED_PID" ]; then kill "$LODGED_PID" 2>/dev/null; wait "$LODGED_PID" 2>/dev/null; fi
  lxd_stop
  [ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
  for d in /sys/fs/cgroup/*/lodge-bench-snap-$$ /sys/fs/cgroup/unified/lodge-bench-snap-$$; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  findmnt -rn -o TARGET | grep "^$T/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  findmnt -rn -o TARGET | grep -q "^$T/" || rm -rf --one-file-system "$T"
}
trap cleanup EXIT

now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }
wbytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io"; }
used_kib() { sync -f "$1"; df -k --output=used "$1" | tail -1 | tr -d ' '; }
rec() { echo "$2" >>"$T/data/$1"; } # rec KEY VALUE
# measure KEY PID FS CMD...: wall time (ms), the daemon's write_bytes and the filesystem's used
# space growth (MiB) of CMD.
measure() {
  local key=$1 pid=$2 fs=$3 t0 t1 w0 w1 u0 u1
  shift 3
  u0=$(used_kib "$fs"); w0=$(wbytes "$pid"); t0=$(now_us)
  "$@" >>"$T/cmd.log" 2>&1 || die "failed: $* (see $T/cmd.log)"
  t1=$(now_us); w1=$(wbytes "$pid"); u1=$(used_kib "$fs")
  rec "$key.ms" $(((t1 - t0) / 1000))
  rec "$key.written" $(((w1 - w0) / 1048576))
  rec "$key.used" $(((u1 - u0) / 1024))
}
# min/median/max of a recorded metric
stats() {
  [ -s "$T/data/$1" ] || { echo "-"; return; }
  sort -n "$T/data/$1" | awk '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%s / %s / %s\n", v[1], m, v[NR] }'
}

# ---- loop filesystems --------------------------------------------------------------------
mkfs_loop() { # NAME MKFS...
  local name=$1
  shift
  truncate -s 6G "$T/$name.img"
  "$@" "$T/$name.img" >>"$T/cmd.log" 2>&1 || die "$* failed"
  mkdir -p "$T/$name"
  mount -o loop "$T/$name.img" "$T/$name" || die "cannot mount the $name filesystem"
}
say "making ext4, XFS (reflink=1) and btrfs loop filesystems"
mkfs_loop ext4 mkfs.ext4 -q -F
mkfs_loop xfs mkfs.xfs -q -f -m reflink=1
mkfs_loop btrfs mkfs.btrfs -q -f

# ---- lodge: a private system bus, one lodged per filesystem --------------------------------
# Only root talks on it: a bus of its own with lodge's policy, nothing of the host's.
cat >"$T/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/bus</listen>
  <auth>EXTERNAL</auth>
  <policy user="root">
    <allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
  <include>$top/dbus/io.lodge1.conf</include>
</busconfig>
EOF
dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile >/dev/null 2>&1 &
BUS_PID=$!
while [ ! -S "$T/bus" ]; do kill -0 "$BUS_PID" || die "dbus-daemon died"; done
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$T/bus
export LODGE_SUPERVISOR=$build/lodge-supervisor LODGE_EXEC_HELPER=$build/lodge-exec
export LODGE_CGROUP_ROOT=lodge-bench-snap-$$ LODGE_IDLE_TIMEOUT=0 LODGE_LXCFS_DIR=$T/nolxcfs
ctl() { "$build/lodgectl" "$@"; }

# Waits until lodged's background removals are over (no hidden trash or work directories).
settled() {
  local state=$1 waited=0
  while find "$state/containers" -maxdepth 3 -name '.*' 2>/dev/null | grep -q .; do
    sleep 0.2
    waited=$((waited + 1))
    [ "$waited" -lt 1500 ] || die "lodged left hidden directories in $state for 5 minutes"
  done
  sync -f "$state"
}

for fs in ext4 xfs btrfs; do
  say "lodge on $fs: $rounds snapshots and copies of the Debian container"
  export LODGE_STATE_DIR=$T/$fs/lodge LODGE_RUNTIME_DIR=$T/run-$fs LODGE_LOG_DIR=$T/log-$fs
  "$build/lodged" 2>>"$T/lodged-$fs.log" &
  LODGED_PID=$!
  until ctl list >/dev/null 2>&1; do kill -0 "$LODGED_PID" || die "lodged died (see $T/lodged-$fs.log)"; done
  ctl create deb "$tarball" >>"$T/cmd.log" 2>&1 || die "lodgectl create failed"
  settled "$LODGE_STATE_DIR"
  for i in $(seq 1 "$rounds"); do
    measure "lodge.$fs.snapshot" "$LODGED_PID" "$T/$fs" ctl snapshot create deb "s$i"
    settled "$LODGE_STATE_DIR"
    measure "lodge.$fs.copy" "$LODGED_PID" "$T/$fs" ctl copy deb "copy$i" --no-snapshots
    settled "$LODGE_STATE_DIR"
  done
  grep -h "Copied .* by" "$T/lodged-$fs.log" | sed 's/.* by /method: /' | sort -u >"$T/data/lodge.$fs.method"
  for i in $(seq 1 "$rounds"); do ctl delete --force "copy$i" >>"$T/cmd.log" 2>&1; done
  ctl delete --force deb >>"$T/cmd.log" 2>&1
  kill "$LODGED_PID"; wait "$LODGED_PID" 2>/dev/null || true
  LODGED_PID=""
done

# ---- LXD 5.0.2: dir pool on the ext4 filesystem ------------------------------------------
say "LXD: dir pool on ext4, the Debian rootfs as an image"
mkdir -p "$T/ext4/lxdpool"
lxd_start || die "lxd did not come up"
lxd_preseed "$T/ext4/lxdpool" >>"$T/cmd.log" 2>&1 || die "lxd init --preseed failed"
lxd_import_rootfs "$tarball" deb >>"$T/cmd.log" 2>&1 || die "lxc image import failed"
lxc init deb deb >>"$T/cmd.log" 2>&1 || die "lxc init failed"
sync -f "$T/ext4"
for i in $(seq 1 "$rounds"); do
  measure "lxd.ext4.snapshot" "$LXD_PID" "$T/ext4" lxc snapshot deb "s$i"
  measure "lxd.ext4.copy" "$LXD_PID" "$T/ext4" lxc copy deb "copy$i" --instance-only
done

# ---- report ------------------------------------------------------------------------------
mkdir -p "$top/bench/results"
out=$top/bench/results/snapshots-$(date -u +%Y%m%dT%H%M%SZ).md
rootfs_mb=$(($(zstd -dc "$tarball" | wc -c) / 1048576))
{
  echo "# Snapshot and copy of the Debian test container"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Rootfs: $(basename "$tarball") ($rootfs_mb MiB as a tar), $rounds rounds each, the"
  echo "container stopped. lodge's state directory on a 6 GiB loop filesystem of each kind;"
  echo "LXD $(lxd --version) with a dir pool on the ext4 one. *written*: the daemon's write_bytes"
  echo "delta (/proc/PID/io, its reaped workers included); *used*: the growth of the"
  echo "filesystem's used space after the operation (df, after sync). min / median / max. On ext4"
  echo "cp --reflink=auto finds no extents to clone and copies every byte (a plain copy)."
  echo
  echo "| tool | filesystem | how | operation | time ms | written MiB | used MiB |"
  echo "|---|---|---|---|---|---|---|"
  for fs in ext4 xfs btrfs; do
    how=$(sed 's/method: //' "$T/data/lodge.$fs.method" 2>/dev/null | paste -sd, -)
    for op in snapshot copy; do
      echo "| lodge | $fs | ${how:-?} | $op | $(stats "lodge.$fs.$op.ms") | $(stats "lodge.$fs.$op.written") | $(stats "lodge.$fs.$op.used") |"
    done
  done
  for op in snapshot copy; do
    echo "| LXD dir pool | ext4 | rsync | $op | $(stats "lxd.ext4.$op.ms") | $(stats "lxd.ext4.$op.written") | $(stats "lxd.ext4.$op.used") |"
  done
} >"$out"
cat "$out"
echo "written to $out" >&2
