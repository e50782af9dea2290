#include "core/uuid.h"

#include <openssl/rand.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <stdexcept>

namespace cellos::core {
namespace {

using UuidBytes = std::array<uint8_t, 16>;

void fillRandom(uint8_t* out, size_t length) {
  if (RAND_bytes(out, static_cast<int>(length)) != 1) {
    throw std::runtime_error("RAND_bytes failed while generating a UUID");
  }
}

// Sets the version nibble and the RFC 9562 variant bits (10xx).
void stamp(UuidBytes& bytes, uint8_t version) {
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | (version << 4));
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);
}

std::string format(const UuidBytes& bytes) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0x0f];
  }
  return out;
}

}  // namespace

std::string newUuidV7() {
  UuidBytes bytes{};
  fillRandom(bytes.data(), bytes.size());

  auto sinceEpoch = std::chrono::system_clock::now().time_since_epoch();
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(sinceEpoch).count();
  if (nanos < 0) nanos = 0;  // a clock set before 1970 cannot be encoded; sort first
  auto millis = static_cast<uint64_t>(nanos / 1'000'000);
  // 12-bit fraction of the current millisecond: floor(subMillisNanos * 4096 / 1e6).
  auto fraction =
      static_cast<uint16_t>(static_cast<uint64_t>(nanos % 1'000'000) * 4096 / 1'000'000);

  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<uint8_t>(millis >> (8 * (5 - i)));
  bytes[6] = static_cast<uint8_t>(fraction >> 8);
  bytes[7] = static_cast<uint8_t>(fraction & 0xff);
  stamp(bytes, 7);
  return format(bytes);
}

std::string newUuidV4() {
  UuidBytes bytes{};
  fillRandom(bytes.data(), bytes.size());
  stamp(bytes, 4);
  return format(bytes);
}

}  // namespace cellos::core
