// lodged raises its soft RLIMIT_NOFILE (a descriptor per container, several per exec); what it
// starts gets the limit lodged started with.
#include "common/process.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace lodge;

TEST(FdLimit, RaisedToTheHardLimitAndRestoredInChildren) {
    struct rlimit rl {};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max <= 256)
        GTEST_SKIP() << "hard limit too low to test";
    struct rlimit low = rl;
    low.rlim_cur = 256;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);

    EXPECT_EQ(raise_fd_limit(), static_cast<long>(rl.rlim_max));
    struct rlimit now {};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &now), 0);
    EXPECT_EQ(now.rlim_cur, rl.rlim_max);

    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        restore_fd_limit();
        struct rlimit c {};
        _exit(getrlimit(RLIMIT_NOFILE, &c) == 0 && c.rlim_cur == 256 ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child did not get 256 back";
    setrlimit(RLIMIT_NOFILE, &rl);
}
