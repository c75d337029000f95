// security.syscalls.* keys (CONTRACT §5): the deny list, turning the default list off, and the
// compat-ABI filter. The default list itself is checked in test-environment.
#include "harness.hpp"

#include <unistd.h>

using namespace lodge::test;

namespace {

std::string seccomp_mode(Container& c) {
    std::string status = read_text("/proc/" + std::to_string(c.pid()) + "/status");
    auto pos = status.find("Seccomp:\t");
    return pos == std::string::npos ? "?" : status.substr(pos + 9, 1);
}

TEST(Seccomp, DenyListKillsTheCaller) {
    LODGE_REQUIRE_ROOT();
    Container c("scdeny-" + std::to_string(getpid()), false);
    c.make_busybox(true);
    c.set("security.syscalls.deny", "open_by_handle_at\nsyslog");
    std::string out = c.start_and_run("dmesg >/dev/null 2>&1; echo dmesg-status=$?; "
                                      "/bin/syscall-probe");
    // busybox dmesg calls syslog(2): killed by SIGSYS, the shell reports 128+31.
    EXPECT_TRUE(contains(out, "dmesg-status=159")) << out;
    EXPECT_TRUE(contains(out, "kexec_load 38\n")) << "the default list still applies: " << out;
}

TEST(Seccomp, DenyDefaultFalseInstallsNoFilter) {
    LODGE_REQUIRE_ROOT();
    Container c("scnone-" + std::to_string(getpid()), true);
    c.make_busybox(true);
    c.set("security.syscalls.deny_default", "false");
    std::string out = c.start_and_run("/bin/syscall-probe");
    EXPECT_EQ(seccomp_mode(c), "0");
    // Without the filter, umount2(MNT_FORCE) reaches the kernel: ENOENT instead of EACCES.
    EXPECT_TRUE(contains(out, "umount2_force 2\n")) << out;
}

TEST(Seccomp, UnknownSyscallNameIsRefusedAtStart) {
    LODGE_REQUIRE_ROOT();
    Container c("scbad-" + std::to_string(getpid()), true);
    c.make_busybox();
    c.set("security.syscalls.deny", "no_such_syscall");
    std::string error;
    EXPECT_FALSE(c.start(&error));
    EXPECT_TRUE(contains(error, "security.syscalls.deny")) << error;
    EXPECT_TRUE(contains(error, "no_such_syscall")) << error;
}

TEST(Seccomp, DenyCompatRefusesThe32BitEntryPoint) {
    LODGE_REQUIRE_ROOT();
    std::string host = sh(env_path("LODGE_SYSCALL_PROBE") + " compat");
    if (contains(host, "unsupported"))
        GTEST_SKIP() << "this kernel has no IA32 emulation, so there is no compat ABI to filter";
    Container c("sccompat-" + std::to_string(getpid()), true);
    c.make_busybox(true);
    c.set("security.syscalls.deny_compat", "true");
    std::string out = c.start_and_run("/bin/syscall-probe compat");
    EXPECT_TRUE(contains(out, "compat_getpid 38")) << out;
}

} // namespace
