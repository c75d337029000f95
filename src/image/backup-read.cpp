// Reading a container backup (`lodgectl import`): its description, then its volumes extracted
// into a new container directory; see backup.hpp.
#include "image/backup-detail.hpp"

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "image/import-error.hpp"
#include "image/tar-io.hpp"

#include <cerrno>
#include <map>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::image {
namespace {

using namespace backup_detail;
using namespace tar_io;
using daemon::fail_errno;
using daemon::fail_invalid;
using json = nlohmann::json;

// One volume of the backup (the container's rootfs or a snapshot's) and where it goes.
struct Volume {
    std::string prefix; // "backup/container/rootfs", "backup/snapshots/S/rootfs"
    std::string root;   // canonical target directory
    Fd root_fd;
    const IdMap* idmap = nullptr;
    RootAttrs attrs;
    size_t entries = 0;
    std::map<std::string, DeviceNode> device_nodes;
};

la_int64_t unshift(const IdMap* map, la_int64_t id, bool uid) {
    if (!map)
        return id;
    for (auto& r : *map)
        if ((uid ? r.uid : r.gid) && static_cast<uint64_t>(id) >= r.host &&
            static_cast<uint64_t>(id) - r.host < r.range)
            return static_cast<la_int64_t>(r.ns + (static_cast<uint64_t>(id) - r.host));
    return id;
}

int make_dir(const std::string& path, mode_t mode, std::string& error) {
    if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST)
        return fail_errno(error, errno, "Cannot create " + path);
    return 0;
}

// The backup from its start (it is read twice: once for its description, once to extract).
int open_reader(int fd, ReadArchive& out, std::string& error) {
    if (::lseek(fd, 0, SEEK_SET) < 0)
        return fail_errno(error, errno, "Cannot rewind the backup (it must be a file)");
    return open_tar_reader(fd, "backup", out, error);
}

// The entry's name in the backup, checked; `raw` is set to it as the tarball has it.
int entry_name(struct archive_entry* e, std::string& raw, std::string& name, std::string& error) {
    const char* raw_c = archive_entry_pathname(e);
    if (!raw_c)
        return fail_invalid(error, "The backup has an entry with an unreadable name");
    raw = raw_c;
    std::string why;
    name = normalize_entry_path(raw_c, why);
    if (!why.empty())
        return fail_invalid(error, "refusing entry '" + raw + "': " + why);
    return 0;
}

} // namespace

int read_backup_info(int fd, BackupInfo& info, std::string& error) {
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return fail_errno(error, errno, "Cannot stat the backup");
    if (!S_ISREG(st.st_mode))
        return fail_invalid(error, "The backup must be a regular file (it is read twice)");
    ReadArchive a;
    if (int r = open_reader(fd, a, error); r < 0)
        return r;
    std::string index_text, backup_text, raw, name;
    std::set<std::string> warned;
    bool have_index = false, have_backup = false;
    struct archive_entry* e;
    int r;
    while (!(have_index && have_backup) &&
           (r = next_tar_header(a.get(), &e, "backup", warned, error)) == ARCHIVE_OK) {
        if ((r = entry_name(e, raw, name, error)) < 0)
            return r;
        if (name == index_path) {
            if ((r = read_entry_text(a.get(), e, "backup", name, max_yaml_size, index_text,
                                     error)) < 0)
                return r;
            have_index = true;
        } else if (name == container_yaml) {
            if ((r = read_entry_text(a.get(), e, "backup", name, max_yaml_size, backup_text,
                                     error)) < 0)
                return r;
            have_backup = true;
        } else if (name.rfind("backup/virtual-machine", 0) == 0) {
            return fail_invalid(error, "The backup is of a virtual machine; lodge runs containers");
        }
    }
    if (r < 0)
        return r;
    if (!have_index)
        return fail_invalid(error, "Not a container backup: it has no backup/index.yaml");
    if (!have_backup)
        return fail_invalid(error, "The backup has no backup/container/backup.yaml");
    return parse_backup_documents(index_text, backup_text, info, error);
}

int extract_backup(int fd, const BackupInfo& info, const std::string& container_dir,
                   const CopyProgress& progress, std::string& error) {
    std::vector<std::unique_ptr<Volume>> volumes;
    auto add_volume = [&](const std::string& prefix, const std::string& dir, const IdMap& map) {
        auto v = std::make_unique<Volume>();
        v->prefix = prefix;
        v->idmap = map.empty() ? nullptr : &map;
        int r = open_root_dir(dir, v->root, v->root_fd, error);
        if (r >= 0)
            volumes.push_back(std::move(v));
        return r;
    };
    if (int r = add_volume(container_rootfs, container_dir + "/rootfs", info.idmap); r < 0)
        return r;
    if (!info.snapshots.empty())
        if (int r = make_dir(container_dir + "/snapshots", 0700, error); r < 0)
            return r;
    for (auto& s : info.snapshots) {
        std::string dir = container_dir + "/snapshots/" + s.name;
        int r = make_dir(dir, 0700, error);
        if (r >= 0)
            r = make_dir(dir + "/rootfs", 0755, error);
        if (r >= 0)
            r = add_volume(std::string(snapshots_prefix) + s.name + "/rootfs", dir + "/rootfs",
                           s.idmap);
        if (r < 0)
            return r;
    }
    struct stat st {};
    uint64_t total = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;

    ReadArchive a;
    if (int r = open_reader(fd, a, error); r < 0)
        return r;
    Extractor out("backup");
    if (int r = out.open(error); r < 0)
        return r;
    std::set<std::string> warned;
    uint64_t last = 0;
    struct archive_entry* e;
    std::string raw, name, why;
    int r;
    while ((r = next_tar_header(a.get(), &e, "backup", warned, error)) == ARCHIVE_OK) {
        if ((r = entry_name(e, raw, name, error)) < 0)
            return r;
        Volume* vol = nullptr;
        for (auto& v : volumes)
            if (name == v->prefix || name.rfind(v->prefix + "/", 0) == 0) {
                vol = v.get();
                break;
            }
        if (!vol)
            continue; // index.yaml, backup.yaml, metadata.yaml, templates/, unlisted snapshots
        std::string rel =
            name.size() > vol->prefix.size() ? name.substr(vol->prefix.size() + 1) : std::string();
        archive_entry_set_uid(e, unshift(vol->idmap, archive_entry_uid(e), true));
        archive_entry_set_gid(e, unshift(vol->idmap, archive_entry_gid(e), false));
        if (rel.empty()) {
            if (archive_entry_filetype(e) != AE_IFDIR)
                return fail_invalid(error,
                                    "refusing entry '" + raw + "': the root is not a directory");
            set_root_attrs(e, vol->attrs);
            continue;
        }
        const char* hl = archive_entry_hardlink(e);
        std::string target;
        if (hl) {
            target = normalize_entry_path(hl, why);
            if (why.empty() && target.rfind(vol->prefix + "/", 0) != 0)
                why = "hard link target " + std::string(hl) + " is outside " + vol->prefix;
            if (!why.empty())
                return fail_invalid(error, "refusing entry '" + raw + "': " + why);
            target = target.substr(vol->prefix.size() + 1);
        }
        r = out.write(a.get(), e, raw, vol->root, rel, hl, target, vol->device_nodes, nullptr,
                      error);
        if (r < 0)
            return r;
        if (r == 0)
            continue;
        vol->entries++;
        uint64_t read = static_cast<uint64_t>(archive_filter_bytes(a.get(), -1));
        if (progress && read - last >= (8u << 20)) {
            last = read;
            progress(read, total);
        }
    }
    if (r < 0)
        return r;
    if ((r = out.close(error)) < 0)
        return r;
    for (auto& v : volumes) {
        if (v->entries == 0 && !v->attrs.set)
            return fail_invalid(error, "The backup has nothing under " + v->prefix + "/");
        if ((r = apply_root_attrs(v->root_fd.get(), v->attrs, v->root, error)) < 0)
            return r;
    }
    for (auto& s : info.snapshots) {
        std::string dir = container_dir + "/snapshots/" + s.name;
        json meta{{"created_usec", s.created_usec}, {"expires_usec", s.expires_usec}};
        if (int rr = save_container_config(dir + "/config.json", s.config); rr < 0)
            return fail_errno(error, rr, "Cannot write the config of snapshot " + s.name);
        if (int rr = write_file_atomic(dir + "/snapshot.json", meta.dump() + "\n", 0600); rr < 0)
            return fail_errno(error, rr, "Cannot write snapshot.json of " + s.name);
    }
    if (progress)
        progress(total, total);
    return 0;
}

} // namespace lodge::image
