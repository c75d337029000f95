#!/usr/bin/env bash
# The main job, as root: install dependencies, build, install lodge (meson install), make sure
# lodgectl can reach lodged afterwards, and launch a container from the built-in busybox image
# through lodgectl; show it from the host and from inside, then stop it.
#
# Where systemd runs, lodged.socket is enabled and lodged is socket- and bus-activated. On a
# host without systemd (this machine kind), a system bus is started from dbus's own
# system.conf if none runs, and lodged is bus-activated on it by lodgectl's first call, as it
# would be under systemd; both stay for later lodgectl use.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/run.sh: run this as root (it installs packages and lodge itself), e.g." \
    "su -c 'bash scripts/run.sh'" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
echo "== meson install (prefix $(meson introspect build --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))'))"
meson install -C build --quiet

bus_socket=/run/dbus/system_bus_socket
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reload dbus.service 2>/dev/null || true # the new bus policy
  systemctl enable --now lodged.socket
else
  if ! [ -S "$bus_socket" ] || ! dbus-send --system --print-reply --dest=org.freedesktop.DBus \
    /org/freedesktop/DBus org.freedesktop.DBus.GetId >/dev/null 2>&1; then
    echo "== no system bus runs: starting dbus-daemon --system"
    mkdir -p /run/dbus
    rm -f "$bus_socket" /run/dbus/pid # left by a bus that is gone
    dbus-daemon --system --fork
  else
    # The bus reads the new policy and activation file on this.
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.ReloadConfig
  fi
fi
unset DBUS_SYSTEM_BUS_ADDRESS # the host's bus, the one later lodgectl calls use
ctl=$(command -v lodgectl || true)
[ -n "$ctl" ] || { echo "scripts/run.sh: lodgectl is not on PATH after meson install" >&2; exit 1; }

name=${LODGE_DEMO_NAME:-demo}
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
echo "== lodge is installed; lodgectl (see lodgectl --help, man lodgectl) talks to lodged from here on"
