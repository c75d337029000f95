#include "ctl/editor.hpp"
#include "ctl/bus.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::ctl {
namespace {

// Runs $VISUAL, $EDITOR or vi on `path`; 0 when it exited 0.
int run_editor(const std::string& path) {
    const char* editor = std::getenv("VISUAL");
    if (!editor || !*editor)
        editor = std::getenv("EDITOR");
    std::string cmd = std::string(editor && *editor ? editor : "vi") + " \"$1\"";
    pid_t pid = ::fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        ::execl("/bin/sh", "sh", "-c", cmd.c_str(), "sh", path.c_str(), nullptr);
        _exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

} // namespace

int edit_in_editor(const EditSession& s) {
    std::string tmp = std::string("/tmp/lodgectl-edit-XXXXXX") + s.suffix;
    int fd = ::mkstemps(tmp.data(), static_cast<int>(std::strlen(s.suffix)));
    if (fd < 0)
        return fail(std::string("Cannot create a temporary file: ") + std::strerror(errno));
    bool filled = s.fill(fd);
    ::close(fd);
    int ret = filled ? 0 : 1;
    while (filled) {
        if (run_editor(tmp) < 0) {
            ret = fail("The editor failed; " + s.what + " is unchanged");
            break;
        }
        int edited = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
        if (edited < 0) {
            ret = fail("Cannot read " + tmp + ": " + std::strerror(errno));
            break;
        }
        std::string error = s.accept(edited);
        ::close(edited);
        if (error.empty())
            break;
        if (!s.reopen) {
            ret = fail(error);
            break;
        }
        // As lxc config edit: say what is wrong and offer the editor again, edits kept.
        std::fprintf(stderr,
                     "Config parsing error: %s\nPress enter to open the editor again "
                     "or ctrl+c to abort change\n",
                     error.c_str());
        std::string line;
        if (!std::getline(std::cin, line)) {
            ret = 1;
            break;
        }
    }
    ::unlink(tmp.c_str());
    return ret;
}

} // namespace lodge::ctl
