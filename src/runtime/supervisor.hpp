// lodge-supervisor's parts (CONTRACT §1): the lifecycle state machine (supervisor.cpp), the
// control socket server and its verb table (control-server.cpp), the plugged nics of one boot
// (nic-set.cpp) and the process setup around them (supervisor-main.cpp). One sd-event loop
// drives PID 1's pidfd, the console pty, the control socket and the stop-escalation timer.
#pragma once

#include "common/config.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/sd-util.hpp"
#include "runtime/cgroup.hpp"
#include "runtime/console.hpp"
#include "runtime/control-proto.hpp"
#include "runtime/nic-set.hpp"
#include "runtime/setup/spawn.hpp"

#include <list>
#include <string>
#include <sys/signalfd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

namespace lodge::runtime {

using proto::State;

// A client on the control socket. Waiting ones get their reply when the container stops
// (stop) or runs again (restart); `attached` ones receive console output.
class Supervisor;
struct Client {
    Supervisor* owner = nullptr;
    Fd fd;
    SourcePtr source;
    bool attached = false;
    bool watching = false; // gets the status at every state change
    std::string pending;   // console output not yet taken by a slow attached client
    // What the client waits for: the container stopped, or running again after a restart.
    enum class Wait { nothing, stopped, restarted } wait = Wait::nothing;
    unsigned wait_boot = 0; // with Wait::restarted: the boot number that answers it
};

class Supervisor {
public:
    Supervisor(std::string name, std::string cgroup_base, bool own_base)
        : name_(std::move(name)), cgroup_(std::move(cgroup_base)), own_base_(own_base) {
        cgroup_.set_own_path(own_base);
    }

    int run(int notify_fd);
    // With --bus-controller: the connection systemd sends the scope's RequestStop to.
    void set_bus(sd_bus* bus) { bus_ = bus; }
    // --detach without a hold: run() forks the supervisor away from its caller, born in its
    // cgroup (CgroupFs::fork_into_supervisor), once it knows the container is not running.
    void set_detach(bool detach) { detach_ = detach; }

private:
    // supervisor.cpp: the lifecycle.
    Result<> lock_runtime_dir();
    Result<> setup_runtime_dir();
    Result<> load_config();
    // `config_loaded`: run() has just read config.json; a restart reads it again.
    int start_container(std::string& error, bool config_loaded = false);
    void on_init_exit(const siginfo_t& si);
    void finish(State state, const std::string& reason);
    void release_and_reply();
    void request_stop(unsigned timeout, bool force, bool restart);
    bool alive() const { return state_ == State::running || state_ == State::stopping; }
    proto::Status status() const;
    void write_state();
    static int on_child(sd_event_source*, const siginfo_t* si, void* userdata);
    static int on_console(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_stop_timeout(sd_event_source*, uint64_t usec, void* userdata);
    static int on_term_signal(sd_event_source*, const struct signalfd_siginfo*, void* userdata);

    // control-server.cpp: the control socket and what its clients asked for.
    Result<> listen_control();
    void handle_request(Client& client, const std::string& text);
    void send(Client& c, const std::string& reply);
    void reply_waiters(Client::Wait what, const std::string& reply);
    void drop_client(Client* c);
    void queue_console(Client& c, const char* data, size_t len);
    void flush_console(Client& c);
    static int on_accept(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_client(sd_event_source*, int fd, uint32_t revents, void* userdata);
    // The verbs (the table in control-server.cpp says which one handles what).
    void do_status(Client& c, const proto::Request& req);
    void do_watch(Client& c, const proto::Request& req);
    void do_wait(Client& c, const proto::Request& req);
    void do_wait_boot(Client& c, const proto::Request& req);
    void do_stop(Client& c, const proto::Request& req);
    void do_stop_force(Client& c, const proto::Request& req);
    void do_signal(Client& c, const proto::Request& req);
    void do_attach(Client& c, const proto::Request& req);
    void do_nic_add(Client& c, const proto::Request& req);
    void do_nic_remove(Client& c, const proto::Request& req);
    void do_apply_limits(Client& c, const proto::Request& req);
    void do_lxcfs(Client& c, const proto::Request& req);
    void do_devlxd(Client& c, const proto::Request& req);

    std::string name_;
    sd_bus* bus_ = nullptr;
    CgroupFs cgroup_;
    bool own_base_;
    bool detach_ = false;
    ContainerConfig config_;
    EventPtr event_;
    Spawned spawned_;
    SourcePtr child_source_, console_source_, listen_source_, timer_source_;
    Fd listen_fd_, lock_fd_, console_peer_;
    Fd owner_lock_; // the container's lock on its (maybe shared) directory: ownership.hpp
    ConsoleLog console_;
    std::list<Client> clients_;
    State state_ = State::starting;
    std::string reason_;
    std::string boot_id_;
    std::string stop_reason_; // set when lodge itself ends the container
    bool restart_pending_ = false;
    int last_signal_ = 0;
    unsigned boots_ = 0; // how many times PID 1 was started by this supervisor
    bool lxcfs_ = false; // the container has lxcfs binds
    NicSet nics_;        // of this boot
};

} // namespace lodge::runtime
