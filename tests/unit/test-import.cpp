// Rootfs sources (CONTRACT.md §3): built-in busybox image, directory copy, plain tarballs, LXD
// unified and split images, hostile tarballs. Runs as root (ownership, mknod, xattrs).
#include "import-fixture.hpp"

using namespace lodge;
using namespace lodge::daemon;
using namespace lodge::import_test;

namespace {

// ---- built-in image ----

TEST_F(Import, BuiltinLayout) {
    if (!exists(builtin_busybox_path))
        GTEST_SKIP() << "no /bin/busybox (busybox-static)";
    ASSERT_EQ(import_builtin(rootfs, error), 0) << error;

    EXPECT_EQ(link_target(rootfs + "/sbin/init"), "../bin/busybox");
    EXPECT_EQ(link_target(rootfs + "/bin/sh"), "busybox");
    EXPECT_EQ(link_target(rootfs + "/usr/sbin/chroot"), "../../bin/busybox");
    EXPECT_EQ(link_target(rootfs + "/sbin/reboot"), "../bin/busybox");
    struct stat bb = lst(rootfs + "/bin/busybox"), host = lst(builtin_busybox_path);
    EXPECT_TRUE(S_ISREG(bb.st_mode));
    EXPECT_EQ(bb.st_mode & 07777, 0755u);
    EXPECT_EQ(bb.st_size, host.st_size);
    EXPECT_EQ(lst(rootfs + "/tmp").st_mode & 07777, 01777u);
    for (const char* d : {"dev", "mnt", "proc", "root", "sys", "run", "var/log", "etc/init.d"})
        EXPECT_TRUE(S_ISDIR(lst(rootfs + "/" + d).st_mode)) << d;
    std::string inittab = slurp(rootfs + "/etc/inittab");
    EXPECT_NE(inittab.find("::sysinit:/etc/init.d/rcS\n"), std::string::npos);
    EXPECT_NE(inittab.find("::ctrlaltdel:/sbin/reboot\n"), std::string::npos);
    EXPECT_EQ(lst(rootfs + "/etc/init.d/rcS").st_mode & 07777, 0755u);
    EXPECT_EQ(slurp(rootfs + "/etc/passwd").rfind("root:x:0:0:", 0), 0u);
    EXPECT_EQ(lst(rootfs).st_mode & 07777, 0755u);

    // The image stays cheap to make (it was a < 0.3 s timing check, which a loaded machine
    // broke): one copy of busybox, everything else links and a few small text files.
    static off_t regular_bytes;
    static int busybox_copies;
    regular_bytes = 0;
    busybox_copies = 0;
    ASSERT_EQ(::nftw(
                  rootfs.c_str(),
                  [](const char*, const struct stat* st, int type, struct FTW*) {
                      if (type == FTW_F && S_ISREG(st->st_mode)) {
                          regular_bytes += st->st_size;
                          busybox_copies += st->st_size == lst(builtin_busybox_path).st_size;
                      }
                      return 0;
                  },
                  16, FTW_PHYS),
              0);
    EXPECT_EQ(busybox_copies, 1);
    EXPECT_LT(regular_bytes, host.st_size + 64 * 1024);
}

// Walks a tree into "path type mode target-or-content" lines, sorted by readdir order-free path.
void describe(const std::string& root, const std::string& rel,
              std::map<std::string, std::string>& out) {
    std::string p = rel.empty() ? root : root + "/" + rel;
    struct stat st = lst(p);
    char head[64];
    std::snprintf(head, sizeof head, "%o %u:%u ", st.st_mode, st.st_uid, st.st_gid);
    std::string desc = head;
    if (S_ISLNK(st.st_mode))
        desc += "-> " + link_target(p);
    else if (S_ISREG(st.st_mode))
        desc += slurp(p);
    out[rel] = desc;
    if (!S_ISDIR(st.st_mode))
        return;
    DIR* d = ::opendir(p.c_str());
    ASSERT_NE(d, nullptr);
    while (struct dirent* de = ::readdir(d)) {
        if (std::strcmp(de->d_name, ".") && std::strcmp(de->d_name, ".."))
            describe(root, rel.empty() ? de->d_name : rel + "/" + de->d_name, out);
    }
    ::closedir(d);
}

TEST_F(Import, BuiltinMatchesScript) {
    const char* fixtures = std::getenv("LODGE_FIXTURES");
    if (!fixtures || !exists(builtin_busybox_path))
        GTEST_SKIP() << "needs LODGE_FIXTURES and /bin/busybox";
    std::string script_dir = tmp / "script";
    ASSERT_EQ(sh(std::string(fixtures) + "/make-busybox-rootfs.sh " + script_dir), 0);
    ASSERT_EQ(import_builtin(rootfs, error), 0) << error;
    std::map<std::string, std::string> a, b;
    describe(script_dir, "", a);
    describe(rootfs, "", b);
    EXPECT_EQ(a.size(), b.size());
    for (auto& [path, desc] : a) {
        auto it = b.find(path);
        if (it == b.end())
            ADD_FAILURE() << "missing " << path;
        else
            EXPECT_EQ(it->second, desc) << path;
    }
    for (auto& [path, desc] : b)
        EXPECT_TRUE(a.count(path)) << "extra " << path;
}

TEST_F(Import, BuiltinRefusesBadBusybox) {
    EXPECT_EQ(make_busybox_rootfs("/bin/ls", rootfs, error), -EINVAL);
    EXPECT_NE(error.find("dynamically linked"), std::string::npos) << error;
    EXPECT_EQ(make_busybox_rootfs("/etc/passwd", rootfs, error), -EINVAL);
    EXPECT_NE(error.find("/etc/passwd"), std::string::npos) << error;
    EXPECT_EQ(make_busybox_rootfs(tmp / "no-busybox", rootfs, error), -ENOENT);
    EXPECT_NE(error.find("no-busybox"), std::string::npos) << error;
}

// ---- directory ----

TEST_F(Import, DirectoryKeepsEverything) {
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    make_source_tree(src, true);
    ASSERT_EQ(::lsetxattr((src + "/abs-link").c_str(), "trusted.lodge", "sym", 3, 0), 0);
    // A 16 MiB sparse file with data at both ends.
    {
        int fd = ::open((src + "/usr/lib/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, "head", 4, 0), 4);
        ASSERT_EQ(::pwrite(fd, "tail", 4, (16 << 20) - 4), 4);
        ::close(fd);
    }
    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::vector<ImportProgress> progress;
    int r = import_directory(
        fd, rootfs, [&](const ImportProgress& p) { progress.push_back(p); }, error);
    ::close(fd);
    ASSERT_EQ(r, 0) << error;
    check_imported_tree(rootfs, true);
    EXPECT_EQ(get_xattr(rootfs + "/abs-link", "trusted.lodge"), "<No data available>")
        << "trusted.* is the host's, not the image's";
    EXPECT_FALSE(exists(rootfs + "/run/sock")) << "sockets are skipped";

    struct stat sp = lst(rootfs + "/usr/lib/sparse");
    EXPECT_EQ(sp.st_size, 16 << 20);
    EXPECT_LT(sp.st_blocks * 512, 1 << 20) << "holes not kept";
    std::string data = slurp(rootfs + "/usr/lib/sparse");
    EXPECT_EQ(data.substr(0, 4), "head");
    EXPECT_EQ(data.substr(data.size() - 4), "tail");

    ASSERT_FALSE(progress.empty());
    EXPECT_GT(progress.back().bytes_total, uint64_t(16) << 20);
    EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
}

TEST_F(Import, DirectoryDoesNotCrossMounts) {
    // A private mount namespace for this process, so the test mounts never leak.
    if (::unshare(CLONE_NEWNS) < 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr))
        GTEST_SKIP() << "cannot make a mount namespace: " << std::strerror(errno);
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/mnt").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/bound").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((src + "/elsewhere").c_str(), 0755), 0);
    spit(src + "/elsewhere/file", "x");
    spit(src + "/keep", "keep");
    spit(src + "/file-target", "under");
    ASSERT_EQ(::mount("tmpfs", (src + "/mnt").c_str(), "tmpfs", 0, "mode=0711"), 0);
    spit(src + "/mnt/inside", "must not be copied");
    // Bind mounts of the same filesystem have the same st_dev: still not entered.
    ASSERT_EQ(
        ::mount((src + "/elsewhere").c_str(), (src + "/bound").c_str(), nullptr, MS_BIND, nullptr),
        0);
    ASSERT_EQ(
        ::mount((src + "/keep").c_str(), (src + "/file-target").c_str(), nullptr, MS_BIND, nullptr),
        0);

    int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    int r = import_directory(fd, rootfs, nullptr, error);
    ::close(fd);
    ::umount2((src + "/file-target").c_str(), MNT_DETACH);
    ::umount2((src + "/bound").c_str(), MNT_DETACH);
    ::umount2((src + "/mnt").c_str(), MNT_DETACH);
    ASSERT_EQ(r, 0) << error;
    EXPECT_TRUE(S_ISDIR(lst(rootfs + "/mnt").st_mode));
    EXPECT_FALSE(exists(rootfs + "/mnt/inside"));
    EXPECT_TRUE(S_ISDIR(lst(rootfs + "/bound").st_mode));
    EXPECT_FALSE(exists(rootfs + "/bound/file"));
    EXPECT_EQ(slurp(rootfs + "/elsewhere/file"), "x");
    EXPECT_EQ(slurp(rootfs + "/keep"), "keep");
    EXPECT_FALSE(exists(rootfs + "/file-target")) << "a file mount point is skipped";
}

// ---- plain tarballs ----

TEST_F(Import, PlainTarballs) {
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    make_source_tree(src, false);
    struct Kind {
        const char* ext;
        const char* flag;
    };
    for (Kind k :
         {Kind{"tar", ""}, Kind{"tar.gz", "-z"}, Kind{"tar.xz", "-J"}, Kind{"tar.zst", "--zstd"}}) {
        SCOPED_TRACE(k.ext);
        std::string tarball = tmp / (std::string("root.") + k.ext);
        ASSERT_EQ(sh(std::string("tar --numeric-owner --xattrs --xattrs-include='*' ") + k.flag +
                     " -C " + src + " -cf " + tarball + " ."),
                  0);
        std::string dest = tmp / (std::string("dest-") + k.ext);
        ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
        ImportResult res;
        std::vector<ImportProgress> progress;
        ASSERT_EQ(import_file(tarball, dest, res, error, false, &progress), 0) << error;
        check_imported_tree(dest, false);
        EXPECT_TRUE(res.image_keys.empty());
        ASSERT_FALSE(progress.empty());
        EXPECT_EQ(progress.back().bytes_total, static_cast<uint64_t>(lst(tarball).st_size));
        EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
    }
    // Through a pipe: no total, same result.
    std::string dest = tmp / "dest-pipe";
    ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
    ImportResult res;
    std::vector<ImportProgress> progress;
    ASSERT_EQ(import_file(tmp / "root.tar.zst", dest, res, error, true, &progress), 0) << error;
    check_imported_tree(dest, false);
    ASSERT_FALSE(progress.empty());
    EXPECT_EQ(progress.back().bytes_total, 0u);
    EXPECT_GT(progress.back().bytes_done, 0u);
}

// A plain rootfs whose top directory happens to be called rootfs/ (no metadata.yaml) stays as is.
TEST_F(Import, RootfsDirWithoutMetadataIsPlain) {
    std::string tarball = tmp / "x.tar";
    write_tar(tarball, {dir("rootfs/"), file("rootfs/file", "data")});
    ImportResult res;
    ASSERT_EQ(import_file(tarball, rootfs, res, error), 0) << error;
    EXPECT_EQ(slurp(rootfs + "/rootfs/file"), "data");
    EXPECT_TRUE(res.image_keys.empty());
}

// ---- LXD images ----

TEST_F(Import, UnifiedImage) {
    std::string img = tmp / "img";
    make_image_dir(img);
    // rootfs/ listed before metadata.yaml, and after it.
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + " -cf " +
                 tmp / "rootfs-first.tar rootfs metadata.yaml templates"),
              0);
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + " -czf " +
                 tmp / "meta-first.tar.gz ./metadata.yaml ./templates ./rootfs"),
              0);
    int n = 0;
    for (const char* name : {"rootfs-first.tar", "meta-first.tar.gz"}) {
        for (bool pipe : {false, true}) {
            SCOPED_TRACE(std::string(name) + (pipe ? " via pipe" : ""));
            std::string dest = tmp / ("dest" + std::to_string(n++));
            ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
            ImportResult res;
            ASSERT_EQ(import_file(tmp / name, dest, res, error, pipe), 0) << error;
            check_image_keys(res);
            check_unified_rootfs(dest);
            EXPECT_EQ(lst(dest).st_mode & 07777, 0755u) << "rootfs/ entry's mode";
        }
    }
}

TEST_F(Import, SplitImage) {
    std::string img = tmp / "img";
    make_image_dir(img);
    ASSERT_EQ(sh("tar -C " + img + " -cJf " + tmp / "meta.tar.xz metadata.yaml templates"), 0);
    ASSERT_EQ(sh("tar --numeric-owner -C " + img + "/rootfs -czf " + tmp / "rootfs.tar.gz ."), 0);
    int mfd = open_ro(tmp / "meta.tar.xz"), rfd = open_ro(tmp / "rootfs.tar.gz");
    ASSERT_GE(mfd, 0);
    ASSERT_GE(rfd, 0);
    ImportResult res;
    std::vector<ImportProgress> progress;
    int r = import_split_image(
        mfd, rfd, rootfs, res, [&](const ImportProgress& p) { progress.push_back(p); }, error);
    ASSERT_EQ(r, 0) << error;
    check_image_keys(res);
    check_unified_rootfs(rootfs);
    ASSERT_FALSE(progress.empty());
    uint64_t total = lst(tmp / "meta.tar.xz").st_size + lst(tmp / "rootfs.tar.gz").st_size;
    EXPECT_EQ(progress.back().bytes_total, total);
    EXPECT_EQ(progress.back().bytes_done, total);

    // Swapped: the "metadata tarball" has no metadata.yaml.
    std::string dest = tmp / "swapped";
    ASSERT_EQ(::mkdir(dest.c_str(), 0700), 0);
    ASSERT_EQ(::lseek(mfd, 0, SEEK_SET), 0);
    ASSERT_EQ(::lseek(rfd, 0, SEEK_SET), 0);
    ImportResult res2;
    EXPECT_EQ(import_split_image(rfd, mfd, dest, res2, nullptr, error), -EINVAL);
    EXPECT_NE(error.find("no metadata.yaml"), std::string::npos) << error;
    ::close(mfd);
    ::close(rfd);
}

TEST_F(Import, BadMetadataYaml) {
    std::string tarball = tmp / "bad.tar";
    write_tar(tarball, {file("metadata.yaml", "properties: [unclosed\n  - x: {"), dir("rootfs/"),
                        file("rootfs/file", "x")});
    ImportResult res;
    EXPECT_EQ(import_file(tarball, rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("metadata.yaml"), std::string::npos) << error;
}

// ---- corrupt data ----

TEST_F(Import, CorruptData) {
    std::string junk = tmp / "junk.tar";
    std::string bytes(100000, '\0');
    for (size_t i = 0; i < bytes.size(); i++)
        bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
    spit(junk, bytes);
    ImportResult res;
    EXPECT_EQ(import_file(junk, rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("tarball"), std::string::npos) << error;

    // A gzip tarball cut in the middle of a file's data.
    std::string src = tmp / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    std::string big;
    for (int i = 0; i < 200000; i++)
        big += std::to_string(i * 7919) + "\n";
    spit(src + "/big", big);
    ASSERT_EQ(sh("tar -C " + src + " -czf " + tmp / "t.tar.gz ."), 0);
    std::string gz = slurp(tmp / "t.tar.gz");
    spit(tmp / "cut.tar.gz", gz.substr(0, gz.size() / 2));
    std::string dest = tmp / "dest-cut";
    ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
    EXPECT_EQ(import_file(tmp / "cut.tar.gz", dest, res, error), -EINVAL);
    EXPECT_NE(error.find("big"), std::string::npos) << error;

    // A squashfs image is named as such.
    spit(tmp / "rootfs.squashfs", std::string("hsqs") + std::string(4092, '\0'));
    EXPECT_EQ(import_file(tmp / "rootfs.squashfs", rootfs, res, error), -EINVAL);
    EXPECT_NE(error.find("squashfs"), std::string::npos) << error;

    // Empty input.
    spit(tmp / "empty.tar", "");
    EXPECT_EQ(import_file(tmp / "empty.tar", rootfs, res, error), -EINVAL);
    EXPECT_FALSE(error.empty());
}

// Timing on a real rootfs tarball (LODGE_IMPORT_BENCH=1; uses the integration tests' cached
// Debian image).
TEST_F(Import, BenchDebianTarball) {
    const char* path = "/var/cache/lodge-tests/debian-bookworm.tar.zst";
    if (!std::getenv("LODGE_IMPORT_BENCH") || !exists(path))
        GTEST_SKIP() << "set LODGE_IMPORT_BENCH=1 (needs " << path << ")";
    ImportResult res;
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(import_file(path, rootfs, res, error), 0) << error;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("import_tarball(%s): %.2f s\n", path, secs);
    EXPECT_TRUE(exists(rootfs + "/etc/os-release"));
    std::string copy = tmp / "copy";
    ASSERT_EQ(::mkdir(copy.c_str(), 0755), 0);
    int fd = ::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(import_directory(fd, copy, nullptr, error), 0) << error;
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ::close(fd);
    std::printf("import_directory(that rootfs): %.2f s\n", secs);
}

} // namespace
