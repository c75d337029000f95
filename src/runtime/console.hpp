// The console: the supervisor keeps the pty master, appends output to the size-capped
// console.log, keeps the last 128 KiB in memory for clients that attach later.
#pragma once

#include "common/error.hpp"
#include "common/fd.hpp"

#include <string>

namespace lodge::runtime {

class ConsoleLog {
public:
    Result<> open(const std::string& path, size_t max_size);
    void append(const char* data, size_t len);
    const std::string& ring() const { return ring_; }

private:
    void shrink();

    std::string path_;
    Fd fd_;
    size_t size_ = 0;
    size_t max_size_ = 0;
    std::string ring_;
};

constexpr size_t console_ring_size = 128 * 1024;

} // namespace lodge::runtime
