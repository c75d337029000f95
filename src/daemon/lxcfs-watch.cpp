#include "daemon/lxcfs-watch.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "runtime/lxcfs-probe.hpp"

namespace lodge::daemon {

LxcfsWatch::LxcfsWatch(sd_event* event, Manager& manager)
    : event_(event), manager_(manager), dir_(paths::lxcfs_dir()) {}

LxcfsWatch::~LxcfsWatch() {
    io_.reset();
    if (monitor_)
        mnt_unref_monitor(monitor_);
}

int LxcfsWatch::start() {
    monitor_ = mnt_new_monitor();
    if (monitor_ && mnt_monitor_enable_kernel(monitor_, 1) == 0) {
        int fd = mnt_monitor_get_fd(monitor_);
        sd_event_source* s = nullptr;
        if (fd >= 0 && sd_event_add_io(event_, &s, fd, EPOLLIN, on_mount_change, this) >= 0)
            io_.reset(s);
    }
    if (!io_)
        log_warning("No mount monitor; following %s once a second only", dir_.c_str());
    sd_event_source* t = nullptr;
    if (sd_event_add_time_relative(event_, &t, CLOCK_MONOTONIC, 1000000, 100000, on_timer, this) >=
        0) {
        sd_event_source_set_enabled(t, SD_EVENT_ONESHOT);
        timer_.reset(t);
    }
    check();
    return 0;
}

void LxcfsWatch::rearm() {
    if (!timer_)
        return;
    int enabled = SD_EVENT_OFF;
    sd_event_source_get_enabled(timer_.get(), &enabled);
    if (enabled != SD_EVENT_OFF)
        return;
    uint64_t now = 0;
    sd_event_now(event_, CLOCK_MONOTONIC, &now);
    sd_event_source_set_time(timer_.get(), now + 1000000);
    sd_event_source_set_enabled(timer_.get(), SD_EVENT_ONESHOT);
}

void LxcfsWatch::check() {
    manager_.set_lxcfs_live(is_lxcfs_mount(dir_));
}

int LxcfsWatch::on_mount_change(sd_event_source*, int, uint32_t, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<LxcfsWatch*>(userdata);
        const char* file = nullptr;
        while (mnt_monitor_next_change(self->monitor_, &file, nullptr) == 0) {
        }
        self->check();
        return 0;
    });
}

int LxcfsWatch::on_timer(sd_event_source* s, uint64_t usec, void* userdata) {
    return guarded([&] {
        auto* self = static_cast<LxcfsWatch*>(userdata);
        self->check();
        if (!self->manager_.idle()) {
            sd_event_source_set_time(s, usec + 1000000);
            sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
    });
}

} // namespace lodge::daemon
