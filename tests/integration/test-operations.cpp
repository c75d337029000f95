// Long work never blocks lodged (issue 13, security review finding 8): imports run in workers
// while the bus and every container's /dev/lxd keep answering, starts of different containers
// overlap, a kill -9 mid-import leaves nothing behind, deletes return before the files are gone,
// and an import source that stops sending is given up. Slow sources are FIFOs the test feeds
// itself; every wait is bounded (timeout(1), poll, inotify), none is a sleep.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

// An import whose source is a FIFO the test writes: `lodgectl create NAME FIFO` in the
// background, the writing end here.
class FifoImport {
public:
    FifoImport(const std::string& name, const std::string& tarball) : tar_(read_text(tarball)) {
        path_ = TestRoot::get().dir + "/" + name + ".fifo";
        ::unlink(path_.c_str());
        EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0);
        ctl_ = std::make_unique<Background>("create " + name + " " + path_);
        // Meets lodgectl's open for reading.
        writer_.reset(::open(path_.c_str(), O_WRONLY | O_CLOEXEC));
        EXPECT_TRUE(writer_.valid()) << std::strerror(errno);
    }
    ~FifoImport() { ::unlink(path_.c_str()); }
    // Returns once the reader has taken the first half (a pipe holds 64 KiB at most).
    bool feed_half() { return write_all(writer_.get(), tar_.data(), tar_.size() / 2); }
    bool feed_rest() {
        bool ok =
            write_all(writer_.get(), tar_.data() + tar_.size() / 2, tar_.size() - tar_.size() / 2);
        writer_.reset();
        return ok;
    }
    Fd& writer() { return writer_; }
    Background& ctl() { return *ctl_; }

private:
    std::string tar_, path_;
    Fd writer_;
    std::unique_ptr<Background> ctl_;
};

std::string containers_dir() {
    return TestRoot::get().dir + "/state/containers";
}

// Hidden entries of the registry whose names start with `prefix` (".new-", ".trash-").
std::vector<std::string> hidden(const std::string& prefix) {
    std::vector<std::string> out;
    DIR* d = ::opendir(containers_dir().c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d))
        if (std::string(e->d_name).rfind(prefix, 0) == 0)
            out.push_back(e->d_name);
    ::closedir(d);
    return out;
}

class OperationsTest : public LodgedFixture {
protected:
    static void SetUpTestSuite() {
        if (::geteuid() != 0)
            return;
        ::signal(SIGPIPE, SIG_IGN); // a FIFO without reader gives EPIPE, not death
        std::string src = TestRoot::get().dir + "/ops-src";
        tarball = src + "/rootfs.tar";
        // Uncompressed, so that half the bytes is half the import (busybox alone is ~2 MB).
        sh("mkdir -p " + src + " && bash " + env_path("LODGE_FIXTURES") +
           "/make-busybox-rootfs.sh " + src + "/rootfs && tar -C " + src + "/rootfs -cf " +
           tarball + " .");
    }
    void SetUp() override {
        LODGE_REQUIRE_ROOT();
        struct stat st {};
        ASSERT_EQ(::stat(tarball.c_str(), &st), 0) << "no busybox tarball";
        ASSERT_GT(st.st_size, 1 << 20);
        LodgedFixture::SetUp();
    }
    std::string make(const std::string& base) { return name_container(base); }
    // A running busybox container with the static devlxd client at /devlxd-client; empty
    // `skip` unless the host cannot give it its rootfs.
    std::string make_running(const std::string& base, std::string& skip) {
        std::string n = make(base);
        int st = -1;
        EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
        sh("cp " + env_path("LODGE_DEVLXD_CLIENT") + " " + containers_dir() + "/" + n +
           "/rootfs/devlxd-client");
        std::string out = ctl("start " + n, &st);
        if (st != 0 && contains(out, "idmapped"))
            skip = out;
        else
            EXPECT_EQ(st, 0) << out;
        return n;
    }
    pid_t leader(const std::string& n) {
        auto j = nlohmann::json::parse(
            sh("timeout 30 " + env_path("LODGE_LODGECTL") + " show " + n + " --json"), nullptr,
            false);
        return j.is_object() ? j.value("leader", 0) : 0;
    }
    // GET /1.0 from inside the container, straight into its namespaces (not through lodged).
    std::string devlxd_get(pid_t pid) {
        return sh("timeout 30 nsenter -t " + std::to_string(pid) +
                  " -a /devlxd-client GET /1.0 2>&1");
    }
    // The container's state as `list --json` gives it, "" when it is not listed.
    std::string state(const std::string& n) {
        auto j = nlohmann::json::parse(
            sh("timeout 30 " + env_path("LODGE_LODGECTL") + " list --json"), nullptr, false);
        if (j.is_array())
            for (auto& c : j)
                if (c.value("name", "") == n)
                    return c.value("state", "");
        return "";
    }
    std::string list(int* st) {
        return sh("timeout 30 " + env_path("LODGE_LODGECTL") + " list --no-legend 2>&1", st);
    }

    static inline std::string tarball;
};

// The bus and the guest API answer while an import waits for its source; before the import
// ran in a worker, both waited for the whole import (here: forever, until timeout(1)).
TEST_F(OperationsTest, BusAndGuestApiAnswerDuringASlowImport) {
    std::string skip;
    std::string guest = make_running("ops-guest", skip);
    if (!skip.empty())
        GTEST_SKIP() << skip;
    pid_t pid = leader(guest);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(contains(devlxd_get(pid), "STATUS 200"));

    std::string n = make("ops-slow");
    FifoImport import(n, tarball);
    ASSERT_TRUE(import.feed_half());
    int st = -1;
    std::string listed = list(&st);
    EXPECT_EQ(st, 0) << "ListContainers did not answer during the import: " << listed;
    EXPECT_TRUE(contains(listed, guest + " ")) << listed;
    EXPECT_FALSE(contains(listed, n + " ")) << "a half-made container is listed: " << listed;
    std::string got = devlxd_get(pid);
    EXPECT_TRUE(contains(got, "STATUS 200")) << "GET /1.0 did not answer: " << got;

    ASSERT_TRUE(import.feed_rest());
    std::string out;
    EXPECT_EQ(import.ctl().wait(&out), 0) << out;
    EXPECT_EQ(state(n), "stopped");
    EXPECT_TRUE(exists(containers_dir() + "/" + n + "/rootfs/sbin/init"));
    EXPECT_TRUE(hidden(".new-").empty());
}

// A start (another container) and a second import complete while the first import is stuck
// on its source: neither is queued behind it.
TEST_F(OperationsTest, StartsAndImportsOfOthersProgressMeanwhile) {
    std::string other = make("ops-other");
    int st = -1;
    ASSERT_EQ(ctl("create " + other, &st), "Created container " + other + "\n");
    std::string n = make("ops-stuck"), second = make("ops-second");
    FifoImport import(n, tarball);
    ASSERT_TRUE(import.feed_half());

    std::string out =
        sh("timeout 60 " + env_path("LODGE_LODGECTL") + " start " + other + " 2>&1", &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    EXPECT_EQ(st, 0) << "the start waited for the import: " << out;
    out = sh("timeout 60 " + env_path("LODGE_LODGECTL") + " create " + second + " " + tarball +
                 " 2>&1",
             &st);
    EXPECT_EQ(st, 0) << "the second import waited for the first: " << out;
    EXPECT_EQ(state(second), "stopped");

    ASSERT_TRUE(import.feed_rest());
    EXPECT_EQ(import.ctl().wait(&out), 0) << out;
    EXPECT_EQ(state(n), "stopped");
    ctl("stop --force " + other);
}

// Starts of different containers overlap: with one supervisor held before READY (a wrapper
// waits on a FIFO for container `held`), another container's start completes, and the held one
// completes once let go. A second start of the held container is refused meanwhile.
TEST_F(OperationsTest, StartsOfDifferentContainersOverlap) {
    std::string held = make("ops-held"), free = make("ops-free");
    int st = -1;
    ASSERT_EQ(ctl("create " + held, &st), "Created container " + held + "\n");
    ASSERT_EQ(ctl("create " + free, &st), "Created container " + free + "\n");
    std::string real = env_path("LODGE_SUPERVISOR");
    std::string gate = TestRoot::get().dir + "/" + unique_name("gate");
    std::string wrapper = TestRoot::get().dir + "/" + unique_name("supervisor-wrapper");
    ASSERT_EQ(::mkfifo(gate.c_str(), 0600), 0);
    write_file_atomic(wrapper,
                      "#!/bin/sh\nfor last; do :; done\n"
                      "[ \"$last\" = " +
                          held + " ] && read go < " + gate + "\nexec " + real + " \"$@\"\n",
                      0755);
    daemon.reset();
    // Every start through the wrapper (a standby, exec'd through it before any start, would
    // take the held start past the gate).
    setenv("LODGE_SUPERVISOR", wrapper.c_str(), 1);
    setenv("LODGE_SUPERVISOR_STANDBY", "0", 1);
    daemon = std::make_unique<Lodged>();
    setenv("LODGE_SUPERVISOR", real.c_str(), 1);
    unsetenv("LODGE_SUPERVISOR_STANDBY");
    ASSERT_TRUE(daemon->wait_ready());

    Background held_start("start " + held, 120);
    // The held start is under way once the wrapper waits on the gate: opening it meets it.
    Fd gate_writer(::open(gate.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(gate_writer.valid());
    std::string out =
        sh("timeout 60 " + env_path("LODGE_LODGECTL") + " start " + free + " 2>&1", &st);
    if (st != 0 && contains(out, "idmapped"))
        GTEST_SKIP() << out;
    EXPECT_EQ(st, 0) << "the start waited for another container's start: " << out;
    out = sh("timeout 60 " + env_path("LODGE_LODGECTL") + " start " + held + " 2>&1", &st);
    EXPECT_NE(st, 0) << "a container was started twice: " << out;
    EXPECT_NE(st, 124) << "the second start hung: " << out;
    EXPECT_EQ(state(held), "starting");

    ASSERT_TRUE(write_all(gate_writer.get(), "go\n", 3));
    gate_writer.reset();
    EXPECT_EQ(held_start.wait(&out), 0) << out;
    EXPECT_EQ(state(held), "running");
    ctl("stop --force " + held);
    ctl("stop --force " + free);
    ::unlink(gate.c_str());
    ::unlink(wrapper.c_str());
}

// kill -9 of lodged mid-import: its worker dies with it (the FIFO loses its last reader), and
// the next lodged shows no container and keeps no half-made directory.
TEST_F(OperationsTest, KillNineMidImportLeavesNothing) {
    std::string n = make("ops-k9");
    FifoImport import(n, tarball);
    ASSERT_TRUE(import.feed_half());
    ASSERT_FALSE(hidden(".new-").empty()) << "the import works in a hidden directory";
    daemon->kill9();
    std::string out;
    EXPECT_NE(import.ctl().wait(&out), 0) << out;
    // No reader left: the write end reports POLLERR (asked for nothing else, poll waits for
    // exactly that; bounded, not a sleep).
    struct pollfd p {
        import.writer().get(), 0, 0
    };
        int ready = ::poll(&p, 1, 30000);
        EXPECT_EQ(ready, 1);
        EXPECT_TRUE(p.revents& POLLERR) << "the import worker outlived lodged";

        daemon = std::make_unique<Lodged>();
        ASSERT_TRUE(daemon->wait_ready());
        int st = -1;
        std::string listed = list(&st);
        EXPECT_EQ(st, 0);
        EXPECT_FALSE(contains(listed, n + " ")) << listed;
        EXPECT_FALSE(exists(containers_dir() + "/" + n));
        // The leftover goes in a worker right after the start: wait for it (bounded).
        EXPECT_TRUE(wait_until([] { return hidden(".new-").empty(); }))
            << "a half-made container was left behind";
    }

    // Delete answers once the container is gone from the registry; its files go in a worker, and
    // the trash directory disappears once that is done (watched with inotify, bounded).
    TEST_F(OperationsTest, DeleteReturnsAndTheTrashGoesAfterwards) {
        std::string n = make("ops-del");
        int st = -1;
        ASSERT_EQ(ctl("create " + n + " " + tarball, &st), "Created container " + n + "\n");
        Fd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        ASSERT_TRUE(watch.valid());
        ASSERT_GE(
            ::inotify_add_watch(watch.get(), containers_dir().c_str(), IN_DELETE | IN_MOVED_FROM),
            0);
        std::string out =
            sh("timeout 60 " + env_path("LODGE_LODGECTL") + " delete " + n + " 2>&1", &st);
        EXPECT_EQ(st, 0) << out;
        EXPECT_FALSE(exists(containers_dir() + "/" + n));
        EXPECT_FALSE(contains(list(&st), n + " "));
        // The trash goes within a minute on any machine; each inotify event re-checks.
        for (int rounds = 0; !hidden(".trash-").empty() && rounds < 1000; rounds++) {
            struct pollfd p {
                watch.get(), POLLIN, 0
            };
            if (::poll(&p, 1, 60000) <= 0)
                break;
            char buf[4096];
            while (::read(watch.get(), buf, sizeof buf) > 0) {
            }
        }
        EXPECT_TRUE(hidden(".trash-").empty()) << "the deleted rootfs was never removed";
        // The name is free again at once.
        EXPECT_EQ(ctl("create " + n, &st), "Created container " + n + "\n");
    }

    // An import from a pipe that stops sending fails after LODGE_IMPORT_IDLE_TIMEOUT seconds
    // without data, with a message saying so, and leaves nothing behind. Before, lodged waited
    // for ever (until WatchdogSec killed it).
    TEST_F(OperationsTest, AStalledImportSourceIsGivenUp) {
        daemon.reset();
        setenv("LODGE_IMPORT_IDLE_TIMEOUT", "2", 1);
        daemon = std::make_unique<Lodged>();
        unsetenv("LODGE_IMPORT_IDLE_TIMEOUT");
        ASSERT_TRUE(daemon->wait_ready());
        std::string n = make("ops-stall");
        FifoImport import(n, tarball);
        ASSERT_TRUE(import.feed_half());
        std::string out;
        int st = import.ctl().wait(&out);
        EXPECT_NE(st, 0) << out;
        EXPECT_NE(st, 124) << "the import was never given up";
        EXPECT_TRUE(contains(out, "made no progress for 2 s")) << out;
        EXPECT_FALSE(contains(list(&st), n + " "));
        EXPECT_TRUE(hidden(".new-").empty()) << "the stalled import left its directory";
    }

} // namespace
