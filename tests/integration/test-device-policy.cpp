// Device policy and the supervisor's place outside the guest's limits (security review findings
// 2 and 17): the rootfs of a user-namespaced container is nodev, every container gets the device
// allow-list (v1 devices.* and a cgroup2 BPF device program), and limits.* bind the payload only.
#include "common/device-policy.hpp"
#include "common/fd.hpp"
#include "harness.hpp"
#include "runtime/attach.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/device-bpf.hpp"

#include <bpf/bpf.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge::test;
using lodge::Fd;

namespace {

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

// Forks a process that makes a node of `type` ('b'/'c') on a private tmpfs (never the host's
// /dev), joins the cgroup2 directory `cgroup_dir` when one is given, and opens the node read-only.
// Returns the open's errno (0: it opened), or -1 when the setup itself failed.
int open_private_node(char type, unsigned maj, unsigned min, const std::string& cgroup_dir = "") {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    Fd out_r(pipefd[0]), out_w(pipefd[1]);
    pid_t child = ::fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        int result = -1;
        std::string tmp = TestRoot::get().dir + "/private-nodes";
        ::mkdir(tmp.c_str(), 0700);
        std::string node = tmp + "/node";
        if (::unshare(CLONE_NEWNS) == 0 &&
            ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
            ::mount("tmpfs", tmp.c_str(), "tmpfs", 0, "mode=700") == 0 &&
            ::mknod(node.c_str(), (type == 'b' ? S_IFBLK : S_IFCHR) | 0600, makedev(maj, min)) ==
                0) {
            bool joined = true;
            if (!cgroup_dir.empty()) {
                int procs = ::open((cgroup_dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
                joined = procs >= 0 && ::write(procs, "0", 1) == 1;
            }
            if (joined) {
                int fd = ::open(node.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                result = fd < 0 ? errno : 0;
            }
        }
        (void)!::write(out_w.get(), &result, sizeof result);
        _exit(0);
    }
    out_w.reset();
    int result = -1;
    if (::read(out_r.get(), &result, sizeof result) != sizeof result)
        result = -1;
    ::waitpid(child, nullptr, 0);
    return result;
}

// A block device that root on the host may open: the host's root disk ("254:0", from the /
// mount) where the host allows it, else the first loop device (a sandboxed test host may keep
// its disk from root itself). "" when there is none.
std::string host_block_device() {
    std::vector<std::string> candidates;
    std::string root = trim(sh("findmnt -no MAJ:MIN / 2>/dev/null"));
    if (!root.empty() && root.rfind("0:", 0) != 0)
        candidates.push_back(root);
    candidates.push_back("7:0");
    for (auto& c : candidates) {
        unsigned maj = std::stoul(c.substr(0, c.find(':')));
        unsigned min = std::stoul(c.substr(c.find(':') + 1));
        if (open_private_node('b', maj, min) == 0)
            return c;
    }
    return "";
}

bool world_rw(const char* path) {
    struct stat st {};
    return ::stat(path, &st) == 0 && (st.st_mode & 0006) == 0006;
}

std::string mknod_args(const std::string& majmin) {
    return majmin.substr(0, majmin.find(':')) + " " + majmin.substr(majmin.find(':') + 1);
}

std::string unified_mountpoint() {
    for (auto& h : lodge::runtime::host_hierarchies())
        if (h.unified)
            return h.mountpoint;
    return "";
}

// How many device programs are attached to the cgroup2 directory `dir` itself.
int device_programs_on(const std::string& dir) {
    Fd cg(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg)
        return -errno;
    uint32_t ids[16], count = 16, flags = 0;
    if (bpf_prog_query(cg.get(), BPF_CGROUP_DEVICE, 0, &flags, ids, &count) < 0)
        return -errno;
    return static_cast<int>(count);
}

// The cgroup2 layer alone, on this host too, where the v1 devices controller would hide it: a
// private cgroup2 child with the allow-list program, nodes on a private tmpfs (never the host's
// /dev), and a process that joins the child and opens them.
TEST(DevicePolicy, Cgroup2ProgramAloneDeniesDisallowedNodes) {
    LODGE_REQUIRE_ROOT();
    std::string unified = unified_mountpoint();
    if (unified.empty())
        GTEST_SKIP() << "no cgroup2 hierarchy";
    std::string disk = host_block_device();
    if (disk.empty())
        GTEST_SKIP() << "no block device that root on this host may open";
    unsigned maj = std::stoul(disk.substr(0, disk.find(':')));
    unsigned min = std::stoul(disk.substr(disk.find(':') + 1));
    std::string parent = unified + "/" + TestRoot::get().cgroup;
    std::string dir = parent + "/bpf-only";
    ::mkdir(parent.c_str(), 0755);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << std::strerror(errno);
    // Without a program the cgroup lets the node open (host_block_device() checked it outside).
    EXPECT_EQ(open_private_node('b', maj, min, dir), 0);
    ASSERT_TRUE(lodge::runtime::attach_device_policy(dir).ok());
    EXPECT_EQ(device_programs_on(dir), 1);
    // A second attach (a supervisor restarted on the same cgroup) replaces the first.
    ASSERT_TRUE(lodge::runtime::attach_device_policy(dir).ok());
    EXPECT_EQ(device_programs_on(dir), 1);
    EXPECT_EQ(open_private_node('b', maj, min, dir), EPERM) << disk;
    EXPECT_EQ(open_private_node('c', 4, 0, dir), EPERM) << "tty0";
    EXPECT_EQ(open_private_node('c', 1, 11, dir), EPERM) << "kmsg";
    for (const char* majmin : {"1:3", "1:5", "1:7", "1:8", "1:9"}) {
        std::string m = majmin;
        EXPECT_EQ(open_private_node('c', std::stoul(m.substr(0, m.find(':'))),
                                    std::stoul(m.substr(m.find(':') + 1)), dir),
                  0)
            << majmin;
    }
    ::rmdir(dir.c_str());
}

// Finding 2 (a): an image's block node for the host's disk, outside /dev, in the default
// (unprivileged) container. nodev on the rootfs stops it; should the guest lift nodev, the
// cgroup layer (v1 and cgroup2 program alike) still does.
TEST(DevicePolicy, UnprivilegedContainerCannotReadAnImagesDiskNode) {
    LODGE_REQUIRE_ROOT();
    std::string disk = host_block_device();
    if (disk.empty())
        GTEST_SKIP() << "no block device that root on this host may open";
    Container c(unique_name("devu"), false);
    c.make_busybox(true);
    // What a tarball or directory import creates on the host: a root-owned 0600 node.
    ASSERT_EQ(
        std::system(("mknod -m 0600 " + c.rootfs + "/root/disk b " + mknod_args(disk)).c_str()), 0);
    std::string out = c.start_and_run(
        "head -c 512 /root/disk > /tmp/d && echo read-ok || echo read-denied; "
        "awk '$5 == \"/\" { print \"rootmount\", $6 }' /proc/self/mountinfo; "
        "mount -o remount,bind,dev / && echo remount-ok; "
        "head -c 512 /root/disk > /tmp/d && echo read2-ok || echo read2-denied; "
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c && "
        "echo std-nodes-ok; "
        "[ -e /dev/fuse ] && { exec 3<>/dev/fuse && echo fuse-ok; exec 3>&-; }; "
        "[ -e /dev/net/tun ] && { exec 4<>/dev/net/tun && echo tun-ok; exec 4>&-; }; true");
    EXPECT_TRUE(contains(out, "read-denied")) << out;
    EXPECT_FALSE(contains(out, "read-ok")) << out;
    EXPECT_TRUE(contains(out, "read2-denied")) << out;
    EXPECT_FALSE(contains(out, "read2-ok")) << out;
    // The rootfs mount itself carries nodev.
    size_t at = out.find("rootmount ");
    ASSERT_NE(at, std::string::npos) << out;
    EXPECT_TRUE(contains(out.substr(at, out.find('\n', at) - at), "nodev")) << out;
    EXPECT_TRUE(contains(out, "std-nodes-ok")) << out;
    // Bound from the host with its mode: the container's root opens them where everyone may.
    if (world_rw("/dev/fuse")) {
        EXPECT_TRUE(contains(out, "fuse-ok")) << out;
    }
    if (world_rw("/dev/net/tun")) {
        EXPECT_TRUE(contains(out, "tun-ok")) << out;
    }
    std::string unified = unified_mountpoint();
    if (!unified.empty()) {
        EXPECT_EQ(device_programs_on(unified + "/" + TestRoot::get().cgroup + "/" + c.name), 1);
    }
    EXPECT_EQ(c.stop(10)["state"], "stopped");
}

// Finding 2 (b): a privileged container may mknod (LXD's list allows it) but neither open nor
// mount the host's disk; the cgroup2 program is in force next to the v1 controller.
TEST(DevicePolicy, PrivilegedContainerCannotMknodAndMountTheHostDisk) {
    LODGE_REQUIRE_ROOT();
    std::string disk = host_block_device();
    if (disk.empty())
        GTEST_SKIP() << "no block device that root on this host may open";
    Container c(unique_name("devp"), true);
    c.make_busybox(true);
    std::string out = c.start_and_run(
        "mknod /tmp/d b " + mknod_args(disk) +
        " && echo mknod-ok; head -c 512 /tmp/d > /tmp/x && echo read-ok || echo read-denied; "
        "mkdir -p /mnt/h; mount /tmp/d /mnt/h && echo mount-ok || echo mount-denied; "
        "echo x > /dev/null && echo null-ok");
    EXPECT_TRUE(contains(out, "mknod-ok")) << out;
    EXPECT_TRUE(contains(out, "read-denied")) << out;
    EXPECT_TRUE(contains(out, "mount-denied")) << out;
    EXPECT_FALSE(contains(out, "mount-ok")) << out;
    EXPECT_TRUE(contains(out, "null-ok")) << out;
    std::string unified = unified_mountpoint();
    if (!unified.empty()) {
        EXPECT_EQ(device_programs_on(unified + "/" + TestRoot::get().cgroup + "/" + c.name), 1);
    }
    EXPECT_EQ(c.stop(10)["state"], "stopped");
}

// The exec path opens the container's /dev/pts/ptmx and /dev/null under the policy.
TEST(DevicePolicy, ExecWithAPtyAndDevNullWorks) {
    LODGE_REQUIRE_ROOT();
    Container c(unique_name("devx"), false);
    c.make_busybox();
    LODGE_START_OR_SKIP(c);
    auto s = c.status();
    lodge::runtime::ExecRequest req;
    req.init_pid = s["pid"].get<pid_t>();
    req.config = &c.config;
    req.payload_cgroup = s["cgroup"].get<std::string>() + "/payload";
    req.argv = {"sh", "-c", "echo pty-ok; tty"};
    req.pty = true;
    lodge::runtime::ExecHandle h;
    std::string error;
    ASSERT_EQ(exec_in_container(req, h, error), 0) << error;
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(h.pty_master.get(), buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(n));
    EXPECT_EQ(lodge::runtime::exec_wait(h), 0);
    EXPECT_TRUE(contains(out, "pty-ok")) << out;
    EXPECT_TRUE(contains(out, "/dev/pts/")) << out;
    // No pty: the command's stdio is the container's /dev/null.
    req.pty = false;
    req.argv = {"sh", "-c", "read x; exit 7"};
    lodge::runtime::ExecHandle h2;
    ASSERT_EQ(exec_in_container(req, h2, error), 0) << error;
    EXPECT_EQ(lodge::runtime::exec_wait(h2), 7);
}

// Finding 17: a guest that fills limits.processes does not stop the supervisor from forking
// (its live-mount helper) nor from stopping the container cleanly.
TEST(DevicePolicy, SupervisorWorksWhileTheGuestFillsPidsMax) {
    LODGE_REQUIRE_ROOT();
    Container c(unique_name("pidbomb"), false);
    c.make_busybox(true);
    c.set("limits.processes", "24");
    c.set("environment.TESTINIT_RUN", "exec /bin/syscall-probe fill-pids > /run.out");
    LODGE_START_OR_SKIP(c);
    std::string base = TestRoot::get().cgroup + "/" + c.name;
    std::string pids_dir = exists("/sys/fs/cgroup/pids/" + base)
                               ? "/sys/fs/cgroup/pids/" + base
                               : unified_mountpoint() + "/" + base;
    if (!exists(pids_dir + "/payload/pids.max"))
        GTEST_SKIP() << "no pids controller for " << base;
    EXPECT_EQ(trim(read_text(pids_dir + "/payload/pids.max")), "24");
    // The base carries no limit of its own: the supervisor is outside the guest's.
    EXPECT_EQ(trim(read_text(pids_dir + "/pids.max")), "max");
    c.exec("while ! grep -q pids-full /run.out; do usleep 10000; done");
    ASSERT_TRUE(contains(read_text(c.rootfs + "/run.out"), "pids-full"))
        << "the bomb never filled pids.max";
    EXPECT_EQ(trim(read_text(pids_dir + "/payload/pids.current")), "24");
    // Both fork the supervisor's live-mount helper.
    auto detach = c.request("devlxd-detach");
    EXPECT_EQ(detach.value("ok", false), true) << detach.dump();
    auto attach = c.request("devlxd-attach");
    EXPECT_EQ(attach.value("ok", false), true) << attach.dump();
    auto stopped = c.request("stop 2");
    EXPECT_EQ(stopped.value("state", ""), "stopped") << stopped.dump();
    EXPECT_TRUE(contains(stopped.value("reason", ""), "stopped")) << stopped.dump();
}

} // namespace
