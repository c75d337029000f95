#include "runtime/lifecycle.hpp"

#include <csignal>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::runtime;

TEST(Lifecycle, DecodesHowInitEnded) {
    EXPECT_EQ(decode_init_exit(CLD_KILLED, SIGINT).end, InitEnd::halted);
    EXPECT_EQ(decode_init_exit(CLD_KILLED, SIGHUP).end, InitEnd::rebooted);
    auto sys = decode_init_exit(CLD_KILLED, SIGSYS);
    EXPECT_EQ(sys.end, InitEnd::seccomp);
    EXPECT_EQ(sys.reason, "violated its seccomp policy");
    EXPECT_EQ(decode_init_exit(CLD_EXITED, 3).end, InitEnd::exited);
    EXPECT_EQ(decode_init_exit(CLD_DUMPED, SIGSEGV).end, InitEnd::killed);
}

TEST(Lifecycle, StopSignalFollowsSigBlk) {
    ContainerConfig c;
    c.name = "x";
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    EXPECT_TRUE(process_blocks_signal(getpid(), SIGRTMIN + 3));
    EXPECT_EQ(choose_stop_signal(c, getpid()), SIGRTMIN + 3);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);
    EXPECT_FALSE(process_blocks_signal(getpid(), SIGRTMIN + 3));
    EXPECT_EQ(choose_stop_signal(c, getpid()), SIGPWR);
    c.config["boot.stop.signal"] = "SIGTERM";
    EXPECT_EQ(choose_stop_signal(c, getpid()), SIGTERM);
}
