// lodgectl's image server verbs (lodge-images(7)): `remote add|list|remove|rename`,
// `image list REMOTE:` and `image copy REMOTE:IMAGE local:`, and the download progress every
// call that may fetch an image shows on a terminal.
#include "ctl/image-common.hpp"
#include "ctl/image.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace lodge::ctl {
namespace images {

// Calls `m`, showing lodged's download progress on a terminal meanwhile (the
// ImageDownloadProgress signal: bytes, rate, stage).
int call_showing_downloads(const Options& a, sd_bus* bus, sd_bus_message* m, BusError& err,
                           MessagePtr& reply) {
    if (a.quiet || a.json || !::isatty(STDERR_FILENO)) {
        sd_bus_message* answer = nullptr;
        int r = sd_bus_call(bus, m, 0, &err.e, &answer);
        reply.reset(answer);
        return r;
    }
    struct State {
        bool done = false, shown = false;
        sd_bus_message* reply = nullptr;
    } st;
    sd_bus_slot* signal_slot = nullptr;
    sd_bus_match_signal(
        bus, &signal_slot, service, manager_path, manager_iface, "ImageDownloadProgress",
        [](sd_bus_message* sig, void* ud, sd_bus_error*) {
            auto* s = static_cast<State*>(ud);
            const char *key, *stage;
            uint64_t done, total, rate;
            if (sd_bus_message_read(sig, "ssttt", &key, &stage, &done, &total, &rate) < 0)
                return 0;
            std::fprintf(stderr, "\r\033[KDownloading %s: %s %.1f", key, stage,
                         static_cast<double>(done) / (1 << 20));
            if (total)
                std::fprintf(stderr, " of %.1f", static_cast<double>(total) / (1 << 20));
            std::fprintf(stderr, " MiB (%.1f MiB/s)", static_cast<double>(rate) / (1 << 20));
            s->shown = true;
            return 0;
        },
        &st);
    sd_bus_slot* call_slot = nullptr;
    int r = sd_bus_call_async(
        bus, &call_slot, m,
        [](sd_bus_message* rep, void* ud, sd_bus_error*) {
            auto* s = static_cast<State*>(ud);
            s->done = true;
            s->reply = sd_bus_message_ref(rep);
            return 0;
        },
        &st, UINT64_MAX);
    while (r >= 0 && !st.done) {
        while ((r = sd_bus_process(bus, nullptr)) > 0) {
        }
        if (r >= 0 && !st.done)
            r = sd_bus_wait(bus, UINT64_MAX);
    }
    if (st.shown)
        std::fprintf(stderr, "\r\033[K");
    sd_bus_slot_unref(call_slot);
    sd_bus_slot_unref(signal_slot);
    if (r < 0)
        return r;
    reply.reset(st.reply);
    if (const sd_bus_error* e = sd_bus_message_get_error(st.reply)) {
        sd_bus_error_copy(&err.e, e);
        return -EIO;
    }
    return 0;
}

int list_remote_images(const Options& a, sd_bus* bus, const std::string& remote,
                       const std::string& filter) {
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "ListRemoteImages", "s", remote.c_str());
    if (r < 0)
        return bus_fail(err, r);
    nlohmann::json list = nlohmann::json::array();
    if ((r = sd_bus_message_enter_container(reply.get(), 'a', "(ssssbtas)")) < 0)
        return fail("Unexpected answer from lodged");
    while ((r = sd_bus_message_enter_container(reply.get(), 'r', "ssssbtas")) > 0) {
        const char *fp, *arch, *desc, *type;
        int unused;
        uint64_t size;
        if (sd_bus_message_read(reply.get(), "ssssbt", &fp, &arch, &desc, &type, &unused, &size) <
            0)
            return fail("Unexpected answer from lodged");
        std::vector<std::string> aliases;
        const char* al;
        sd_bus_message_enter_container(reply.get(), 'a', "s");
        while (sd_bus_message_read(reply.get(), "s", &al) > 0)
            aliases.push_back(al);
        sd_bus_message_exit_container(reply.get());
        sd_bus_message_exit_container(reply.get());
        Entry e;
        e.fingerprint = fp;
        e.aliases = aliases;
        if (!filter.empty() && !matches(e, filter))
            continue;
        list.push_back({{"fingerprint", fp},
                        {"architecture", arch},
                        {"description", desc},
                        {"type", type},
                        {"size", size},
                        {"aliases", aliases}});
    }
    if (a.json) {
        std::printf("%s\n", list.dump().c_str());
        return 0;
    }
    if (a.legend)
        std::printf("%-12s  %-24s  %-8s  %-7s  %12s  %s\n", "FINGERPRINT", "ALIASES", "ARCH",
                    "TYPE", "SIZE", "DESCRIPTION");
    for (auto& i : list)
        std::printf("%-12s  %-24s  %-8s  %-7s  %12s  %s\n",
                    i["fingerprint"].get<std::string>().substr(0, 12).c_str(),
                    joined(i["aliases"].get<std::vector<std::string>>()).c_str(),
                    i["architecture"].get<std::string>().c_str(),
                    i["type"].get<std::string>().c_str(),
                    size_of(i["size"].get<uint64_t>()).c_str(),
                    i["description"].get<std::string>().c_str());
    return 0;
}

int image_copy(const Options& a, sd_bus* bus) {
    if (a.args.size() != 4 || a.args[3] != "local:")
        return fail("Usage: lodgectl image copy REMOTE:IMAGE local: [--alias ALIAS]");
    MessagePtr call = new_call_with_aliases(bus, "CopyImage", a.args[2], a);
    if (!call)
        return 1;
    BusError err;
    MessagePtr reply;
    int r = call_showing_downloads(a, bus, call.get(), err, reply);
    if (r < 0)
        return bus_fail(err, r);
    return print_fingerprint(a, reply.get(), "Image copied");
}

} // namespace images

int verb_remote(const Options& a, sd_bus* bus) {
    std::string sub = a.args.size() > 1 ? a.args[1] : "";
    BusError err;
    int r;
    if (sub == "add" && a.args.size() == 4) {
        std::string protocol = "simplestreams", ca;
        if (auto it = a.values.find("protocol"); it != a.values.end())
            protocol = it->second;
        if (auto it = a.values.find("ca"); it != a.values.end()) {
            FILE* f = std::fopen(it->second.c_str(), "re");
            if (!f)
                return fail("Cannot open " + it->second + ": " + std::strerror(errno));
            char buf[4096];
            size_t n;
            while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && ca.size() < (1 << 20))
                ca.append(buf, n);
            std::fclose(f);
        }
        int is_public = a.values.count("public") || protocol == "simplestreams";
        r = call_manager(bus, err, nullptr, "AddRemote", "sssbs", a.args[2].c_str(),
                         a.args[3].c_str(), protocol.c_str(), is_public, ca.c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub == "remove" && a.args.size() == 3) {
        r = call_manager(bus, err, nullptr, "RemoveRemote", "s", a.args[2].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub == "rename" && a.args.size() == 4) {
        r = call_manager(bus, err, nullptr, "RenameRemote", "ss", a.args[2].c_str(),
                         a.args[3].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub != "list" || a.args.size() != 2)
        return fail("Usage: lodgectl remote add NAME URL [--protocol simplestreams|lxd] "
                    "[--public] [--ca FILE] | list | remove NAME | rename NAME NEW");
    MessagePtr reply;
    r = call_manager(bus, err, &reply, "ListRemotes", "");
    if (r < 0)
        return bus_fail(err, r);
    nlohmann::json list = nlohmann::json::array();
    if (sd_bus_message_enter_container(reply.get(), 'a', "(sssbb)") < 0)
        return fail("Unexpected answer from lodged");
    const char *name, *url, *protocol;
    int is_public, has_ca;
    while (sd_bus_message_read(reply.get(), "(sssbb)", &name, &url, &protocol, &is_public,
                               &has_ca) > 0)
        list.push_back({{"name", name},
                        {"url", url},
                        {"protocol", protocol},
                        {"public", is_public != 0},
                        {"ca", has_ca != 0}});
    if (a.json) {
        std::printf("%s\n", list.dump().c_str());
        return 0;
    }
    if (a.legend)
        std::printf("%-16s  %-48s  %-13s  %-6s  %s\n", "NAME", "URL", "PROTOCOL", "PUBLIC", "CA");
    for (auto& rm : list)
        std::printf("%-16s  %-48s  %-13s  %-6s  %s\n", rm["name"].get<std::string>().c_str(),
                    rm["url"].get<std::string>().c_str(), rm["protocol"].get<std::string>().c_str(),
                    rm["public"] ? "yes" : "no", rm["ca"] ? "own" : "system");
    return 0;
}

} // namespace lodge::ctl
