#include "core/clock.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace cellos::core {

uint64_t unixMicrosNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string formatRfc3339Micros(uint64_t unixMicros) {
  time_t seconds = static_cast<time_t>(unixMicros / 1'000'000);
  unsigned micros = static_cast<unsigned>(unixMicros % 1'000'000);
  tm utc{};
  gmtime_r(&seconds, &utc);
  char buf[96];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", utc.tm_year + 1900,
           utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, micros);
  return buf;
}

}  // namespace cellos::core
