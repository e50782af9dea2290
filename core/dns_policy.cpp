#include "core/dns_policy.h"

#include "core/host_destination.h"
#include "core/hostname.h"

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

std::optional<DnsAddressRange> parseAddressRange(std::string_view text) {
  std::optional<IpRange> range = parseIpRange(text);
  if (!range) return std::nullopt;
  return ipv6Form(*range);
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
  std::optional<IpAddress> given = ipAddressFromBytes(address);
  if (!given) return true;  // not an address: never let it through
  IpAddress full = ipv6Form(*given);
  auto guarded = [&](const IpAddress& candidate) {
    for (const auto* list : {&builtinGuardedRanges(), &configured}) {
      for (const auto& range : *list) {
        if (ipRangeContains(range, candidate)) return true;
      }
    }
    return false;
  };
  if (guarded(full)) return true;
  // An IPv6 form that stands for an IPv4 address (::127.0.0.1, 64:ff9b::7f00:1, ::ffff:0:7f00:1,
  // a 6to4 or Teredo address around one) is judged as that address too: whether it can be
  // routed today (a cell has no IPv6 route) must not decide whether it is refused.
  for (const auto& v4 : embeddedIpv4(full.bytes)) {
    if (guarded(ipv6Form(*ipAddressFromBytes(v4)))) return true;
  }
  return false;
}

}  // namespace cellos::core
