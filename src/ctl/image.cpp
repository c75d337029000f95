#include "ctl/image.hpp"

#include "common/validate.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::ctl {
namespace {

constexpr const char* service = "io.lodge1";
constexpr const char* manager_path = "/io/lodge1";
constexpr const char* manager_iface = "io.lodge1.Manager";

struct BusError {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ~BusError() { sd_bus_error_free(&e); }
};

struct Message {
    sd_bus_message* m = nullptr;
    ~Message() { sd_bus_message_unref(m); }
};

int fail(const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
}

int bus_fail(const BusError& err, int r) {
    if (sd_bus_error_is_set(&err.e))
        return fail(err.e.message ? err.e.message : err.e.name);
    return fail(std::string("Failed to talk to lodged: ") + std::strerror(-r));
}

struct Entry {
    std::string fingerprint, type, architecture, source;
    uint64_t size = 0, uploaded = 0, last_used = 0;
    std::map<std::string, std::string> properties;
    std::vector<std::string> aliases;
    bool cached = false;
};

int read_entry(sd_bus_message* m, Entry& out) {
    int r = sd_bus_message_enter_container(m, 'r', "sssttta{ss}asbs");
    if (r <= 0)
        return r;
    const char *fp, *type, *arch, *source;
    if ((r = sd_bus_message_read(m, "sssttt", &fp, &type, &arch, &out.size, &out.uploaded,
                                 &out.last_used)) < 0)
        return r;
    out.fingerprint = fp;
    out.type = type;
    out.architecture = arch;
    if ((r = sd_bus_message_enter_container(m, 'a', "{ss}")) < 0)
        return r;
    const char *k, *v;
    while ((r = sd_bus_message_read(m, "{ss}", &k, &v)) > 0)
        out.properties[k] = v;
    if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
        return r;
    if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0)
        return r;
    const char* s;
    while ((r = sd_bus_message_read(m, "s", &s)) > 0)
        out.aliases.push_back(s);
    if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
        return r;
    int cached = 0;
    if ((r = sd_bus_message_read(m, "bs", &cached, &source)) < 0)
        return r;
    out.cached = cached;
    out.source = source;
    r = sd_bus_message_exit_container(m);
    return r < 0 ? r : 1;
}

nlohmann::json entry_json(const Entry& e) {
    return nlohmann::json{{"fingerprint", e.fingerprint},
                          {"type", e.type},
                          {"architecture", e.architecture},
                          {"size", e.size},
                          {"uploaded_at", e.uploaded / 1000000},
                          {"last_used_at", e.last_used / 1000000},
                          {"properties", e.properties},
                          {"aliases", e.aliases},
                          {"cached", e.cached},
                          {"source", e.source}};
}

std::string date_of(uint64_t usec) {
    if (usec == 0)
        return "never";
    time_t t = static_cast<time_t>(usec / 1000000);
    struct tm tm {};
    ::gmtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
    return buf;
}

std::string size_of(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v)
        out += (out.empty() ? "" : ",") + s;
    return out;
}

// "local:x" is "x"; other remotes are lodged's to resolve.
std::string local_ref(const std::string& ref) {
    return ref.rfind("local:", 0) == 0 ? ref.substr(6) : ref;
}

int list_entries(sd_bus* bus, std::vector<Entry>& out, BusError& err) {
    Message reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "ListImages", &err.e,
                               &reply.m, "");
    if (r < 0)
        return r;
    if ((r = sd_bus_message_enter_container(reply.m, 'a', "(sssttta{ss}asbs)")) < 0)
        return r;
    for (;;) {
        Entry e;
        r = read_entry(reply.m, e);
        if (r <= 0)
            break;
        out.push_back(std::move(e));
    }
    return r;
}

// FILTER: a fingerprint prefix, a part of an alias, or KEY=VALUE on the properties.
bool matches(const Entry& e, const std::string& filter) {
    if (filter.empty())
        return true;
    if (auto eq = filter.find('='); eq != std::string::npos) {
        auto it = e.properties.find(filter.substr(0, eq));
        return it != e.properties.end() && it->second == filter.substr(eq + 1);
    }
    if (e.fingerprint.rfind(filter, 0) == 0)
        return true;
    for (auto& a : e.aliases)
        if (a.find(filter) != std::string::npos)
            return true;
    return false;
}

int list_remote_images(const Options& a, sd_bus* bus, const std::string& remote,
                       const std::string& filter);

int image_list(const Options& a, sd_bus* bus) {
    std::string filter = a.args.size() > 2 ? local_ref(a.args[2]) : "";
    // image list REMOTE: [FILTER]
    if (auto colon = filter.find(':'); colon != std::string::npos) {
        std::string rest = filter.substr(colon + 1);
        if (rest.empty() && a.args.size() > 3)
            rest = a.args[3];
        return list_remote_images(a, bus, filter.substr(0, colon), rest);
    }
    std::vector<Entry> all;
    BusError err;
    if (int r = list_entries(bus, all, err); r < 0)
        return bus_fail(err, r);
    std::vector<Entry> shown;
    for (auto& e : all)
        if (matches(e, filter))
            shown.push_back(e);
    if (a.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& e : shown)
            j.push_back(entry_json(e));
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (a.quiet) {
        for (auto& e : shown)
            std::printf("%s\n", e.fingerprint.c_str());
        return 0;
    }
    if (a.legend)
        std::printf("%-12s  %-20s  %-8s  %-7s  %12s  %-20s  %s\n", "FINGERPRINT", "ALIASES", "ARCH",
                    "TYPE", "SIZE", "UPLOADED", "DESCRIPTION");
    for (auto& e : shown) {
        auto d = e.properties.find("description");
        std::printf("%-12s  %-20s  %-8s  %-7s  %12s  %-20s  %s\n",
                    e.fingerprint.substr(0, 12).c_str(), joined(e.aliases).c_str(),
                    e.architecture.c_str(), e.type.c_str(), size_of(e.size).c_str(),
                    date_of(e.uploaded).c_str(), d == e.properties.end() ? "" : d->second.c_str());
    }
    if (a.legend)
        std::printf("\n%zu images listed.\n", shown.size());
    return 0;
}

int image_info(const Options& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return fail("Usage: lodgectl image info IMAGE [--json]");
    BusError err;
    Message reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "GetImage", &err.e,
                               &reply.m, "s", local_ref(a.args[2]).c_str());
    if (r < 0)
        return bus_fail(err, r);
    Entry e;
    if ((r = read_entry(reply.m, e)) <= 0)
        return fail("Unexpected answer from lodged");
    if (a.json) {
        std::printf("%s\n", entry_json(e).dump().c_str());
        return 0;
    }
    std::printf("Fingerprint: %s\nType: %s\nArchitecture: %s\nSize: %s\nUploaded: %s\n"
                "Last used: %s\nCached: %s\n",
                e.fingerprint.c_str(), e.type.c_str(), e.architecture.c_str(),
                size_of(e.size).c_str(), date_of(e.uploaded).c_str(), date_of(e.last_used).c_str(),
                e.cached ? "yes" : "no");
    if (!e.source.empty())
        std::printf("Source: %s\n", e.source.c_str());
    std::printf("Properties:\n");
    for (auto& [k, v] : e.properties)
        std::printf("    %s: %s\n", k.c_str(), v.c_str());
    std::printf("Aliases:\n");
    for (auto& al : e.aliases)
        std::printf("    - %s\n", al.c_str());
    return 0;
}

int image_delete(const Options& a, sd_bus* bus) {
    if (a.args.size() < 3)
        return fail("Usage: lodgectl image delete IMAGE...");
    int ret = 0;
    for (size_t i = 2; i < a.args.size(); i++) {
        BusError err;
        if (int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "DeleteImage",
                                       &err.e, nullptr, "s", local_ref(a.args[i]).c_str());
            r < 0)
            ret = bus_fail(err, r);
    }
    return ret;
}

int image_alias(const Options& a, sd_bus* bus) {
    const char* usage = "Usage: lodgectl image alias create ALIAS IMAGE | delete ALIAS | list "
                        "[--json]";
    std::string sub = a.args.size() > 2 ? a.args[2] : "";
    BusError err;
    int r;
    if (sub == "create" && a.args.size() == 5) {
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "CreateImageAlias",
                               &err.e, nullptr, "ss", a.args[3].c_str(),
                               local_ref(a.args[4]).c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub == "delete" && a.args.size() == 4) {
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "DeleteImageAlias",
                               &err.e, nullptr, "s", a.args[3].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub != "list" || a.args.size() != 3)
        return fail(usage);
    Message reply;
    r = sd_bus_call_method(bus, service, manager_path, manager_iface, "ListImageAliases", &err.e,
                           &reply.m, "");
    if (r < 0)
        return bus_fail(err, r);
    std::vector<std::pair<std::string, std::string>> rows;
    if ((r = sd_bus_message_enter_container(reply.m, 'a', "(ss)")) < 0)
        return fail("Unexpected answer from lodged");
    const char *alias, *fp;
    while ((r = sd_bus_message_read(reply.m, "(ss)", &alias, &fp)) > 0)
        rows.emplace_back(alias, fp);
    if (a.json) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& [al, f] : rows)
            j.push_back({{"name", al}, {"target", f}});
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    if (a.legend)
        std::printf("%-30s  %s\n", "ALIAS", "FINGERPRINT");
    for (auto& [al, f] : rows)
        std::printf("%-30s  %s\n", al.c_str(), f.substr(0, 12).c_str());
    return 0;
}

int image_import(const Options& a, sd_bus* bus) {
    if (a.args.size() < 3 || a.args.size() > 4)
        return fail("Usage: lodgectl image import FILE [ROOTFS] [--alias ALIAS]");
    std::vector<int> fds;
    auto close_all = [&] {
        for (int fd : fds)
            ::close(fd);
    };
    for (size_t i = 2; i < a.args.size(); i++) {
        int fd = ::open(a.args[i].c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            close_all();
            return fail("Cannot open " + a.args[i] + ": " + std::strerror(errno));
        }
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            fds.push_back(fd);
            close_all();
            return fail(a.args[i] + " is a directory; an image is a tarball (or two)");
        }
        fds.push_back(fd);
    }
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                           fds.size() == 2 ? "ImportImageSplit" : "ImportImage");
    if (r < 0) {
        close_all();
        return fail("Cannot build the request");
    }
    Message call{m};
    for (int fd : fds)
        if (r >= 0)
            r = sd_bus_message_append(m, "h", fd);
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "s");
    if (auto it = a.values.find("alias"); it != a.values.end() && r >= 0)
        r = sd_bus_message_append(m, "s", it->second.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    BusError err;
    Message reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    close_all();
    if (r < 0)
        return bus_fail(err, r);
    const char* fp = nullptr;
    if (sd_bus_message_read(reply.m, "s", &fp) < 0)
        return fail("Unexpected answer from lodged");
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"fingerprint", fp}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Image imported with fingerprint: %s\n", fp);
    else
        std::printf("%s\n", fp);
    return 0;
}

// The usual file name ending for an image file, from its first bytes.
std::string extension_of(int fd) {
    unsigned char magic[6] = {};
    ssize_t n = ::pread(fd, magic, sizeof magic, 0);
    if (n >= 6 && std::memcmp(magic,
                              "\xfd"
                              "7zXZ",
                              5) == 0)
        return ".tar.xz";
    if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
        return ".tar.gz";
    if (n >= 4 && std::memcmp(magic, "\x28\xb5\x2f\xfd", 4) == 0)
        return ".tar.zst";
    if (n >= 3 && std::memcmp(magic, "BZh", 3) == 0)
        return ".tar.bz2";
    if (n >= 4 && std::memcmp(magic, "hsqs", 4) == 0)
        return ".squashfs";
    return ".tar";
}

int copy_out(int in, int dir, const std::string& name, const std::string& shown) {
    int out =
        ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (out < 0)
        return fail("Cannot create " + shown + ": " + std::strerror(errno));
    std::vector<char> buf(1 << 20);
    off_t pos = 0;
    for (;;) {
        ssize_t n = ::pread(in, buf.data(), buf.size(), pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = errno;
            if (n < 0 || ::fsync(out) < 0) {
                ::close(out);
                ::unlinkat(dir, name.c_str(), 0);
                return fail("Cannot write " + shown + ": " + std::strerror(n < 0 ? err : errno));
            }
            break;
        }
        pos += n;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                int err = errno;
                ::close(out);
                ::unlinkat(dir, name.c_str(), 0);
                return fail("Cannot write " + shown + ": " + std::strerror(err));
            }
            done += w;
        }
    }
    ::close(out);
    return 0;
}

int image_export(const Options& a, sd_bus* bus) {
    if (a.args.size() != 4)
        return fail("Usage: lodgectl image export IMAGE DIRECTORY");
    int dir = ::open(a.args[3].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return fail("Cannot open " + a.args[3] + ": " + std::strerror(errno));
    BusError err;
    Message reply;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "OpenImage", &err.e,
                               &reply.m, "s", local_ref(a.args[2]).c_str());
    if (r < 0) {
        ::close(dir);
        return bus_fail(err, r);
    }
    const char *fp = nullptr, *type = nullptr;
    std::vector<int> files;
    if ((r = sd_bus_message_read(reply.m, "ss", &fp, &type)) >= 0 &&
        (r = sd_bus_message_enter_container(reply.m, 'a', "h")) >= 0) {
        int fd;
        while ((r = sd_bus_message_read(reply.m, "h", &fd)) > 0)
            files.push_back(fd);
    }
    if (r < 0 || files.empty()) {
        ::close(dir);
        return fail("Unexpected answer from lodged");
    }
    // LXD's names: <fp>.<ext> for a unified image, meta-<fp>.<ext> + <fp>.<ext> for a split one.
    std::vector<std::string> names;
    if (files.size() == 1)
        names.push_back(std::string(fp) + extension_of(files[0]));
    else
        names = {"meta-" + std::string(fp) + extension_of(files[0]),
                 std::string(fp) + extension_of(files[1])};
    int ret = 0;
    std::vector<std::string> written;
    for (size_t i = 0; i < files.size() && ret == 0; i++) {
        ret = copy_out(files[i], dir, names[i], a.args[3] + "/" + names[i]);
        if (ret == 0)
            written.push_back(names[i]);
    }
    if (ret != 0)
        for (auto& n : written)
            ::unlinkat(dir, n.c_str(), 0);
    ::close(dir);
    if (ret != 0)
        return ret;
    if (a.json) {
        std::printf("%s\n", nlohmann::json{{"fingerprint", fp}, {"files", names}}.dump().c_str());
    } else if (!a.quiet) {
        for (auto& n : names)
            std::printf("%s/%s\n", a.args[3].c_str(), n.c_str());
    }
    return 0;
}

int append_config(sd_bus_message* m, const Options& a, std::string& bad) {
    int r = sd_bus_message_open_container(m, 'a', "{ss}");
    for (auto& kv : a.config) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
            bad = kv;
            return -EINVAL;
        }
        if (r >= 0)
            r = sd_bus_message_append(m, "{ss}", kv.substr(0, eq).c_str(),
                                      kv.substr(eq + 1).c_str());
    }
    if (a.values.count("privileged") && r >= 0)
        r = sd_bus_message_append(m, "{ss}", "security.privileged", "true");
    return r < 0 ? r : sd_bus_message_close_container(m);
}

// Calls `m`, showing lodged's download progress on a terminal meanwhile (the
// ImageDownloadProgress signal: bytes, rate, stage).
int call_showing_downloads(const Options& a, sd_bus* bus, sd_bus_message* m, BusError& err,
                           Message& reply) {
    if (a.quiet || a.json || !::isatty(STDERR_FILENO))
        return sd_bus_call(bus, m, 0, &err.e, &reply.m);
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
    reply.m = st.reply;
    if (const sd_bus_error* e = sd_bus_message_get_error(st.reply)) {
        sd_bus_error_copy(&err.e, e);
        return -EIO;
    }
    return 0;
}

int create_quietly(const Options& a, sd_bus* bus, const std::string& name, const std::string& ref) {
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                           "CreateContainerFromImage");
    if (r < 0)
        return fail("Cannot build the request");
    Message call{m};
    std::string bad;
    r = sd_bus_message_append(m, "s", name.c_str());
    if (r >= 0 && (r = append_config(m, a, bad)) == -EINVAL)
        return fail("Invalid config \"" + bad + "\": expected KEY=VALUE");
    if (r >= 0)
        r = sd_bus_message_append(m, "s", local_ref(ref).c_str());
    BusError err;
    Message reply;
    if (r >= 0)
        r = call_showing_downloads(a, bus, m, err, reply);
    return r < 0 ? bus_fail(err, r) : 0;
}

int list_remote_images(const Options& a, sd_bus* bus, const std::string& remote,
                       const std::string& filter) {
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                           "ListRemoteImages");
    if (r < 0)
        return fail("Cannot build the request");
    Message call{m};
    BusError err;
    Message reply;
    if ((r = sd_bus_message_append(m, "s", remote.c_str())) >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    if (r < 0)
        return bus_fail(err, r);
    nlohmann::json list = nlohmann::json::array();
    if ((r = sd_bus_message_enter_container(reply.m, 'a', "(ssssbtas)")) < 0)
        return fail("Unexpected answer from lodged");
    while ((r = sd_bus_message_enter_container(reply.m, 'r', "ssssbtas")) > 0) {
        const char *fp, *arch, *desc, *type;
        int unused;
        uint64_t size;
        if (sd_bus_message_read(reply.m, "ssssbt", &fp, &arch, &desc, &type, &unused, &size) < 0)
            return fail("Unexpected answer from lodged");
        std::vector<std::string> aliases;
        const char* al;
        sd_bus_message_enter_container(reply.m, 'a', "s");
        while (sd_bus_message_read(reply.m, "s", &al) > 0)
            aliases.push_back(al);
        sd_bus_message_exit_container(reply.m);
        sd_bus_message_exit_container(reply.m);
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
    sd_bus_message* m = nullptr;
    int r =
        sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface, "CopyImage");
    if (r < 0)
        return fail("Cannot build the request");
    Message call{m};
    r = sd_bus_message_append(m, "s", a.args[2].c_str());
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "s");
    if (auto it = a.values.find("alias"); it != a.values.end() && r >= 0)
        r = sd_bus_message_append(m, "s", it->second.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    BusError err;
    Message reply;
    if (r >= 0)
        r = call_showing_downloads(a, bus, m, err, reply);
    if (r < 0)
        return bus_fail(err, r);
    const char* fp = nullptr;
    if (sd_bus_message_read(reply.m, "s", &fp) < 0)
        return fail("Unexpected answer from lodged");
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"fingerprint", fp}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Image copied with fingerprint: %s\n", fp);
    else
        std::printf("%s\n", fp);
    return 0;
}

} // namespace

int create_from_image(const Options& a, sd_bus* bus, const std::string& name,
                      const std::string& ref) {
    if (int r = create_quietly(a, bus, name, ref); r != 0 || (r = join_network(a, bus, name)) != 0)
        return r;
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"name", name}, {"created", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Created container %s\n", name.c_str());
    return 0;
}

int verb_launch(const Options& a, sd_bus* bus) {
    if (a.args.size() != 3)
        return fail("Usage: lodgectl launch [REMOTE:]IMAGE NAME [-c KEY=VALUE]... [--network NET] "
                    "[--privileged]");
    const std::string &ref = a.args[1], &name = a.args[2];
    if (int r = create_quietly(a, bus, name, ref); r != 0 || (r = join_network(a, bus, name)) != 0)
        return r;
    BusError err;
    int r = sd_bus_call_method(bus, service, manager_path, manager_iface, "StartContainer", &err.e,
                               nullptr, "s", name.c_str());
    if (r < 0)
        return bus_fail(err, r);
    if (a.json)
        std::printf(
            "%s\n",
            nlohmann::json{{"name", name}, {"created", true}, {"started", true}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Launched container %s\n", name.c_str());
    return 0;
}

int verb_publish(const Options& a, sd_bus* bus) {
    if (a.args.size() != 2)
        return fail("Usage: lodgectl publish NAME [--alias ALIAS] [--compression "
                    "gzip|xz|zstd|none]");
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus, &m, service, manager_path, manager_iface,
                                           "PublishContainer");
    if (r < 0)
        return fail("Cannot build the request");
    Message call{m};
    r = sd_bus_message_append(m, "s", a.args[1].c_str());
    if (r >= 0)
        r = sd_bus_message_open_container(m, 'a', "s");
    if (auto it = a.values.find("alias"); it != a.values.end() && r >= 0)
        r = sd_bus_message_append(m, "s", it->second.c_str());
    if (r >= 0)
        r = sd_bus_message_close_container(m);
    auto comp = a.values.find("compression");
    if (r >= 0)
        r = sd_bus_message_append(m, "s", comp == a.values.end() ? "" : comp->second.c_str());
    BusError err;
    Message reply;
    if (r >= 0)
        r = sd_bus_call(bus, m, 0, &err.e, &reply.m);
    if (r < 0)
        return bus_fail(err, r);
    const char* fp = nullptr;
    if (sd_bus_message_read(reply.m, "s", &fp) < 0)
        return fail("Unexpected answer from lodged");
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"fingerprint", fp}}.dump().c_str());
    else if (!a.quiet)
        std::printf("Container published with fingerprint: %s\n", fp);
    else
        std::printf("%s\n", fp);
    return 0;
}

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
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "AddRemote", &err.e,
                               nullptr, "sssbs", a.args[2].c_str(), a.args[3].c_str(),
                               protocol.c_str(), is_public, ca.c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub == "remove" && a.args.size() == 3) {
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "RemoveRemote", &err.e,
                               nullptr, "s", a.args[2].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub == "rename" && a.args.size() == 4) {
        r = sd_bus_call_method(bus, service, manager_path, manager_iface, "RenameRemote", &err.e,
                               nullptr, "ss", a.args[2].c_str(), a.args[3].c_str());
        return r < 0 ? bus_fail(err, r) : 0;
    }
    if (sub != "list" || a.args.size() != 2)
        return fail("Usage: lodgectl remote add NAME URL [--protocol simplestreams|lxd] "
                    "[--public] [--ca FILE] | list | remove NAME | rename NAME NEW");
    Message reply;
    r = sd_bus_call_method(bus, service, manager_path, manager_iface, "ListRemotes", &err.e,
                           &reply.m, "");
    if (r < 0)
        return bus_fail(err, r);
    nlohmann::json list = nlohmann::json::array();
    if (sd_bus_message_enter_container(reply.m, 'a', "(sssbb)") < 0)
        return fail("Unexpected answer from lodged");
    const char *name, *url, *protocol;
    int is_public, has_ca;
    while (sd_bus_message_read(reply.m, "(sssbb)", &name, &url, &protocol, &is_public, &has_ca) > 0)
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

int verb_image(const Options& a, sd_bus* bus) {
    std::string sub = a.args.size() > 1 ? a.args[1] : "";
    if (sub == "list")
        return image_list(a, bus);
    if (sub == "info")
        return image_info(a, bus);
    if (sub == "delete")
        return image_delete(a, bus);
    if (sub == "alias")
        return image_alias(a, bus);
    if (sub == "import")
        return image_import(a, bus);
    if (sub == "export")
        return image_export(a, bus);
    if (sub == "copy")
        return image_copy(a, bus);
    return fail("Usage: lodgectl image list [FILTER] | info IMAGE | delete IMAGE... | alias "
                "create|delete|list | import FILE [ROOTFS] [--alias A] | export IMAGE DIR | copy "
                "REMOTE:IMAGE local: [--alias A]");
}

} // namespace lodge::ctl
