// The built-in image: a C++ port of tests/fixtures/make-busybox-rootfs.sh, so a first
// `lodgectl create` works offline. import_builtin() (import.hpp) calls this with /bin/busybox.
#pragma once

#include <string>

namespace lodge::daemon {

inline constexpr const char* builtin_busybox_path = "/bin/busybox";

// Fills the empty directory `rootfs_dir` from the static busybox at `busybox`: bin/busybox, one
// relative symlink per applet of `busybox --list-full` (sbin/init -> ../bin/busybox), the
// directories dev mnt proc root sys tmp (1777) run var/log etc, and etc/inittab, etc/init.d/rcS,
// etc/passwd, etc/group exactly as the script writes them. Fails if `busybox` is missing, not an
// ELF executable or dynamically linked. Returns 0 or -errno with `error` set.
int make_busybox_rootfs(const std::string& busybox, const std::string& rootfs_dir,
                        std::string& error);

} // namespace lodge::daemon
