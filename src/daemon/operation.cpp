#include "daemon/operation.hpp"
#include "common/log.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lodge::daemon {

// The channel carries lines: "P <done> <total> [<stage>]" while the worker runs, then
// "R <json>" once.
void Worker::progress(uint64_t done, uint64_t total, const std::string& stage) {
    std::string line = "P " + std::to_string(done) + " " + std::to_string(total);
    if (!stage.empty())
        line += " " + stage.substr(0, stage.find('\n'));
    line += "\n";
    (void)!::write(channel_, line.data(), line.size());
}

void Worker::finish(int code, const std::string& error) {
    nlohmann::json result{{"code", code}, {"error", error}, {"data", data}};
    // Messages may quote file names from an image, which need not be UTF-8.
    std::string line =
        "R " + result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    size_t done = 0;
    while (done < line.size()) {
        ssize_t n = ::write(channel_, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
}

struct Operations::Running {
    Operations* owner = nullptr;
    OperationSpec spec;
    PidFd worker;
    Fd channel;
    SourcePtr exit_source, channel_source, idle_timer;
    std::string buffer;
    bool timed_out = false;
    bool exited = false;
    // lodged leaving with work in flight: the worker goes too (sd-event reaps nothing then).
    ~Running() {
        if (!exited)
            worker.send_signal(SIGKILL);
    }
};

namespace {

// Closes every descriptor above 2 except `keep`.
void close_all_but(std::vector<int> keep) {
    std::sort(keep.begin(), keep.end());
    unsigned next = 3;
    for (int fd : keep) {
        if (fd < static_cast<int>(next))
            continue;
        if (static_cast<unsigned>(fd) > next)
            ::close_range(next, static_cast<unsigned>(fd) - 1, 0);
        next = static_cast<unsigned>(fd) + 1;
    }
    ::close_range(next, ~0U, 0);
}

[[noreturn]] void run_worker(OperationSpec& spec, int channel, pid_t parent) {
    // A worker outlives nothing: with lodged gone its result has nobody to go to, and the
    // next lodged removes what it left (Registry::leftovers).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
        _exit(1);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<int> keep{channel};
    for (auto& fd : spec.fds)
        keep.push_back(fd.get());
    close_all_but(keep);
    log_set_prefix("lodged[" + std::to_string(::getpid()) + "]");
    Worker worker(channel, spec.fds);
    std::string error;
    int r;
    try {
        r = spec.work(worker, error);
    } catch (const std::exception& e) {
        r = -EIO;
        error = std::string("Unexpected error: ") + e.what();
        log_error("%s", error.c_str());
    } catch (...) {
        r = -EIO;
        error = "Unexpected error";
    }
    try {
        worker.finish(r, error);
    } catch (...) {
    }
    _exit(0);
}

} // namespace

Operations::Operations(sd_event* event) : event_(event) {}
Operations::~Operations() = default;

int Operations::start(OperationSpec spec, std::string& error) {
    if (queued_.size() >= max_queued) {
        error = "Too many operations in progress; try again later";
        return -EBUSY;
    }
    queued_.push_back(std::move(spec));
    dispatch();
    return 0;
}

void Operations::dispatch() {
    auto imports = [&] {
        size_t n = 0;
        for (auto& [p, op] : running_)
            n += op->spec.kind == OperationKind::import;
        return n;
    };
    for (auto it = queued_.begin(); it != queued_.end() && running_.size() < max_running;) {
        if (it->kind == OperationKind::import && imports() >= max_imports) {
            ++it;
            continue;
        }
        OperationSpec spec = std::move(*it);
        it = queued_.erase(it);
        std::string error;
        if (launch(spec, error) < 0 && spec.done) {
            OperationResult failed{-EAGAIN, error, nullptr};
            spec.done(failed);
            // `done` may have queued more: start over.
            it = queued_.begin();
        }
    }
}

int Operations::launch(OperationSpec& spec, std::string& error) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) {
        error = "Cannot start the " + spec.what + ": " + std::strerror(errno);
        return log_error_errno(errno, "Cannot make a pipe for the %s", spec.what.c_str());
    }
    Fd rd(p[0]), wr(p[1]);
    ::fcntl(rd.get(), F_SETFL, O_NONBLOCK);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        error = "Cannot start the " + spec.what + ": " + std::strerror(errno);
        return log_error_errno(errno, "Cannot fork a worker for the %s", spec.what.c_str());
    }
    if (pid == 0)
        run_worker(spec, wr.get(), parent);
    wr.reset();
    spec.fds.clear(); // the worker has them now

    auto op = std::make_unique<Running>();
    op->owner = this;
    op->channel = std::move(rd);
    op->worker = PidFd::open(pid);
    sd_event_source* s = nullptr;
    int r = op->worker.valid()
                ? sd_event_add_child_pidfd(event_, &s, op->worker.get(), WEXITED, on_exit, op.get())
                : -errno;
    if (r < 0) {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR)
            ;
        op->exited = true;
        error = "Cannot start the " + spec.what + ": " + std::strerror(-r);
        return log_error_errno(r, "Cannot watch the worker for the %s", spec.what.c_str());
    }
    op->exit_source.reset(s);
    s = nullptr;
    if (sd_event_add_io(event_, &s, op->channel.get(), EPOLLIN, on_channel, op.get()) >= 0)
        op->channel_source.reset(s);
    op->spec = std::move(spec);
    arm_idle_timer(*op);
    log_debug("Worker %d runs the %s", static_cast<int>(pid), op->spec.what.c_str());
    Running* key = op.get();
    running_[key] = std::move(op);
    return 0;
}

int Operations::arm_idle_timer(Running& op) {
    if (op.spec.idle_timeout_usec == 0)
        return 0;
    if (op.idle_timer)
        return sd_event_source_set_time_relative(op.idle_timer.get(), op.spec.idle_timeout_usec);
    sd_event_source* s = nullptr;
    int r = sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, op.spec.idle_timeout_usec, 0,
                                       on_idle, &op);
    if (r >= 0)
        op.idle_timer.reset(s);
    return r;
}

void Operations::read_channel(Running& op) {
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(op.channel.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0) // EOF: the worker is gone or about to be
                op.channel_source.reset();
            break;
        }
        op.buffer.append(buf, static_cast<size_t>(n));
    }
    // Progress lines re-arm the idle limit and go to on_progress; the result line stays for
    // finish().
    size_t pos;
    bool progressed = false;
    while (op.buffer.rfind("P ", 0) == 0 && (pos = op.buffer.find('\n')) != std::string::npos) {
        std::string line = op.buffer.substr(2, pos - 2);
        op.buffer.erase(0, pos + 1);
        progressed = true;
        if (op.spec.on_progress) {
            unsigned long long done = 0, total = 0;
            int used = 0;
            if (std::sscanf(line.c_str(), "%llu %llu%n", &done, &total, &used) >= 2) {
                std::string stage = static_cast<size_t>(used) < line.size()
                                        ? line.substr(static_cast<size_t>(used) + 1)
                                        : std::string();
                op.spec.on_progress(done, total, stage);
            }
        }
    }
    if (progressed)
        arm_idle_timer(op);
}

int Operations::on_channel(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* op = static_cast<Running*>(userdata);
        op->owner->read_channel(*op);
        return 0;
    });
}

int Operations::on_idle(sd_event_source*, uint64_t, void* userdata) {
    return guarded([&] {
        auto* op = static_cast<Running*>(userdata);
        log_error("The %s made no progress for %llu s; stopping it", op->spec.what.c_str(),
                  static_cast<unsigned long long>(op->spec.idle_timeout_usec / 1000000));
        op->timed_out = true;
        sd_event_source_send_child_signal(op->exit_source.get(), SIGKILL, nullptr, 0);
        return 0;
    });
}

int Operations::on_exit(sd_event_source*, const siginfo_t* si, void* userdata) {
    return guarded([&] {
        auto* op = static_cast<Running*>(userdata);
        op->owner->finish(op, *si);
        return 0;
    });
}

void Operations::finish(Running* raw, const siginfo_t& si) {
    auto it = running_.find(raw);
    if (it == running_.end())
        return;
    std::unique_ptr<Running> op = std::move(it->second);
    running_.erase(it);
    op->exited = true; // sd-event reaps it once this callback returns
    read_channel(*op); // everything the worker wrote is there now
    OperationResult result;
    auto j = op->buffer.rfind("R ", 0) == 0
                 ? nlohmann::json::parse(op->buffer.substr(2), nullptr, false)
                 : nlohmann::json();
    if (op->timed_out) {
        result.code = -ETIMEDOUT;
        result.error = "The " + op->spec.what + " made no progress for " +
                       std::to_string(op->spec.idle_timeout_usec / 1000000) +
                       " s (is the source still being written?)";
    } else if (j.is_object()) {
        result.code = j.value("code", -EIO);
        result.error = j.value("error", "");
        result.data = j.value("data", nlohmann::json::object());
    } else {
        result.code = -EIO;
        result.error =
            "The worker for the " + op->spec.what +
            (si.si_code == CLD_EXITED ? " exited with status " + std::to_string(si.si_status)
                                      : " was killed by signal " + std::to_string(si.si_status));
        log_error("%s", result.error.c_str());
    }
    op->exit_source.reset();
    op->idle_timer.reset();
    op->channel_source.reset();
    if (op->spec.done)
        op->spec.done(result);
    dispatch();
}

} // namespace lodge::daemon
