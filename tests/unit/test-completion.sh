#!/usr/bin/env bash
# The bash completion (shell-completion/bash/lodgectl) against a stand-in lodgectl that answers
# list, config show and device list the way the real one prints them.
set -euo pipefail
script=${1:?usage: test-completion.sh COMPLETION_FILE}
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
cat >"$stub/lodgectl" <<'STUB'
#!/bin/sh
case "$*" in
"list -q") printf 'alpha\nbeta\n' ;;
"config show alpha") printf 'limits.memory: 256MiB\nuser.foo: bar\n' ;;
"device list alpha") printf 'eth0:\n  type: nic\nroot:\n  type: disk\n' ;;
"network list -q") printf 'lodgebr0\n' ;;
"snapshot list alpha -q") printf 'snap0\nbefore-upgrade\n' ;;
"image alias list --no-legend") printf 'bb                              0123456789ab\n' ;;
"image list -q") printf '0123456789abcdef\n' ;;
"remote list --no-legend") printf 'images  https://x  simplestreams  yes  system\n' ;;
*) exit 1 ;;
esac
STUB
chmod +x "$stub/lodgectl"
PATH=$stub:$PATH
# shellcheck source=/dev/null
source "$script"

# One collation wherever the test runs (sort orders "." and "=" by locale otherwise).
export LC_ALL=C
failures=0
# expect "WORDS TYPED SO FAR" "EXPECTED CANDIDATES" (the last word is the one completed)
expect() {
    read -r -a COMP_WORDS <<<"$1"
    [[ $1 == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    _lodgectl
    local got
    got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | xargs)
    if [[ $got != "$2" ]]; then
        echo "FAIL: '$1' completed to '$got', expected '$2'"
        failures=$((failures + 1))
    else
        echo "ok: '$1' -> '$got'"
    fi
}

expect "lodgectl st" "start status stop"
expect "lodgectl launch " "0123456789abcdef bb images:"
expect "lodgectl image " "alias copy delete export import info list refresh"
expect "lodgectl image alias " "create delete list"
expect "lodgectl image copy images:x " "local:"
expect "lodgectl remote remove " "images"
expect "lodgectl remote add x y --protocol " "lxd simplestreams"
expect "lodgectl start " "alpha beta"
expect "lodgectl stop --timeout 5 a" "alpha"
expect "lodgectl stop --" "--force --help --timeout"
expect "lodgectl config " "edit get set show unset"
expect "lodgectl config get " "alpha beta"
expect "lodgectl config get alpha " "limits.memory user.foo"
expect "lodgectl config set alpha limits.m" "limits.memory.enforce= limits.memory="
expect "lodgectl config set alpha user." "user. user.foo="
expect "lodgectl device remove alpha " "eth0 root"
expect "lodgectl device add alpha eth1 " "disk nic proxy"
expect "lodgectl device add alpha web proxy " "bind= connect= listen= nat="
expect "lodgectl kill --signal SIGK" "SIGKILL"
expect "lodgectl exec alpha -- l" ""
expect "lodgectl list " ""
expect "lodgectl net" "network"
expect "lodgectl network " "create delete get info list list-leases set show unset"
expect "lodgectl network info " "lodgebr0"
expect "lodgectl network set lodgebr0 ipv4.n" "ipv4.nat="
expect "lodgectl create c1 --network " "lodgebr0 none"
expect "lodgectl cl" "cluster"
expect "lodgectl cluster " "status"
expect "lodgectl cluster status " ""
expect "lodgectl snapshot " "create delete list rename show"
expect "lodgectl snapshot delete alpha " "before-upgrade snap0"
expect "lodgectl restore alpha " "before-upgrade snap0"
expect "lodgectl restore alpha snap0 --" "--force --help"
expect "lodgectl copy " "alpha beta"
expect "lodgectl copy alpha --" "--help --json --no-snapshots"
expect "lodgectl rename b" "beta"
expect "lodgectl file " "delete edit mount pull push"
expect "lodgectl file delete a" "alpha/"
expect "lodgectl file push --mode 0644 --u" "--uid"
[[ $failures -eq 0 ]]
