#!/bin/sh
# lodge-image-refresh.service only asks lodged over the bus: systemd's own exposure score of
# the built unit must stay at most 2.0 of 10 (--threshold counts in tenths; the unit without
# its sandbox scores 9.6). Skipped (77) without systemd-analyze.
unit=$1
command -v systemd-analyze >/dev/null 2>&1 || { echo "no systemd-analyze"; exit 77; }
[ -f "$unit" ] || { echo "no unit file $unit"; exit 1; }
# Offline: the unit is read as a file; the installed paths need not exist.
copy=$(mktemp -d /tmp/lodge-refresh-unit-XXXXXX) || exit 1
trap 'rm -rf "$copy"' EXIT
cp "$unit" "$copy/lodge-image-refresh.service"
systemd-analyze security --offline=yes --threshold=20 "$copy/lodge-image-refresh.service"
