// Follows LODGE_LXCFS_DIR live (issue 7): libmount's mount monitor tells when the mount table
// changes, and a one-second check catches an lxcfs that died without unmounting (its mount then
// answers ENOTCONN). Every change is handed to the Manager, which brings running containers in
// line: binds added when lxcfs appears, taken out when it goes.
#pragma once

#include "daemon/bus-util.hpp"
#include "daemon/manager.hpp"

#include <libmount/libmount.h>
#include <string>

namespace lodge::daemon {

class LxcfsWatch {
public:
    LxcfsWatch(sd_event* event, Manager& manager);
    ~LxcfsWatch();
    int start();
    // The one-second check runs only while containers run (lodged must be able to go idle);
    // the Manager calls this when one starts running.
    void rearm();

private:
    void check();
    static int on_mount_change(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_timer(sd_event_source*, uint64_t usec, void* userdata);

    sd_event* event_;
    Manager& manager_;
    std::string dir_;
    libmnt_monitor* monitor_ = nullptr;
    SourcePtr io_, timer_;
};

} // namespace lodge::daemon
