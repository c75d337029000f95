#include "daemon/files.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "runtime/in-root.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon::files {
namespace {

struct Split {
    std::string parent, base;
};

// "/a/b/c" -> {"a/b", "c"}; an empty base (the root itself, ".", "..") is refused.
int split(const std::string& path, Split& out, std::string& error) {
    std::string p = path;
    while (p.size() > 1 && p.back() == '/')
        p.pop_back();
    auto slash = p.find_last_of('/');
    out.base = slash == std::string::npos ? p : p.substr(slash + 1);
    out.parent = slash == std::string::npos ? "." : p.substr(0, slash);
    if (out.parent.empty())
        out.parent = "/";
    if (out.base.empty() || out.base == "." || out.base == ".." || out.base == "/") {
        error = "Invalid path \"" + path + "\": it must name an entry below /";
        return -EINVAL;
    }
    return 0;
}

int fail(int err, const std::string& what, const std::string& path, std::string& error) {
    error = what + " " + path + ": " + std::strerror(err);
    return -err;
}

Fd open_root(const std::string& container, std::string& error) {
    Fd root(::open(paths::container_rootfs(container).c_str(),
                   O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root)
        error = "Cannot open the root of \"" + container + "\": " + std::strerror(errno);
    return root;
}

// The on-disk owner of the directories a push with -p makes.
struct Owner {
    uint32_t uid = 0, gid = 0;
};

// The missing directories of `parent` made one at a time, each step resolved inside the
// container's root (a symlink in the guest's tree leads to its target inside, never out).
// They get mode 0755 and `owner`: the container's root or the push's --uid/--gid, never the
// host's root, which a container with a shifted rootfs would see as nobody.
int make_parents(int root, const std::string& parent, const Owner& owner, Fd& out,
                 const std::string& path, std::string& error) {
    Fd dir = runtime::open_in_root(root, ".", O_PATH | O_DIRECTORY);
    if (!dir)
        return fail(errno, "Cannot open the root for", path, error);
    std::string walked;
    for (size_t pos = 0; pos < parent.size();) {
        size_t slash = parent.find('/', pos);
        std::string comp = parent.substr(pos, slash == std::string::npos ? slash : slash - pos);
        pos = slash == std::string::npos ? parent.size() : slash + 1;
        if (comp.empty() || comp == ".")
            continue;
        std::string next = walked + "/" + comp;
        Fd found = runtime::open_in_root(root, next, O_PATH | O_DIRECTORY);
        if (!found && errno == ENOENT) {
            Fd at =
                runtime::open_in_root(root, walked.empty() ? "." : walked, O_RDONLY | O_DIRECTORY);
            if (!at)
                return fail(errno, "Cannot open the directories of", path, error);
            if (::mkdirat(at.get(), comp.c_str(), 0700) == 0) {
                found.reset(::openat(at.get(), comp.c_str(),
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (found && (::fchown(found.get(), owner.uid, owner.gid) < 0 ||
                              ::fchmod(found.get(), 0755) < 0))
                    return fail(errno, "Cannot set the owner of the directories of", path, error);
            } else if (errno == EEXIST) {
                // Made meanwhile; a dangling symlink stays ENOENT.
                found = runtime::open_in_root(root, next, O_PATH | O_DIRECTORY);
            }
        }
        if (!found)
            return fail(errno, "Cannot create the directories of", path, error);
        walked = next;
        dir = std::move(found);
    }
    out = std::move(dir);
    return 0;
}

// The directory that holds `path` in the container (missing ones made, owned by `*create`,
// when `create` is set), and the entry's name in it.
int locate(const std::string& container, const std::string& path, const Owner* create, Fd& dir,
           std::string& base, std::string& error) {
    Fd root = open_root(container, error);
    if (!root)
        return -EIO;
    Split s;
    if (int r = split(path, s, error); r < 0)
        return r;
    base = s.base;
    if (create)
        return make_parents(root.get(), s.parent, *create, dir, path, error);
    dir = runtime::open_in_root(root.get(), s.parent, O_PATH | O_DIRECTORY);
    if (!dir)
        return fail(errno, "Cannot open the directory of", path, error);
    return 0;
}

Stat make_stat(const struct stat& st, const IdMap& ids) {
    Stat s;
    s.type = S_ISREG(st.st_mode)   ? "file"
             : S_ISDIR(st.st_mode) ? "directory"
             : S_ISLNK(st.st_mode) ? "symlink"
                                   : "other";
    s.mode = st.st_mode & 07777;
    s.uid = ids.from_disk(st.st_uid);
    s.gid = ids.from_disk(st.st_gid);
    s.size = static_cast<uint64_t>(st.st_size);
    return s;
}

std::string link_target(int dir, const char* name) {
    char buf[4096];
    ssize_t n = ::readlinkat(dir, name, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

int map_ids(const IdMap& ids, uint32_t uid, uint32_t gid, uint32_t& disk_uid, uint32_t& disk_gid,
            std::string& error) {
    if (ids.to_disk(uid, disk_uid) < 0 || ids.to_disk(gid, disk_gid) < 0) {
        error = "The ids " + std::to_string(uid) + ":" + std::to_string(gid) +
                " are outside the container's range of " + std::to_string(ids.size) + " ids";
        return -ERANGE;
    }
    return 0;
}

// Where a new entry `path` goes: the directory that holds it, its name there, and the ids it
// gets on disk for the container's uid:gid.
struct NewEntry {
    Fd dir;
    std::string base;
    uint32_t uid = 0, gid = 0;
};

int new_entry(const std::string& container, const IdMap& ids, const std::string& path, uint32_t uid,
              uint32_t gid, bool parents, NewEntry& out, std::string& error) {
    if (int r = map_ids(ids, uid, gid, out.uid, out.gid, error); r < 0)
        return r;
    Owner owner{out.uid, out.gid};
    return locate(container, path, parents ? &owner : nullptr, out.dir, out.base, error);
}

bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

} // namespace

IdMap IdMap::of(const ContainerConfig& c) {
    IdMap m;
    m.shift = runtime::shifted_base(paths::container_dir(c.name));
    m.size = c.privileged() ? 0 : c.idmap_size();
    return m;
}

int IdMap::to_disk(uint32_t id, uint32_t& out) const {
    if (size != 0 && id >= size)
        return -ERANGE;
    out = id + shift;
    return 0;
}

uint32_t IdMap::from_disk(uint32_t id) const {
    return id >= shift ? id - shift : id;
}

int stat(const std::string& container, const IdMap& ids, const std::string& path, Stat& out,
         std::string& error) {
    struct stat st {};
    if (path.find_first_not_of('/') == std::string::npos) {
        Fd root = open_root(container, error);
        if (!root)
            return -EIO;
        if (::fstat(root.get(), &st) < 0)
            return fail(errno, "Cannot stat", path, error);
        out = make_stat(st, ids);
        return 0;
    }
    Fd dir;
    std::string base;
    if (int r = locate(container, path, nullptr, dir, base, error); r < 0)
        return r;
    if (::fstatat(dir.get(), base.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
        return fail(errno, "Cannot stat", path, error);
    out = make_stat(st, ids);
    if (S_ISLNK(st.st_mode))
        out.target = link_target(dir.get(), base.c_str());
    return 0;
}

int list(const std::string& container, const IdMap& ids, const std::string& path,
         std::vector<std::pair<std::string, Stat>>& out, std::string& error) {
    Fd root = open_root(container, error);
    if (!root)
        return -EIO;
    Fd dir = runtime::open_in_root(root.get(), path, O_RDONLY | O_DIRECTORY);
    if (!dir)
        return fail(errno, "Cannot open the directory", path, error);
    int copy = ::dup(dir.get());
    DIR* d = copy < 0 ? nullptr : ::fdopendir(copy);
    if (!d) {
        if (copy >= 0)
            ::close(copy);
        return fail(errno, "Cannot read the directory", path, error);
    }
    while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st {};
        if (::fstatat(dir.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        Stat s = make_stat(st, ids);
        if (S_ISLNK(st.st_mode))
            s.target = link_target(dir.get(), e->d_name);
        out.emplace_back(e->d_name, s);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    return 0;
}

int open_for_reading(const std::string& container, const IdMap& ids, const std::string& path,
                     Fd& out, Stat& st_out, std::string& error) {
    Fd root = open_root(container, error);
    if (!root)
        return -EIO;
    // O_PATH first: a fifo or device node in the guest's tree is never opened.
    Fd file = runtime::open_in_root(root.get(), path, O_PATH);
    if (!file)
        return fail(errno, "Cannot open", path, error);
    struct stat st {};
    if (::fstat(file.get(), &st) < 0)
        return fail(errno, "Cannot stat", path, error);
    if (!S_ISREG(st.st_mode)) {
        error = path + " is not a regular file";
        return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    }
    // The very inode the O_PATH fd names, now readable.
    out.reset(::open(("/proc/self/fd/" + std::to_string(file.get())).c_str(),
                     O_RDONLY | O_NOCTTY | O_CLOEXEC));
    if (!out)
        return fail(errno, "Cannot open", path, error);
    st_out = make_stat(st, ids);
    return 0;
}

int remove(const std::string& container, const std::string& path, std::string& error) {
    Fd dir;
    std::string base;
    if (int r = locate(container, path, nullptr, dir, base, error); r < 0)
        return r;
    if (::unlinkat(dir.get(), base.c_str(), 0) == 0)
        return 0;
    if (errno == EISDIR && ::unlinkat(dir.get(), base.c_str(), AT_REMOVEDIR) == 0)
        return 0;
    return fail(errno, "Cannot delete", path, error);
}

int make_directory(const std::string& container, const IdMap& ids, const std::string& path,
                   uint32_t uid, uint32_t gid, uint32_t mode, bool parents, std::string& error) {
    NewEntry n;
    if (int r = new_entry(container, ids, path, uid, gid, parents, n, error); r < 0)
        return r;
    if (::mkdirat(n.dir.get(), n.base.c_str(), 0700) < 0 && errno != EEXIST)
        return fail(errno, "Cannot create the directory", path, error);
    Fd made(::openat(n.dir.get(), n.base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!made)
        return fail(errno, "Cannot open the directory", path, error);
    if (::fchown(made.get(), n.uid, n.gid) < 0 || ::fchmod(made.get(), mode & 07777) < 0)
        return fail(errno, "Cannot set the owner and mode of", path, error);
    return 0;
}

int make_symlink(const std::string& container, const IdMap& ids, const std::string& path,
                 const std::string& target, uint32_t uid, uint32_t gid, bool parents,
                 std::string& error) {
    NewEntry n;
    if (int r = new_entry(container, ids, path, uid, gid, parents, n, error); r < 0)
        return r;
    if (::symlinkat(target.c_str(), n.dir.get(), n.base.c_str()) < 0)
        return fail(errno, "Cannot create the symlink", path, error);
    if (::fchownat(n.dir.get(), n.base.c_str(), n.uid, n.gid, AT_SYMLINK_NOFOLLOW) < 0)
        return fail(errno, "Cannot set the owner of", path, error);
    return 0;
}

int write_file(const std::string& container, const IdMap& ids, const std::string& path, int source,
               uint32_t uid, uint32_t gid, uint32_t mode, bool parents,
               const std::function<void(uint64_t)>& progress, std::string& error) {
    NewEntry n;
    if (int r = new_entry(container, ids, path, uid, gid, parents, n, error); r < 0)
        return r;
    // Written under a temporary name next to it, then renamed over: readers in the guest see
    // the old file or the whole new one, and a link the guest put there is replaced, never
    // written through.
    uint64_t random = 0;
    ::getrandom(&random, sizeof random, 0);
    std::string tmp = ".lodge-push-" + std::to_string(random);
    Fd file(::openat(n.dir.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     0600));
    if (!file)
        return fail(errno, "Cannot create", path, error);
    auto drop = [&](int r) {
        ::unlinkat(n.dir.get(), tmp.c_str(), 0);
        return r;
    };
    std::vector<char> buf(1 << 20);
    uint64_t done = 0, reported = 0;
    for (;;) {
        ssize_t n = ::read(source, buf.data(), buf.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return drop(fail(errno, "Cannot read the data for", path, error));
        if (n == 0)
            break;
        if (!write_all(file.get(), buf.data(), static_cast<size_t>(n)))
            return drop(fail(errno, "Cannot write", path, error));
        done += static_cast<uint64_t>(n);
        if (progress && done - reported >= (16u << 20)) {
            progress(done);
            reported = done;
        }
    }
    // chown clears setuid/setgid: the mode comes after it.
    if (::fchown(file.get(), n.uid, n.gid) < 0 || ::fchmod(file.get(), mode & 07777) < 0)
        return drop(fail(errno, "Cannot set the owner and mode of", path, error));
    if (::renameat(n.dir.get(), tmp.c_str(), n.dir.get(), n.base.c_str()) < 0)
        return drop(fail(errno, "Cannot put in place", path, error));
    return 0;
}

} // namespace lodge::daemon::files
