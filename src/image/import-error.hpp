// How the import functions fail: the message for the caller in `error`, logged once.
#pragma once

#include "common/log.hpp"

#include <cerrno>
#include <cstring>
#include <string>

namespace lodge::daemon {

inline int fail_errno(std::string& error, int err, const std::string& msg) {
    err = err < 0 ? -err : err;
    if (err == 0)
        err = EIO;
    error = msg + ": " + std::strerror(err);
    log_error_errno(err, "%s", msg.c_str());
    return -err;
}

inline int fail_invalid(std::string& error, const std::string& msg) {
    error = msg;
    log_error("%s", msg.c_str());
    return -EINVAL;
}

} // namespace lodge::daemon
