// lodged's bus vocabulary: the shared libsystemd RAII types and its typed errors.
#pragma once

#include "common/sd-util.hpp"

namespace lodge::daemon {

using lodge::BusPtr;
using lodge::EventPtr;
using lodge::guarded;
using lodge::MessagePtr;
using lodge::read_string_map;
using lodge::SlotPtr;
using lodge::SourcePtr;

// Typed errors of io.lodge1 (CONTRACT §7).
namespace errors {
constexpr const char* no_such_container = "io.lodge1.NoSuchContainer";
constexpr const char* container_exists = "io.lodge1.ContainerExists";
constexpr const char* invalid_name = "io.lodge1.InvalidName";
constexpr const char* invalid_config = "io.lodge1.InvalidConfig";
constexpr const char* not_running = "io.lodge1.NotRunning";
constexpr const char* already_running = "io.lodge1.AlreadyRunning";
constexpr const char* busy = "io.lodge1.Busy";
constexpr const char* start_failed = "io.lodge1.StartFailed";
constexpr const char* import_failed = "io.lodge1.ImportFailed";
} // namespace errors

} // namespace lodge::daemon
