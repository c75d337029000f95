#!/bin/sh
# Usage: private-bus-conf.sh DIR > DIR/bus.conf
# A private system bus for benches and demos: dbus's own system.conf listening on DIR/socket,
# lodge's policy from DIR/policy, and bus activation from DIR/services only. The standard
# activation directories (and the setuid helper that reads them) are left out, so a lodge
# installed on the host is never bus-activated in place of the one under test.
set -eu
dir=$1
sed -e "s#<listen>.*</listen>#<listen>unix:path=$dir/socket</listen>#" \
    -e "s#<includedir>system.d</includedir>#<includedir>$dir/policy</includedir>#" \
    -e "s#<includedir>/etc/dbus-1/system.d</includedir>##" \
    -e "s#<standard_system_servicedirs/>#<servicedir>$dir/services</servicedir>#" \
    -e 's#<pidfile>.*</pidfile>##' -e 's#<user>.*</user>##' \
    -e 's#<servicehelper>.*</servicehelper>##' \
    /usr/share/dbus-1/system.conf
