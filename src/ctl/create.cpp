// create, and the lifecycle verbs that call one Manager method per NAME: delete, start, stop,
// restart, reboot, kill.
#include "common/fd.hpp"
#include "common/validate.hpp"
#include "ctl/bus.hpp"
#include "ctl/image.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::ctl {
namespace {

// A missing file named like a tarball is a typo, not an image name.
bool looks_like_tarball(const std::string& arg) {
    for (const char* ext : {".tar", ".gz", ".xz", ".zst", ".bz2", ".tgz", ".squashfs"})
        if (arg.size() > std::strlen(ext) &&
            arg.compare(arg.size() - std::strlen(ext), std::string::npos, ext) == 0)
            return true;
    return false;
}

} // namespace

// --network NET: eth0 on a managed network (lodge-network(7)) instead of the default
// network's; "none": no eth0. A network that cannot be joined undoes the create.
int join_network(const Options& o, sd_bus* bus, const std::string& name) {
    auto net = o.values.find("network");
    if (net == o.values.end())
        return 0;
    BusError dev_err;
    call_manager(bus, dev_err, nullptr, "RemoveContainerDevice", "ss", name.c_str(), "eth0");
    BusError join_err;
    int r = 0;
    if (net->second != "none")
        r = call_manager(bus, join_err, nullptr, "AddContainerDevice", "ssa{ss}", name.c_str(),
                         "eth0", 3, "type", "nic", "network", net->second.c_str(), "name", "eth0");
    if (r < 0) {
        BusError ignored;
        call_manager(bus, ignored, nullptr, "DeleteContainer", "sb", name.c_str(), 1);
        return bus_fail(join_err, r);
    }
    return 0;
}

int verb_create(const Options& o, sd_bus* bus) {
    if (o.args.size() < 2 || o.args.size() > 4)
        return fail("Usage: lodgectl create NAME [DIRECTORY | TARBALL | METADATA ROOTFS | "
                    "[REMOTE:]IMAGE] [-c KEY=VALUE]...");
    const std::string& name = o.args[1];
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    std::vector<Fd> fds;
    const char* method = "CreateContainer";
    for (size_t i = 2; i < o.args.size(); i++) {
        Fd fd(::open(o.args[i].c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        // No such file: an image from the store (or a remote), as `launch` takes it.
        if (!fd && errno == ENOENT && o.args.size() == 3 &&
            o.args[i].find('/') == std::string::npos && !looks_like_tarball(o.args[i]))
            return create_from_image(o, bus, name, o.args[i]);
        if (!fd)
            return fail("Cannot open " + o.args[i] + ": " + std::strerror(errno));
        fds.push_back(std::move(fd));
    }
    if (fds.size() == 1) {
        struct stat st {};
        ::fstat(fds[0].get(), &st);
        method = S_ISDIR(st.st_mode) ? "CreateContainerFromDirectory" : "ImportContainer";
    } else if (fds.size() == 2) {
        method = "ImportContainerSplit";
    }
    BusError err;
    MessagePtr call = new_manager_call(bus, method);
    if (!call)
        return 1;
    sd_bus_message* m = call.get();
    std::string bad;
    int r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0 && (r = append_map(m, o.config, bad)) == -EINVAL)
        return fail("Invalid config \"" + bad + "\": expected KEY=VALUE");
    for (auto& fd : fds)
        if (r >= 0)
            r = sd_bus_message_append(m, "h", fd.get());
    // lodged reads the very file description we opened, so its offset is the import's
    // progress: on a terminal, show it while waiting for the answer.
    uint64_t total = 0;
    for (auto& fd : fds) {
        struct stat st {};
        if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode))
            total += static_cast<uint64_t>(st.st_size);
    }
    bool progress = total > 0 && !o.quiet && ::isatty(STDERR_FILENO);
    if (r >= 0 && !progress)
        r = sd_bus_call(bus, m, 0, &err.e, nullptr);
    if (r >= 0 && progress) {
        struct Done {
            bool done = false;
            std::string error;
        } done;
        sd_bus_slot* slot = nullptr;
        r = sd_bus_call_async(
            bus, &slot, m,
            [](sd_bus_message* rep, void* ud, sd_bus_error*) {
                auto* d = static_cast<Done*>(ud);
                d->done = true;
                if (const sd_bus_error* e = sd_bus_message_get_error(rep))
                    d->error = e->message ? e->message : e->name;
                return 0;
            },
            &done, UINT64_MAX);
        while (r >= 0 && !done.done) {
            uint64_t read = 0;
            for (auto& fd : fds)
                if (off_t pos = ::lseek(fd.get(), 0, SEEK_CUR); pos > 0)
                    read += static_cast<uint64_t>(pos);
            std::fprintf(stderr, "\rImporting %s: %3u%% (%.1f of %.1f MiB)", name.c_str(),
                         static_cast<unsigned>(std::min<uint64_t>(100, read * 100 / total)),
                         static_cast<double>(read) / (1 << 20),
                         static_cast<double>(total) / (1 << 20));
            while ((r = sd_bus_process(bus, nullptr)) > 0) {
            }
            if (r >= 0 && !done.done)
                r = sd_bus_wait(bus, 200000);
        }
        std::fprintf(stderr, "\r\033[K");
        sd_bus_slot_unref(slot);
        if (r >= 0 && !done.error.empty())
            return fail(done.error);
    }
    if (r < 0)
        return bus_fail(err, r);
    if ((r = join_network(o, bus, name)) != 0)
        return r;
    if (o.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"created", true}}.dump().c_str());
    else if (!o.quiet)
        std::printf("Created container %s\n", name.c_str());
    return 0;
}

namespace {

// --timeout in seconds; -1 (the container's own) when not given or not valid (options_valid
// has said so then).
int32_t timeout_of(const Options& o) {
    auto it = o.values.find("timeout");
    auto v = it == o.values.end() ? std::nullopt : parse_uint(it->second, INT32_MAX);
    return v ? static_cast<int32_t>(*v) : -1;
}

int32_t signal_of(const Options& o) {
    auto it = o.values.find("signal");
    auto s = it == o.values.end() ? std::optional<int>(SIGTERM) : parse_signal(it->second);
    return s ? *s : SIGTERM;
}

int32_t force_of(const Options& o) {
    return o.force ? 1 : 0;
}

// Option values are checked before anything is sent.
bool options_valid(const Options& o) {
    if (auto it = o.values.find("timeout");
        it != o.values.end() && !parse_uint(it->second, INT32_MAX)) {
        fail("Invalid --timeout \"" + it->second + "\": expected seconds");
        return false;
    }
    if (auto it = o.values.find("signal"); it != o.values.end() && !parse_signal(it->second)) {
        fail("Invalid --signal \"" + it->second + "\"");
        return false;
    }
    return true;
}

// Calls the by-name Manager method `method` for each NAME argument, `extra` after the name.
template <typename... Extra>
int call_each_name(const Options& o, sd_bus* bus, const char* method, const char* types,
                   Extra... extra) {
    return for_each_name(o, [&](const std::string& name, BusError& err) {
        return call_manager(bus, err, nullptr, method, types, name.c_str(), extra...);
    });
}

// The same for the verbs that take option values (stop, restart, kill).
template <typename... Extra>
int call_each_name_checked(const Options& o, sd_bus* bus, const char* method, const char* types,
                           Extra... extra) {
    return options_valid(o) ? call_each_name(o, bus, method, types, extra...) : 1;
}

} // namespace

int verb_delete(const Options& o, sd_bus* bus) {
    return call_each_name(o, bus, "DeleteContainer", "sb", force_of(o));
}

int verb_start(const Options& o, sd_bus* bus) {
    return call_each_name(o, bus, "StartContainer", "s");
}

int verb_stop(const Options& o, sd_bus* bus) {
    return call_each_name_checked(o, bus, "StopContainer", "sib", timeout_of(o), force_of(o));
}

int verb_restart(const Options& o, sd_bus* bus) {
    return call_each_name_checked(o, bus, "RestartContainer", "si", timeout_of(o));
}

int verb_reboot(const Options& o, sd_bus* bus) {
    return call_each_name(o, bus, "RebootContainer", "s");
}

int verb_kill(const Options& o, sd_bus* bus) {
    return call_each_name_checked(o, bus, "KillContainer", "si", signal_of(o));
}

} // namespace lodge::ctl
