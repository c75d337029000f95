// The console: PID 1's pty is logged to console.log, replayed and streamed to clients that
// attach, and what a client types reaches the guest.
#include "harness.hpp"
#include "runtime/control.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace lodge::test;
using namespace lodge;

namespace {

// Reads an attached console stream until `needle` shows up or 180 s pass without data.
std::string read_until(int fd, const std::string& needle) {
    std::string got;
    struct timeval tv {
        180, 0
    };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    while (!contains(got, needle)) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        got.append(buf, static_cast<size_t>(n));
    }
    return got;
}

class Console : public ::testing::Test {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        c = std::make_unique<Container>("cons-" + std::to_string(getpid()), true);
        c->make_busybox();
        std::string error;
        ASSERT_TRUE(c->start(&error)) << error;
        ASSERT_EQ(runtime::control_connect(c->name, attached), 0);
        ASSERT_GT(send(attached.get(), "attach", 6, 0), 0);
        std::string ok = read_until(attached.get(), "}");
        ASSERT_TRUE(contains(ok, "\"ok\":true")) << ok;
    }
    std::unique_ptr<Container> c;
    Fd attached;
};

TEST_F(Console, BootOutputIsLoggedAndReplayedOnAttach) {
    std::string replay = read_until(attached.get(), "lodge-busybox: booted");
    EXPECT_TRUE(contains(replay, "lodge-busybox: booted")) << replay;
    EXPECT_TRUE(contains(c->console_log(), "lodge-busybox: booted"));
}

TEST_F(Console, WritesToDevConsoleReachAttachedClientsAndTheLog) {
    c->exec("echo marker-from-inside > /dev/console");
    std::string live = read_until(attached.get(), "marker-from-inside");
    EXPECT_TRUE(contains(live, "marker-from-inside")) << live;
    EXPECT_TRUE(contains(c->console_log(), "marker-from-inside"));
    // The log survives the container: `console --show-log` after a stop reads it.
    EXPECT_EQ(c->stop(30)["state"], "stopped");
    EXPECT_TRUE(contains(c->console_log(), "marker-from-inside"));
    EXPECT_TRUE(contains(c->console_log(), "lodge-busybox: shutting down"));
}

TEST_F(Console, WhatTheClientTypesReachesTheGuest) {
    // A reader on the console inside; canonical mode hands it one line.
    c->exec("(head -n1 /dev/console > /typed.tmp && mv /typed.tmp /typed) >/dev/null 2>&1 &");
    ASSERT_GT(send(attached.get(), "typed-by-client\n", 16, 0), 0);
    c->exec("while [ ! -e /typed ]; do usleep 10000; done");
    EXPECT_EQ(read_text(c->rootfs + "/typed"), "typed-by-client\n");
}

TEST_F(Console, LogIsSizeCapped) {
    // 3 MiB through the console, then a marker; the log keeps at most 1 MiB, newest last.
    c->exec("head -c 3145728 /dev/zero | tr '\\0' x > /dev/console; echo; "
            "echo end-of-flood > /dev/console");
    read_until(attached.get(), "end-of-flood");
    struct stat st {};
    ASSERT_EQ(stat((TestRoot::get().dir + "/log/" + c->name + "/console.log").c_str(), &st), 0);
    EXPECT_LE(st.st_size, 1024 * 1024);
    EXPECT_GT(st.st_size, 1024);
    std::string log = c->console_log();
    EXPECT_TRUE(contains(log.substr(log.size() > 64 ? log.size() - 64 : 0), "end-of-flood"));
}

} // namespace
