// lodgectl export NAME FILE [--instance-only] [--compression C] and lodgectl import FILE [NAME]
// (container backups in LXD's layout, lodge-images(7)). The files are opened here, with the
// caller's rights, and passed to lodged as fds. An export goes to an unnamed file in FILE's
// directory that gets its name once lodged has written and synced it all: a failed export
// leaves no partial FILE behind, and an existing FILE is replaced in one rename.
#include "common/fd.hpp"
#include "ctl/bus.hpp"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::ctl {
namespace {

std::string dir_of(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos)
        return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// Gives the unnamed file `fd` the name `path` (replacing what is there).
int publish_file(int fd, const std::string& path, std::string& error) {
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    std::random_device rd;
    for (int attempt = 0; attempt < 16; attempt++) {
        char suffix[16];
        std::snprintf(suffix, sizeof suffix, "%08x", rd());
        std::string temp = dir_of(path) + "/.lodge-export-" + suffix;
        if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp.c_str(), AT_SYMLINK_FOLLOW) < 0) {
            if (errno == EEXIST)
                continue;
            error = "Cannot name " + path + ": " + std::strerror(errno);
            return -1;
        }
        if (::rename(temp.c_str(), path.c_str()) < 0) {
            error = "Cannot name " + path + ": " + std::strerror(errno);
            ::unlink(temp.c_str());
            return -1;
        }
        return 0;
    }
    error = "Cannot name " + path + ": no free temporary name";
    return -1;
}

} // namespace

int verb_export(const Options& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return fail("Usage: lodgectl export NAME FILE [--instance-only] [--compression "
                    "gzip|xz|zstd|none]");
    const std::string& name = a.args[1];
    const std::string& file = a.args[2];
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        return fail(file + " is a directory; give the backup's file name");
    // Root-only: the backup holds the whole rootfs, /etc/shadow included.
    Fd out(::open(dir_of(file).c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
    if (!out)
        return fail("Cannot create a file in " + dir_of(file) + ": " + std::strerror(errno));
    MessagePtr m = new_manager_call(bus, "ExportContainer");
    if (!m)
        return 1;
    auto comp = a.values.find("compression");
    int r = sd_bus_message_append(m.get(), "shbs", name.c_str(), out.get(),
                                  a.values.count("instance-only") ? 0 : 1,
                                  comp == a.values.end() ? "" : comp->second.c_str());
    BusError err;
    if (r >= 0)
        r = sd_bus_call(bus, m.get(), 0, &err.e, nullptr);
    if (r < 0)
        return bus_fail(err, r);
    std::string error;
    if (::fsync(out.get()) < 0)
        return fail("Cannot sync the backup: " + std::string(std::strerror(errno)));
    if (publish_file(out.get(), file, error) < 0)
        return fail(error);
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"file", file}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Backup of %s written to %s\n", name.c_str(), file.c_str());
    return 0;
}

int verb_import(const Options& a, sd_bus* bus) {
    if (a.args.size() < 2 || a.args.size() > 3)
        return fail("Usage: lodgectl import FILE [NAME]");
    const std::string& file = a.args[1];
    Fd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in)
        return fail("Cannot open " + file + ": " + std::strerror(errno));
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "ImportBackup", "hs", in.get(),
                         a.args.size() == 3 ? a.args[2].c_str() : "");
    if (r < 0)
        return bus_fail(err, r);
    const char *name = nullptr, *path = nullptr;
    if (sd_bus_message_read(reply.get(), "so", &name, &path) < 0 ||
        sd_bus_message_enter_container(reply.get(), 'a', "s") < 0)
        return fail("Unexpected answer from lodged");
    std::vector<std::string> notes;
    const char* note = nullptr;
    while (sd_bus_message_read(reply.get(), "s", &note) > 0)
        notes.push_back(note);
    if (a.json) {
        std::printf("%s\n", nlohmann::json{{"name", name}, {"notes", notes}}.dump().c_str());
        return 0;
    }
    for (auto& n : notes)
        std::fprintf(stderr, "Note: %s\n", n.c_str());
    if (!a.quiet)
        std::printf("Imported container %s\n", name);
    return 0;
}

} // namespace lodge::ctl
