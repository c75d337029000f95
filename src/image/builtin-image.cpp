// The built-in busybox image; see builtin-image.hpp. Keep in step with
// tests/fixtures/make-busybox-rootfs.sh (test-import compares the two trees).
#include "image/builtin-image.hpp"
#include "image/import.hpp"
#include "image/import-error.hpp"

#include "common/fd.hpp"
#include "common/log.hpp"

#include <cerrno>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <set>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

// The same text as the heredocs in make-busybox-rootfs.sh.
constexpr const char inittab[] = R"(# busybox init(8) inittab for lodge tests.
# No respawn entries: init waits for signals on its own and stays quiet.
::sysinit:/etc/init.d/rcS
# SIGINT (ctrl-alt-del) -> reboot (busybox reboot sends SIGTERM to PID 1)
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/echo lodge-busybox: shutting down
)";

constexpr const char rcs[] = R"(#!/bin/sh
mkdir -p /run /tmp
echo "lodge-busybox: booted"
)";

constexpr const char passwd[] = R"(root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
)";

constexpr const char group[] = R"(root:x:0:
tty:x:5:
nogroup:x:65534:
)";

int pread_all(int fd, void* buf, size_t len, off_t off) {
    auto* p = static_cast<char*>(buf);
    while (len > 0) {
        ssize_t n = ::pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENODATA;
        p += n;
        len -= static_cast<size_t>(n);
        off += n;
    }
    return 0;
}

// Returns 1 if the ELF file has a PT_INTERP program header (dynamically linked), 0 if not,
// -EINVAL if it is not an ELF file of this machine's word size, or -errno.
template <typename Ehdr, typename Phdr> int elf_has_interp(int fd) {
    Ehdr eh;
    int r = pread_all(fd, &eh, sizeof eh, 0);
    if (r < 0)
        return r == -ENODATA ? -EINVAL : r;
    if (eh.e_phentsize != sizeof(Phdr) || eh.e_phnum == 0)
        return -EINVAL;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Phdr ph;
        r = pread_all(fd, &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof(Phdr)));
        if (r < 0)
            return r == -ENODATA ? -EINVAL : r;
        if (ph.p_type == PT_INTERP)
            return 1;
    }
    return 0;
}

int check_static_elf(int fd, const std::string& path, std::string& error) {
    unsigned char ident[EI_NIDENT];
    int r = pread_all(fd, ident, sizeof ident, 0);
    if (r < 0 && r != -ENODATA)
        return fail_errno(error, r, "Cannot read " + path);
    if (r < 0 || std::memcmp(ident, ELFMAG, SELFMAG) != 0)
        return fail_invalid(error, path + " is not an ELF executable (install busybox-static)");
    if (ident[EI_CLASS] == ELFCLASS64)
        r = elf_has_interp<Elf64_Ehdr, Elf64_Phdr>(fd);
    else if (ident[EI_CLASS] == ELFCLASS32)
        r = elf_has_interp<Elf32_Ehdr, Elf32_Phdr>(fd);
    else
        r = -EINVAL;
    if (r == -EINVAL)
        return fail_invalid(error, path + " is not a valid ELF executable");
    if (r < 0)
        return fail_errno(error, r, "Cannot read " + path);
    if (r == 1)
        return fail_invalid(error, path +
                                       " is dynamically linked; the built-in image needs a static "
                                       "busybox (install busybox-static)");
    return 0;
}

// Runs `busybox --list-full` and returns its output.
int list_applets(const std::string& busybox, std::string& out, std::string& error) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0)
        return fail_errno(error, errno, "Cannot create a pipe");
    Fd rd(pipefd[0]), wr(pipefd[1]);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), STDOUT_FILENO);
    const char* argv[] = {busybox.c_str(), "--list-full", nullptr};
    const char* envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", nullptr};
    pid_t pid;
    int r = ::posix_spawn(&pid, busybox.c_str(), &fa, nullptr, const_cast<char**>(argv),
                          const_cast<char**>(envp));
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return fail_errno(error, r, "Cannot run " + busybox + " --list-full");
    wr.reset();

    out.clear();
    char buf[16384];
    int read_err = 0;
    for (;;) {
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            read_err = errno;
            break;
        }
        if (n == 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    rd.reset();
    int status;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return fail_errno(error, errno, "Cannot wait for " + busybox);
    if (read_err)
        return fail_errno(error, read_err, "Cannot read the output of " + busybox + " --list-full");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail_invalid(error, busybox + " --list-full failed");
    return 0;
}

int make_dir(int root, const std::string& path, mode_t mode, std::string& error) {
    if (::mkdirat(root, path.c_str(), 0700) < 0 && errno != EEXIST)
        return fail_errno(error, errno, "Cannot create /" + path);
    // Explicit chmod: the result does not depend on the daemon's umask.
    if (::fchmodat(root, path.c_str(), mode, 0) < 0)
        return fail_errno(error, errno, "Cannot chmod /" + path);
    return 0;
}

int write_new_file(int root, const char* path, const char* text, mode_t mode, std::string& error) {
    Fd fd(::openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd)
        return fail_errno(error, errno, std::string("Cannot create /") + path);
    size_t len = std::strlen(text), off = 0;
    while (off < len) {
        ssize_t n = ::write(fd.get(), text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail_errno(error, errno, std::string("Cannot write /") + path);
        off += static_cast<size_t>(n);
    }
    if (::fchmod(fd.get(), mode) < 0)
        return fail_errno(error, errno, std::string("Cannot chmod /") + path);
    return 0;
}

int copy_binary(int in, int root, const char* path, std::string& error) {
    Fd out(::openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out)
        return fail_errno(error, errno, std::string("Cannot create /") + path);
    off_t off_in = 0;
    bool fallback = false;
    for (;;) {
        ssize_t n;
        if (!fallback) {
            n = ::copy_file_range(in, &off_in, out.get(), nullptr, 1 << 30, 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                          errno == EOPNOTSUPP || errno == EPERM)) {
                fallback = true;
                continue;
            }
        } else {
            char buf[65536];
            n = ::pread(in, buf, sizeof buf, off_in);
            if (n > 0) {
                for (ssize_t w = 0; w < n;) {
                    ssize_t k = ::write(out.get(), buf + w, static_cast<size_t>(n - w));
                    if (k < 0 && errno == EINTR)
                        continue;
                    if (k < 0)
                        return fail_errno(error, errno, std::string("Cannot write /") + path);
                    w += k;
                }
                off_in += n;
            }
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail_errno(error, errno, std::string("Cannot copy busybox to /") + path);
        if (n == 0)
            break;
    }
    if (::fchmod(out.get(), 0755) < 0)
        return fail_errno(error, errno, std::string("Cannot chmod /") + path);
    return 0;
}

bool valid_applet_path(const std::string& p) {
    if (p.empty() || p.front() == '/' || p.back() == '/')
        return false;
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string::npos)
            end = p.size();
        std::string comp = p.substr(start, end - start);
        if (comp.empty() || comp == "." || comp == "..")
            return false;
        start = end + 1;
    }
    return true;
}

} // namespace

int make_busybox_rootfs(const std::string& busybox, const std::string& rootfs_dir,
                        std::string& error) {
    Fd bb(::open(busybox.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!bb) {
        int err = errno;
        return fail_errno(error, err,
                          "Cannot open " + busybox +
                              (err == ENOENT ? " (install busybox-static)" : std::string()));
    }
    struct stat st;
    if (::fstat(bb.get(), &st) < 0)
        return fail_errno(error, errno, "Cannot stat " + busybox);
    if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
        return fail_invalid(error, busybox + " is not an executable file");
    int r = check_static_elf(bb.get(), busybox, error);
    if (r < 0)
        return r;

    Fd root(::open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root)
        return fail_errno(error, errno, "Cannot open " + rootfs_dir);
    if (::fchmod(root.get(), 0755) < 0)
        return fail_errno(error, errno, "Cannot chmod " + rootfs_dir);

    // mkdir -p bin sbin usr/bin usr/sbin dev mnt proc root sys run etc/init.d var/log; tmp 1777
    static const char* const dirs[] = {"bin", "sbin", "usr",        "usr/bin", "usr/sbin",
                                       "dev", "mnt",  "proc",       "root",    "sys",
                                       "run", "etc",  "etc/init.d", "var",     "var/log"};
    for (const char* d : dirs)
        if ((r = make_dir(root.get(), d, 0755, error)) < 0)
            return r;
    if ((r = make_dir(root.get(), "tmp", 01777, error)) < 0)
        return r;
    if ((r = copy_binary(bb.get(), root.get(), "bin/busybox", error)) < 0)
        return r;

    std::string list;
    if ((r = list_applets(busybox, list, error)) < 0)
        return r;
    std::set<std::string> made_dirs(std::begin(dirs), std::end(dirs));
    size_t start = 0;
    while (start < list.size()) {
        size_t end = list.find('\n', start);
        if (end == std::string::npos)
            end = list.size();
        std::string applet = list.substr(start, end - start);
        start = end + 1;
        if (applet.empty() || applet == "bin/busybox")
            continue;
        if (!valid_applet_path(applet))
            return fail_invalid(error, busybox + " --list-full printed a bad path: " + applet);
        // bin/sh -> busybox; usr/sbin/chroot -> ../../bin/busybox; linuxrc -> bin/busybox
        size_t depth = 0;
        for (size_t i = 0, slash; (slash = applet.find('/', i)) != std::string::npos;
             i = slash + 1) {
            std::string parent = applet.substr(0, slash);
            if (made_dirs.insert(parent).second &&
                (r = make_dir(root.get(), parent, 0755, error)) < 0)
                return r;
            depth++;
        }
        std::string target;
        if (depth == 1 && applet.compare(0, 4, "bin/") == 0) {
            target = "busybox";
        } else {
            for (size_t i = 0; i < depth; i++)
                target += "../";
            target += "bin/busybox";
        }
        if (::symlinkat(target.c_str(), root.get(), applet.c_str()) < 0)
            return fail_errno(error, errno, "Cannot create the symlink /" + applet);
    }

    if ((r = write_new_file(root.get(), "etc/inittab", inittab, 0644, error)) < 0 ||
        (r = write_new_file(root.get(), "etc/init.d/rcS", rcs, 0755, error)) < 0 ||
        (r = write_new_file(root.get(), "etc/passwd", passwd, 0644, error)) < 0 ||
        (r = write_new_file(root.get(), "etc/group", group, 0644, error)) < 0)
        return r;
    return 0;
}

int import_builtin(const std::string& rootfs_dir, std::string& error) {
    return make_busybox_rootfs(builtin_busybox_path, rootfs_dir, error);
}

} // namespace lodge::daemon
