// The shapes LXD gives nic values, checked without std::regex (GCC 12 reports false
// maybe-uninitialized warnings inside <regex> in the sanitizer build).
#pragma once

#include <string>

namespace lodge::test {

inline bool is_lower_hex(const std::string& s, size_t from, size_t count) {
    if (s.size() < from + count)
        return false;
    for (size_t i = from; i < from + count; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

// 00:16:3e:xx:xx:xx, lower case.
inline bool is_lxd_mac(const std::string& s) {
    if (s.size() != 17 || s.compare(0, 9, "00:16:3e:") != 0)
        return false;
    return is_lower_hex(s, 9, 2) && s[11] == ':' && is_lower_hex(s, 12, 2) && s[14] == ':' &&
           is_lower_hex(s, 15, 2);
}

// veth + 8 lower-case hex digits.
inline bool is_veth_name(const std::string& s) {
    return s.size() == 12 && s.compare(0, 4, "veth") == 0 && is_lower_hex(s, 4, 8);
}

} // namespace lodge::test
