// lodgectl's image store verbs (lodge-images(7)): `image list|info|delete|alias|import|export`
// (`image copy` and `image list REMOTE:` are image-remote.cpp's), and what the image verb files
// share (image-common.hpp).
#include "ctl/image.hpp"
#include "ctl/image-common.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::ctl {
namespace images {

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

std::string local_ref(const std::string& ref) {
    return ref.rfind("local:", 0) == 0 ? ref.substr(6) : ref;
}

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v)
        out += (out.empty() ? "" : ",") + s;
    return out;
}

std::string size_of(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

int append_aliases(sd_bus_message* m, const Options& a) {
    int r = sd_bus_message_open_container(m, 'a', "s");
    if (auto it = a.values.find("alias"); it != a.values.end() && r >= 0)
        r = sd_bus_message_append(m, "s", it->second.c_str());
    return r < 0 ? r : sd_bus_message_close_container(m);
}

MessagePtr new_call_with_aliases(sd_bus* bus, const char* method, const std::string& first,
                                 const Options& a) {
    MessagePtr call = new_manager_call(bus, method);
    if (!call)
        return nullptr;
    int r = sd_bus_message_append(call.get(), "s", first.c_str());
    if (r >= 0)
        r = append_aliases(call.get(), a);
    if (r < 0) {
        fail("Cannot build the request");
        return nullptr;
    }
    return call;
}

int print_fingerprint(const Options& a, sd_bus_message* reply, const char* done) {
    const char* fp = nullptr;
    if (sd_bus_message_read(reply, "s", &fp) < 0)
        return fail("Unexpected answer from lodged");
    if (a.json)
        std::printf("%s\n", nlohmann::json{{"fingerprint", fp}}.dump().c_str());
    else if (!a.quiet)
        std::printf("%s with fingerprint: %s\n", done, fp);
    else
        std::printf("%s\n", fp);
    return 0;
}

} // namespace images

namespace {

using namespace images;

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

int list_entries(sd_bus* bus, std::vector<Entry>& out, BusError& err) {
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "ListImages", "");
    if (r < 0)
        return r;
    if ((r = sd_bus_message_enter_container(reply.get(), 'a', "(sssttta{ss}asbs)")) < 0)
        return r;
    for (;;) {
        Entry e;
        r = read_entry(reply.get(), e);
        if (r <= 0)
            break;
        out.push_back(std::move(e));
    }
    return r;
}

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
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "GetImage", "s", local_ref(a.args[2]).c_str());
    if (r < 0)
        return bus_fail(err, r);
    Entry e;
    if ((r = read_entry(reply.get(), e)) <= 0)
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
        if (int r =
                call_manager(bus, err, nullptr, "DeleteImage", "s", local_ref(a.args[i]).c_str());
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
    MessagePtr reply;
    int r;
    if (sub == "create" && a.args.size() == 5)
        r = call_manager(bus, err, nullptr, "CreateImageAlias", "ss", a.args[3].c_str(),
                         local_ref(a.args[4]).c_str());
    else if (sub == "delete" && a.args.size() == 4)
        r = call_manager(bus, err, nullptr, "DeleteImageAlias", "s", a.args[3].c_str());
    else if (sub == "list" && a.args.size() == 3)
        r = call_manager(bus, err, &reply, "ListImageAliases", "");
    else
        return fail(usage);
    if (r < 0)
        return bus_fail(err, r);
    if (!reply)
        return 0;
    std::vector<std::pair<std::string, std::string>> rows;
    if ((r = sd_bus_message_enter_container(reply.get(), 'a', "(ss)")) < 0)
        return fail("Unexpected answer from lodged");
    const char *alias, *fp;
    while ((r = sd_bus_message_read(reply.get(), "(ss)", &alias, &fp)) > 0)
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
        fds.push_back(fd);
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            close_all();
            return fail(a.args[i] + " is a directory; an image is a tarball (or two)");
        }
    }
    MessagePtr call = new_manager_call(bus, fds.size() == 2 ? "ImportImageSplit" : "ImportImage");
    int r = call ? 0 : -ENOMEM;
    for (int fd : fds)
        if (r >= 0)
            r = sd_bus_message_append(call.get(), "h", fd);
    if (r >= 0)
        r = append_aliases(call.get(), a);
    BusError err;
    MessagePtr reply;
    sd_bus_message* answer = nullptr;
    if (r >= 0)
        r = sd_bus_call(bus, call.get(), 0, &err.e, &answer);
    reply.reset(answer);
    close_all();
    if (!call)
        return 1;
    if (r < 0)
        return bus_fail(err, r);
    return print_fingerprint(a, reply.get(), "Image imported");
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
    MessagePtr reply;
    int r = call_manager(bus, err, &reply, "OpenImage", "s", local_ref(a.args[2]).c_str());
    if (r < 0) {
        ::close(dir);
        return bus_fail(err, r);
    }
    const char *fp = nullptr, *type = nullptr;
    std::vector<int> files;
    if ((r = sd_bus_message_read(reply.get(), "ss", &fp, &type)) >= 0 &&
        (r = sd_bus_message_enter_container(reply.get(), 'a', "h")) >= 0) {
        int fd;
        while ((r = sd_bus_message_read(reply.get(), "h", &fd)) > 0)
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

// The auto-update images' check, now (RefreshImages) or only when an
// images.auto_update_interval has passed since the last (RefreshDueImages, the timer's).
int image_refresh(const Options& a, sd_bus* bus) {
    if (a.args.size() != 2)
        return fail("Usage: lodgectl image refresh [--due]");
    BusError err;
    MessagePtr reply;
    int r = call_manager(bus, err, &reply,
                         a.values.count("due") ? "RefreshDueImages" : "RefreshImages", "");
    if (r < 0)
        return bus_fail(err, r);
    if ((r = sd_bus_message_enter_container(reply.get(), 'a', "(ss)")) < 0)
        return fail("Unexpected answer from lodged");
    const char *from, *to;
    while ((r = sd_bus_message_read(reply.get(), "(ss)", &from, &to)) > 0)
        if (!a.quiet)
            std::printf("Image %s replaced by %s\n", from, to);
    return r < 0 ? fail("Unexpected answer from lodged") : 0;
}

} // namespace

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
    if (sub == "refresh")
        return image_refresh(a, bus);
    return fail("Usage: lodgectl image list [FILTER] | info IMAGE | delete IMAGE... | alias "
                "create|delete|list | import FILE [ROOTFS] [--alias A] | export IMAGE DIR | copy "
                "REMOTE:IMAGE local: [--alias A] | refresh [--due]");
}

} // namespace lodge::ctl
