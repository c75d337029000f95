// The host's cgroup hierarchies as lodge sees them: read by lodged (exec joins a container's
// cgroups), the supervisor and the tests; no cgroup is written here.
#include "common/device-policy.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/device-bpf.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <linux/magic.h>
#include <optional>
#include <sstream>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace lodge::runtime {
namespace {
std::optional<std::vector<Hierarchy>> remembered_hierarchies;
}

void remember_host_hierarchies() {
    remembered_hierarchies.reset();
    remembered_hierarchies = host_hierarchies();
}

std::vector<Hierarchy> host_hierarchies() {
    if (remembered_hierarchies)
        return *remembered_hierarchies;
    std::vector<Hierarchy> out;
    libmnt_table* tb = mnt_new_table();
    if (!tb)
        return out;
    if (mnt_table_parse_mtab(tb, "/proc/self/mountinfo") == 0) {
        libmnt_iter* it = mnt_new_iter(MNT_ITER_FORWARD);
        libmnt_fs* fs = nullptr;
        while (mnt_table_next_fs(tb, it, &fs) == 0) {
            const char* type = mnt_fs_get_fstype(fs);
            const char* target = mnt_fs_get_target(fs);
            if (!type || !target)
                continue;
            // A read-only hierarchy (the v1 controllers nspawn gives a container on a hybrid
            // host) can hold no cgroup of ours.
            if (const char* vfs = mnt_fs_get_vfs_options(fs);
                vfs && mnt_optstr_get_option(vfs, "ro", nullptr, nullptr) == 0)
                continue;
            std::string t = type;
            if (t == "cgroup2") {
                out.push_back({target, "", true});
            } else if (t == "cgroup") {
                const char* opts = mnt_fs_get_vfs_options(fs);
                const char* fsopts = mnt_fs_get_fs_options(fs);
                std::string all = std::string(opts ? opts : "") + "," + (fsopts ? fsopts : "");
                std::string ctrl;
                for (const char* c :
                     {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                      "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"}) {
                    std::string needle = std::string(",") + c + ",";
                    if (("," + all + ",").find(needle) != std::string::npos)
                        ctrl += (ctrl.empty() ? "" : ",") + std::string(c);
                }
                auto np = all.find("name=");
                if (np != std::string::npos)
                    ctrl += (ctrl.empty() ? "" : ",") + all.substr(np, all.find(',', np) - np);
                out.push_back({target, ctrl, false});
            }
        }
        mnt_free_iter(it);
    }
    mnt_unref_table(tb);
    return out;
}

bool host_is_pure_cgroup2() {
    struct statfs sfs {};
    return ::statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
}

std::string own_cgroup(const Hierarchy& h) {
    std::string text;
    if (read_file("/proc/self/cgroup", text) < 0)
        return "/";
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        size_t c1 = line.find(':'), c2 = line.find(':', c1 + 1);
        if (c1 == std::string::npos || c2 == std::string::npos)
            continue;
        std::string ctrls = line.substr(c1 + 1, c2 - c1 - 1);
        std::string path = line.substr(c2 + 1);
        if (h.unified ? ctrls.empty() : ctrls == h.controllers)
            return path;
    }
    return "/";
}
} // namespace lodge::runtime
