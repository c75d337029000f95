// Operations (src/daemon/operation.hpp): results and data come back from forked workers, at
// most max_imports imports run at once and the rest wait, a worker that makes no progress for
// its idle limit is killed, a worker killed from outside is reported, and a worker holds no
// descriptor of its parent it was not given.
#include "daemon/operation.hpp"
#include "event-loop.hpp"

#include <csignal>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::daemon;

namespace {

class OperationTest : public ::testing::Test {
protected:
    void SetUp() override {
        event = test::new_lodged_loop();
        ASSERT_TRUE(event);
        ops = std::make_unique<Operations>(event.get());
    }
    // Runs the loop until `done` holds (each iteration bounded, 60 iterations at most of 1 s).
    void run_until(const std::function<bool()>& done) {
        for (int i = 0; i < 600 && !done(); i++)
            ASSERT_GE(sd_event_run(event.get(), 100000), 0);
        ASSERT_TRUE(done());
    }
    // Starts `spec` and runs the loop until its done callback has put the result in `got`.
    void run_to_end(OperationSpec spec, std::optional<OperationResult>& got) {
        spec.done = [&got](const OperationResult& r) { got = r; };
        std::string error;
        ASSERT_EQ(ops->start(std::move(spec), error), 0) << error;
        run_until([&] { return got.has_value(); });
    }
    EventPtr event;
    std::unique_ptr<Operations> ops;
};

TEST_F(OperationTest, ResultAndDataComeBack) {
    OperationSpec spec;
    spec.what = "test";
    spec.work = [](Worker& w, std::string&) {
        w.data["pid"] = ::getpid();
        return 0;
    };
    std::optional<OperationResult> got;
    ASSERT_NO_FATAL_FAILURE(run_to_end(std::move(spec), got));
    EXPECT_EQ(got->code, 0);
    ASSERT_TRUE(got->data.contains("pid"));
    EXPECT_NE(got->data["pid"].get<int>(), ::getpid()) << "the work ran in lodged itself";
    EXPECT_TRUE(ops->idle());

    OperationSpec failing;
    failing.what = "failing";
    failing.work = [](Worker&, std::string& why) {
        why = "no \xff good"; // not UTF-8: still carried
        return -ENOSPC;
    };
    got.reset();
    ASSERT_NO_FATAL_FAILURE(run_to_end(std::move(failing), got));
    EXPECT_EQ(got->code, -ENOSPC);
    EXPECT_EQ(got->error.rfind("no ", 0), 0u) << got->error;
}

// Progress reports reach on_progress on the loop, with their stage (image downloads).
TEST_F(OperationTest, ProgressReachesTheLoopWithItsStage) {
    OperationSpec spec;
    spec.what = "progress";
    spec.work = [](Worker& w, std::string&) {
        w.progress(1, 10);
        w.progress(5, 10, "rootfs");
        w.progress(10, 10, "two words");
        return 0;
    };
    std::vector<std::string> seen;
    spec.on_progress = [&](uint64_t done, uint64_t total, const std::string& stage) {
        seen.push_back(std::to_string(done) + "/" + std::to_string(total) + ":" + stage);
    };
    bool finished = false;
    spec.done = [&](const OperationResult& r) {
        EXPECT_EQ(r.code, 0);
        finished = true;
    };
    std::string error;
    ASSERT_EQ(ops->start(std::move(spec), error), 0);
    run_until([&] { return finished; });
    EXPECT_EQ(seen, (std::vector<std::string>{"1/10:", "5/10:rootfs", "10/10:two words"}));
}

TEST_F(OperationTest, ImportsBeyondTheCapWait) {
    // Each import waits for one byte on its own pipe, which the test writes when it likes.
    std::vector<Fd> release;
    int finished = 0;
    std::string error;
    const size_t n = Operations::max_imports + 2;
    for (size_t i = 0; i < n; i++) {
        int p[2];
        ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
        release.emplace_back(p[1]);
        OperationSpec spec;
        spec.what = "import " + std::to_string(i);
        spec.kind = OperationKind::import;
        spec.fds.emplace_back(p[0]);
        spec.work = [](Worker& w, std::string&) {
            char c;
            return ::read(w.fd(0), &c, 1) == 1 ? 0 : -EIO;
        };
        spec.done = [&](const OperationResult& r) {
            EXPECT_EQ(r.code, 0) << r.error;
            finished++;
        };
        ASSERT_EQ(ops->start(std::move(spec), error), 0);
    }
    EXPECT_EQ(ops->running(), Operations::max_imports);
    EXPECT_EQ(ops->queued(), n - Operations::max_imports);
    // A cleanup is not held up by waiting imports.
    bool cleaned = false;
    OperationSpec cleanup;
    cleanup.what = "cleanup";
    cleanup.work = [](Worker&, std::string&) { return 0; };
    cleanup.done = [&](const OperationResult&) { cleaned = true; };
    ASSERT_EQ(ops->start(std::move(cleanup), error), 0);
    run_until([&] { return cleaned; });
    for (auto& fd : release)
        ASSERT_EQ(::write(fd.get(), "x", 1), 1);
    run_until([&] { return finished == static_cast<int>(n); });
    EXPECT_TRUE(ops->idle());
}

TEST_F(OperationTest, NoProgressForTheIdleLimitKillsTheWorker) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    Fd never(p[1]); // held open, never written
    OperationSpec spec;
    spec.what = "stalled import";
    spec.kind = OperationKind::import;
    spec.idle_timeout_usec = 300000;
    spec.fds.emplace_back(p[0]);
    spec.work = [](Worker& w, std::string&) {
        w.progress(1, 2); // one report, then nothing
        char c;
        return ::read(w.fd(0), &c, 1) == 1 ? 0 : -EIO;
    };
    std::optional<OperationResult> got;
    ASSERT_NO_FATAL_FAILURE(run_to_end(std::move(spec), got));
    EXPECT_EQ(got->code, -ETIMEDOUT);
    EXPECT_NE(got->error.find("made no progress"), std::string::npos) << got->error;
}

TEST_F(OperationTest, AKilledWorkerIsReported) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    Fd pid_reader(p[0]);
    int q[2];
    ASSERT_EQ(::pipe2(q, O_CLOEXEC), 0);
    Fd never(q[1]);
    OperationSpec spec;
    spec.what = "doomed";
    spec.fds.emplace_back(p[1]);
    spec.fds.emplace_back(q[0]);
    spec.work = [](Worker& w, std::string&) {
        pid_t self = ::getpid();
        (void)!::write(w.fd(0), &self, sizeof self);
        char c;
        return ::read(w.fd(1), &c, 1) == 1 ? 0 : -EIO;
    };
    std::optional<OperationResult> got;
    spec.done = [&](const OperationResult& r) { got = r; };
    std::string error;
    ASSERT_EQ(ops->start(std::move(spec), error), 0);
    pid_t worker = 0;
    ASSERT_EQ(::read(pid_reader.get(), &worker, sizeof worker),
              static_cast<ssize_t>(sizeof worker));
    ASSERT_EQ(::kill(worker, SIGKILL), 0);
    run_until([&] { return got.has_value(); });
    EXPECT_EQ(got->code, -EIO);
    EXPECT_NE(got->error.find("killed by signal 9"), std::string::npos) << got->error;
}

TEST_F(OperationTest, WorkersGetOnlyTheirOwnDescriptors) {
    Fd mine(::open("/dev/null", O_RDONLY)); // not close-on-exec, not given to the worker
    ASSERT_TRUE(mine.valid());
    int probe = mine.get();
    OperationSpec spec;
    spec.what = "probe";
    spec.work = [probe](Worker& w, std::string&) {
        w.data["open"] = ::fcntl(probe, F_GETFD) >= 0;
        return 0;
    };
    std::optional<OperationResult> got;
    ASSERT_NO_FATAL_FAILURE(run_to_end(std::move(spec), got));
    ASSERT_EQ(got->code, 0);
    EXPECT_FALSE(got->data.value("open", true)) << "the worker inherited lodged's descriptors";
}

} // namespace
