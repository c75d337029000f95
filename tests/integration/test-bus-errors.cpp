// lodged's typed bus errors (issue 13): the name a caller gets is the one the failing site
// picked, not a translation of an errno or a guess from the message's words.
#include "common/fd.hpp"
#include "common/fileio.hpp"
#include "common/paths.hpp"
#include "harness.hpp"
#include "lodged-harness.hpp"

#include <cstdarg>
#include <cstdio>
#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

using namespace lodge;
using namespace lodge::test;

namespace {

class BusErrors : public LodgedFixture {
protected:
    void SetUp() override {
        LodgedFixture::SetUp();
        if (!set_up())
            return;
        ASSERT_GE(sd_bus_open_system(&conn), 0);
    }
    void TearDown() override {
        delete_created();
        if (conn)
            sd_bus_flush_close_unref(conn);
        LodgedFixture::TearDown();
    }
    std::string make(const std::string& base) { return name_container(base); }
    // Calls io.lodge1.Manager `member`; "" when it succeeded, else the error's name.
    std::string error_of(const char* member, const char* types, ...) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message* reply = nullptr;
        va_list ap;
        va_start(ap, types);
        int r = sd_bus_call_methodv(conn, "io.lodge1", "/io/lodge1", "io.lodge1.Manager", member,
                                    &error, &reply, types, ap);
        va_end(ap);
        std::string name = r < 0 && error.name ? error.name : "";
        last_message = r < 0 && error.message ? error.message : "";
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        return name;
    }
    // The running container's control socket moved aside: lodged still follows its status
    // stream, but no request reaches the supervisor until put_back().
    void hide_control_socket(const std::string& n) {
        hidden = paths::control_socket(n);
        ASSERT_EQ(::rename(hidden.c_str(), (hidden + ".aside").c_str()), 0);
    }
    void put_back() {
        if (!hidden.empty())
            ::rename((hidden + ".aside").c_str(), hidden.c_str());
        hidden.clear();
    }
    sd_bus* conn = nullptr;
    std::string last_message, hidden;
};

TEST_F(BusErrors, InvalidNameIsInvalidName) {
    EXPECT_EQ(error_of("CreateContainer", "sa{ss}", "9starts-with-a-digit", 0),
              "io.lodge1.InvalidName")
        << last_message;
}

// The old edge chose InvalidName whenever the message held the word "name".
TEST_F(BusErrors, AConfigErrorNamingAKeyWithNameInItIsInvalidConfig) {
    std::string n = make("cfgname");
    EXPECT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 1, "bogus.name", "x"),
              "io.lodge1.InvalidConfig")
        << last_message;
    EXPECT_TRUE(contains(last_message, "bogus.name")) << last_message;
}

TEST_F(BusErrors, AFailedImportIsImportFailed) {
    std::string n = make("badimport");
    std::string file = TestRoot::get().dir + "/" + unique_name("garbage") + ".tar";
    ASSERT_EQ(write_file_atomic(file, std::string(4096, 'x')), 0);
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    EXPECT_EQ(error_of("ImportContainer", "sa{ss}h", n.c_str(), 0, fd.get()),
              "io.lodge1.ImportFailed")
        << last_message;
    ::unlink(file.c_str());
    EXPECT_EQ(error_of("GetContainer", "s", n.c_str()), "io.lodge1.NoSuchContainer");
}

TEST_F(BusErrors, StartingARunningContainerIsAlreadyRunningAndDeleteWithoutForceIsBusy) {
    std::string n = make("twice");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 0), "") << last_message;
    ASSERT_EQ(error_of("StartContainer", "s", n.c_str()), "") << last_message;
    EXPECT_EQ(error_of("StartContainer", "s", n.c_str()), "io.lodge1.AlreadyRunning");
    EXPECT_EQ(error_of("DeleteContainer", "sb", n.c_str(), 0), "io.lodge1.Busy");
    EXPECT_EQ(error_of("StopContainer", "sib", n.c_str(), -1, 1), "") << last_message;
    EXPECT_EQ(error_of("StopContainer", "sib", n.c_str(), -1, 1), "io.lodge1.NotRunning");
}

// A live limits.* change that cannot reach the supervisor was StartFailed (any EIO was).
TEST_F(BusErrors, LiveLimitsThatCannotReachTheSupervisorAreNotStartFailed) {
    std::string n = make("limits");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 0), "") << last_message;
    ASSERT_EQ(error_of("StartContainer", "s", n.c_str()), "") << last_message;
    hide_control_socket(n);
    std::string name =
        error_of("SetContainerConfig", "sa{ss}as", n.c_str(), 1, "limits.memory", "64MB", 0);
    put_back();
    EXPECT_NE(name, "io.lodge1.StartFailed") << last_message;
    EXPECT_EQ(name, "io.lodge1.NotRunning") << last_message;
}

// A stop that cannot reach the supervisor says so, and is no StartFailed either.
TEST_F(BusErrors, AStopThatCannotReachTheSupervisorIsNotStartFailed) {
    std::string n = make("stopfail");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 0), "") << last_message;
    ASSERT_EQ(error_of("StartContainer", "s", n.c_str()), "") << last_message;
    hide_control_socket(n);
    std::string name = error_of("StopContainer", "sib", n.c_str(), -1, 1);
    put_back();
    EXPECT_NE(name, "io.lodge1.StartFailed") << last_message;
    EXPECT_EQ(name, "io.lodge1.NotRunning") << last_message;
}

TEST_F(BusErrors, RemovingAMissingDeviceIsNoSuchDevice) {
    std::string n = make("nodev");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 0), "") << last_message;
    EXPECT_EQ(error_of("RemoveContainerDevice", "ss", n.c_str(), "nothere"),
              "io.lodge1.NoSuchDevice");
    EXPECT_EQ(error_of("AddContainerDevice", "ssa{ss}", n.c_str(), "bad/dev", 1, "type", "disk"),
              "io.lodge1.InvalidConfig");
}

} // namespace

namespace {

// Issue 15's operations name their failures where they happen. The old edge mapped every
// EEXIST to SnapshotExists and every EINVAL to InvalidConfig, whatever had failed.
TEST_F(BusErrors, CopyingOntoAnExistingContainerIsContainerExists) {
    std::string a = make("copysrc"), b = make("copydst");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", a.c_str(), 0), "") << last_message;
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", b.c_str(), 0), "") << last_message;
    EXPECT_EQ(error_of("CopyContainer", "sssa{ss}b", a.c_str(), "", b.c_str(), 0, 0),
              "io.lodge1.ContainerExists")
        << last_message;
}

TEST_F(BusErrors, SnapshotFailuresNameTheSnapshotProblem) {
    std::string n = make("snaperr");
    ASSERT_EQ(error_of("CreateContainer", "sa{ss}", n.c_str(), 0), "") << last_message;
    ASSERT_EQ(error_of("CreateSnapshot", "ss", n.c_str(), "s1"), "") << last_message;
    EXPECT_EQ(error_of("CreateSnapshot", "ss", n.c_str(), "s1"), "io.lodge1.SnapshotExists");
    EXPECT_EQ(error_of("RestoreSnapshot", "ssb", n.c_str(), "nothere", 0),
              "io.lodge1.NoSuchSnapshot");
    // An invalid new name is a name's problem, not the config's.
    EXPECT_EQ(error_of("RenameSnapshot", "sss", n.c_str(), "s1", "-bad"), "io.lodge1.InvalidName")
        << last_message;
    EXPECT_EQ(error_of("CopyContainer", "sssa{ss}b", n.c_str(), "nothere", make("c").c_str(), 0, 0),
              "io.lodge1.NoSuchSnapshot");
}

} // namespace
