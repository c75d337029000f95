// The squashfs rootfs of an LXD split image (simplestreams ftype `squashfs`, lxd.tar.xz +
// root.squashfs), unpacked by squashfs-tools' unsquashfs: a filesystem image is not a tarball,
// and unsquashfs is the well-kept reader of it (4.5.1 refuses names with "/" or "..", and
// writes through no symlink of the image). It runs as root in lodged's import worker, into
// the new container's hidden work directory, so ids, modes, times and xattrs come out as the
// image has them; what an image may not bring (import-shared.hpp: device nodes outside /dev,
// xattrs other than user.*, security.capability and ACLs) is then taken out again.
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include "common/fd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <ftw.h>
#include <set>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace lodge::daemon {
namespace {

using namespace import_detail;

// nftw() has no user pointer: the sweep's state, one sweep at a time in a worker.
struct Sweep {
    size_t root_len = 0;
    std::set<std::string> logged;
    int err = 0;
    std::string failed;
};
Sweep* sweep_state = nullptr;

int sweep_entry(const char* path, const struct stat* st, int, struct FTW*) {
    Sweep& s = *sweep_state;
    std::string rel = std::string(path).substr(std::min(s.root_len + 1, std::strlen(path)));
    if ((S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) && !keeps_device_node(rel)) {
        log_skipped_node(rel, S_ISBLK(st->st_mode), major(st->st_rdev), minor(st->st_rdev));
        if (::unlink(path) < 0) {
            s.err = errno;
            s.failed = path;
            return 1;
        }
        return 0;
    }
    char names[65536];
    ssize_t n = ::llistxattr(path, names, sizeof names);
    for (ssize_t i = 0; i >= 0 && i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
        if (keeps_xattr(names + i))
            continue;
        log_dropped_xattr(s.logged, names + i, rel);
        if (::lremovexattr(path, names + i) < 0 && errno != ENODATA) {
            s.err = errno;
            s.failed = path;
            return 1;
        }
    }
    return 0;
}

} // namespace

namespace import_detail {

bool is_squashfs(int fd) {
    char magic[4];
    off_t pos = ::lseek(fd, 0, SEEK_CUR);
    return pos >= 0 && ::pread(fd, magic, sizeof magic, pos) == sizeof magic &&
           std::memcmp(magic, "hsqs", 4) == 0;
}

int import_squashfs(int fd, const std::string& rootfs_dir, const ProgressFn& progress,
                    std::string& error) {
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return fail_errno(error, errno, "Cannot stat the squashfs rootfs");
    if (!S_ISREG(st.st_mode) || ::lseek(fd, 0, SEEK_CUR) != 0)
        return fail_invalid(error, "A squashfs rootfs must be a whole file");
    // unsquashfs opens a path: this fd, inherited without O_CLOEXEC, under /proc/self/fd.
    Fd inherited(::fcntl(fd, F_DUPFD, 10));
    if (!inherited)
        return fail_errno(error, errno, "Cannot pass the squashfs rootfs on");
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0)
        return fail_errno(error, errno, "Cannot run unsquashfs");
    Fd rd(pipefd[0]), wr(pipefd[1]);
    std::string source = "/proc/self/fd/" + std::to_string(inherited.get());
    const char* argv[] = {"unsquashfs",       "-f",           "-n",   "-st", "-d",
                          rootfs_dir.c_str(), source.c_str(), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), STDERR_FILENO);
    pid_t pid = -1;
    int r = ::posix_spawnp(&pid, "unsquashfs", &fa, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&fa);
    wr.reset();
    inherited.reset();
    if (r != 0)
        return fail_errno(error, r,
                          "Cannot run unsquashfs (Debian package squashfs-tools) for the rootfs");
    std::string messages;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (messages.size() < 65536)
            messages.append(buf, static_cast<size_t>(n));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        while (!messages.empty() && (messages.back() == '\n' || messages.back() == ' '))
            messages.pop_back();
        auto last = messages.find_last_of('\n');
        std::string why = last == std::string::npos ? messages : messages.substr(last + 1);
        return fail_invalid(error, "Cannot unpack the squashfs rootfs: unsquashfs " +
                                       (WIFEXITED(status)
                                            ? "exited with " + std::to_string(WEXITSTATUS(status))
                                            : std::string("was killed")) +
                                       (why.empty() ? "" : ": " + why));
    }
    Sweep sweep;
    sweep.root_len = rootfs_dir.size();
    sweep_state = &sweep;
    ::nftw(rootfs_dir.c_str(), sweep_entry, 64, FTW_PHYS | FTW_MOUNT);
    sweep_state = nullptr;
    if (sweep.err)
        return fail_errno(error, sweep.err, "Cannot clean " + sweep.failed);
    if (progress)
        progress(
            ImportProgress{static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_size)});
    return 0;
}

} // namespace import_detail
} // namespace lodge::daemon
