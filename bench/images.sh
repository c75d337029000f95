#!/usr/bin/env bash
# Image numbers (lodge-images(7)): launch from a warm store and from a local HTTPS simplestreams
# server (a fresh download each time), and the unpack rate of `lodgectl create` from the store
# against `tar -xJf` of the same file. Prints numbers; it is not a test.
# Usage (as root): bench/images.sh [BUILD] [ROUNDS]. With LODGE_DEBIAN_TARBALL set, the Debian
# test rootfs is the image, else the busybox one.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=${1:-$top/build}
rounds=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "bench/images.sh: run as root" >&2; exit 1; }
T=$(mktemp -d /tmp/lodge-bench-images.XXXXXX)
chmod 755 "$T"
pids=()
cleanup() {
  for n in $(seq 1 $((rounds * 2 + 1))); do "$build/lodgectl" delete --force "bi$n" >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  remove_cgroups "lodge-bench-images-$$"
  rm -rf "$T"
}
trap cleanup EXIT
bench_env "$T" images
export LODGE_IDLE_TIMEOUT=0

# The image: a unified tar.xz (metadata.yaml + rootfs/).
mkdir -p "$T/img/rootfs" "$T/www"
if [ -n "${LODGE_DEBIAN_TARBALL:-}" ] && [ -f "$LODGE_DEBIAN_TARBALL" ]; then
  tar -C "$T/img/rootfs" -xf "$LODGE_DEBIAN_TARBALL"
else
  bash "$top/tests/fixtures/make-busybox-rootfs.sh" "$T/img/rootfs" >/dev/null
fi
printf 'architecture: %s\ncreation_date: 1700000000\nproperties:\n  os: bench\n' "$(uname -m)" \
  > "$T/img/metadata.yaml"
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
coproc SERVER { exec python3 "$top/tests/fixtures/simplestreams.py" serve "$T/www" "$T/srv.crt" "$T/srv.key" "$T/requests.log"; }
pids+=("$SERVER_PID")
read -r port <&"${SERVER[0]}"

# A private system bus with lodge's policy, and lodged on it.
private_bus "$T"
pids+=("$DBUS_PID")
start_lodged "$T"
pids+=("$LODGED_PID")
ctl() { "$build/lodgectl" "$@"; }
ctl remote add bench "https://127.0.0.1:$port" --ca "$T/ca.crt"

now() { date +%s.%N; }
summary() { sort -n | awk '{a[NR]=$1} END {printf "min %.3f  median %.3f  max %.3f s\n", a[1], a[int((NR+1)/2)], a[NR]}'; }

n=0
echo "image: $(du -sh "$T/img/rootfs" | cut -f1) rootfs, $((size / 1024)) KiB tar.xz; $rounds rounds"
printf 'launch from the local remote (download + unpack + start): '
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl launch bench:bench "bi$n" -q; t1=$(now)
  awk "BEGIN { print $t1 - $t0 }"; ctl delete --force "bi$n"; ctl image delete "$(ctl image list -q)"
done | summary
ctl image copy bench:bench local: -q >/dev/null
printf 'launch from the warm store (unpack + start):             '
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl launch bench:bench "bi$n" -q; t1=$(now)
  awk "BEGIN { print $t1 - $t0 }"; ctl delete --force "bi$n"
done | summary
fp=$(ctl image list -q)
printf 'unpack, lodgectl create from the store: '
for _ in $(seq 1 "$rounds"); do
  n=$((n + 1)); t0=$(now); ctl create "bi$n" "$fp" -q; t1=$(now)
  awk "BEGIN { print $size / ($t1 - $t0) / 1048576 }"; ctl delete --force "bi$n"
done | sort -n | awk '{a[NR]=$1} END {printf "median %.1f MB/s (compressed)\n", a[int((NR+1)/2)]}'
printf 'unpack, tar -xJf of the same file:      '
for _ in $(seq 1 "$rounds"); do
  mkdir "$T/x"; t0=$(now); tar -C "$T/x" -xJf "$T/image.tar.xz"; t1=$(now); rm -rf "$T/x"
  awk "BEGIN { print $size / ($t1 - $t0) / 1048576 }"
done | sort -n | awk '{a[NR]=$1} END {printf "median %.1f MB/s (compressed)\n", a[int((NR+1)/2)]}'
