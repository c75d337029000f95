#include "common/snapshot-schedule.hpp"
#include "common/validate.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

namespace lodge {
namespace {

// One cron field into `bits` (values lo..hi). Empty when fine.
template <size_t N>
std::string parse_field(const std::string& field, unsigned lo, unsigned hi, std::bitset<N>& bits,
                        bool& any, const char* what) {
    any = field == "*";
    std::stringstream parts(field);
    std::string part;
    while (std::getline(parts, part, ',')) {
        unsigned step = 1, from = lo, to = hi;
        auto slash = part.find('/');
        std::string range = part.substr(0, slash);
        if (slash != std::string::npos) {
            auto s = parse_uint(part.substr(slash + 1), hi);
            if (!s || *s == 0)
                return std::string("bad step in the ") + what + " field \"" + field + "\"";
            step = static_cast<unsigned>(*s);
        }
        if (range != "*") {
            auto dash = range.find('-');
            auto a = parse_uint(range.substr(0, dash), hi);
            auto b = dash == std::string::npos ? a : parse_uint(range.substr(dash + 1), hi);
            if (!a || !b || *a < lo || *b < *a)
                return std::string("bad ") + what + " \"" + field + "\" (expected " +
                       std::to_string(lo) + " to " + std::to_string(hi) + ")";
            from = static_cast<unsigned>(*a);
            to = static_cast<unsigned>(*b);
            if (slash != std::string::npos && dash == std::string::npos)
                to = hi; // "5/15": from 5 on, every 15
        }
        for (unsigned v = from; v <= to; v += step)
            bits.set(v);
    }
    return bits.any() ? std::string() : std::string("empty ") + what + " field";
}

} // namespace

std::string CronSchedule::parse(const std::string& spec) {
    entries_.clear();
    std::stringstream all(spec);
    std::string one;
    while (std::getline(all, one, ',')) {
        // A comma inside a field ("0,30 * * * *") belongs to it: join back until 5 fields.
        auto count_fields = [](const std::string& s) {
            std::stringstream ss(s);
            std::string w;
            size_t n = 0;
            while (ss >> w)
                n++;
            return n;
        };
        while (one.find('@') == std::string::npos && count_fields(one) < 5 && !all.eof()) {
            std::string more;
            if (!std::getline(all, more, ','))
                break;
            one += "," + more;
        }
        std::stringstream ss(one);
        std::vector<std::string> f;
        std::string w;
        while (ss >> w)
            f.push_back(w);
        static const std::pair<const char*, const char*> aliases[] = {
            {"@hourly", "0 * * * *"},  {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
            {"@weekly", "0 0 * * 0"},  {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
            {"@annually", "0 0 1 1 *"}};
        if (f.size() == 1 && f[0][0] == '@') {
            bool known = false;
            for (auto& [alias, expanded] : aliases)
                if (f[0] == alias) {
                    known = true;
                    std::stringstream e(expanded);
                    f.clear();
                    while (e >> w)
                        f.push_back(w);
                }
            if (!known)
                return "unknown schedule \"" + f[0] + "\"";
        }
        if (f.size() != 5)
            return "expected five fields (minute hour day month weekday) in \"" + one + "\"";
        Entry e;
        bool any = false;
        if (auto r = parse_field(f[0], 0, 59, e.minute, any, "minute"); !r.empty())
            return r;
        if (auto r = parse_field(f[1], 0, 23, e.hour, any, "hour"); !r.empty())
            return r;
        if (auto r = parse_field(f[2], 1, 31, e.day, e.any_day, "day"); !r.empty())
            return r;
        if (auto r = parse_field(f[3], 1, 12, e.month, any, "month"); !r.empty())
            return r;
        if (auto r = parse_field(f[4], 0, 7, e.weekday, e.any_weekday, "weekday"); !r.empty())
            return r;
        if (e.weekday.test(7))
            e.weekday.set(0); // 7 is Sunday too
        entries_.push_back(e);
    }
    return entries_.empty() ? "empty schedule" : "";
}

bool CronSchedule::matches(const struct tm& tm) const {
    for (auto& e : entries_) {
        if (!e.minute.test(static_cast<size_t>(tm.tm_min)) ||
            !e.hour.test(static_cast<size_t>(tm.tm_hour)) ||
            !e.month.test(static_cast<size_t>(tm.tm_mon + 1)))
            continue;
        bool day = e.day.test(static_cast<size_t>(tm.tm_mday));
        bool weekday = e.weekday.test(static_cast<size_t>(tm.tm_wday));
        // cron's rule: with both restricted, either one will do.
        bool ok = e.any_day && e.any_weekday ? true
                  : e.any_day                ? weekday
                  : e.any_weekday            ? day
                                             : day || weekday;
        if (ok)
            return true;
    }
    return false;
}

std::string parse_expiry(const std::string& value, uint64_t& seconds) {
    std::stringstream ss(value);
    std::string w;
    seconds = 0;
    bool any = false;
    while (ss >> w) {
        if (w.size() < 2)
            return "expected terms such as 1M 2H 3d 4w 5m 6y";
        auto n = parse_uint(w.substr(0, w.size() - 1), 100000);
        uint64_t unit = 0;
        switch (w.back()) {
        case 'M':
            unit = 60;
            break;
        case 'H':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        case 'w':
            unit = 7 * 86400;
            break;
        case 'm':
            unit = 30 * 86400;
            break;
        case 'y':
            unit = 365 * 86400;
            break;
        }
        if (!n || unit == 0)
            return "expected terms such as 1M 2H 3d 4w 5m 6y";
        seconds += *n * unit;
        any = true;
    }
    return any ? "" : "expected terms such as 1M 2H 3d 4w 5m 6y";
}

std::string check_snapshot_pattern(const std::string& pattern) {
    std::string sample = snapshot_name_from(pattern, {});
    if (sample.empty() || sample.size() > 63 || sample[0] == '.' || sample[0] == '-')
        return "expected a name pattern such as snap%d";
    for (char c : sample)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
            return "expected a name pattern such as snap%d (letters, digits, '-', '_', '.')";
    return {};
}

std::string snapshot_name_from(const std::string& pattern, const std::vector<std::string>& taken) {
    auto at = pattern.find("%d");
    auto is_taken = [&](const std::string& n) {
        return std::find(taken.begin(), taken.end(), n) != taken.end();
    };
    if (at == std::string::npos) {
        if (!is_taken(pattern))
            return pattern;
        // A fixed name already taken: a counter after it, as LXD does.
        for (unsigned i = 1;; i++)
            if (!is_taken(pattern + "-" + std::to_string(i)))
                return pattern + "-" + std::to_string(i);
    }
    for (unsigned i = 0;; i++) {
        std::string n = pattern.substr(0, at) + std::to_string(i) + pattern.substr(at + 2);
        if (!is_taken(n))
            return n;
    }
}

} // namespace lodge
