#!/bin/sh
# lodged must link none of the privileged setup (src/runtime/setup/) nor the supervisor's nic
# plugging: the perimeter is one folder, linked by lodge-supervisor alone.
set -eu
lodged=$1
syms=$(nm -C --defined-only "$lodged") || { echo "cannot read symbols of $lodged"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -E 'lodge::runtime::(mount_|setup_dev|spawn_container|net::plug|net::unplug|load_seccomp|drop_capabilities|shift_|CgroupFs::)' || true)
if [ -n "$bad" ]; then
    echo "lodged links privileged setup code:"
    printf '%s\n' "$bad"
    exit 1
fi
# The check itself must be able to fail: the supervisor has these symbols.
echo "lodged links no setup code"
