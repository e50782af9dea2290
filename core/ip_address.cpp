#include "core/ip_address.h"

#include <arpa/inet.h>

#include <algorithm>

namespace cellos::core {

namespace {

// The longest address text: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
constexpr size_t kMaxAddressText = 45;

// Whether the first `bits` bits of `a` and `b` agree.
bool samePrefix(const uint8_t* a, const uint8_t* b, unsigned bits) {
  unsigned full = bits / 8, rest = bits % 8;
  if (!std::equal(a, a + full, b)) return false;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

// A prefix length as written: 1-3 decimal digits without a leading zero.
std::optional<unsigned> parsePrefixLength(std::string_view digits) {
  if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits.front() == '0')) {
    return std::nullopt;
  }
  unsigned value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value;
}

}  // namespace

std::optional<IpAddress> parseIpAddress(std::string_view text) {
  if (text.empty() || text.size() > kMaxAddressText || text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string terminated(text);
  IpAddress address;
  if (inet_pton(AF_INET, terminated.c_str(), address.bytes.data()) == 1) return address;
  address.ipv6 = true;
  if (inet_pton(AF_INET6, terminated.c_str(), address.bytes.data()) == 1) return address;
  return std::nullopt;
}

std::optional<IpAddress> ipAddressFromBytes(std::span<const uint8_t> bytes) {
  if (bytes.size() != 4 && bytes.size() != 16) return std::nullopt;
  IpAddress address;
  address.ipv6 = bytes.size() == 16;
  std::copy(bytes.begin(), bytes.end(), address.bytes.begin());
  return address;
}

std::string formatIpAddress(const IpAddress& address) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(address.ipv6 ? AF_INET6 : AF_INET, address.bytes.data(), text, sizeof text);
  return text;
}

bool isUnspecified(const IpAddress& address) {
  std::span<const uint8_t> bytes = address.span();
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

std::optional<IpRange> parseCidr(std::string_view text, IpRangeError* error) {
  IpRangeError ignored;
  IpRangeError& why = error != nullptr ? *error : ignored;
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    why = {.problem = IpRangeProblem::kNoPrefix};
    return std::nullopt;
  }
  std::optional<IpAddress> address = parseIpAddress(text.substr(0, slash));
  if (!address) {
    why = {.problem = IpRangeProblem::kBadAddress};
    return std::nullopt;
  }
  std::optional<unsigned> prefix = parsePrefixLength(text.substr(slash + 1));
  if (!prefix) {
    why = {.problem = IpRangeProblem::kBadPrefixLength};
    return std::nullopt;
  }
  unsigned bits = address->ipv6 ? 128 : 32;
  if (*prefix > bits) {
    why = {.problem = IpRangeProblem::kPrefixOutOfRange, .prefix = *prefix, .maxPrefix = bits};
    return std::nullopt;
  }
  IpRange range{address->ipv6, address->bytes, *prefix};
  for (unsigned bit = range.prefix; bit < bits; ++bit) {
    range.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  if (range.bytes != address->bytes) {
    why = {.problem = IpRangeProblem::kHostBitsSet,
           .prefix = *prefix,
           .maxPrefix = bits,
           .network = range};
    return std::nullopt;
  }
  return range;
}

std::optional<IpRange> parseIpRange(std::string_view text) {
  if (text.find('/') != std::string_view::npos) return parseCidr(text);
  std::optional<IpAddress> address = parseIpAddress(text);
  if (!address) return std::nullopt;
  return hostRange(*address);
}

std::string formatIpRange(const IpRange& range) {
  return formatIpAddress(rangeNetwork(range)) + "/" + std::to_string(range.prefix);
}

IpRange hostRange(const IpAddress& address) {
  return IpRange{address.ipv6, address.bytes, address.ipv6 ? 128u : 32u};
}

IpAddress rangeNetwork(const IpRange& range) {
  return IpAddress{range.ipv6, range.bytes};
}

bool ipRangeContains(const IpRange& range, std::span<const uint8_t> address) {
  if (address.size() != (range.ipv6 ? 16u : 4u)) return false;
  return samePrefix(range.bytes.data(), address.data(), range.prefix);
}

bool ipRangeContains(const IpRange& range, const IpAddress& address) {
  return ipRangeContains(range, address.span());
}

bool ipRangeContains(const IpRange& outer, const IpRange& inner) {
  return outer.ipv6 == inner.ipv6 && inner.prefix >= outer.prefix &&
         samePrefix(outer.bytes.data(), inner.bytes.data(), outer.prefix);
}

IpAddress ipv6Form(const IpAddress& address) {
  if (address.ipv6) return address;
  IpAddress mapped{.ipv6 = true};
  mapped.bytes[10] = mapped.bytes[11] = 0xff;
  std::copy(address.bytes.begin(), address.bytes.begin() + 4, mapped.bytes.begin() + 12);
  return mapped;
}

IpRange ipv6Form(const IpRange& range) {
  if (range.ipv6) return range;
  return IpRange{true, ipv6Form(rangeNetwork(range)).bytes, range.prefix + 96};
}

}  // namespace cellos::core
