#!/usr/bin/env bash
# The main job: install dependencies, build, and launch a container from the built-in busybox
# image through lodged and lodgectl; show it from the host and from inside, then stop it.
# This machine kind boots without systemd or a system bus, so the script brings up a private
# bus with lodge's policy for the run (on a systemd host: meson install, then lodgectl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build

name=${LODGE_DEMO_NAME:-demo}
export LODGE_STATE_DIR=${LODGE_STATE_DIR:-/var/lib/lodge}
export LODGE_SUPERVISOR=$PWD/build/lodge-supervisor LODGE_EXEC_HELPER=$PWD/build/lodge-exec LODGE_IDLE_TIMEOUT=0
ctl=$PWD/build/lodgectl
bus=$(mktemp -d /run/lodge-demo-bus.XXXXXX)
cleanup() {
  [ -n "${LODGED:-}" ] && kill "$LODGED" 2>/dev/null || true
  [ -n "${DBUS:-}" ] && kill "$DBUS" 2>/dev/null || true
  rm -rf "$bus"
}
trap cleanup EXIT

if [ -z "${DBUS_SYSTEM_BUS_ADDRESS:-}" ] && ! [ -S /run/dbus/system_bus_socket ]; then
  mkdir -p "$bus/policy"
  cp dbus/io.lodge1.conf "$bus/policy/"
  sed -e "s#<listen>.*</listen>#<listen>unix:path=$bus/socket</listen>#" \
      -e "s#<includedir>system.d</includedir>#<includedir>$bus/policy</includedir>#" \
      -e "s#<includedir>/etc/dbus-1/system.d</includedir>##" \
      -e 's#<pidfile>.*</pidfile>##' -e 's#<user>.*</user>##' \
      /usr/share/dbus-1/system.conf > "$bus/bus.conf"
  mkfifo "$bus/address"
  dbus-daemon --config-file="$bus/bus.conf" --nofork --nopidfile --print-address=1 \
    > "$bus/address" 2>/dev/null &
  DBUS=$!
  read -r address < "$bus/address"   # printed once it listens
  export DBUS_SYSTEM_BUS_ADDRESS=${address%%,*}
fi
build/lodged 2> "$bus/lodged.log" &
LODGED=$!
until "$ctl" list >/dev/null 2>&1; do kill -0 "$LODGED"; done   # lodged answers once it owns io.lodge1

"$ctl" status "$name" >/dev/null 2>&1 || "$ctl" create "$name"
"$ctl" stop --force "$name" >/dev/null 2>&1 || true
echo "== lodgectl start $name (the built-in busybox image, unprivileged)"
"$ctl" start "$name"
"$ctl" list
"$ctl" status "$name"
echo "== inside, through lodgectl exec: hostname, id, PID 1's environment, /dev"
"$ctl" exec "$name" -- sh -c 'hostname; id; tr "\0" "\n" < /proc/1/environ; ls -l /dev'
echo "== lodgectl stop $name (SIGPWR to busybox init)"
"$ctl" stop "$name"
"$ctl" status "$name"
echo "== lodgectl console $name --show-log (last lines)"
"$ctl" console "$name" --show-log | tail -n 4
