#include "core/dns_policy.h"

#include "core/hostname.h"

#include <algorithm>

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

}  // namespace cellos::core
