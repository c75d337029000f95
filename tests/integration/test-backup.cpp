// Container backups in LXD's instance backup layout (`lodgectl export|import`, issue 14):
// export -> delete -> import gives back the same rootfs and snapshots (owners, modes, xattrs,
// ACLs, capabilities, hardlinks, device nodes under /dev, fifos) and config; a backup made here
// in LXD 5.0's layout (snapshots first, the rootfs shifted by 1000000 as
// volatile.last_state.idmap says) imports and starts; hostile backups are refused with the
// entry named and leave nothing behind.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <map>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

// One line per entry with everything a faithful restore keeps (as test-snapshots.cpp).
std::map<std::string, std::string>* manifest_out;
std::string manifest_root;
std::map<ino_t, std::set<std::string>>* manifest_inodes;

std::string xattrs_of(const char* path) {
    char names[8192];
    ssize_t n = ::llistxattr(path, names, sizeof names);
    std::set<std::string> out;
    for (ssize_t i = 0; i > -1 && i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
        char value[4096];
        ssize_t v = ::lgetxattr(path, names + i, value, sizeof value);
        std::string hex;
        for (ssize_t k = 0; k < v; k++) {
            char b[3];
            std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(value[k]));
            hex += b;
        }
        out.insert(std::string(names + i) + "=" + hex);
    }
    std::string joined;
    for (auto& x : out)
        joined += x + ";";
    return joined;
}

int manifest_entry(const char* path, const struct stat* st, int, struct FTW*) {
    std::string rel = std::string(path).substr(manifest_root.size());
    std::ostringstream line;
    line << std::oct << st->st_mode << std::dec << " " << st->st_uid << ":" << st->st_gid;
    if (S_ISREG(st->st_mode)) {
        line << " size=" << st->st_size << " data=" << std::hash<std::string>{}(read_text(path));
        (*manifest_inodes)[st->st_ino].insert(rel);
    } else if (S_ISLNK(st->st_mode)) {
        char target[4096];
        ssize_t n = ::readlink(path, target, sizeof target);
        line << " -> " << std::string(target, n > 0 ? static_cast<size_t>(n) : 0);
    } else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
        line << " dev=" << major(st->st_rdev) << "," << minor(st->st_rdev);
    }
    if (S_ISREG(st->st_mode))
        line << " mtime=" << st->st_mtim.tv_sec;
    line << " xattrs=" << xattrs_of(path);
    (*manifest_out)[rel] = line.str();
    return 0;
}

std::map<std::string, std::string> manifest(const std::string& root) {
    std::map<std::string, std::string> out;
    std::map<ino_t, std::set<std::string>> inodes;
    manifest_out = &out;
    manifest_inodes = &inodes;
    manifest_root = root;
    ::nftw(root.c_str(), manifest_entry, 64, FTW_PHYS | FTW_MOUNT);
    for (auto& [ino, names] : inodes)
        for (auto& n : names)
            out[n] += " links=" + *names.begin();
    return out;
}

std::string diff(const std::map<std::string, std::string>& a,
                 const std::map<std::string, std::string>& b) {
    std::string out;
    int shown = 0;
    for (auto& [k, v] : a) {
        auto it = b.find(k);
        if (it == b.end() || it->second != v) {
            out += "\n  " + k + ": " + v + "\n   vs " + (it == b.end() ? "(missing)" : it->second);
            if (++shown > 8)
                return out;
        }
    }
    for (auto& [k, v] : b)
        if (!a.count(k)) {
            out += "\n  " + k + ": (missing) vs " + v;
            if (++shown > 8)
                return out;
        }
    return out;
}

// An ACL in the kernel's xattr format: user::rwx user:1234:r-x group::r-x mask::r-x other::---.
std::string acl_value() {
    struct Entry {
        uint16_t tag, perm;
        uint32_t id;
    };
    const Entry entries[] = {{0x01, 7, UINT32_MAX},
                             {0x02, 5, 1234},
                             {0x04, 5, UINT32_MAX},
                             {0x10, 5, UINT32_MAX},
                             {0x20, 0, UINT32_MAX}};
    uint32_t version = 2;
    std::string v(reinterpret_cast<const char*>(&version), sizeof version);
    v.append(reinterpret_cast<const char*>(entries), sizeof entries);
    return v;
}

// Every kind of entry a backup can get wrong, below `rootfs`/fixture and `rootfs`/dev.
void populate(const std::string& rootfs, const std::string& state) {
    std::string f = rootfs + "/fixture";
    ASSERT_EQ(mkdir_p(f + "/dir/sub", 0755), 0);
    write_file_atomic(f + "/plain", "plain file\n", 0644);
    ASSERT_EQ(::chown((f + "/plain").c_str(), 1000, 1000), 0);
    write_file_atomic(f + "/setuid", "#!/bin/sh\n", 0755);
    ASSERT_EQ(::chmod((f + "/setuid").c_str(), 04755), 0);
    write_file_atomic(f + "/dir/sub/deep", "deep\n", 0600);
    ASSERT_EQ(::chown((f + "/dir").c_str(), 1001, 1002), 0);
    ASSERT_EQ(::setxattr((f + "/plain").c_str(), "user.lodge-test", "value", 5, 0), 0);
    std::string acl = acl_value();
    ASSERT_EQ(
        ::setxattr((f + "/dir").c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0), 0)
        << std::strerror(errno);
    const unsigned char cap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    write_file_atomic(f + "/capable", "cap\n", 0755);
    ASSERT_EQ(::setxattr((f + "/capable").c_str(), "security.capability", cap, sizeof cap, 0), 0)
        << std::strerror(errno);
    ASSERT_EQ(::link((f + "/plain").c_str(), (f + "/dir/hardlink").c_str()), 0);
    ASSERT_EQ(::symlink("../plain", (f + "/dir/symlink").c_str()), 0);
    ASSERT_EQ(::lchown((f + "/dir/symlink").c_str(), 1003, 1003), 0);
    ASSERT_EQ(mkdir_p(rootfs + "/dev", 0755), 0);
    ::unlink((rootfs + "/dev/lodge-null").c_str());
    ASSERT_EQ(::mknod((rootfs + "/dev/lodge-null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ::unlink((rootfs + "/dev/lodge-loop").c_str());
    ASSERT_EQ(::mknod((rootfs + "/dev/lodge-loop").c_str(), S_IFBLK | 0660, makedev(7, 200)), 0);
    ASSERT_EQ(::mkfifo((f + "/fifo").c_str(), 0640), 0);
    write_file_atomic(rootfs + "/state", state + "\n", 0644);
}

class Backup : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        state_dir = TestRoot::get().dir + "/state";
        work = TestRoot::get().dir + "/" + unique_name("backup");
        ASSERT_EQ(mkdir_p(work, 0700), 0);
        bus = std::make_unique<PrivateBus>();
        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
    }
    void TearDown() override {
        for (auto& n : created)
            ctl("delete --force " + n);
        daemon.reset();
        bus.reset();
        sh("rm -rf " + work);
    }
    std::string make(const std::string& base) {
        std::string n = unique_name(base);
        created.push_back(n);
        int st = -1;
        EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
        return n;
    }
    std::string cdir(const std::string& n) { return state_dir + "/containers/" + n; }
    std::string rootfs(const std::string& n) { return cdir(n) + "/rootfs"; }
    std::string get(const std::string& n, const std::string& key) {
        std::string v = ctl("config get " + n + " " + key);
        while (!v.empty() && v.back() == '\n')
            v.pop_back();
        return v;
    }
    // What is left of failed imports: hidden work dirs next to the containers.
    std::vector<std::string> hidden() {
        std::vector<std::string> out;
        if (DIR* d = ::opendir((state_dir + "/containers").c_str())) {
            while (dirent* e = ::readdir(d))
                if (e->d_name[0] == '.' && std::strcmp(e->d_name, ".") != 0 &&
                    std::strcmp(e->d_name, "..") != 0)
                    out.push_back(e->d_name);
            ::closedir(d);
        }
        return out;
    }
    // The config as `config show --json` gives it, without the keys a new instance gets anew.
    nlohmann::json config_of(const std::string& n) {
        auto j = nlohmann::json::parse(ctl("config show " + n + " --json"), nullptr, false);
        if (j.is_object())
            j.erase("volatile.cloud-init.instance-id"); // a new instance: cloud-init runs anew
        return j;
    }
    std::string state_dir, work;
    std::unique_ptr<PrivateBus> bus;
    std::unique_ptr<Lodged> daemon;
    std::vector<std::string> created;
};

TEST_F(Backup, ExportDeleteImportGivesBackTheSameContainer) {
    std::string n = make("bk");
    populate(rootfs(n), "snap");
    int st = -1;
    ASSERT_EQ(ctl("config set " + n + " user.state=A limits.memory=256MB", &st), "") << st;
    ASSERT_EQ(ctl("device add " + n + " data type=disk source=/tmp path=/mnt", &st), "");
    std::string out = ctl("snapshot create " + n + " s1", &st);
    ASSERT_EQ(st, 0) << out;
    write_file_atomic(rootfs(n) + "/state", "now\n", 0644);
    write_file_atomic(rootfs(n) + "/fixture/new", "new\n", 0600);
    ctl("config set " + n + " user.state=B");
    auto before = manifest(rootfs(n));
    auto snap_before = manifest(cdir(n) + "/snapshots/s1/rootfs");
    ASSERT_GT(before.size(), 10u);
    auto config_before = config_of(n);
    ASSERT_TRUE(config_before.is_object());
    std::string devices_before = ctl("device list " + n + " --json");
    ASSERT_TRUE(contains(devices_before, "/mnt")) << devices_before;

    std::string file = work + "/bk.tar.gz";
    out = ctl("export " + n + " " + file, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, "Backup of " + n + " written to " + file + "\n");
    // LXD's layout, index first, and ids as the container sees them.
    std::string listing = sh("tar -tzvf " + file + " --numeric-owner");
    EXPECT_EQ(sh("tar -tzf " + file + " | head -2"),
              "backup/index.yaml\nbackup/container/backup.yaml\n");
    EXPECT_TRUE(contains(listing, " 1000/1000 ")) << listing.substr(0, 2000);
    EXPECT_TRUE(contains(sh("tar -tzf " + file), "backup/snapshots/s1/rootfs/state\n"));
    std::string index = sh("tar -xzOf " + file + " backup/index.yaml");
    EXPECT_TRUE(contains(index, "\"name\": \"" + n + "\"")) << index;
    EXPECT_TRUE(contains(index, "\"snapshots\":\n- \"s1\"")) << index;
    EXPECT_EQ(sh("stat -c %a " + file), "600\n");
    EXPECT_EQ(sh("ls -A " + work), "bk.tar.gz\n"); // no temporary file left next to it

    ASSERT_EQ(ctl("delete " + n, &st), "");
    out = ctl("import " + file, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(out, "Imported container " + n + "\n");
    auto after = manifest(rootfs(n));
    EXPECT_TRUE(after == before) << "the imported rootfs differs:" << diff(before, after);
    auto snap_after = manifest(cdir(n) + "/snapshots/s1/rootfs");
    EXPECT_TRUE(snap_after == snap_before)
        << "the snapshot differs:" << diff(snap_before, snap_after);
    EXPECT_EQ(config_of(n), config_before);
    EXPECT_EQ(ctl("device list " + n + " --json"), devices_before);
    EXPECT_EQ(ctl("snapshot list " + n + " -q"), "s1\n");
    auto shown = nlohmann::json::parse(ctl("snapshot show " + n + " s1 --json"), nullptr, false);
    ASSERT_TRUE(shown.is_object());
    EXPECT_EQ(shown["config"].value("user.state", ""), "A");

    // The imported container runs, and its snapshot restores.
    ASSERT_EQ(ctl("start " + n, &st), "") << st;
    EXPECT_EQ(ctl("exec " + n + " -- cat /state"), "now\n");
    EXPECT_EQ(ctl("exec " + n + " -- stat -c %u:%g /fixture/plain"), "1000:1000\n");
    ASSERT_EQ(ctl("stop --force " + n, &st), "");
    ASSERT_EQ(ctl("restore " + n + " s1", &st), "") << st;
    EXPECT_EQ(read_text(rootfs(n) + "/state"), "snap\n");

    // --instance-only, xz, and under another name next to the first.
    std::string file2 = work + "/only.tar.xz";
    out = ctl("export " + n + " " + file2 + " --instance-only --compression xz", &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_FALSE(contains(sh("tar -tJf " + file2), "backup/snapshots/"));
    std::string n2 = unique_name("bk2");
    created.push_back(n2);
    out = ctl("import " + file2 + " " + n2, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_EQ(ctl("snapshot list " + n2 + " -q"), "");
    EXPECT_EQ(get(n2, "user.state"), "A");
    // A name that is taken is refused before anything is read.
    out = ctl("import " + file2 + " " + n2, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "already exists")) << out;

    // A running container is not exported; nor is one over an existing directory left behind.
    ASSERT_EQ(ctl("start " + n2, &st), "");
    out = ctl("export " + n2 + " " + work + "/running.tar.gz", &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "running")) << out;
    EXPECT_FALSE(exists(work + "/running.tar.gz"));
    EXPECT_TRUE(wait_until([&] { return hidden().empty(); }));
}

// A backup as LXD 5.0 writes it for an unprivileged container on a dir pool of a host without
// idmapped mounts: index.yaml, snapshots before the container, ids shifted by 1000000, config
// full of LXD's volatile state, the root disk and the profile's devices.
// An export reads the container: a restore or a snapshot delete meanwhile would swap files
// under the worker and the caller would get a mixed backup. The export writes into a pipe the
// test does not read yet, so the worker is provably mid-export.
TEST_F(Backup, RestoreAndSnapshotDeleteWaitForAnExport) {
    std::string n = make("bkbusy");
    int st = -1;
    std::string out = ctl("snapshot create " + n + " s1", &st);
    ASSERT_EQ(st, 0) << out;
    // More than a pipe holds, and incompressible.
    out = sh("head -c 4M /dev/urandom > " + rootfs(n) + "/big 2>&1", &st);
    ASSERT_EQ(st, 0) << out;
    sd_bus* conn = nullptr;
    ASSERT_GE(sd_bus_open_system(&conn), 0);
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    Fd reader(pipe_fds[0]);
    Fd writer(pipe_fds[1]);
    struct Reply {
        bool done = false;
        std::string error;
    } reply;
    auto on_reply = [](sd_bus_message* m, void* userdata, sd_bus_error*) {
        auto* r = static_cast<Reply*>(userdata);
        r->done = true;
        if (const sd_bus_error* e = sd_bus_message_get_error(m))
            r->error = std::string(e->name) + ": " + (e->message ? e->message : "");
        return 0;
    };
    ASSERT_GE(sd_bus_call_method_async(conn, nullptr, "io.lodge1", "/io/lodge1",
                                       "io.lodge1.Manager", "ExportContainer", on_reply, &reply,
                                       "shbs", n.c_str(), writer.get(), 1, "gzip"),
              0);
    ASSERT_GE(sd_bus_flush(conn), 0);
    writer = Fd();
    // Data in the pipe: the worker runs (and blocks once the pipe is full).
    pollfd readable{reader.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&readable, 1, 300000), 1);

    out = ctl("restore " + n + " s1", &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "busy")) << out;
    out = ctl("snapshot delete " + n + " s1", &st);
    EXPECT_NE(st, 0) << out;
    EXPECT_TRUE(contains(out, "being snapshotted, copied, exported or restored")) << out;
    EXPECT_TRUE(exists(rootfs(n) + "/big"));

    // Read to the end: the export finishes and succeeds; then the restore goes through.
    std::string backup;
    char buf[65536];
    for (ssize_t got; (got = ::read(reader.get(), buf, sizeof buf)) != 0;) {
        if (got < 0 && errno == EINTR)
            continue;
        ASSERT_GT(got, 0) << std::strerror(errno);
        backup.append(buf, static_cast<size_t>(got));
    }
    while (!reply.done) {
        int r = sd_bus_process(conn, nullptr);
        ASSERT_GE(r, 0);
        if (r == 0) {
            ASSERT_GE(sd_bus_wait(conn, UINT64_MAX), 0);
        }
    }
    sd_bus_flush_close_unref(conn);
    EXPECT_EQ(reply.error, "");
    ASSERT_GT(backup.size(), 4u << 20);
    EXPECT_EQ(backup.substr(0, 2), "\x1f\x8b"); // gzip
    std::string file = work + "/busy.tar.gz";
    ASSERT_EQ(write_file_atomic(file, backup, 0600), 0);
    EXPECT_TRUE(contains(sh("tar -tzf " + file), "backup/container/rootfs/big\n"));
    out = ctl("restore " + n + " s1", &st);
    EXPECT_EQ(st, 0) << out;
    EXPECT_FALSE(exists(rootfs(n) + "/big"));
    out = ctl("snapshot delete " + n + " s1", &st);
    EXPECT_EQ(st, 0) << out;
}

TEST_F(Backup, AnLxdBackupImportsAndStarts) {
    std::string name = unique_name("lxdc");
    created.push_back(name);
    std::string stage = work + "/stage";
    std::string fixtures = env_path("LODGE_FIXTURES");
    std::string idmap = "[{\"Isuid\":true,\"Isgid\":false,\"Hostid\":1000000,\"Nsid\":0,"
                        "\"Maprange\":1000000000},{\"Isuid\":false,\"Isgid\":true,"
                        "\"Hostid\":1000000,\"Nsid\":0,\"Maprange\":1000000000}]";
    int st = -1;
    std::string out = sh(
        "set -e; mkdir -p " + stage + "/backup/container/templates " + stage +
            "/backup/snapshots/snap0 && bash " + fixtures + "/make-busybox-rootfs.sh " + stage +
            "/backup/container/rootfs >/dev/null && echo new > " + stage +
            "/backup/container/rootfs/root/marker && chown 1000:1000 " + stage +
            "/backup/container/rootfs/root/marker && cp -a " + stage + "/backup/container/rootfs " +
            stage + "/backup/snapshots/snap0/rootfs && echo old > " + stage +
            "/backup/snapshots/snap0/rootfs/root/marker && "
            // LXD's on-disk shift: every id + 1000000.
            "for d in container snapshots/snap0; do find " +
            stage +
            "/backup/$d/rootfs -print0 | while IFS= read -r -d '' p; do "
            "u=$(stat -c %u \"$p\"); g=$(stat -c %g \"$p\"); "
            "chown -h $((u+1000000)):$((g+1000000)) \"$p\"; done; done 2>&1",
        &st);
    ASSERT_EQ(st, 0) << out;
    std::string config = "    image.os: BusyBox\n"
                         "    user.from: lxd\n"
                         "    security.nesting: \"false\"\n"
                         "    volatile.base_image: 0123456789abcdef\n"
                         "    volatile.eth0.hwaddr: 00:16:3e:12:34:56\n"
                         "    volatile.idmap.base: \"0\"\n"
                         "    volatile.idmap.current: '" +
                         idmap +
                         "'\n"
                         "    volatile.idmap.next: '" +
                         idmap +
                         "'\n"
                         "    volatile.last_state.idmap: '" +
                         idmap +
                         "'\n"
                         "    volatile.last_state.power: STOPPED\n"
                         "    volatile.uuid: 5c1e46a2-62a4-4a77-9c0a-0fbbd4a6a3b1\n";
    std::string yaml = "container:\n"
                       "  architecture: x86_64\n"
                       "  config:\n" +
                       config +
                       "  devices:\n"
                       "    root:\n"
                       "      path: /\n"
                       "      pool: default\n"
                       "      type: disk\n"
                       "  ephemeral: false\n"
                       "  profiles:\n"
                       "  - default\n"
                       "  stateful: false\n"
                       "  description: \"\"\n"
                       "  created_at: 2023-05-01T10:20:30.123456789Z\n"
                       "  expanded_config:\n" +
                       config +
                       "  expanded_devices:\n"
                       "    eth0:\n"
                       "      name: eth0\n"
                       "      network: lxdbr0\n"
                       "      type: nic\n"
                       "    root:\n"
                       "      path: /\n"
                       "      pool: default\n"
                       "      type: disk\n"
                       "  name: " +
                       name +
                       "\n"
                       "  status: Stopped\n"
                       "  status_code: 102\n"
                       "  last_used_at: 2023-05-02T08:00:00Z\n"
                       "  location: none\n"
                       "  type: container\n"
                       "  project: default\n"
                       "snapshots:\n"
                       "- architecture: x86_64\n"
                       "  config:\n"
                       "    user.from: lxd-snapshot\n"
                       "    volatile.last_state.idmap: '" +
                       idmap +
                       "'\n"
                       "  created_at: 2023-05-02T00:00:00Z\n"
                       "  devices: {}\n"
                       "  ephemeral: false\n"
                       "  expanded_config: {}\n"
                       "  expanded_devices: {}\n"
                       "  last_used_at: 0001-01-01T00:00:00Z\n"
                       "  name: snap0\n"
                       "  profiles:\n"
                       "  - default\n"
                       "  stateful: false\n"
                       "  size: -1\n"
                       "  expires_at: 0001-01-01T00:00:00Z\n"
                       "pool:\n"
                       "  config:\n"
                       "    source: /var/lib/lxd/storage-pools/default\n"
                       "  description: \"\"\n"
                       "  name: default\n"
                       "  driver: dir\n"
                       "  used_by: []\n"
                       "  status: Created\n"
                       "  locations:\n"
                       "  - none\n"
                       "volume:\n"
                       "  config: {}\n"
                       "  description: \"\"\n"
                       "  name: " +
                       name +
                       "\n"
                       "  type: container\n"
                       "  used_by: []\n"
                       "  location: none\n"
                       "  content_type: filesystem\n"
                       "  project: default\n";
    ASSERT_EQ(write_file_atomic(stage + "/backup/container/backup.yaml", yaml, 0644), 0);
    ASSERT_EQ(write_file_atomic(stage + "/backup/container/metadata.yaml",
                                "architecture: x86_64\ncreation_date: 1682936430\n", 0644),
              0);
    ASSERT_EQ(write_file_atomic(stage + "/backup/index.yaml",
                                "name: " + name +
                                    "\nbackend: dir\npool: default\nsnapshots:\n- snap0\n"
                                    "optimized: false\noptimized_header: false\ntype: container\n",
                                0644),
              0);
    std::string file = work + "/lxd.tar.gz";
    out = sh("tar -C " + stage + " --numeric-owner --xattrs -czf " + file +
                 " backup/index.yaml backup/snapshots backup/container 2>&1",
             &st);
    ASSERT_EQ(st, 0) << out;

    out = ctl("import " + file, &st);
    ASSERT_EQ(st, 0) << out;
    EXPECT_TRUE(contains(out, "Imported container " + name + "\n")) << out;
    EXPECT_TRUE(contains(out, "profiles")) << out; // the note on LXD's profiles
    EXPECT_EQ(get(name, "user.from"), "lxd");
    EXPECT_EQ(get(name, "image.os"), "BusyBox");
    EXPECT_EQ(get(name, "volatile.base_image"), "0123456789abcdef");
    EXPECT_EQ(get(name, "volatile.uuid"), "");
    EXPECT_EQ(get(name, "volatile.last_state.idmap"), "");
    EXPECT_FALSE(contains(ctl("device list " + name), "root"));
    // Unshifted on the way in: the container's ids are on disk.
    struct stat sb {};
    ASSERT_EQ(::lstat((rootfs(name) + "/root/marker").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, 1000u);
    ASSERT_EQ(::lstat((rootfs(name) + "/bin/busybox").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, 0u);
    EXPECT_EQ(ctl("snapshot list " + name + " -q"), "snap0\n");
    ASSERT_EQ(::lstat((cdir(name) + "/snapshots/snap0/rootfs/root/marker").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, 1000u);

    ASSERT_EQ(ctl("start " + name, &st), "") << st;
    EXPECT_EQ(ctl("exec " + name + " -- cat /root/marker"), "new\n");
    EXPECT_EQ(ctl("exec " + name + " -- stat -c %u:%g /root/marker"), "1000:1000\n");
    EXPECT_EQ(ctl("exec " + name + " -- stat -c %u /bin/busybox"), "0\n");
    ASSERT_EQ(ctl("stop --force " + name, &st), "");
    ASSERT_EQ(ctl("restore " + name + " snap0", &st), "") << st;
    ASSERT_EQ(ctl("start " + name, &st), "") << st;
    EXPECT_EQ(ctl("exec " + name + " -- cat /root/marker"), "old\n");
}

// Backups that try to write outside the container, each refused with the entry named; nothing
// of them is left: no container, no work directory, nothing written outside.
TEST_F(Backup, HostileBackupsAreRefusedAndLeaveNothing) {
    std::string outside = work + "/outside";
    ASSERT_EQ(mkdir_p(outside, 0755), 0);
    std::string name = unique_name("evil");
    created.push_back(name);
    std::string script = work + "/make.py";
    ASSERT_EQ(
        write_file_atomic(
            script,
            "import io, sys, tarfile\n"
            "kind, path, name, outside = sys.argv[1:5]\n"
            "t = tarfile.open(path, 'w:gz', format=tarfile.PAX_FORMAT)\n"
            "def add(n, data=b'x', **kw):\n"
            "    i = tarfile.TarInfo(n)\n"
            "    for k, v in kw.items(): setattr(i, k, v)\n"
            "    if i.type == tarfile.REGTYPE:\n"
            "        i.size = len(data)\n"
            "        t.addfile(i, io.BytesIO(data))\n"
            "    else:\n"
            "        t.addfile(i)\n"
            "index = ('name: ' + name + '\\nbackend: dir\\npool: default\\n'\n"
            "         'optimized: false\\ntype: container\\n').encode()\n"
            "if kind == 'badname':\n"
            "    index = b'name: ../escape\\ntype: container\\n'\n"
            "if kind == 'badsnap':\n"
            "    index += b'snapshots:\\n- ../../escape\\n'\n"
            "add('backup/index.yaml', index)\n"
            "devices = b'{}'\n"
            "if kind == 'baddevice':\n"
            "    devices = (b'\\n    ../../x:\\n      type: proxy\\n      nat: \"false\"\\n'\n"
            "               b'      listen: tcp:127.0.0.1:1\\n      connect: tcp:127.0.0.1:2\\n')\n"
            "add('backup/container/backup.yaml',\n"
            "    b'container:\\n  config: {}\\n  devices: ' + devices + b'\\n')\n"
            "add('backup/container/rootfs', type=tarfile.DIRTYPE, mode=0o755)\n"
            "add('backup/container/rootfs/ok', b'fine\\n')\n"
            "if kind == 'absolute':\n"
            "    add(outside + '/absolute', b'evil\\n')\n"
            "elif kind == 'dotdot':\n"
            "    add('backup/container/rootfs/../../../../../../../..' + outside + '/dotdot')\n"
            "elif kind == 'symlink':\n"
            "    add('backup/container/rootfs/esc', type=tarfile.SYMTYPE, linkname=outside)\n"
            "    add('backup/container/rootfs/esc/through-symlink', b'evil\\n')\n"
            "elif kind == 'hardlink':\n"
            "    add('backup/container/rootfs/hl', type=tarfile.LNKTYPE,\n"
            "        linkname='backup/index.yaml')\n"
            "elif kind == 'hardlink-dotdot':\n"
            "    add('backup/container/rootfs/hl', type=tarfile.LNKTYPE,\n"
            "        linkname='backup/container/rootfs/../../../etc/shadow')\n"
            "t.close()\n",
            0644),
        0);
    struct Case {
        const char* kind;
        const char* message;
    };
    const Case cases[] = {
        {"absolute", "refusing entry '"},
        {"dotdot", "path contains '..'"},
        {"symlink", "refusing entry 'backup/container/rootfs/esc/through-symlink'"},
        {"hardlink", "is outside backup/container/rootfs"},
        {"hardlink-dotdot", "refusing entry 'backup/container/rootfs/hl'"},
        {"badname", "give a NAME"},
        {"badsnap", "refusing snapshot name '../../escape'"},
        // A device name is a file name for the proxy forwarder's record, written as root.
        {"baddevice", "Device name \"../../x\""},
    };
    for (auto& c : cases) {
        SCOPED_TRACE(c.kind);
        std::string file = work + "/" + c.kind + ".tar.gz";
        int st = -1;
        std::string out = sh("python3 " + script + " " + c.kind + " " + file + " " + name + " " +
                                 outside + " 2>&1",
                             &st);
        ASSERT_EQ(st, 0) << out;
        out = ctl("import " + file, &st);
        EXPECT_NE(st, 0) << out;
        EXPECT_TRUE(contains(out, c.message)) << out;
        EXPECT_FALSE(contains(ctl("list -q"), name));
        EXPECT_FALSE(exists(cdir(name)));
        EXPECT_EQ(sh("ls -A " + outside), "");
        EXPECT_TRUE(wait_until([&] { return hidden().empty(); })) << hidden().size();
    }
    // A backup that is not one: a plain rootfs tarball.
    int st = -1;
    std::string plain = work + "/plain.tar.gz";
    sh("tar -C " + outside + " -czf " + plain + " .");
    std::string out = ctl("import " + plain, &st);
    EXPECT_NE(st, 0);
    EXPECT_TRUE(contains(out, "no backup/index.yaml")) << out;
}

} // namespace
