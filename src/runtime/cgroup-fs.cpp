#include "common/device-policy.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/validate.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/device-bpf.hpp"

#include <cerrno>
#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <set>
#include <span>
#include <sstream>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace lodge::runtime {

CgroupFs::CgroupFs(std::string base) : CgroupFs(std::move(base), host_hierarchies()) {}

CgroupFs::CgroupFs(std::string base, std::vector<Hierarchy> hierarchies)
    : base_(std::move(base)), hierarchies_(std::move(hierarchies)) {
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

// mkdir of the cgroup itself first, of its parents only when it says they are missing: the
// base above B is there on every start but the first, and each mkdir walks the path again.
static Result<> make_cgroup_path(const Hierarchy& h, const std::string& path) {
    int err = ::mkdir(path.c_str(), 0755) == 0 ? 0 : errno;
    if (err == ENOENT && path.size() > h.mountpoint.size() + 1) {
        if (auto parent = make_cgroup_path(h, path.substr(0, path.rfind('/'))); !parent)
            return parent;
        err = ::mkdir(path.c_str(), 0755) == 0 ? 0 : errno;
    }
    if (err != 0 && err != EEXIST)
        return log_error_value(err, "Failed to create cgroup %s", path.c_str());
    return {};
}

static Result<> make_cgroup(const Hierarchy& h, const std::string& rel) {
    if (!is_cpuset_hierarchy(h))
        return make_cgroup_path(h, h.mountpoint + "/" + rel);
    // v1 cpuset: every level down from the root, each given its parent's cpus and mems if it
    // has none (someone else's base may have been made without them).
    std::string cur = h.mountpoint;
    size_t pos = 0;
    while (pos < rel.size()) {
        size_t slash = rel.find('/', pos);
        cur += "/" + rel.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
        pos = slash == std::string::npos ? rel.size() : slash + 1;
        if (::mkdir(cur.c_str(), 0755) < 0 && errno != EEXIST)
            return log_error_value(errno, "Failed to create cgroup %s", cur.c_str());
        inherit_cpuset(cur);
    }
    return {};
}

Result<> CgroupFs::prepare_supervisor() {
    if (prepared_)
        return {};
    origin_.clear();
    for (auto& h : hierarchies_) {
        origin_.push_back(own_cgroup(h));
        if (auto made = make_cgroup(h, base_ + "/supervisor"); !made)
            return made;
    }
    prepared_ = true;
    return {};
}

pid_t CgroupFs::fork_into_supervisor() {
    Fd dir;
    for (auto& h : hierarchies_)
        if (h.unified)
            dir.reset(::open((h.mountpoint + "/" + base_ + "/supervisor").c_str(),
                             O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) {
        struct clone_args args {};
        args.flags = CLONE_INTO_CGROUP;
        args.cgroup = static_cast<uint64_t>(dir.get());
        args.exit_signal = SIGCHLD;
        long pid = ::syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0)
            entered_ = true; // in cgroup2's; destroy_base() moves it back
        if (pid >= 0)
            return static_cast<pid_t>(pid);
        log_warning_errno(errno, "Cannot start the supervisor in its cgroup; it moves there");
    }
    return ::fork();
}

Result<> CgroupFs::create_base() {
    if (auto prepared = prepare_supervisor(); !prepared)
        return prepared;
    return enter_supervisor();
}

static bool single_threaded() {
    std::string status;
    return read_file("/proc/self/status", status) == 0 &&
           status.find("\nThreads:\t1\n") != std::string::npos;
}

Result<> CgroupFs::enter_supervisor() {
    if (joined_)
        return {};
    // v1: "0" into `tasks` moves only this thread, without the global lock (see PayloadJoin).
    bool alone = single_threaded();
    for (auto& h : hierarchies_) {
        std::string dir = h.mountpoint + "/" + base_ + "/supervisor";
        bool by_thread = alone && !h.unified;
        // Where this process was born (or already moved) there is nothing to write.
        if (!by_thread && own_cgroup(h) == "/" + base_ + "/supervisor")
            continue;
        std::string file = dir + (by_thread ? "/tasks" : "/cgroup.procs");
        if (int r = write_file(file, by_thread ? "0" : std::to_string(::getpid())); r < 0)
            return log_error_value(r, "Failed to move the supervisor into %s", dir.c_str());
        entered_ = true;
    }
    joined_ = entered_ = true;
    return {};
}

Result<> CgroupFs::open_payload(PayloadJoin& out) const {
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        if (h.unified) {
            out.cgroup2_dir.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            out.cgroup2_procs.reset(::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
            if (!out.cgroup2_dir || !out.cgroup2_procs)
                return log_error_value(errno, "Failed to open the cgroup %s", dir.c_str());
        } else {
            Fd tasks(::open((dir + "/tasks").c_str(), O_WRONLY | O_CLOEXEC));
            if (!tasks)
                return log_error_value(errno, "Failed to open %s/tasks", dir.c_str());
            out.v1_tasks.push_back(std::move(tasks));
        }
    }
    return {};
}

Result<> join_payload(const PayloadJoin& join, bool born_in_cgroup2) {
    for (auto& fd : join.v1_tasks)
        if (::write(fd.get(), "0", 1) < 0)
            return log_error_value(errno, "Failed to join the container's cgroup");
    if (!born_in_cgroup2 && join.cgroup2_procs && ::write(join.cgroup2_procs.get(), "0", 1) < 0)
        return log_error_value(errno, "Failed to join the container's cgroup");
    return {};
}

// cgroup2: the controllers a cgroup has become available in its children. B holds no process
// itself (the supervisor sits in B/supervisor), so the kernel allows this.
static void enable_controllers(const std::string& dir) {
    std::string text;
    if (read_file(dir + "/cgroup.controllers", text) < 0)
        return;
    std::string enabled;
    read_file(dir + "/cgroup.subtree_control", enabled);
    std::istringstream available(text), have(enabled);
    std::set<std::string> on;
    for (std::string c; have >> c;)
        on.insert(c);
    std::vector<std::string> wanted;
    for (std::string c; available >> c;)
        if ((c == "cpu" || c == "cpuset" || c == "memory" || c == "pids") && !on.count(c))
            wanted.push_back("+" + c);
    if (wanted.empty())
        return;
    std::string all;
    for (auto& c : wanted)
        all += (all.empty() ? "" : " ") + c;
    // One write for all of them; should the kernel refuse that, each on its own.
    if (write_file(dir + "/cgroup.subtree_control", all) == 0)
        return;
    for (auto& c : wanted)
        if (int r = write_file(dir + "/cgroup.subtree_control", c); r < 0)
            log_warning_errno(r, "Failed to enable the %s controller in %s", c.c_str() + 1,
                              dir.c_str());
}

Result<> CgroupFs::create_payload() {
    for (auto& h : hierarchies_) {
        if (h.unified) {
            // Without systemd the cgroups above B are lodge's too (machine.slice): a controller
            // reaches the payload only when every one of them passes it on. The hierarchy's
            // root is the host's, never written here.
            size_t slash = own_path_ ? base_.find('/') : std::string::npos;
            for (; slash != std::string::npos; slash = base_.find('/', slash + 1))
                enable_controllers(h.mountpoint + "/" + base_.substr(0, slash));
            enable_controllers(h.mountpoint + "/" + base_);
        }
        if (auto made = make_cgroup(h, base_ + "/payload"); !made)
            return made;
    }
    return {};
}

Result<> CgroupFs::delegate_payload(uid_t uid, gid_t gid) {
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        if (::chown(dir.c_str(), uid, gid) < 0)
            return log_error_value(errno, "Failed to delegate %s", dir.c_str());
        // The files systemd's delegation contract names on cgroup2; on v1 the same role's
        // files (tasks and the two that shape new children). Only those of the hierarchy's
        // kind: the others are never there.
        static const char* const v2_files[] = {"cgroup.procs", "cgroup.threads",
                                               "cgroup.subtree_control"};
        static const char* const v1_files[] = {"cgroup.procs", "tasks", "cgroup.clone_children",
                                               "notify_on_release"};
        for (const char* f : h.unified ? std::span<const char* const>(v2_files)
                                       : std::span<const char* const>(v1_files)) {
            std::string p = dir + "/" + f;
            if (::chown(p.c_str(), uid, gid) < 0 && errno != ENOENT)
                return log_error_value(errno, "Failed to delegate %s", p.c_str());
        }
    }
    return {};
}

namespace {

// Writes `value` to dir/knob unless it holds it already; a failure is logged. An empty value
// goes as a lone newline (a zero-length write never reaches the kernel's handler).
Result<> write_knob(const std::string& dir, const char* knob, const std::string& value) {
    std::string path = dir + "/" + knob, now;
    if (read_file(path, now) == 0 && now == value + "\n")
        return {};
    std::string text = value.empty() ? "\n" : value;
    // O_TRUNC: a no-op on cgroupfs, and what a directory tree standing in for it needs.
    Fd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY));
    ssize_t n = fd ? ::write(fd.get(), text.data(), text.size()) : -1;
    if (n < 0 || static_cast<size_t>(n) != text.size())
        return log_error_value(n < 0 ? errno : EIO, "Failed to set %s to \"%s\"", path.c_str(),
                               value.c_str());
    return {};
}

uint64_t host_memory_bytes() {
    long pages = ::sysconf(_SC_PHYS_PAGES), psize = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && psize > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(psize) : 0;
}

// The limits' cgroup files, applied where each controller is: on a v1 hierarchy that binds
// it, and on cgroup2 wherever the payload has the knob (the kernel shows it only once the
// controller is enabled there; on a hybrid host that is where v1 does not bind it).
struct LimitWriter {
    const Limits& limits;
    std::set<std::string> applied; // the keys some hierarchy took

    Result<> memory(const Hierarchy& h, const std::string& dir) {
        auto bytes = limits.memory(host_memory_bytes());
        bool v1 = has_controller(h, "memory");
        if (!v1 && !(h.unified && exists(dir + "/memory.max")))
            return {};
        std::string unlimited = v1 ? "-1" : "max";
        std::string value = bytes ? std::to_string(*bytes) : unlimited;
        const char* hard = v1 ? "memory.limit_in_bytes" : "memory.max";
        const char* soft = v1 ? "memory.soft_limit_in_bytes" : "memory.high";
        applied.insert("limits.memory");
        if (auto r = write_knob(dir, hard, limits.memory_soft ? unlimited : value); !r)
            return r;
        if (!v1 && !exists(dir + "/" + soft))
            return {};
        return write_knob(dir, soft, limits.memory_soft ? value : unlimited);
    }

    Result<> processes(const Hierarchy& h, const std::string& dir) {
        if (!has_controller(h, "pids") && !(h.unified && exists(dir + "/pids.max")))
            return {};
        applied.insert("limits.processes");
        return write_knob(dir, "pids.max",
                          limits.processes ? std::to_string(*limits.processes) : "max");
    }

    Result<> cpu(const Hierarchy& h, const std::string& dir) {
        auto quota = limits.cpu_max();
        unsigned percent = limits.cpu_allowance_percent.value_or(100);
        if (has_controller(h, "cpu")) {
            applied.insert("limits.cpu.allowance");
            if (limits.cpu_count)
                applied.insert("limits.cpu");
            Result<> r = write_knob(dir, "cpu.cfs_period_us",
                                    std::to_string(quota ? quota->period_usec : cpu_period_usec));
            if (r)
                r = write_knob(dir, "cpu.cfs_quota_us",
                               quota ? std::to_string(quota->quota_usec) : "-1");
            if (r && exists(dir + "/cpu.shares"))
                r = write_knob(dir, "cpu.shares", std::to_string(1024 * percent / 100));
            return r;
        }
        if (!h.unified || !exists(dir + "/cpu.max"))
            return {};
        applied.insert("limits.cpu.allowance");
        if (limits.cpu_count)
            applied.insert("limits.cpu");
        Result<> r = write_knob(dir, "cpu.max",
                                quota ? std::to_string(quota->quota_usec) + " " +
                                            std::to_string(quota->period_usec)
                                      : "max " + std::to_string(cpu_period_usec));
        // cpu.weight: 100 is the kernel's default, as 100% is LXD's.
        if (r && exists(dir + "/cpu.weight"))
            r = write_knob(dir, "cpu.weight", std::to_string(percent));
        return r;
    }

    Result<> cpuset(const Hierarchy& h, const std::string& dir) {
        bool v1 = is_cpuset_hierarchy(h);
        if (!v1 && !(h.unified && exists(dir + "/cpuset.cpus")))
            return {};
        if (!limits.cpu_set.empty())
            applied.insert("limits.cpu");
        // Unset (or a count): every CPU the parent has, which an empty value means on cgroup2.
        std::string cpus = limits.cpu_set;
        if (cpus.empty() && v1)
            cpus = read_parent_cpus(dir);
        return write_knob(dir, "cpuset.cpus", cpus);
    }

    bool wanted(const std::string& key) const {
        if (key == "limits.memory")
            return limits.memory_bytes || limits.memory_percent;
        if (key == "limits.processes")
            return limits.processes.has_value();
        if (key == "limits.cpu")
            return limits.cpu_count || !limits.cpu_set.empty();
        return limits.cpu_allowance_percent || limits.cpu_quota;
    }
};

} // namespace

// On B/payload only: the supervisor in B/supervisor stays outside them, so a guest that fills
// its pids.max or memory cannot keep the supervisor from forking or get it OOM-killed.
Result<> CgroupFs::apply_limits(const Limits& limits) {
    LimitWriter w{limits, {}};
    for (auto& h : hierarchies_) {
        std::string dir = payload_path(h);
        for (auto step : {&LimitWriter::memory, &LimitWriter::processes, &LimitWriter::cpu,
                          &LimitWriter::cpuset})
            if (auto r = (w.*step)(h, dir); !r)
                return r;
    }
    // A limit no hierarchy can take is said once, not a reason to refuse the start (systemd
    // ignores it too).
    for (const char* key :
         {"limits.memory", "limits.processes", "limits.cpu", "limits.cpu.allowance"})
        if (w.wanted(key) && !w.applied.count(key))
            log_warning("%s is not applied: no cgroup controller for it below %s", key,
                        base_.c_str());
    return {};
}

Result<> CgroupFs::apply_device_policy() {
    for (auto& h : hierarchies_) {
        if (!has_controller(h, "devices"))
            continue;
        std::string dir = payload_path(h);
        if (int r = write_file(dir + "/devices.deny", "a"); r < 0)
            return log_error_value(r, "Failed to write %s/devices.deny", dir.c_str());
        for (const DeviceRule& rule : device_allow_list()) {
            std::string line = device_rule_v1(rule);
            if (int r = write_file(dir + "/devices.allow", line); r < 0)
                return log_error_value(r, "Failed to allow \"%s\" in %s", line.c_str(),
                                       dir.c_str());
        }
    }
    return {};
}

Result<> CgroupFs::attach_device_program() {
    for (auto& h : hierarchies_)
        if (h.unified)
            return attach_device_policy(h.mountpoint + "/" + base_);
    return {};
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
