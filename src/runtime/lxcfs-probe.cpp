#include "runtime/lxcfs-probe.hpp"

#include <libmount/libmount.h>
#include <sys/stat.h>

namespace lodge {

bool is_lxcfs_mount(const std::string& dir) {
    bool found = false;
    libmnt_table* tb = mnt_new_table();
    if (!tb)
        return false;
    if (mnt_table_parse_mtab(tb, "/proc/self/mountinfo") == 0) {
        // The last mount on the path is the visible one.
        libmnt_fs* fs = mnt_table_find_target(tb, dir.c_str(), MNT_ITER_BACKWARD);
        if (fs) {
            const char* type = mnt_fs_get_fstype(fs);
            found = type && std::string(type) == "fuse.lxcfs";
        }
    }
    mnt_unref_table(tb);
    if (!found)
        return false;
    // A crashed lxcfs leaves its mount behind; a stat through it then fails with ENOTCONN.
    struct stat st {};
    return ::stat((dir + "/proc").c_str(), &st) == 0;
}

} // namespace lodge
