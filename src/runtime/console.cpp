#include "runtime/console.hpp"
#include "common/fileio.hpp"
#include "common/log.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lodge::runtime {

Result<> ConsoleLog::open(const std::string& path, size_t max_size) {
    path_ = path;
    max_size_ = max_size;
    if (int r = mkdir_p(path.substr(0, path.rfind('/')), 0750); r < 0)
        return log_error_value(r, "Cannot create the directory of %s", path.c_str());
    fd_.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640));
    if (!fd_)
        return log_error_value(errno, "Cannot open %s", path.c_str());
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0)
        size_ = static_cast<size_t>(st.st_size);
    return {};
}

void ConsoleLog::append(const char* data, size_t len) {
    ring_.append(data, len);
    if (ring_.size() > console_ring_size)
        ring_.erase(0, ring_.size() - console_ring_size);
    if (!fd_)
        return;
    ssize_t n = ::write(fd_.get(), data, len);
    if (n > 0)
        size_ += static_cast<size_t>(n);
    if (size_ > max_size_)
        shrink();
}

// Keeps the newest half: the file never grows past the cap and always ends with the latest
// output, which is what `console --show-log` wants.
void ConsoleLog::shrink() {
    std::string text;
    if (read_file(path_, text) < 0)
        return;
    size_t keep = max_size_ / 2;
    if (text.size() > keep)
        text.erase(0, text.size() - keep);
    if (write_file_atomic(path_, text, 0640) < 0)
        return;
    fd_.reset(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY));
    size_ = text.size();
}

} // namespace lodge::runtime
