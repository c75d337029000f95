#include "common/fdpass.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>

namespace lodge {

int send_with_fds(int sock, const std::string& text, const std::vector<int>& fds) {
    if (fds.size() > max_fds_per_message)
        return -E2BIG;
    struct iovec iov {
        const_cast<char*>(text.data()), text.size()
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_message)] = {};
    if (!fds.empty()) {
        size_t bytes = sizeof(int) * fds.size();
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(bytes);
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(bytes);
        std::memcpy(CMSG_DATA(cmsg), fds.data(), bytes);
    }
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        return -errno;
    return 0;
}

int send_with_fd(int sock, const std::string& text, int fd) {
    return send_with_fds(sock, text, fd >= 0 ? std::vector<int>{fd} : std::vector<int>{});
}

ssize_t recv_with_fds(int sock, std::string& text, std::vector<Fd>& fds) {
    char buf[max_message_size];
    struct iovec iov {
        buf, sizeof buf
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_message)] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do
        n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    fds.clear();
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int received;
                std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fds.emplace_back(received);
            }
        }
    // More descriptors than asked for (none is trusted), or more text than fits.
    if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
        fds.clear();
        return -EMSGSIZE;
    }
    text.assign(buf, static_cast<size_t>(n));
    return n;
}

ssize_t recv_with_fd(int sock, std::string& text, Fd& fd) {
    std::vector<Fd> fds;
    ssize_t n = recv_with_fds(sock, text, fds);
    if (n >= 0 && !fds.empty())
        fd = std::move(fds.front()); // any further ones close here
    return n;
}

} // namespace lodge
