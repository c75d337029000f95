#include "common/fdpass.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>

namespace lodge {

int send_with_fd(int sock, const std::string& text, int fd) {
    struct iovec iov {
        const_cast<char*>(text.data()), text.size()
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        return -errno;
    return 0;
}

ssize_t recv_with_fd(int sock, std::string& text, Fd& fd) {
    char buf[4096];
    struct iovec iov {
        buf, sizeof buf
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do
        n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int received;
            std::memcpy(&received, CMSG_DATA(c), sizeof(int));
            fd.reset(received);
        }
    text.assign(buf, static_cast<size_t>(n));
    return n;
}

} // namespace lodge
