// A calendar date and time as struct tm, for tests that run schedules on a clock of their own.
#pragma once

#include <ctime>

namespace lodge::test {

// tm_isdst -1: mktime() decides whether daylight saving time applies.
inline struct tm calendar(int year, int mon, int mday, int hour, int min) {
    struct tm t {};
    t.tm_year = year - 1900;
    t.tm_mon = mon - 1;
    t.tm_mday = mday;
    t.tm_hour = hour;
    t.tm_min = min;
    t.tm_isdst = -1;
    return t;
}

} // namespace lodge::test
