#pragma once
// RFC 9562 UUIDs for event ids and run ids.

#include <string>

namespace cellos::core {

// Version 7: 48-bit Unix time in milliseconds from the realtime clock, then 12 bits of
// sub-millisecond time (RFC 9562 section 6.2 method 3, so ids made in one process sort by time
// even within a millisecond), then 62 random bits from OpenSSL RAND_bytes. Lower-case canonical
// 8-4-4-4-12 text. Throws std::runtime_error if the random generator fails.
std::string newUuidV7();

// Version 4: 122 random bits from RAND_bytes, same text form. Throws like newUuidV7.
std::string newUuidV4();

}  // namespace cellos::core
