// A debootstrapped Debian bookworm with systemd as PID 1, unprivileged and privileged: it boots
// to "running", sees itself as an lxc container, shuts down cleanly on stop and comes back with
// a new boot id after a reboot from inside.
#include "harness.hpp"

#include <unistd.h>

using namespace lodge::test;

namespace {

class SystemdGuest : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        const char* tarball = std::getenv("LODGE_DEBIAN_TARBALL");
        if (!tarball || !exists(tarball))
            GTEST_SKIP() << "no Debian rootfs tarball (tests/fixtures/make-debian-rootfs.sh "
                            "makes one; scripts/test.sh sets LODGE_DEBIAN_TARBALL)";
        bool privileged = GetParam();
        c = std::make_unique<Container>(
            std::string(privileged ? "debp" : "debu") + "-" + std::to_string(getpid()), privileged);
        int st = 0;
        std::string out = sh("mkdir -p " + c->rootfs + " && tar --zstd -xpf " + tarball +
                                 " --numeric-owner --xattrs --acls -C " + c->rootfs + " 2>&1",
                             &st);
        ASSERT_EQ(st, 0) << out;
    }

    // `systemctl is-system-running --wait` inside, bounded; until systemd's private socket
    // exists the command answers nothing or "offline" at once (a start that returns as soon as
    // PID 1 is exec'd asks that early), so it is asked again.
    std::string system_state() {
        return c->exec("for i in $(seq 600); do "
                       "s=$(timeout 120 systemctl is-system-running --wait); "
                       "[ -n \"$s\" ] && [ \"$s\" != offline ] && break; sleep 0.2; done; "
                       "echo \"$s\"");
    }

    std::unique_ptr<Container> c;
};

TEST_P(SystemdGuest, BootsRunsRebootsAndShutsDownCleanly) {
    LODGE_START_OR_SKIP(*c);
    std::string state = system_state();
    EXPECT_EQ(state, "running\n") << "failed units:\n"
                                  << c->exec("systemctl --failed --no-legend --no-pager")
                                  << "console:\n"
                                  << c->console_log();
    EXPECT_EQ(c->exec("systemd-detect-virt"), "lxc\n");
    EXPECT_EQ(c->exec("hostname"), c->name + "\n");
    // systemd blocks the signals it reads through signalfd: lodge's "auto" picks SIGRTMIN+3.
    std::string status = read_text("/proc/" + std::to_string(c->pid()) + "/status");
    auto pos = status.find("SigBlk:\t");
    ASSERT_NE(pos, std::string::npos);
    EXPECT_TRUE((std::stoull(status.substr(pos + 8, 16), nullptr, 16) >> 36) & 1) << status;

    // Reboot from inside: the container comes back on its own with a new boot id.
    std::string boot1 = c->exec("cat /proc/sys/kernel/random/boot_id");
    c->exec("systemctl reboot");
    auto s = c->request("wait-boot 2");
    ASSERT_EQ(s["state"], "running") << s;
    EXPECT_EQ(system_state(), "running\n") << c->console_log();
    std::string boot2 = c->exec("cat /proc/sys/kernel/random/boot_id");
    EXPECT_EQ(boot2.size(), 37u);
    EXPECT_NE(boot1, boot2);

    // Stop: systemd gets SIGRTMIN+3 and goes through its shutdown, no SIGKILL needed.
    auto r = c->stop(60);
    EXPECT_EQ(r["state"], "stopped") << r;
    EXPECT_EQ(r["reason"], "stopped") << r;
    std::string console = c->console_log();
    EXPECT_TRUE(contains(console, "Reached target shutdown.target")) << console;
    EXPECT_TRUE(contains(console, "Halting system") || contains(console, "Powering off"))
        << console;
}

INSTANTIATE_TEST_SUITE_P(Debian, SystemdGuest, ::testing::Values(false, true),
                         [](const auto& info) {
                             return info.param ? "privileged" : "unprivileged";
                         });

} // namespace
