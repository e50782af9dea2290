#pragma once
// Time as events carry it.

#include <cstdint>
#include <string>

namespace cellos::core {

// Microseconds since the Unix epoch, from the realtime clock.
uint64_t unixMicrosNow();

// RFC 3339 UTC with exactly six fractional digits: "2026-11-29T10:00:00.123456Z".
std::string formatRfc3339Micros(uint64_t unixMicros);

}  // namespace cellos::core
