#include "ownership.hpp"

#include "fd.hpp"
#include "fileio.hpp"
#include "log.hpp"
#include "paths.hpp"

#include <cerrno>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::ownership {
namespace {

std::string lock_path(const std::string& name) {
    return paths::container_dir(name) + "/owner.lock";
}
std::string record_path(const std::string& name) {
    return paths::container_dir(name) + "/owner.json";
}

std::string first_line(const std::string& path) {
    std::string text;
    if (read_file(path, text) < 0)
        return "";
    return text.substr(0, text.find('\n'));
}

struct flock whole_file(short type) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET; // l_start = l_len = 0: the whole file, however long
    return fl;
}

void read_record(const std::string& name, Owner& owner) {
    std::string text;
    if (read_file(record_path(name), text) < 0)
        return;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object())
        return;
    owner.hostname = j.value("hostname", "");
    owner.machine_id = j.value("machine_id", "");
    owner.boot_id = j.value("boot_id", "");
    owner.supervisor_pid = j.value("supervisor_pid", 0);
}

// The record is believed only while the lock is held, and we hold it: it is overwritten in
// place, padded to a fixed size with blanks (JSON allows them), not replaced by a rename. On
// ext4 a rename over the old record (or a truncation to zero) makes the kernel write the new
// data out at once, 0.4-8 ms of a start; durability buys nothing here, as the lock does not
// outlive a crash. A reader racing the write sees no valid record: "an unknown node".
constexpr size_t record_size = 1024;

int write_record(const std::string& path, const std::string& json) {
    if (json.size() + 1 > record_size)
        return write_file_atomic(path, json + "\n", 0600, false);
    std::string padded = json + std::string(record_size - json.size() - 1, ' ') + "\n";
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd)
        return -errno;
    ssize_t n = ::pwrite(fd.get(), padded.data(), padded.size(), 0);
    if (n < 0)
        return -errno;
    if (static_cast<size_t>(n) != padded.size())
        return -EIO;
    // A longer record from before (a rename-written one never is): cut to ours.
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && static_cast<size_t>(st.st_size) > padded.size() &&
        ::ftruncate(fd.get(), static_cast<off_t>(padded.size())) < 0)
        return -errno;
    return 0;
}

} // namespace

std::string Owner::describe() const {
    if (hostname.empty() && machine_id.empty())
        return "an unknown node";
    std::string s = hostname.empty() ? "a node" : hostname;
    s += " (machine-id " + (machine_id.empty() ? std::string("unknown") : machine_id);
    if (!boot_id.empty())
        s += ", boot " + boot_id;
    if (supervisor_pid > 0)
        s += ", lodge-supervisor PID " + std::to_string(supervisor_pid);
    return s + ")";
}

Owner this_node() {
    Owner o;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0)
        o.hostname = host;
    o.machine_id = first_line("/etc/machine-id");
    o.boot_id = first_line("/proc/sys/kernel/random/boot_id");
    o.supervisor_pid = ::getpid();
    return o;
}

std::string held_message(const std::string& name, const Owner& owner) {
    return "Container \"" + name + "\" is running on " + owner.describe() + ": its directory " +
           paths::container_dir(name) + " is locked there; stop it on that node first";
}

int acquire(const std::string& name, Fd& lock, std::string& error) {
    std::string path = lock_path(name);
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd && errno == ENOENT)
        return 0; // no container directory: loading its config says so
    if (!fd)
        return pass_up(log_error_value(errno, "Cannot open %s", path.c_str()), error);
    struct flock fl = whole_file(F_WRLCK);
    if (::fcntl(fd.get(), F_OFD_SETLK, &fl) < 0) {
        int err = errno;
        if (err != EAGAIN && err != EACCES)
            return pass_up(log_error_value(err, "Cannot lock %s", path.c_str()), error);
        Owner owner;
        read_record(name, owner);
        error = held_message(name, owner);
        log_error("%s", error.c_str());
        return -EBUSY;
    }
    Owner me = this_node();
    nlohmann::json j = {{"hostname", me.hostname},
                        {"machine_id", me.machine_id},
                        {"boot_id", me.boot_id},
                        {"supervisor_pid", me.supervisor_pid}};
    if (int r = write_record(record_path(name), j.dump()); r < 0)
        return pass_up(log_error_value(r, "Cannot write %s", record_path(name).c_str()), error);
    lock = std::move(fd);
    return 0;
}

int probe(const std::string& name, Owner& owner) {
    Fd fd(::open(lock_path(name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd)
        return errno == ENOENT ? 0 : -errno;
    struct flock fl = whole_file(F_WRLCK);
    if (::fcntl(fd.get(), F_OFD_GETLK, &fl) < 0)
        return -errno;
    if (fl.l_type == F_UNLCK)
        return 0;
    read_record(name, owner);
    return 1;
}

} // namespace lodge::ownership
