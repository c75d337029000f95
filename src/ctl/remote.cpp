#include "ctl/remote.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::ctl {

bool needs_fds(const std::vector<std::string>& args) {
    if (args.empty())
        return false;
    const std::string& verb = args[0];
    return verb == "exec" || verb == "shell" || verb == "console" || verb == "export" ||
           verb == "import" || (verb == "create" && args.size() > 2);
}

// ssh hands the remote shell one command line: every word single-quoted.
static std::string quote(const std::string& word) {
    std::string q = "'";
    for (char c : word)
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

int run_remote_lodgectl(const std::string& host, bool tty, int argc, char** argv) {
    std::string command = "lodgectl";
    bool after_dashes = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (!after_dashes && (a == "-H" || a == "--host")) {
            i++; // and its value
            continue;
        }
        if (a == "--")
            after_dashes = true;
        command += " " + quote(a);
    }
    std::vector<const char*> ssh = {"ssh",           "-x",   tty ? "-t" : "-T", host.c_str(), "--",
                                    command.c_str(), nullptr};
    pid_t pid = ::fork();
    if (pid < 0) {
        std::fprintf(stderr, "Cannot run ssh: %s\n", std::strerror(errno));
        return 1;
    }
    if (pid == 0) {
        ::execvp("ssh", const_cast<char* const*>(ssh.data()));
        std::fprintf(stderr, "Cannot run ssh: %s\n", std::strerror(errno));
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace lodge::ctl
