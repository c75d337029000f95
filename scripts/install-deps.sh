#!/usr/bin/env bash
# Installs what lodge needs to build, run and test, from Debian 12's packages.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "install-deps.sh: run as root" >&2; exit 1; }
packages=(
  meson ninja-build pkg-config g++ gcc libc6-dev
  libsystemd-dev libmount-dev libnl-3-dev libnl-route-3-dev libseccomp-dev libcap-dev
  libbpf-dev
  libgtest-dev libgmock-dev googletest nlohmann-json3-dev libmicrohttpd-dev libarchive-dev
  libdbus-1-dev nettle-dev dbus systemd-container util-linux libyaml-dev
  busybox-static debootstrap zstd lxcfs fuse3 uidmap scdoc perl python3 file polkitd
  bash-completion resource-agents libxml2-dev btrfs-progs libcurl4-openssl-dev openssl
  dnsmasq-base nftables iproute2 sshfs openssh-sftp-server squashfs-tools strace
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
