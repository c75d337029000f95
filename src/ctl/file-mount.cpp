// lodgectl file mount NAME[/PATH] DIR: the container's files on DIR through sshfs. No network
// and no ssh: sshfs speaks SFTP (-o passive) over a socket pair with the guest's own
// sftp-server, which `lodgectl exec` runs inside the container as its root, so every path is
// resolved and every permission checked by the guest's kernel view, ids as the guest has them.
// It stays in the foreground until DIR is unmounted (fusermount3 -u DIR) or it is interrupted.
#include "common/validate.hpp"
#include "ctl/bus.hpp"
#include "ctl/instance.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace lodge::ctl {
namespace {

constexpr const char* guest_sftp_server = "/usr/lib/openssh/sftp-server";

// `program` on $PATH, or "".
std::string on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::string dirs = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
    for (size_t pos = 0; pos <= dirs.size();) {
        size_t colon = dirs.find(':', pos);
        std::string dir = dirs.substr(pos, colon == std::string::npos ? colon : colon - pos);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0)
            return candidate;
        if (colon == std::string::npos)
            break;
        pos = colon + 1;
    }
    return {};
}

// Runs argv with `fd` as its standard input and output; the pid, or -1.
pid_t spawn_on(int fd, const std::vector<std::string>& argv) {
    pid_t pid = ::fork();
    if (pid != 0)
        return pid;
    if (::dup2(fd, STDIN_FILENO) < 0 || ::dup2(fd, STDOUT_FILENO) < 0)
        _exit(127);
    std::vector<char*> args;
    for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
}

int wait_status(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

int file_mount(const InstanceOptions& o, sd_bus* bus) {
    if (o.args.size() != 4)
        return fail("Usage: lodgectl file mount NAME[/PATH] DIR");
    std::string name = o.args[2], path = "/";
    if (auto slash = name.find('/'); slash != std::string::npos) {
        path = name.substr(slash);
        name.resize(slash);
    }
    if (auto e = check_container_name(name); !e.empty())
        return fail(e);
    const std::string& dir = o.args[3];
    std::string sshfs = on_path("sshfs");
    if (sshfs.empty())
        return fail("lodgectl file mount needs sshfs, which is not installed (Debian package "
                    "sshfs)");
    BusError err;
    if (int r = call_manager(bus, err, nullptr, "StatContainerFile", "ss", name.c_str(),
                             guest_sftp_server);
        r < 0) {
        if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_FILE_NOT_FOUND))
            return fail("Container \"" + name + "\" has no " + guest_sftp_server +
                        ", which lodgectl file mount runs in it; install openssh-sftp-server "
                        "in the container");
        return bus_fail(err, r);
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return fail(std::string("socketpair: ") + std::strerror(errno));
    std::vector<std::string> server{"/proc/self/exe"};
    if (!o.host.empty())
        server.insert(server.end(), {"-H", o.host});
    server.insert(server.end(), {"exec", name, "-T", "--", guest_sftp_server});
    pid_t server_pid = spawn_on(pair[0], server);
    pid_t sshfs_pid = spawn_on(pair[1], {sshfs, "-f", "-o", "passive", "lodge:" + path, dir});
    ::close(pair[0]);
    ::close(pair[1]);
    if (server_pid < 0 || sshfs_pid < 0) {
        int err_no = errno;
        for (pid_t p : {server_pid, sshfs_pid})
            if (p > 0)
                ::kill(p, SIGTERM), wait_status(p);
        return fail(std::string("Cannot start sshfs: ") + std::strerror(err_no));
    }
    // Interrupted: sshfs unmounts and exits; we wait for it.
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGTERM, SIG_IGN);
    int status = wait_status(sshfs_pid);
    ::kill(server_pid, SIGTERM);
    wait_status(server_pid);
    if (status != 0)
        return fail("sshfs exited with status " + std::to_string(status));
    return 0;
}

} // namespace lodge::ctl
