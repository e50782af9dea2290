#include "core/dns_policy.h"

#include "core/host_destination.h"
#include "core/hostname.h"

#include <arpa/inet.h>

#include <algorithm>
#include <string>

namespace cellos::core {

const std::vector<uint16_t>& defaultAllowedQueryTypes() {
  static const std::vector<uint16_t> types = {1 /*A*/, 28 /*AAAA*/, 5 /*CNAME*/, 65 /*HTTPS*/};
  return types;
}

DnsVerdict decideQuery(const DnsPolicyRules& rules, const DnsQuestion& question) {
  const auto& types =
      rules.allowedQueryTypes.empty() ? defaultAllowedQueryTypes() : rules.allowedQueryTypes;
  if (question.qclass != kDnsClassIn ||
      std::find(types.begin(), types.end(), question.qtype) == types.end()) {
    return {DnsDecision::kRefused, "qtype_not_allowed"};
  }
  if (!anyHostnameMatches(rules.hostnameAllowlist, question.name)) {
    return {DnsDecision::kRefused, "not_in_allowlist"};
  }
  return {DnsDecision::kPermitted, "allowlist_match"};
}

std::string_view decisionName(DnsDecision decision) {
  switch (decision) {
    case DnsDecision::kPermitted:
      return "permitted";
    case DnsDecision::kRefused:
      return "refused";
    case DnsDecision::kDropped:
      return "dropped";
  }
  return "dropped";
}

namespace {

std::array<uint8_t, 16> mapped(const uint8_t* v4) {
  std::array<uint8_t, 16> out{};
  out[10] = out[11] = 0xff;
  std::copy(v4, v4 + 4, out.begin() + 12);
  return out;
}

bool contains(const DnsAddressRange& range, const std::array<uint8_t, 16>& address) {
  unsigned full = range.prefix / 8, rest = range.prefix % 8;
  if (!std::equal(address.begin(), address.begin() + full, range.address.begin())) return false;
  if (rest == 0) return true;
  uint8_t mask = uint8_t(0xff << (8 - rest));
  return (address[full] & mask) == (range.address[full] & mask);
}

}  // namespace

std::optional<DnsAddressRange> parseAddressRange(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  std::string address(text.substr(0, text.find('/')));
  std::optional<unsigned> prefix;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        digits.find_first_not_of("0123456789") != std::string_view::npos) {
      return std::nullopt;
    }
    prefix = unsigned(std::stoul(std::string(digits)));
  }
  DnsAddressRange range;
  uint8_t v4[4];
  if (inet_pton(AF_INET, address.c_str(), v4) == 1) {
    if (prefix.value_or(32) > 32) return std::nullopt;
    range.address = mapped(v4);
    range.prefix = prefix.value_or(32) + 96;
  } else if (inet_pton(AF_INET6, address.c_str(), range.address.data()) == 1) {
    if (prefix.value_or(128) > 128) return std::nullopt;
    range.prefix = prefix.value_or(128);
  } else {
    return std::nullopt;
  }
  for (unsigned bit = range.prefix; bit < 128; ++bit) {
    if (range.address[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;
  }
  return range;
}

const std::vector<DnsAddressRange>& builtinGuardedRanges() {
  static const std::vector<DnsAddressRange> ranges = [] {
    std::vector<DnsAddressRange> out;
    for (const char* text : {"0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                             "255.255.255.255/32", "::/128", "::1/128", "fe80::/10", "ff00::/8"}) {
      out.push_back(*parseAddressRange(text));
    }
    return out;
  }();
  return ranges;
}

bool rebindingGuarded(std::span<const uint8_t> address,
                      const std::vector<DnsAddressRange>& configured) {
  std::array<uint8_t, 16> full{};
  if (address.size() == 4) {
    full = mapped(address.data());
  } else if (address.size() == 16) {
    std::copy(address.begin(), address.end(), full.begin());
  } else {
    return true;  // not an address: never let it through
  }
  auto guarded = [&](const std::array<uint8_t, 16>& candidate) {
    for (const auto* list : {&builtinGuardedRanges(), &configured}) {
      for (const auto& range : *list) {
        if (contains(range, candidate)) return true;
      }
    }
    return false;
  };
  if (guarded(full)) return true;
  // An IPv6 form that stands for an IPv4 address (::127.0.0.1, 64:ff9b::7f00:1, ::ffff:0:7f00:1,
  // a 6to4 or Teredo address around one) is judged as that address too: whether it can be
  // routed today (a cell has no IPv6 route) must not decide whether it is refused.
  for (const auto& v4 : embeddedIpv4(full)) {
    if (guarded(mapped(v4.data()))) return true;
  }
  return false;
}

}  // namespace cellos::core
