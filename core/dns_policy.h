#pragma once
// The DNS helper's decision for one query, as pure logic: which names and query types a cell
// may resolve. The wire handling lives in dns-helper/; this only decides.

#include "core/dns_wire.h"
#include "core/ip_address.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

struct DnsPolicyRules {
  std::vector<std::string> hostnameAllowlist;  // normalised names and "*.suffix" patterns
  std::vector<uint16_t> allowedQueryTypes;     // empty = the default set (A, AAAA, CNAME, HTTPS)
};

enum class DnsDecision { kPermitted, kRefused, kDropped };

struct DnsVerdict {
  DnsDecision decision;
  std::string_view
      reasonCode;  // allowlist_match | not_in_allowlist | qtype_not_allowed | malformed_query
};

// The default query types of cell-spec.md when a document lists none.
const std::vector<uint16_t>& defaultAllowedQueryTypes();

// Decides a parsed query: the query type is checked first (a permitted name with a forbidden
// type is still refused), then the name against the allowlist.
DnsVerdict decideQuery(const DnsPolicyRules& rules, const DnsQuestion& question);

std::string_view decisionName(DnsDecision decision);  // "permitted" | "refused" | "dropped"

// A range for the rebinding guard: always in its IPv6 form (core/ip_address.h ipv6Form), an
// IPv4 range held as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96), so one comparison covers
// both families and a mapped address in an AAAA record is judged as the IPv4 address it stands
// for.
using DnsAddressRange = IpRange;

// parseIpRange ("a.b.c.d/n", "x::y/n", or a bare address as a /32 or /128) in the IPv6 form.
// nullopt for anything parseIpRange refuses, host bits set beyond the prefix included.
std::optional<DnsAddressRange> parseAddressRange(std::string_view text);

// Ranges an answer may never point into, whatever the configuration: loopback, link-local,
// unspecified ("this network") and multicast, for both families.
const std::vector<DnsAddressRange>& builtinGuardedRanges();

// True when the address (4 bytes IPv4 or 16 bytes IPv6) lies in a built-in guarded range or
// in one of `configured` (the cell's own subnet, the operator's private ranges), or is an IPv6
// address embedding an IPv4 address that does (core::embeddedIpv4: mapped, compatible, SIIT,
// NAT64, 6to4, Teredo).
bool rebindingGuarded(std::span<const uint8_t> address,
                      const std::vector<DnsAddressRange>& configured);

}  // namespace cellos::core
