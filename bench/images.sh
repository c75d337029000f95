#!/usr/bin/env bash
# Image numbers (lodge-images(7)), lodge and LXD 5.0.2 side by side in one run, both fetching
# the same image from the same local HTTPS simplestreams server (tests/fixtures/simplestreams.py
# with a CA made here):
#   - launch from the remote: a fresh download each round (the image deleted in between),
#     unpack, start (`lodgectl launch bench:bench` / `lxc launch bench:bench`);
#   - the same from the same server speaking LXD's REST API (a `--protocol lxd` remote; lodge
#     only: LXD would want a trusted client certificate for its own protocol's setup);
#   - launch from a warm store: the image already local;
#   - unpack rate: `lodgectl create` from the store, in MB/s of the compressed image, against
#     `tar -xJf` of the same file.
# LXD is started by hand with its state in a temporary directory (as bench/compare does: dir
# pool, no network); the LXD daemon, which does the downloads, trusts the test CA through
# SSL_CERT_FILE (Go's TLS reads it), and lxc's own config lives in the temporary directory too. Rounds interleave lodge and LXD.
# A markdown table lands in bench/results/images-<UTC time>.md.
# Usage (as root): bench/images.sh [BUILD] [ROUNDS]. With LODGE_DEBIAN_TARBALL set, the Debian
# test rootfs is the image, else the busybox one. LODGE_BENCH_NO_LXD=1 leaves LXD out.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
rounds=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "bench/images.sh: run as root" >&2; exit 1; }
with_lxd=1
[ -n "${LODGE_BENCH_NO_LXD:-}" ] && with_lxd=0
if ((with_lxd)) && ! command -v lxd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends lxd lxc >/dev/null || with_lxd=0
fi
T=$(mktemp -d /tmp/lodge-bench-images.XXXXXX)
chmod 755 "$T"
pids=()
LXD_PID=""
had_lxc_pivot=0; [[ -e /sys/fs/cgroup/unified/lxc.pivot ]] && had_lxc_pivot=1
cleanup() {
  set +e
  for n in $(seq 1 $((rounds * 4 + 1))); do "$build/lodgectl" delete --force "bi$n" >/dev/null 2>&1; done
  lxd_stop
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  remove_cgroups "lodge-bench-images-$$"
  ((had_lxc_pivot)) || for d in /sys/fs/cgroup/*/lxc.pivot; do [[ -d $d ]] && rmdir "$d" 2>/dev/null; done
  findmnt -rn -o TARGET | grep "^$T/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
bench_env "$T" images
export LODGE_IDLE_TIMEOUT=0

# The image: a unified tar.xz (metadata.yaml + rootfs/).
mkdir -p "$T/img/rootfs" "$T/www"
if [ -n "${LODGE_DEBIAN_TARBALL:-}" ] && [ -f "$LODGE_DEBIAN_TARBALL" ]; then
  tar -C "$T/img/rootfs" -xf "$LODGE_DEBIAN_TARBALL"
  what="Debian test rootfs"
else
  bash "$top/tests/fixtures/make-busybox-rootfs.sh" "$T/img/rootfs" >/dev/null
  what="busybox rootfs"
fi
printf 'architecture: %s\ncreation_date: 1700000000\nproperties:\n  os: bench\n  description: bench\n' \
  "$(uname -m)" > "$T/img/metadata.yaml"
tar -C "$T/img" -cJf "$T/image.tar.xz" metadata.yaml rootfs
size=$(stat -c %s "$T/image.tar.xz")

# A local HTTPS simplestreams server with its own CA.
(cd "$T" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 \
   -subj /CN=bench-ca && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr \
   -subj /CN=127.0.0.1 && printf 'subjectAltName=IP:127.0.0.1\n' > san.ext && \
 openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 1 \
   -extfile san.ext) >/dev/null 2>&1
python3 "$top/tests/fixtures/simplestreams.py" add "$T/www" bench bench \
  "$(dpkg --print-architecture)" --unified "$T/image.tar.xz"
python3 "$top/tests/fixtures/simplestreams.py" add-lxd "$T/www" bench "$(uname -m)" \
  --unified "$T/image.tar.xz" >/dev/null
coproc SERVER { exec python3 "$top/tests/fixtures/simplestreams.py" serve "$T/www" "$T/srv.crt" "$T/srv.key" "$T/requests.log"; }
pids+=("$SERVER_PID")
read -r port <&"${SERVER[0]}"
url="https://127.0.0.1:$port"

# A private system bus with lodge's policy, and lodged on it.
private_bus "$T"
pids+=("$DBUS_PID")
start_lodged "$T"
pids+=("$LODGED_PID")
ctl() { "$build/lodgectl" "$@"; }
ctl remote add bench "$url" --ca "$T/ca.crt"
ctl remote add benchlxd "$url" --protocol lxd --ca "$T/ca.crt"

# LXD by hand, its state and lxc's config under $T.
if ((with_lxd)); then
  export LXD_CONF=$T/lxdconf
  mkdir -p "$LXD_CONF"
  # The daemon downloads; Go's TLS takes extra CAs from SSL_CERT_FILE.
  cat /etc/ssl/certs/ca-certificates.crt "$T/ca.crt" > "$T/lxd-cas.crt" 2>/dev/null ||
    cp "$T/ca.crt" "$T/lxd-cas.crt"
  SSL_CERT_FILE=$T/lxd-cas.crt lxd_start || exit 1
  lxd_preseed >/dev/null
  lxc remote add bench "$url" --protocol simplestreams --public --accept-certificate >/dev/null 2>&1
fi

now() { date +%s.%N; }
# min/median/max of seconds on stdin, as a table cell
cell() { sort -n | awk '{a[NR]=$1} END {printf "%.3f / %.3f / %.3f", a[1], a[int((NR+1)/2)], a[NR]}'; }
rate() { sort -n | awk '{a[NR]=$1} END {printf "%.1f / %.1f / %.1f", a[1], a[int((NR+1)/2)], a[NR]}'; }
lxd_image_gone() { for f in $(lxc image list -c f --format csv 2>/dev/null); do lxc image delete "$f"; done; }

n=0
: > "$T/lodge.remote"; : > "$T/lxd.remote"; : > "$T/lodge.warm"; : > "$T/lxd.warm"
: > "$T/lodge.lxdremote"
echo "image: $what, $(du -sh "$T/img/rootfs" | cut -f1) unpacked, $((size / 1024)) KiB tar.xz; $rounds rounds" >&2
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl launch bench:bench "bi$n" -q; t1=$(now)
  awk "BEGIN { print $t1 - $t0 }" >> "$T/lodge.remote"
  ctl delete --force "bi$n"; ctl image delete "$(ctl image list -q)"
  if ((with_lxd)); then
    t0=$(now); lxc launch bench:bench "lx$n" -q; t1=$(now)
    awk "BEGIN { print $t1 - $t0 }" >> "$T/lxd.remote"
    lxc delete --force "lx$n"; lxd_image_gone
  fi
done
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl launch benchlxd:bench "bi$n" -q; t1=$(now)
  awk "BEGIN { print $t1 - $t0 }" >> "$T/lodge.lxdremote"
  ctl delete --force "bi$n"; ctl image delete "$(ctl image list -q)"
done
ctl image copy bench:bench local: -q >/dev/null
((with_lxd)) && lxc image copy bench:bench local: --quiet
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl launch bench:bench "bi$n" -q; t1=$(now)
  awk "BEGIN { print $t1 - $t0 }" >> "$T/lodge.warm"; ctl delete --force "bi$n"
  if ((with_lxd)); then
    t0=$(now); lxc launch bench:bench "lx$n" -q; t1=$(now)
    awk "BEGIN { print $t1 - $t0 }" >> "$T/lxd.warm"; lxc delete --force "lx$n"
  fi
done
fp=$(ctl image list -q)
: > "$T/unpack.lodge"; : > "$T/unpack.tar"
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl create "bi$n" "$fp" -q; t1=$(now)
  awk "BEGIN { print $size / ($t1 - $t0) / 1048576 }" >> "$T/unpack.lodge"; ctl delete --force "bi$n"
  mkdir "$T/x"; t0=$(now); tar -C "$T/x" -xJf "$T/image.tar.xz"; t1=$(now); rm -rf "$T/x"
  awk "BEGIN { print $size / ($t1 - $t0) / 1048576 }" >> "$T/unpack.tar"
done
downloads=$(grep -c -e 'lxd_combined' -e '/export' "$T/requests.log" || true)

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$top/bench/results"
out="$top/bench/results/images-$stamp.md"
{
  echo "# Images: lodge and LXD $( ((with_lxd)) && lxd --version || echo '(not run)') from one local simplestreams server ($stamp)"
  echo
  echo "$what: $(du -sh "$T/img/rootfs" | cut -f1) unpacked, $((size / 1024)) KiB as tar.xz (unified image);"
  echo "$rounds rounds each, lodge and LXD interleaved; load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "The server (127.0.0.1, HTTPS with a test CA) answered $downloads image downloads."
  echo
  echo "| seconds, min / median / max | lodge | LXD |"
  echo "|---|---|---|"
  echo "| launch from the remote (download, unpack, start) | $(cell < "$T/lodge.remote") | $( ((with_lxd)) && cell < "$T/lxd.remote" || echo -) |"
  echo "| launch from a local lxd-protocol remote (download, unpack, start) | $(cell < "$T/lodge.lxdremote") | - |"
  echo "| launch from a warm store (unpack, start) | $(cell < "$T/lodge.warm") | $( ((with_lxd)) && cell < "$T/lxd.warm" || echo -) |"
  echo
  echo "| unpack, MB/s of the compressed image, min / median / max | |"
  echo "|---|---|"
  echo "| \`lodgectl create\` from the store (libarchive, in a worker) | $(rate < "$T/unpack.lodge") |"
  echo "| \`tar -xJf\` of the same file | $(rate < "$T/unpack.tar") |"
  echo
  echo "LXD's warm launch still asks the remote which image the alias names; lodge uses the"
  echo "image it fetched under that name without asking. Both start an unprivileged container"
  echo "without a network device."
} | tee "$out"
echo "written to $out" >&2
