// lodged's bus vocabulary: the shared libsystemd RAII types, its typed errors (common/error.hpp)
// and the one place an Error becomes a bus error.
#pragma once

#include "common/error.hpp"
#include "common/sd-util.hpp"

namespace lodge::daemon {

using lodge::BusPtr;
using lodge::Error;
using lodge::EventPtr;
using lodge::guarded;
using lodge::make_error;
using lodge::MessagePtr;
using lodge::read_string_map;
using lodge::Result;
using lodge::SlotPtr;
using lodge::SourcePtr;
namespace errors = lodge::errors;

// Sets `error` to `e`'s bus name and message; returns the (negative) value a handler returns.
inline int set_bus_error(sd_bus_error* error, const Error& e) {
    sd_bus_error_set(error, e.bus_name ? e.bus_name : errors::failed, e.message.c_str());
    return -(e.code > 0 ? e.code : EIO);
}

// Replies to `call` with `e` (a reply that waited for the end of an operation).
inline void reply_bus_error(sd_bus_message* call, const Error& e) {
    sd_bus_error b = SD_BUS_ERROR_NULL;
    set_bus_error(&b, e);
    sd_bus_reply_method_error(call, &b);
    sd_bus_error_free(&b);
}

} // namespace lodge::daemon
