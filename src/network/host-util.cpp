#include "network/host-util.hpp"

#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/process.hpp"

#include <cerrno>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::network {

int run(const std::vector<std::string>& argv, const std::string& input, std::string& out,
        std::string& err) {
    Fd in(::memfd_create("lodge-in", MFD_CLOEXEC)), o(::memfd_create("lodge-out", MFD_CLOEXEC)),
        e(::memfd_create("lodge-err", MFD_CLOEXEC));
    if (!in || !o || !e)
        return -errno;
    for (size_t done = 0; done < input.size();) {
        ssize_t n = ::write(in.get(), input.data() + done, input.size() - done);
        if (n < 0)
            return -errno;
        done += static_cast<size_t>(n);
    }
    ::lseek(in.get(), 0, SEEK_SET);
    std::vector<char*> args; // built before fork: no allocation in the child
    for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        ::dup2(in.get(), 0);
        ::dup2(o.get(), 1);
        ::dup2(e.get(), 2);
        ::syscall(SYS_close_range, 3U, ~0U, 0U);
        reset_signal_state();
        restore_fd_limit();
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    auto slurp = [](int fd, std::string& to) {
        char buf[8192];
        ssize_t n;
        off_t off = 0;
        while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
            to.append(buf, static_cast<size_t>(n));
            off += n;
        }
    };
    slurp(o.get(), out);
    slurp(e.get(), err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string first_line(const std::string& s) {
    std::string out, line;
    for (char c : s + "\n") {
        if (c != '\n') {
            line += c;
            continue;
        }
        if (line.find_first_not_of(" \t") != std::string::npos)
            out += (out.empty() ? "" : "; ") + line.substr(line.find_first_not_of(" \t"));
        line.clear();
    }
    return out;
}

int write_sysctl(const std::string& path, const std::string& value) {
    return write_file(path, value);
}

} // namespace lodge::network
