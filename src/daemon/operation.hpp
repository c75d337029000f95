// Long work off lodged's event loop, on the model of machined's Operation: a forked worker
// process does the work (an import, removing a deleted rootfs), reports progress and its result
// over a pipe, and `done` runs on the loop once the worker has exited. lodged forks it while
// single-threaded; the worker never touches lodged's bus or event loop, closes every fd it was
// not given, dies with lodged (PR_SET_PDEATHSIG) and leaves with _exit.
#pragma once

#include "daemon/bus-util.hpp"
#include "common/fd.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lodge::daemon {

// The worker's side: the fds it was given, and its channel back to lodged.
class Worker {
public:
    Worker(int channel, const std::vector<Fd>& fds) : channel_(channel), fds_(fds) {}
    int fd(size_t i) const { return i < fds_.size() ? fds_[i].get() : -1; }
    // Tells lodged the work moves on (it re-arms the operation's idle limit, and passes it to
    // OperationSpec::on_progress). `stage` is one word or a short phrase ("rootfs").
    void progress(uint64_t done, uint64_t total, const std::string& stage = {});
    // Sent back with the result.
    nlohmann::json data = nlohmann::json::object();
    // Writes the result; the last thing a worker does.
    void finish(int code, const std::string& error);

private:
    int channel_;
    const std::vector<Fd>& fds_;
};

struct OperationResult {
    int code = 0;        // 0 or -errno
    std::string error;   // for the caller, when code < 0
    nlohmann::json data; // Worker::data
};

enum class OperationKind {
    import,  // creates and imports: a few at once, the rest queued
    cleanup, // removing a rootfs
};

struct OperationSpec {
    std::string what; // for logs and messages: "import of \"c1\""
    OperationKind kind = OperationKind::cleanup;
    // Kept open while queued, handed to the worker, closed in lodged once it has forked.
    std::vector<Fd> fds;
    // Runs in the worker. 0 or -errno with `error` set.
    std::function<int(Worker&, std::string& error)> work;
    // Runs on the loop once the worker is gone (or could not be started).
    std::function<void(const OperationResult&)> done;
    // Runs on the loop with the worker's progress reports (optional).
    std::function<void(uint64_t done, uint64_t total, const std::string& stage)> on_progress;
    // Non-zero: the worker is killed when it reports no progress for this long.
    uint64_t idle_timeout_usec = 0;
};

class Operations {
public:
    // As machined's OPERATIONS_MAX: workers at once, of which imports; beyond, calls queue.
    static constexpr size_t max_running = 64;
    static constexpr size_t max_imports = 3;
    static constexpr size_t max_queued = 256;

    explicit Operations(sd_event* event);
    // Kills the workers that still run.
    ~Operations();
    Operations(const Operations&) = delete;
    Operations& operator=(const Operations&) = delete;

    // Queues `spec`, or runs it at once when a slot is free. -EBUSY when too much is queued.
    int start(OperationSpec spec, std::string& error);
    bool idle() const { return running_.empty() && queued_.empty(); }
    size_t running() const { return running_.size(); }
    size_t queued() const { return queued_.size(); }

private:
    struct Running;
    void dispatch();
    int launch(OperationSpec& spec, std::string& error);
    void finish(Running* op, const siginfo_t& si);
    void read_channel(Running& op);
    int arm_idle_timer(Running& op);
    static int on_exit(sd_event_source*, const siginfo_t* si, void* userdata);
    static int on_channel(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_idle(sd_event_source*, uint64_t usec, void* userdata);

    sd_event* event_;
    std::map<Running*, std::unique_ptr<Running>> running_;
    std::deque<OperationSpec> queued_;
};

} // namespace lodge::daemon
