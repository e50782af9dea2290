#include "core/host_destination.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace cellos::core {

namespace {

bool lessThan(const IpRange& a, const IpRange& b) {
  if (a.ipv6 != b.ipv6) return !a.ipv6;
  if (a.bytes != b.bytes) return a.bytes < b.bytes;
  return a.prefix < b.prefix;
}

bool prefixHas(const std::array<uint8_t, 16>& address, std::initializer_list<uint8_t> head) {
  return std::equal(head.begin(), head.end(), address.begin());
}

}  // namespace

const std::vector<IpRange>& builtinHostDestinations() {
  static const std::vector<IpRange> ranges = [] {
    std::vector<IpRange> out;
    for (const char* text : {
             "0.0.0.0/8",        // "this network": connect() to 0.0.0.0 is the local host
             "127.0.0.0/8",      // loopback
             "169.254.0.0/16",   // link-local (and cloud metadata services)
             "::/96",            // IPv4-compatible, with :: and ::1 (loopback)
             "::ffff:0:0/96",    // IPv4-mapped
             "::ffff:0:0:0/96",  // SIIT (RFC 6145 IPv4-translated)
             "64:ff9b::/96",     // NAT64 well-known prefix (RFC 6052)
             "64:ff9b:1::/48",   // NAT64 local-use prefix (RFC 8215)
             "2001::/32",        // Teredo
             "2002::/16",        // 6to4
             "fe80::/10",        // link-local
         }) {
      out.push_back(*parseIpRange(text));
    }
    return out;
  }();
  return ranges;
}

std::vector<IpRange> parseIpRanges(const std::vector<std::string>& texts) {
  std::vector<IpRange> out;
  for (const std::string& text : texts) {
    std::optional<IpRange> range = parseIpRange(text);
    if (!range) throw std::invalid_argument("\"" + text + "\" is not an address or range");
    out.push_back(*range);
  }
  return out;
}

std::vector<IpRange> hostDestinationRanges(const std::vector<std::string>& hostAddresses,
                                           std::string_view addressPool) {
  std::vector<IpRange> all = builtinHostDestinations();
  std::optional<IpRange> pool = parseIpRange(addressPool);
  if (!pool) {
    throw std::invalid_argument("address pool \"" + std::string(addressPool) + "\" is not a range");
  }
  all.push_back(*pool);
  for (const std::string& text : hostAddresses) {
    std::optional<IpRange> address = parseIpRange(text);
    if (!address || address->prefix != (address->ipv6 ? 128u : 32u)) {
      throw std::invalid_argument("host address \"" + text + "\" is not an address");
    }
    all.push_back(*address);
  }
  // Widest first, so a range is kept only when nothing kept so far holds it.
  std::sort(all.begin(), all.end(),
            [](const IpRange& a, const IpRange& b) { return a.prefix < b.prefix; });
  std::vector<IpRange> kept;
  for (const IpRange& range : all) {
    bool inside = std::any_of(kept.begin(), kept.end(),
                              [&](const IpRange& outer) { return ipRangeContains(outer, range); });
    if (!inside) kept.push_back(range);
  }
  std::sort(kept.begin(), kept.end(), lessThan);
  return kept;
}

bool isHostDestination(std::span<const uint8_t> address,
                       const std::vector<IpRange>& hostDestinations,
                       const std::vector<IpRange>& allowed) {
  if (address.size() != 4 && address.size() != 16) return true;  // not an address: never let it by
  auto holds = [&](const IpRange& range) { return ipRangeContains(range, address); };
  if (std::any_of(allowed.begin(), allowed.end(), holds)) return false;
  return std::any_of(hostDestinations.begin(), hostDestinations.end(), holds);
}

std::vector<std::array<uint8_t, 4>> embeddedIpv4(const std::array<uint8_t, 16>& a) {
  std::vector<std::array<uint8_t, 4>> out;
  auto at = [&](size_t i, size_t j, size_t k, size_t l) {
    out.push_back({a[i], a[j], a[k], a[l]});
  };
  bool zero80 = std::all_of(a.begin(), a.begin() + 10, [](uint8_t b) { return b == 0; });
  if (zero80 && ((a[10] == 0xff && a[11] == 0xff) || (a[10] == 0 && a[11] == 0))) {
    at(12, 13, 14, 15);  // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible)
  } else if (std::all_of(a.begin(), a.begin() + 8, [](uint8_t b) { return b == 0; }) &&
             a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0) {
    at(12, 13, 14, 15);  // ::ffff:0:a.b.c.d (SIIT)
  } else if (prefixHas(a, {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0})) {
    at(12, 13, 14, 15);  // 64:ff9b::a.b.c.d
  } else if (prefixHas(a, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01})) {
    at(6, 7, 9, 10);  // 64:ff9b:1:ab:0cd::, the u-octet (byte 8) between the halves
  } else if (prefixHas(a, {0x20, 0x02})) {
    at(2, 3, 4, 5);  // 2002:abcd::/48 (6to4)
  } else if (prefixHas(a, {0x20, 0x01, 0x00, 0x00})) {
    at(4, 5, 6, 7);  // Teredo server
    out.push_back({uint8_t(~a[12]), uint8_t(~a[13]), uint8_t(~a[14]), uint8_t(~a[15])});
  }
  return out;
}

}  // namespace cellos::core
