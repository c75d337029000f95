// Move-only owners of file descriptors and pidfds.
#pragma once

#include <cerrno>
#include <csignal>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>

namespace lodge {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& other) noexcept : fd_(other.release()) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other)
            reset(other.release());
        return *this;
    }
    ~Fd() { reset(); }

    int get() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) {
            int saved = errno;
            ::close(fd_);
            errno = saved;
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

// A pidfd plus the pid it refers to, so logs can name the process.
class PidFd {
public:
    PidFd() = default;
    PidFd(int fd, pid_t pid) noexcept : fd_(fd), pid_(pid) {}
    PidFd(PidFd&&) noexcept = default;
    PidFd& operator=(PidFd&&) noexcept = default;

    static PidFd open(pid_t pid) noexcept {
        int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        return fd < 0 ? PidFd() : PidFd(fd, pid);
    }

    int get() const noexcept { return fd_.get(); }
    pid_t pid() const noexcept { return pid_; }
    bool valid() const noexcept { return fd_.valid(); }
    void reset() noexcept {
        fd_.reset();
        pid_ = 0;
    }

    // Returns 0 or -errno. Signalling through the pidfd cannot hit a recycled pid.
    int send_signal(int sig) const noexcept {
        if (::syscall(SYS_pidfd_send_signal, fd_.get(), sig, nullptr, 0) < 0)
            return -errno;
        return 0;
    }

private:
    Fd fd_;
    pid_t pid_ = 0;
};

} // namespace lodge
