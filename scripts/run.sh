#!/usr/bin/env bash
# The main job: install dependencies, build, and launch a container from the built-in busybox
# image; show it running from the host and from inside, then stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build

name=${LODGE_DEMO_NAME:-demo}
state=${LODGE_STATE_DIR:-/var/lib/lodge}
export LODGE_STATE_DIR=$state
sup=build/lodge-supervisor
dir=$state/containers/$name
if [ ! -d "$dir/rootfs" ]; then
  mkdir -p "$dir"
  # The built-in image: a busybox rootfs made from the host's static busybox.
  bash tests/fixtures/make-busybox-rootfs.sh "$dir/rootfs"
  printf '{"name": "%s", "config": {}, "devices": {}}\n' "$name" > "$dir/config.json.tmp"
  mv "$dir/config.json.tmp" "$dir/config.json"
fi
"$sup" ctl "$name" status >/dev/null 2>&1 && "$sup" ctl "$name" stop-force >/dev/null

setsid "$sup" --notify-fd=3 "$name" 3>"${TMPDIR:-/tmp}/lodge-$name.notify" </dev/null >/dev/null 2>&1 &
while ! grep -qE '^(READY|ERROR)' "${TMPDIR:-/tmp}/lodge-$name.notify" 2>/dev/null; do
  kill -0 $! 2>/dev/null || break
  sleep 0.05
done
result=$(cat "${TMPDIR:-/tmp}/lodge-$name.notify"); rm -f "${TMPDIR:-/tmp}/lodge-$name.notify"
case "$result" in
  READY*) ;;
  *) echo "lodge: container $name did not start: ${result#ERROR }" >&2; exit 1 ;;
esac
pid=${result#READY }
echo "== container $name is running, PID 1 is host pid $pid"
"$sup" ctl "$name" status
echo "== inside: hostname, id, PID 1's environment, /dev"
nsenter -t "$pid" -a /bin/sh -c 'hostname; id; tr "\0" "\n" < /proc/1/environ; ls -l /dev'
echo "== stopping (SIGPWR to busybox init)"
"$sup" ctl "$name" stop 30
echo "== console log: /var/log/lodge/$name/console.log"
tail -n 5 "${LODGE_LOG_DIR:-/var/log/lodge}/$name/console.log"
