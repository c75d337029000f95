#include "daemon/snapshot-store.hpp"
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "daemon/tree-copy.hpp"
#include "runtime/in-root.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon::snapshots {
namespace {

using runtime::shift_marker; // runtime/in-root.hpp
constexpr const char* restore_record = "restore.json";

std::string hidden_dir(const std::string& parent, const std::string& kind,
                       const std::string& name) {
    std::string t = parent + "/." + kind + "-" + name + "-XXXXXX";
    return ::mkdtemp(t.data()) ? t : std::string();
}

int sync_dir(const std::string& path, std::string& error) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::syncfs(fd.get()) < 0) {
        int err = errno;
        error = "Cannot sync " + path + ": " + std::strerror(err);
        return -err;
    }
    return 0;
}

// Copies a small file if it exists (the shift marker); removes `to` if `from` does not.
int copy_small_file(const std::string& from, const std::string& to) {
    std::string text;
    int r = read_file(from, text);
    if (r == -ENOENT) {
        if (::unlink(to.c_str()) < 0 && errno != ENOENT)
            return -errno;
        return 0;
    }
    return r < 0 ? r : write_file_atomic(to, text, 0644);
}

std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                out.push_back(e->d_name);
        ::closedir(d);
    }
    return out;
}

// What tells the restored rootfs from the old one while both exist: the inode number and
// birth time (on btrfs every subvolume root is inode 256, and st_dev may change across
// mounts; its birth time is when the snapshot was made).
nlohmann::json identity(const std::string& dir) {
    struct statx stx {};
    if (::statx(AT_FDCWD, dir.c_str(), AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &stx) < 0)
        return nullptr;
    nlohmann::json id{{"ino", stx.stx_ino}};
    if (stx.stx_mask & STATX_BTIME)
        id["btime"] = {stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec};
    return id;
}

bool starts_with(const std::string& s, const char* prefix) {
    return s.rfind(prefix, 0) == 0;
}

} // namespace

std::string check_name(const std::string& snap) {
    if (snap.empty() || snap.size() > 63)
        return "Invalid snapshot name \"" + snap + "\": it must be 1 to 63 characters long";
    if (snap[0] == '.' || snap[0] == '-')
        return "Invalid snapshot name \"" + snap + "\": it must not start with '.' or '-'";
    for (char ch : snap)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
            return "Invalid snapshot name \"" + snap +
                   "\": only letters, digits, '-', '_' and '.' are allowed";
    return {};
}

std::string dir(const std::string& container) {
    return paths::container_dir(container) + "/snapshots";
}

std::string path(const std::string& container, const std::string& snap) {
    return dir(container) + "/" + snap;
}

bool exists(const std::string& container, const std::string& snap) {
    struct stat st {};
    return ::stat((path(container, snap) + "/config.json").c_str(), &st) == 0;
}

static Info info_of(const std::string& name, const std::string& snap_dir) {
    Info info{name, 0, 0};
    std::string text;
    if (read_file(snap_dir + "/snapshot.json", text) < 0)
        return info;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_object()) {
        info.created_usec = j.value("created_usec", uint64_t(0));
        info.expires_usec = j.value("expires_usec", uint64_t(0));
    }
    return info;
}

std::vector<Info> list(const std::string& container) {
    std::vector<Info> out;
    for (auto& name : entries(dir(container)))
        if (check_name(name).empty() && exists(container, name))
            out.push_back(info_of(name, path(container, name)));
    std::sort(out.begin(), out.end(), [](const Info& a, const Info& b) {
        return a.created_usec != b.created_usec ? a.created_usec < b.created_usec : a.name < b.name;
    });
    return out;
}

// The name's rule broken, as an InvalidName error (ok when `snap` may name a snapshot).
static Result<> valid_name(const std::string& snap) {
    if (auto e = check_name(snap); !e.empty())
        return make_error(errors::invalid_name, EINVAL, e);
    return {};
}

static Error no_such_snapshot(const std::string& container, const std::string& snap) {
    return make_error(errors::no_such_snapshot, ENOENT,
                      "Container \"" + container + "\" has no snapshot \"" + snap + "\"");
}

static Error snapshot_exists(const std::string& container, const std::string& snap) {
    return make_error(errors::snapshot_exists, EEXIST,
                      "Container \"" + container + "\" already has a snapshot \"" + snap + "\"");
}

// The errno of a failed system call, with what it was doing.
static Error failed(int err, const std::string& doing) {
    return make_error(errors::failed, err, doing + ": " + std::strerror(err));
}

Result<> load(const std::string& container, const std::string& snap, ContainerConfig& config,
              Info& info) {
    if (auto valid = valid_name(snap); !valid)
        return valid.error();
    if (!exists(container, snap))
        return no_such_snapshot(container, snap);
    std::string p = path(container, snap), error;
    if (int r = load_container_config(p + "/config.json", config, error); r < 0)
        return make_error(errors::failed, r, error);
    info = info_of(snap, p);
    return {};
}

Result<std::string> prepare(const std::string& container, const std::string& snap) {
    std::string d = dir(container);
    if (::mkdir(d.c_str(), 0700) < 0 && errno != EEXIST)
        return failed(errno, "Cannot create " + d);
    if (exists(container, snap))
        return snapshot_exists(container, snap);
    std::string work = hidden_dir(d, "new", snap);
    if (work.empty())
        return failed(errno, "Cannot create a directory in " + d);
    return work;
}

int fill(const std::string& container_dir, const ContainerConfig& config, const std::string& work,
         uint64_t created_usec, uint64_t expires_usec,
         const std::function<void(uint64_t)>& progress, std::string& error) {
    CopyMethod used;
    if (int r = copy_tree(container_dir + "/rootfs", work + "/rootfs", progress, used, error);
        r < 0)
        return r;
    log_info("Copied %s/rootfs by %s", container_dir.c_str(), copy_method_name(used));
    if (int r = copy_small_file(container_dir + "/" + shift_marker, work + "/" + shift_marker);
        r < 0) {
        error = std::string("Cannot copy the shift marker: ") + std::strerror(-r);
        return r;
    }
    nlohmann::json meta{{"created_usec", created_usec}, {"expires_usec", expires_usec}};
    if (int r = save_container_config(work + "/config.json", config); r < 0) {
        error = std::string("Cannot write the snapshot's config.json: ") + std::strerror(-r);
        return r;
    }
    if (int r = write_file_atomic(work + "/snapshot.json", meta.dump() + "\n", 0600); r < 0) {
        error = std::string("Cannot write snapshot.json: ") + std::strerror(-r);
        return r;
    }
    return sync_dir(work, error);
}

int copy_snapshot_dir(const std::string& from, const std::string& to,
                      const std::function<void(uint64_t)>& progress, std::string& error) {
    if (::mkdir(to.c_str(), 0700) < 0) {
        int err = errno;
        error = "Cannot create " + to + ": " + std::strerror(err);
        return -err;
    }
    CopyMethod used;
    if (int r = copy_tree(from + "/rootfs", to + "/rootfs", progress, used, error); r < 0)
        return r;
    for (const char* file : {"config.json", "snapshot.json", shift_marker})
        if (int r = copy_small_file(from + "/" + file, to + "/" + file); r < 0) {
            error = "Cannot copy " + from + "/" + file + ": " + std::strerror(-r);
            return r;
        }
    return 0;
}

int copy_marker(const std::string& from_dir, const std::string& to_dir) {
    return copy_small_file(from_dir + "/" + shift_marker, to_dir + "/" + shift_marker);
}

Result<> commit(const std::string& container, const std::string& snap, const std::string& work) {
    if (::renameat2(AT_FDCWD, work.c_str(), AT_FDCWD, path(container, snap).c_str(),
                    RENAME_NOREPLACE) < 0)
        return errno == EEXIST ? snapshot_exists(container, snap)
                               : failed(errno, "Cannot put snapshot \"" + snap + "\" in place");
    return {};
}

Result<std::string> retire(const std::string& container, const std::string& snap) {
    if (!exists(container, snap))
        return no_such_snapshot(container, snap);
    std::string t = hidden_dir(dir(container), "trash", snap);
    if (t.empty() || ::rename(path(container, snap).c_str(), t.c_str()) < 0) {
        int err = errno;
        if (!t.empty())
            ::rmdir(t.c_str());
        return failed(err, "Cannot delete snapshot \"" + snap + "\"");
    }
    return t;
}

Result<> rename(const std::string& container, const std::string& from, const std::string& to) {
    for (auto* n : {&from, &to})
        if (auto valid = valid_name(*n); !valid)
            return valid;
    if (!exists(container, from))
        return no_such_snapshot(container, from);
    if (::renameat2(AT_FDCWD, path(container, from).c_str(), AT_FDCWD, path(container, to).c_str(),
                    RENAME_NOREPLACE) < 0)
        return errno == EEXIST ? snapshot_exists(container, to)
                               : failed(errno, "Cannot rename snapshot \"" + from + "\"");
    return {};
}

Result<std::string> prepare_restore(const std::string& container) {
    std::string work = hidden_dir(paths::container_dir(container), "restore", "rootfs");
    if (work.empty())
        return failed(errno, "Cannot create a directory in " + paths::container_dir(container));
    return work;
}

int fill_restore(const std::string& container, const std::string& snap,
                 const ContainerConfig& config, const std::string& work,
                 const std::function<void(uint64_t)>& progress, std::string& error) {
    std::string from = path(container, snap);
    CopyMethod used;
    if (int r = copy_tree(from + "/rootfs", work + "/rootfs", progress, used, error); r < 0)
        return r;
    log_info("Copied snapshot %s of %s by %s", snap.c_str(), container.c_str(),
             copy_method_name(used));
    if (int r = copy_small_file(from + "/" + shift_marker, work + "/" + shift_marker); r < 0) {
        error = std::string("Cannot copy the shift marker: ") + std::strerror(-r);
        return r;
    }
    if (int r = save_container_config(work + "/config.json", config); r < 0) {
        error = std::string("Cannot write the config to restore: ") + std::strerror(-r);
        return r;
    }
    nlohmann::json record = identity(work + "/rootfs");
    if (record.is_null()) {
        int err = errno;
        error = std::string("Cannot stat the restored rootfs: ") + std::strerror(err);
        return -err;
    }
    if (int r = sync_dir(work, error); r < 0)
        return r;
    // Written last: without it, a crash leaves a directory that is only removed.
    if (int r = write_file_atomic(work + "/" + restore_record, record.dump() + "\n", 0600); r < 0) {
        error = std::string("Cannot write restore.json: ") + std::strerror(-r);
        return r;
    }
    return 0;
}

// Config and marker of the restore in `work`, applied to `container` (idempotent).
static int apply_restore(const std::string& container, const std::string& work,
                         ContainerConfig& applied, std::string& error) {
    if (int r = load_container_config(work + "/config.json", applied, error); r < 0)
        return r;
    applied.name = container;
    if (int r = copy_small_file(work + "/" + shift_marker,
                                paths::container_dir(container) + "/" + shift_marker);
        r < 0) {
        error = std::string("Cannot restore the shift marker: ") + std::strerror(-r);
        return r;
    }
    if (int r = save_container_config(paths::container_config(container), applied); r < 0) {
        error = std::string("Cannot write config.json: ") + std::strerror(-r);
        return r;
    }
    return 0;
}

Result<> commit_restore(const std::string& container, const std::string& work,
                        ContainerConfig& applied, bool& swapped) {
    swapped = false;
    std::string rootfs = paths::container_rootfs(container);
    if (::renameat2(AT_FDCWD, (work + "/rootfs").c_str(), AT_FDCWD, rootfs.c_str(),
                    RENAME_EXCHANGE) < 0)
        return failed(errno, "Cannot put the restored rootfs in place");
    swapped = true;
    std::string error;
    if (int r = apply_restore(container, work, applied, error); r < 0)
        return make_error(errors::failed, r, error);
    return {};
}

// Whether the rootfs in place is the one the restore in `work` made.
static bool restore_swapped(const std::string& container, const std::string& work) {
    std::string text;
    if (read_file(work + "/" + restore_record, text) < 0)
        return false;
    auto j = nlohmann::json::parse(text, nullptr, false);
    return j.is_object() && j == identity(paths::container_rootfs(container));
}

std::vector<std::string> recover(const std::vector<std::string>& containers) {
    std::vector<std::string> stale;
    for (auto& c : containers) {
        std::string cdir = paths::container_dir(c);
        for (auto& e : entries(cdir)) {
            if (!starts_with(e, ".restore-"))
                continue;
            std::string work = cdir + "/" + e;
            if (restore_swapped(c, work)) {
                ContainerConfig applied;
                std::string error;
                if (apply_restore(c, work, applied, error) < 0) {
                    // Kept: the next start tries again.
                    log_error("Cannot finish the restore of \"%s\": %s", c.c_str(), error.c_str());
                    continue;
                }
                log_info("Finished the restore of \"%s\" that was cut short", c.c_str());
            }
            stale.push_back(work);
        }
        for (auto& e : entries(dir(c)))
            if (starts_with(e, ".new-") || starts_with(e, ".trash-"))
                stale.push_back(dir(c) + "/" + e);
    }
    return stale;
}

} // namespace lodge::daemon::snapshots
