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
#include <sstream>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace lodge::runtime {

CgroupFs::CgroupFs(std::string base) : base_(std::move(base)), hierarchies_(host_hierarchies()) {
    while (!base_.empty() && base_.front() == '/')
        base_.erase(0, 1);
}

std::string CgroupFs::payload_path(const Hierarchy& h) const {
    return h.mountpoint + "/" + base_ + "/payload";
}

static bool is_cpuset_hierarchy(const Hierarchy& h) {
    return !h.unified && ("," + h.controllers + ",").find(",cpuset,") != std::string::npos;
}

static bool has_controller(const Hierarchy& h, const char* c) {
    return !h.unified &&
           ("," + h.controllers + ",").find(std::string(",") + c + ",") != std::string::npos;
}

static bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

static std::string read_parent_cpus(const std::string& dir) {
    std::string cpus;
    read_file(dir.substr(0, dir.rfind('/')) + "/cpuset.cpus", cpus);
    while (!cpus.empty() && cpus.back() == '\n')
        cpus.pop_back();
    return cpus;
}

// v1 cpuset cgroups start with empty cpus/mems; a process cannot join until they are set.
static void inherit_cpuset(const std::string& dir) {
    std::string parent = dir.substr(0, dir.rfind('/'));
    for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
        std::string cur;
        if (read_file(dir + "/" + f, cur) == 0 && cur != "\n" && !cur.empty())
            continue;
        std::string val;
        if (read_file(parent + "/" + f, val) == 0)
            write_file(dir + "/" + f, val);
    }
}

static int make_cgroup(const Hierarchy& h, const std::string& rel) {
    std::string cur = h.mountpoint;
    size_t pos = 0;
    while (pos < rel.size()) {
        size_t slash = rel.find('/', pos);
        cur += "/" + rel.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
        pos = slash == std::string::npos ? rel.size() : slash + 1;
        if (::mkdir(cur.c_str(), 0755) < 0 && errno != EEXIST)
            return log_error_errno(errno, "Failed to create cgroup %s", cur.c_str());
        if (is_cpuset_hierarchy(h))
            inherit_cpuset(cur);
    }
    return 0;
}

int CgroupFs::create_base() {
    origin_.clear();
    for (auto& h : hierarchies_) {
        origin_.push_back(own_cgroup(h));
        if (int r = make_cgroup(h, base_ + "/supervisor"); r < 0)
            return r;
    }
    return enter_supervisor();
}

static bool single_threaded() {
    std::string status;
    return read_file("/proc/self/status", status) == 0 &&
           status.find("\nThreads:\t1\n") != std::string::npos;
}

int CgroupFs::enter_supervisor() {
    if (entered_)
        return 0;
    // v1: "0" into `tasks` moves only this thread, without the global lock (see PayloadJoin).
    bool alone = single_threaded();
    for (auto& h : hierarchies_) {
        std::string dir = h.mountpoint + "/" + base_ + "/supervisor";
        if (own_cgroup(h) == "/" + base_ + "/supervisor")
            continue;
        bool by_thread = alone && !h.unified;
        std::string file = dir + (by_thread ? "/tasks" : "/cgroup.procs");
        if (int r = write_file(file, by_thread ? "0" : std::to_string(::getpid())); r < 0)
            return log_error_errno(r, "Failed to move the supervisor into %s", dir.c_str());
    }
    entered_ = true;
    return 0;
}

int CgroupFs::open_payload(PayloadJoin& out) const {
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        if (h.unified) {
            out.cgroup2_dir.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            out.cgroup2_procs.reset(::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
            if (!out.cgroup2_dir || !out.cgroup2_procs)
                return log_error_errno(errno, "Failed to open the cgroup %s", dir.c_str());
        } else {
            Fd tasks(::open((dir + "/tasks").c_str(), O_WRONLY | O_CLOEXEC));
            if (!tasks)
                return log_error_errno(errno, "Failed to open %s/tasks", dir.c_str());
            out.v1_tasks.push_back(std::move(tasks));
        }
    }
    return 0;
}

int join_payload(const PayloadJoin& join, bool born_in_cgroup2) {
    for (auto& fd : join.v1_tasks)
        if (::write(fd.get(), "0", 1) < 0)
            return log_error_errno(errno, "Failed to join the container's cgroup");
    if (!born_in_cgroup2 && join.cgroup2_procs && ::write(join.cgroup2_procs.get(), "0", 1) < 0)
        return log_error_errno(errno, "Failed to join the container's cgroup");
    return 0;
}

// cgroup2: the controllers B has become available in B/payload, where limits.* go. B holds no
// process itself (the supervisor sits in B/supervisor), so the kernel allows this.
static void enable_controllers(const std::string& base_dir) {
    std::string text;
    if (read_file(base_dir + "/cgroup.controllers", text) < 0)
        return;
    std::istringstream available(text);
    for (std::string c; available >> c;)
        if (c == "cpu" || c == "cpuset" || c == "memory" || c == "pids")
            if (int r = write_file(base_dir + "/cgroup.subtree_control", "+" + c); r < 0)
                log_warning_errno(r, "Failed to enable the %s controller in %s", c.c_str(),
                                  base_dir.c_str());
}

int CgroupFs::create_payload() {
    for (auto& h : hierarchies_) {
        if (h.unified)
            enable_controllers(h.mountpoint + "/" + base_);
        if (int r = make_cgroup(h, base_ + "/payload"); r < 0)
            return r;
    }
    return 0;
}

int CgroupFs::delegate_payload(uid_t uid, gid_t gid) {
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        if (::chown(dir.c_str(), uid, gid) < 0)
            return log_error_errno(errno, "Failed to delegate %s", dir.c_str());
        // The files systemd's delegation contract names, plus v1's tasks.
        for (const char* f : {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks",
                              "cgroup.clone_children", "notify_on_release"}) {
            std::string p = dir + "/" + f;
            if (::chown(p.c_str(), uid, gid) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to delegate %s", p.c_str());
        }
    }
    return 0;
}

// cgroup2 has the knob only where the controller is enabled (none at all when the host binds
// every controller to v1 and lodge runs under a systemd on the unified hierarchy). A limit that
// cannot be applied is said once, not a reason to refuse the start (systemd ignores it too).
static bool v2_knob(const std::string& dir, const char* knob, const char* key,
                    const ContainerConfig& c) {
    if (exists(dir + "/" + knob))
        return true;
    if (!c.get(key).empty())
        log_warning("%s is not applied: %s has no %s", key, dir.c_str(), knob);
    return false;
}

// On B/payload only: the supervisor in B/supervisor stays outside them, so a guest that fills
// its pids.max or memory cannot keep the supervisor from forking or get it OOM-killed.
int CgroupFs::apply_limits(const ContainerConfig& c) {
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        bool v2 = h.unified && host_is_pure_cgroup2();
        if (has_controller(h, "memory") || (v2 && v2_knob(dir, "memory.max", "limits.memory", c))) {
            std::string mem = c.get("limits.memory");
            std::string value = v2 ? "max" : "-1";
            if (!mem.empty()) {
                bool percent = false;
                auto n = parse_size(mem, &percent);
                if (n && percent) {
                    long pages = ::sysconf(_SC_PHYS_PAGES), psize = ::sysconf(_SC_PAGESIZE);
                    *n = static_cast<uint64_t>(pages) * static_cast<uint64_t>(psize) / 100 * *n;
                }
                if (n)
                    value = std::to_string(*n);
            }
            const char* knob = v2 ? "memory.max" : "memory.limit_in_bytes";
            if (int r = write_file(dir + "/" + knob, value); r < 0)
                return log_error_errno(r, "Failed to set %s/%s to %s", dir.c_str(), knob,
                                       value.c_str());
        }
        if (has_controller(h, "pids") || (v2 && v2_knob(dir, "pids.max", "limits.processes", c))) {
            std::string procs = c.get("limits.processes", "max");
            if (int r = write_file(dir + "/pids.max", procs); r < 0)
                return log_error_errno(r, "Failed to set %s/pids.max", dir.c_str());
        }
        std::string cpu = c.get("limits.cpu");
        if (has_controller(h, "cpu") || (v2 && v2_knob(dir, "cpu.max", "limits.cpu", c))) {
            std::string quota = v2 ? "max 100000" : "-1";
            if (is_cpu_count(cpu)) {
                auto n = parse_uint(cpu).value_or(1);
                quota = v2 ? std::to_string(n * 100000) + " 100000" : std::to_string(n * 100000);
            }
            if (v2) {
                write_file(dir + "/cpu.max", quota);
            } else {
                write_file(dir + "/cpu.cfs_period_us", "100000");
                if (int r = write_file(dir + "/cpu.cfs_quota_us", quota); r < 0)
                    return log_error_errno(r, "Failed to set %s/cpu.cfs_quota_us", dir.c_str());
            }
        }
        if (is_cpuset_hierarchy(h) || (v2 && exists(dir + "/cpuset.cpus"))) {
            // Unset (or a count): every CPU B has, which an empty value means on cgroup2.
            std::string cpus = v2 ? "" : read_parent_cpus(dir);
            if (!cpu.empty() && !is_cpu_count(cpu) && is_cpuset(cpu))
                cpus = cpu;
            std::string now;
            read_file(dir + "/cpuset.cpus", now);
            if (now == cpus + "\n")
                continue;
            if (int r = write_file(dir + "/cpuset.cpus", cpus); r < 0)
                return log_error_errno(r, "Failed to set %s/cpuset.cpus to \"%s\"", dir.c_str(),
                                       cpus.c_str());
        }
    }
    return 0;
}

int CgroupFs::apply_device_policy() {
    for (auto& h : hierarchies_) {
        if (!has_controller(h, "devices"))
            continue;
        std::string dir = payload_path(h);
        if (int r = write_file(dir + "/devices.deny", "a"); r < 0)
            return log_error_errno(r, "Failed to write %s/devices.deny", dir.c_str());
        for (const DeviceRule& rule : device_allow_list()) {
            std::string line = device_rule_v1(rule);
            if (int r = write_file(dir + "/devices.allow", line); r < 0)
                return log_error_errno(r, "Failed to allow \"%s\" in %s", line.c_str(),
                                       dir.c_str());
        }
    }
    return 0;
}

int CgroupFs::attach_device_program() {
    for (auto& h : hierarchies_)
        if (h.unified)
            return attach_device_policy(h.mountpoint + "/" + base_);
    return 0;
}

// rmdir depth-first: a guest (systemd) may have made its own sub-cgroups.
static int rmdir_tree(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (e->d_type == DT_DIR && n != "." && n != "..")
            subdirs.push_back(dir + "/" + n);
    }
    ::closedir(d);
    for (auto& s : subdirs)
        rmdir_tree(s);
    // The kernel may still be tearing down the last tasks of a dead pid namespace.
    for (int attempt = 0; attempt < 200; attempt++) {
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY)
            break;
        ::usleep(5000);
    }
    return -errno;
}

int CgroupFs::destroy_payload() {
    int ret = 0;
    for (auto& h : hierarchies_)
        if (int r = rmdir_tree(payload_path(h)); r < 0)
            ret = log_warning_errno(r, "Failed to remove cgroup %s", payload_path(h).c_str());
    return ret;
}

int CgroupFs::destroy_base() {
    int ret = 0;
    for (size_t i = 0; i < hierarchies_.size(); i++) {
        auto& h = hierarchies_[i];
        std::string origin = i < origin_.size() ? origin_[i] : "/";
        if (entered_)
            write_file(h.mountpoint + origin + "/cgroup.procs", std::to_string(::getpid()));
        if (int r = rmdir_tree(h.mountpoint + "/" + base_); r < 0)
            ret = r;
    }
    return ret;
}

} // namespace lodge::runtime
