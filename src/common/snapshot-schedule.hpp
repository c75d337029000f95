// snapshots.schedule, snapshots.expiry and snapshots.pattern (LXD's keys): cron schedules,
// expiry expressions and snapshot name patterns.
#pragma once

#include <bitset>
#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace lodge {

// A cron schedule: five fields (minute hour day-of-month month day-of-week, each *, a
// number, a range a-b, a list, a step */n or a-b/n) or @hourly, @daily, @midnight,
// @weekly, @monthly, @yearly, @annually; several schedules separated by ", ".
class CronSchedule {
public:
    // Empty when `spec` is fine, else what is wrong with it.
    std::string parse(const std::string& spec);
    // Whether the minute `tm` (local time) is one the schedule names.
    bool matches(const struct tm& tm) const;

private:
    struct Entry {
        std::bitset<60> minute;
        std::bitset<24> hour;
        std::bitset<32> day;
        std::bitset<13> month;
        std::bitset<8> weekday;
        bool any_day = true, any_weekday = true;
    };
    std::vector<Entry> entries_;
};

// "1M 2H 3d 4w 5m 6y" (minutes, hours, days, weeks, months of 30 days, years of 365 days):
// seconds, or an empty optional-like error. Empty when fine.
std::string parse_expiry(const std::string& value, uint64_t& seconds);

// snapshots.pattern: "%d" is the first free number; the rest is taken as it is. Empty when
// `pattern` can make snapshot names.
std::string check_snapshot_pattern(const std::string& pattern);
// The name `pattern` gives, not among `taken`.
std::string snapshot_name_from(const std::string& pattern, const std::vector<std::string>& taken);

} // namespace lodge
