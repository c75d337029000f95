// snapshots.schedule (cron), snapshots.expiry and snapshots.pattern parsing.
#include "../calendar.hpp"
#include "common/snapshot-schedule.hpp"
#include "common/validate.hpp"

#include <gtest/gtest.h>

using namespace lodge;

namespace {

struct tm at(int year, int mon, int mday, int hour, int min) {
    struct tm t = test::calendar(year, mon, mday, hour, min);
    time_t s = ::timegm(&t);
    struct tm out {};
    ::gmtime_r(&s, &out); // fills tm_wday
    return out;
}

TEST(CronSchedule, FieldsRangesListsAndSteps) {
    CronSchedule c;
    ASSERT_EQ(c.parse("*/15 9-17 * * 1-5"), "");
    EXPECT_TRUE(c.matches(at(2026, 12, 3, 9, 45))); // a Thursday
    EXPECT_FALSE(c.matches(at(2026, 12, 3, 9, 50)));
    EXPECT_FALSE(c.matches(at(2026, 12, 3, 18, 0)));
    EXPECT_FALSE(c.matches(at(2026, 12, 6, 10, 0))); // a Sunday
    ASSERT_EQ(c.parse("0,30 0 1 1,7 *"), "");
    EXPECT_TRUE(c.matches(at(2027, 7, 1, 0, 30)));
    EXPECT_FALSE(c.matches(at(2027, 7, 2, 0, 30)));
    // Day of month and weekday both restricted: either will do (cron's rule).
    ASSERT_EQ(c.parse("0 0 13 * 5"), "");
    EXPECT_TRUE(c.matches(at(2026, 12, 4, 0, 0)));  // a Friday
    EXPECT_TRUE(c.matches(at(2026, 12, 13, 0, 0))); // the 13th
    EXPECT_FALSE(c.matches(at(2026, 12, 14, 0, 0)));
    ASSERT_EQ(c.parse("@daily"), "");
    EXPECT_TRUE(c.matches(at(2026, 12, 14, 0, 0)));
    EXPECT_FALSE(c.matches(at(2026, 12, 14, 0, 1)));
    ASSERT_EQ(c.parse("0 6 * * *, 0 18 * * 7"), "");
    EXPECT_TRUE(c.matches(at(2026, 12, 6, 18, 0)));
    EXPECT_TRUE(c.matches(at(2026, 12, 7, 6, 0)));
    EXPECT_FALSE(c.matches(at(2026, 12, 7, 18, 0)));
}

TEST(CronSchedule, BadSpecsAreRefused) {
    CronSchedule c;
    for (const char* bad : {"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *",
                            "5-1 * * * *", "@often", "a b c d e"})
        EXPECT_NE(c.parse(bad), "") << bad;
    EXPECT_NE(check_config_key("snapshots.schedule", "* * *"), "");
    EXPECT_EQ(check_config_key("snapshots.schedule", "@hourly"), "");
}

TEST(SnapshotExpiry, Terms) {
    uint64_t s = 0;
    EXPECT_EQ(parse_expiry("1M 2H 3d", s), "");
    EXPECT_EQ(s, 60u + 2 * 3600 + 3 * 86400);
    EXPECT_EQ(parse_expiry("2w", s), "");
    EXPECT_EQ(s, 14u * 86400);
    EXPECT_NE(parse_expiry("3 days", s), "");
    EXPECT_NE(parse_expiry("", s), "");
    EXPECT_NE(check_config_key("snapshots.expiry", "soon"), "");
    EXPECT_EQ(check_config_key("snapshots.expiry", "1y"), "");
}

TEST(SnapshotPattern, NamesAreFreeAndValid) {
    EXPECT_EQ(snapshot_name_from("snap%d", {}), "snap0");
    EXPECT_EQ(snapshot_name_from("snap%d", {"snap0", "snap1"}), "snap2");
    EXPECT_EQ(snapshot_name_from("daily-%d-x", {"daily-0-x"}), "daily-1-x");
    EXPECT_EQ(snapshot_name_from("fixed", {"fixed"}), "fixed-1");
    EXPECT_EQ(check_snapshot_pattern("auto-%d"), "");
    EXPECT_NE(check_snapshot_pattern("a/%d"), "");
    EXPECT_NE(check_snapshot_pattern(".hidden%d"), "");
    EXPECT_NE(check_config_key("snapshots.pattern", "{{ creation_date }}"), "");
}

} // namespace
