#include "registry.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/validate.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::daemon {
namespace {

std::string containers_dir() {
    return paths::state_dir() + "/containers";
}

// Hidden names never pass check_container_name(), so they cannot clash with a container.
std::string temp_dir(const char* kind, const std::string& name) {
    std::string t = containers_dir() + "/." + kind + "-" + name + "-XXXXXX";
    if (!::mkdtemp(t.data()))
        return {};
    return t;
}

} // namespace

std::vector<std::string> Registry::list() const {
    std::vector<std::string> names;
    DIR* d = ::opendir(containers_dir().c_str());
    if (!d)
        return names;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (!check_container_name(n).empty())
            continue;
        struct stat st {};
        if (::stat(paths::container_config(n).c_str(), &st) == 0)
            names.push_back(n);
    }
    ::closedir(d);
    return names;
}

int Registry::load(const std::string& name, ContainerConfig& out, std::string& error) const {
    return load_container_config(paths::container_config(name), out, error);
}

int Registry::save(const ContainerConfig& c) const {
    return save_container_config(paths::container_config(c.name), c);
}

int Registry::prepare(const std::string& name, std::string& work_dir, std::string& error) const {
    if (int r = mkdir_p(containers_dir(), 0711); r < 0) {
        error = "Cannot create " + containers_dir() + ": " + std::strerror(-r);
        return r;
    }
    struct stat st {};
    if (::lstat(paths::container_dir(name).c_str(), &st) == 0) {
        error = "Container \"" + name + "\" already exists";
        return -EEXIST;
    }
    std::string tmp = temp_dir("new", name);
    if (tmp.empty()) {
        error = "Cannot create a directory in " + containers_dir() + ": " + std::strerror(errno);
        return -errno;
    }
    ::chmod(tmp.c_str(), 0711);
    if (::mkdir((tmp + "/rootfs").c_str(), 0755) < 0) {
        int err = errno;
        error = std::string("Cannot create the rootfs directory: ") + std::strerror(err);
        remove_tree(tmp);
        return -err;
    }
    work_dir = tmp;
    return 0;
}

int Registry::commit(ContainerConfig& c, const std::string& work_dir, const KeyMap& image_keys,
                     std::string& error) const {
    for (auto& [k, v] : image_keys)
        if (k.rfind("image.", 0) == 0)
            c.config[k] = v;
    if (int r = save_container_config(work_dir + "/config.json", c); r < 0) {
        error = std::string("Cannot write config.json: ") + std::strerror(-r);
        return r;
    }
    // RENAME_NOREPLACE: two creates of one name race here, and exactly one wins.
    if (::renameat2(AT_FDCWD, work_dir.c_str(), AT_FDCWD, paths::container_dir(c.name).c_str(),
                    RENAME_NOREPLACE) < 0) {
        int err = errno;
        error = err == EEXIST
                    ? "Container \"" + c.name + "\" already exists"
                    : std::string("Cannot put the container in place: ") + std::strerror(err);
        return -err;
    }
    return 0;
}

int Registry::retire(const std::string& name, std::string& trash) const {
    std::string dir = temp_dir("trash", name);
    if (dir.empty())
        return -errno;
    // The rename (over the empty trash dir) is the delete; removing the files afterwards may be
    // cut short by a crash, and collect_garbage() finishes it.
    if (::rename(paths::container_dir(name).c_str(), dir.c_str()) < 0) {
        int err = errno;
        ::rmdir(dir.c_str());
        return -err;
    }
    trash = dir;
    return 0;
}

void Registry::collect_garbage() const {
    DIR* d = ::opendir(containers_dir().c_str());
    if (!d)
        return;
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.rfind(".new-", 0) == 0 || n.rfind(".trash-", 0) == 0)
            stale.push_back(containers_dir() + "/" + n);
    }
    ::closedir(d);
    for (auto& s : stale) {
        log_info("Removing %s, left behind by an interrupted operation", s.c_str());
        remove_tree(s);
    }
}

} // namespace lodge::daemon
