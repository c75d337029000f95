#!/usr/bin/env bash
# Sets everything up and runs every test suite twice: a plain build and an ASan/UBSan build.
# Ends with one line "N passed, M failed[, K skipped]" counted from meson's testlog.json.
set -uo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run this as root (it installs packages and runs containers), e.g." \
    "su -c 'bash scripts/test.sh'" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
# The systemd guest tests use a debootstrapped Debian rootfs, cached between runs.
export LODGE_DEBIAN_TARBALL=${LODGE_DEBIAN_TARBALL:-/var/cache/lodge-tests/debian-bookworm.tar.zst}
mkdir -p "$(dirname "$LODGE_DEBIAN_TARBALL")"
# curl, python3 and cloud-init are the guest API's clients in the devlxd tests.
LODGE_DEBIAN_APT="cloud-init curl python3" \
  bash tests/fixtures/make-debian-rootfs.sh "$LODGE_DEBIAN_TARBALL" ||
  echo "test.sh: could not build the Debian rootfs; its tests will report themselves skipped"
# Tier 2 boots that Debian with lodge installed: machined, busybox and lodge's libraries too;
# dnsmasq, nft and systemd-resolved for its managed network.
export LODGE_TIER2_TARBALL=${LODGE_TIER2_TARBALL:-/var/cache/lodge-tests/debian-bookworm-tier2.tar.zst}
LODGE_DEBIAN_EXTRA="systemd-container libseccomp2 libcap2 libarchive13 libyaml-0-2 libmount1 busybox-static dbus dnsmasq-base nftables systemd-resolved" \
  bash tests/fixtures/make-debian-rootfs.sh "$LODGE_TIER2_TARBALL" ||
  echo "test.sh: could not build the tier-2 rootfs; the tier2 suite will report itself skipped"
# Tier 3 boots three such nodes as a Pacemaker cluster: corosync, pacemaker, pcs, sshd, and the
# libraries lodge links, so nothing is copied from the host.
export LODGE_TIER3_TARBALL=${LODGE_TIER3_TARBALL:-/var/cache/lodge-tests/debian-bookworm-tier3.tar.zst}
LODGE_DEBIAN_EXTRA="systemd-container libseccomp2 libcap2 libarchive13 libyaml-0-2 libmount1 busybox-static dbus libnl-3-200 libnl-route-3-200 libmicrohttpd12 libbpf1 libnettle8 libxml2" \
  LODGE_DEBIAN_APT="corosync pacemaker pacemaker-cli-utils pcs resource-agents openssh-server openssh-client" \
  bash tests/fixtures/make-debian-rootfs.sh "$LODGE_TIER3_TARBALL" ||
  echo "test.sh: could not build the tier-3 rootfs; the tier3 suite will report itself skipped"

status=0
for variant in build:-Dsanitizers=false build-asan:-Dsanitizers=true; do
  dir=${variant%%:*}
  bash scripts/build.sh "$dir" "${variant#*:}" || { echo "test.sh: build of $dir failed"; status=1; continue; }
  meson test -C "$dir" --print-errorlogs --num-processes 1 || status=1
done
python3 scripts/count-tests.py build build-asan
exit $status
