#pragma once
// The DNS helper's decision for one query, as pure logic: which names and query types a cell
// may resolve. The wire handling lives in dns-helper/; this only decides.

#include "core/dns_wire.h"

#include <cstdint>
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

}  // namespace cellos::core
