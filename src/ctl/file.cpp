// lodgectl file push|pull|delete|edit: files in and out of a container. lodgectl opens the
// local files and passes their fds; lodged resolves every container path inside the
// container's root, pushes in a worker and hands back read-only fds for pulls.
#include "ctl/bus.hpp"
#include "ctl/editor.hpp"
#include "ctl/instance.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::ctl {
namespace {

struct Target {
    std::string name, path;
};

// "NAME/PATH" -> {NAME, /PATH}.
bool parse_target(const std::string& arg, Target& out) {
    auto slash = arg.find('/');
    if (slash == std::string::npos || slash == 0)
        return false;
    out.name = arg.substr(0, slash);
    out.path = arg.substr(slash);
    return true;
}

std::string base_name(std::string p) {
    while (p.size() > 1 && p.back() == '/')
        p.pop_back();
    auto slash = p.find_last_of('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

struct RemoteStat {
    std::string type, target;
    uint32_t mode = 0, uid = 0, gid = 0;
    uint64_t size = 0;
};

// 1: exists, 0: does not, <0: error (printed).
int remote_stat(sd_bus* bus, const Target& t, RemoteStat& out) {
    BusError err;
    MessagePtr reply;
    int r =
        call_manager(bus, err, &reply, "StatContainerFile", "ss", t.name.c_str(), t.path.c_str());
    if (r < 0) {
        if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_FILE_NOT_FOUND))
            return 0;
        return bus_fail(err, r), -1;
    }
    const char *type = nullptr, *target = nullptr;
    r = sd_bus_message_read(reply.get(), "suuuts", &type, &out.mode, &out.uid, &out.gid, &out.size,
                            &target);
    if (r < 0)
        return fail("Bad reply from lodged"), -1;
    out.type = type;
    out.target = target;
    return 1;
}

struct PushOptions {
    bool parents = false, recursive = false;
    long uid = -1, gid = -1, mode = -1;
};

// "" or why lodged refused the push.
std::string push_call(sd_bus* bus, const Target& t, int fd, uint32_t uid, uint32_t gid,
                      uint32_t mode, bool parents) {
    BusError err;
    int r = call_manager(bus, err, nullptr, "PushContainerFile", "sshuuub", t.name.c_str(),
                         t.path.c_str(), fd, uid, gid, mode, parents ? 1 : 0);
    return r < 0 ? bus_message(err, r) : std::string();
}

int push_file(sd_bus* bus, const Target& t, int fd, uint32_t uid, uint32_t gid, uint32_t mode,
              bool parents) {
    std::string error = push_call(bus, t, fd, uid, gid, mode, parents);
    return error.empty() ? 0 : fail(error);
}

uint32_t or_default(long v, uint32_t fallback) {
    return v >= 0 ? static_cast<uint32_t>(v) : fallback;
}

int push_path(sd_bus* bus, const std::string& local, const Target& t, const PushOptions& o) {
    struct stat st {};
    if (::lstat(local.c_str(), &st) < 0)
        return fail("Cannot stat " + local + ": " + std::strerror(errno));
    uint32_t uid = or_default(o.uid, 0), gid = or_default(o.gid, 0);
    if (S_ISDIR(st.st_mode)) {
        if (!o.recursive)
            return fail(local + " is a directory (use -r)");
        BusError err;
        int r = call_manager(bus, err, nullptr, "MakeContainerDirectory", "ssuuub", t.name.c_str(),
                             t.path.c_str(), uid, gid, or_default(o.mode, st.st_mode & 07777),
                             o.parents ? 1 : 0);
        if (r < 0)
            return bus_fail(err, r);
        DIR* d = ::opendir(local.c_str());
        if (!d)
            return fail("Cannot read " + local + ": " + std::strerror(errno));
        std::vector<std::string> names;
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                names.push_back(e->d_name);
        ::closedir(d);
        int ret = 0;
        PushOptions inner = o;
        inner.parents = false;
        inner.mode = -1; // each entry keeps its own mode
        for (auto& n : names)
            if (push_path(bus, join(local, n), {t.name, join(t.path, n)}, inner) != 0)
                ret = 1;
        return ret;
    }
    if (S_ISLNK(st.st_mode) && o.recursive) {
        char target[4096];
        ssize_t n = ::readlink(local.c_str(), target, sizeof target);
        if (n < 0)
            return fail("Cannot read the symlink " + local + ": " + std::strerror(errno));
        BusError err;
        int r = call_manager(bus, err, nullptr, "MakeContainerSymlink", "sssuub", t.name.c_str(),
                             t.path.c_str(), std::string(target, static_cast<size_t>(n)).c_str(),
                             uid, gid, o.parents ? 1 : 0);
        return r < 0 ? bus_fail(err, r) : 0;
    }
    int fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fail("Cannot open " + local + ": " + std::strerror(errno));
    struct stat opened {};
    ::fstat(fd, &opened);
    int r = push_file(bus, t, fd, uid, gid, or_default(o.mode, opened.st_mode & 07777), o.parents);
    ::close(fd);
    return r;
}

// Copies `in` to `out` until its end.
bool copy_fd(int in, int out) {
    std::vector<char> buf(1 << 20);
    for (;;) {
        ssize_t n = ::read(in, buf.data(), buf.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return false;
            off += w;
        }
    }
}

// The file's data from lodged (a read-only fd of it), and its mode and owner.
int pull_fd(sd_bus* bus, const Target& t, int& fd, RemoteStat& st) {
    BusError err;
    MessagePtr reply;
    int r =
        call_manager(bus, err, &reply, "PullContainerFile", "ss", t.name.c_str(), t.path.c_str());
    if (r < 0)
        return bus_fail(err, r), -1;
    int got = -1;
    if (sd_bus_message_read(reply.get(), "huuut", &got, &st.mode, &st.uid, &st.gid, &st.size) < 0)
        return fail("Bad reply from lodged"), -1;
    fd = ::fcntl(got, F_DUPFD_CLOEXEC, 3);
    return fd < 0 ? -1 : 0;
}

int pull_path(sd_bus* bus, const Target& t, const std::string& local, bool recursive) {
    RemoteStat st;
    int exists = remote_stat(bus, t, st);
    if (exists < 0)
        return 1;
    if (exists == 0)
        return fail("No such file in " + t.name + ": " + t.path);
    if (st.type == "directory") {
        if (!recursive)
            return fail(t.name + t.path + " is a directory (use -r)");
        if (::mkdir(local.c_str(), st.mode & 07777) < 0 && errno != EEXIST)
            return fail("Cannot create " + local + ": " + std::strerror(errno));
        BusError err;
        MessagePtr reply;
        int r = call_manager(bus, err, &reply, "ListContainerDirectory", "ss", t.name.c_str(),
                             t.path.c_str());
        if (r < 0)
            return bus_fail(err, r);
        std::vector<std::string> names;
        if (sd_bus_message_enter_container(reply.get(), 'a', "(ssuuuts)") < 0)
            return fail("Bad reply from lodged");
        const char *name = nullptr, *type = nullptr, *target = nullptr;
        uint32_t mode, uid, gid;
        uint64_t size;
        while (sd_bus_message_read(reply.get(), "(ssuuuts)", &name, &type, &mode, &uid, &gid, &size,
                                   &target) > 0)
            names.push_back(name);
        int ret = 0;
        for (auto& n : names)
            if (pull_path(bus, {t.name, join(t.path, n)}, join(local, n), true) != 0)
                ret = 1;
        return ret;
    }
    if (st.type == "symlink" && recursive) {
        ::unlink(local.c_str());
        if (::symlink(st.target.c_str(), local.c_str()) < 0)
            return fail("Cannot create the symlink " + local + ": " + std::strerror(errno));
        return 0;
    }
    int in = -1;
    RemoteStat file;
    if (pull_fd(bus, t, in, file) < 0)
        return 1;
    int out = local == "-" ? STDOUT_FILENO
                           : ::open(local.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                                    file.mode & 0777);
    if (out < 0) {
        ::close(in);
        return fail("Cannot create " + local + ": " + std::strerror(errno));
    }
    bool ok = copy_fd(in, out);
    ::close(in);
    if (out != STDOUT_FILENO) {
        // The mode as in the container (setuid bits only where we own it, as cp does).
        ::fchmod(out, file.mode & 07777);
        if (::geteuid() == 0)
            (void)!::fchown(out, file.uid, file.gid);
        ::close(out);
    }
    return ok ? 0
              : fail("Cannot copy " + t.name + t.path + " to " + local + ": " +
                     std::strerror(errno));
}

int parse_id(const InstanceOptions& o, const char* key, long max, long& out) {
    auto it = o.values.find(key);
    if (it == o.values.end())
        return 0;
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(it->second.c_str(), &end, key == std::string("mode") ? 8 : 10);
    if (errno || !end || *end || v < 0 || v > max || it->second.empty())
        return fail(std::string("Invalid --") + key + " \"" + it->second + "\""), -1;
    out = v;
    return 0;
}

int file_push(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() < 4)
        return fail("Usage: lodgectl file push SOURCE... NAME/PATH [-p] [-r] [--uid UID] "
                    "[--gid GID] [--mode MODE]");
    Target dest;
    if (!parse_target(o.args.back(), dest))
        return fail("Invalid target \"" + o.args.back() + "\": expected NAME/PATH");
    PushOptions p;
    p.parents = o.values.count("parents") != 0;
    p.recursive = o.values.count("recursive") != 0;
    if (parse_id(o, "uid", UINT32_MAX, p.uid) < 0 || parse_id(o, "gid", UINT32_MAX, p.gid) < 0 ||
        parse_id(o, "mode", 07777, p.mode) < 0)
        return 1;
    std::vector<std::string> sources(o.args.begin() + 2, o.args.end() - 1);
    // As lxc file push -r: a directory goes into the target directory, under its own name.
    bool into_dir = sources.size() > 1 || dest.path.back() == '/' || p.recursive;
    if (!into_dir) {
        RemoteStat st;
        int r = remote_stat(bus, dest, st);
        if (r < 0)
            return 1;
        into_dir = r > 0 && st.type == "directory";
    }
    int ret = 0;
    for (auto& src : sources) {
        Target t = into_dir ? Target{dest.name, join(dest.path, base_name(src))} : dest;
        if (push_path(bus, src, t, p) != 0)
            ret = 1;
    }
    return ret;
}

int file_pull(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() < 4)
        return fail("Usage: lodgectl file pull NAME/PATH... DESTINATION [-r]");
    std::string dest = o.args.back();
    std::vector<std::string> sources(o.args.begin() + 2, o.args.end() - 1);
    struct stat st {};
    bool into_dir = dest != "-" && ::stat(dest.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    if (sources.size() > 1 && !into_dir)
        return fail(dest + " is not a directory");
    int ret = 0;
    for (auto& s : sources) {
        Target t;
        if (!parse_target(s, t))
            return fail("Invalid source \"" + s + "\": expected NAME/PATH");
        std::string local = into_dir ? join(dest, base_name(t.path)) : dest;
        if (pull_path(bus, t, local, o.values.count("recursive") != 0) != 0)
            ret = 1;
    }
    return ret;
}

int file_delete(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() < 3)
        return fail("Usage: lodgectl file delete NAME/PATH...");
    int ret = 0;
    for (size_t i = 2; i < o.args.size(); i++) {
        Target t;
        if (!parse_target(o.args[i], t))
            return fail("Invalid path \"" + o.args[i] + "\": expected NAME/PATH");
        BusError err;
        if (int r = call_manager(bus, err, nullptr, "DeleteContainerFile", "ss", t.name.c_str(),
                                 t.path.c_str());
            r < 0)
            ret = bus_fail(err, r);
    }
    return ret;
}

int file_edit(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 3)
        return fail("Usage: lodgectl file edit NAME/PATH");
    Target t;
    if (!parse_target(o.args[2], t))
        return fail("Invalid path \"" + o.args[2] + "\": expected NAME/PATH");
    RemoteStat st;
    st.mode = 0644;
    int exists = remote_stat(bus, t, st);
    if (exists < 0)
        return 1;
    if (exists > 0 && st.type != "file")
        return fail(t.name + t.path + " is not a regular file");
    // Not on a terminal: the new content comes from standard input (for scripts).
    if (!::isatty(STDIN_FILENO))
        return push_file(bus, t, STDIN_FILENO, st.uid, st.gid, st.mode, false);
    EditSession session;
    session.what = t.name + t.path;
    session.fill = [&](int fd) {
        if (exists == 0)
            return true;
        int in = -1;
        RemoteStat file;
        bool copied = pull_fd(bus, t, in, file) >= 0 && copy_fd(in, fd);
        if (in >= 0)
            ::close(in);
        return copied;
    };
    session.accept = [&](int fd) { return push_call(bus, t, fd, st.uid, st.gid, st.mode, false); };
    return edit_in_editor(session);
}

} // namespace

int verb_file(const InstanceOptions& o, sd_bus* bus) {
    const std::string sub = o.args.size() > 1 ? o.args[1] : "";
    if (sub == "push")
        return file_push(o, bus);
    if (sub == "pull")
        return file_pull(o, bus);
    if (sub == "delete")
        return file_delete(o, bus);
    if (sub == "edit")
        return file_edit(o, bus);
    if (sub == "mount")
        return file_mount(o, bus);
    return fail("Usage: lodgectl file push|pull|delete|edit|mount ...");
}

} // namespace lodge::ctl
