// One failure as a value, from the site that knows what went wrong to the edge that reports it:
// an errno code (for logs and for callers that branch on it), a message complete enough for the
// user, and the io.lodge1 bus error name, chosen where the failure is understood (a failed
// import is ImportFailed because the import site says so, never because of its errno).
// Operations return Result<T> (a value or an Error); Result<> is success or an Error.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>

namespace lodge {

// Typed errors of io.lodge1 (CONTRACT §7). `failed` is the generic one.
namespace errors {
constexpr const char* failed = "org.freedesktop.DBus.Error.Failed";
constexpr const char* no_such_container = "io.lodge1.NoSuchContainer";
constexpr const char* container_exists = "io.lodge1.ContainerExists";
constexpr const char* invalid_name = "io.lodge1.InvalidName";
constexpr const char* invalid_config = "io.lodge1.InvalidConfig";
constexpr const char* not_running = "io.lodge1.NotRunning";
constexpr const char* already_running = "io.lodge1.AlreadyRunning";
constexpr const char* busy = "io.lodge1.Busy";
constexpr const char* start_failed = "io.lodge1.StartFailed";
constexpr const char* import_failed = "io.lodge1.ImportFailed";
constexpr const char* no_such_device = "io.lodge1.NoSuchDevice";
constexpr const char* no_console_log = "io.lodge1.NoConsoleLog";
constexpr const char* no_container_for_pid = "io.lodge1.NoContainerForPID";
constexpr const char* no_such_snapshot = "io.lodge1.NoSuchSnapshot";
constexpr const char* snapshot_exists = "io.lodge1.SnapshotExists";
} // namespace errors

struct Error {
    int code = EIO;                        // an errno value (positive)
    std::string message;                   // for the caller, a whole sentence
    const char* bus_name = errors::failed; // picked at the failure site

    // Context added on the way up (as crun_error_wrap): "<context>: <message>".
    Error& prefix(const std::string& context) {
        message = context + ": " + message;
        return *this;
    }
};

inline Error make_error(const char* bus_name, int code, std::string message) {
    return Error{code < 0 ? -code : code, std::move(message), bus_name};
}

// For a caller that still takes a failure as -errno plus a message: `e`'s message into
// `message`, and its -errno returned.
inline int pass_up(const Error& e, std::string& message) {
    message = e.message;
    return -e.code;
}

// A value, or the Error that kept it from being made.
template <typename T = void> class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}
    Result(Error error) : error_(std::move(error)) {}

    bool ok() const { return value_.has_value(); }
    explicit operator bool() const { return ok(); }
    T& operator*() { return *value_; }
    const T& operator*() const { return *value_; }
    T* operator->() { return &*value_; }
    const T* operator->() const { return &*value_; }
    // Only when !ok().
    const Error& error() const { return error_; }

private:
    std::optional<T> value_;
    Error error_;
};

template <> class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), failed_(true) {}

    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    // Only when !ok().
    const Error& error() const { return error_; }

private:
    Error error_;
    bool failed_ = false;
};

} // namespace lodge
