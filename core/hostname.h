#pragma once
// Hostnames and "*.suffix" patterns as the cell document uses them (cell-spec.md, "Hostnames"):
// dnsAuthority.hostnameAllowlist entries and egressRules[].host. Pure text; no resolution.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// Longest hostname in text form (RFC 1035 section 3.1: 255 wire bytes = 253 characters).
inline constexpr std::size_t kMaxHostnameLength = 253;
// Longest label (RFC 1035 section 2.3.4).
inline constexpr std::size_t kMaxHostnameLabelLength = 63;

// Lower-cases (ASCII) and validates a hostname, or with allowWildcard a "*.suffix" pattern.
// Rules: one optional trailing dot is removed; then the text must be at most 253 characters of
// RFC 1123 labels, each 1..63 characters of [a-z0-9-] not starting or ending with '-'. A wildcard
// is only a single leading "*." followed by a valid hostname; "*" alone is refused. Returns the
// normalised form, or nullopt with *error (when error is not null) set to one short message
// naming the first problem, e.g. `label "-bad" must not start or end with '-'`. Echoed text is
// lower-cased, and bytes outside printable ASCII, '"' and '\\' are written as \xNN.
std::optional<std::string> normaliseHostname(std::string_view text, bool allowWildcard,
                                             std::string* error);

// True when a query name matches one allowlist entry: the two are equal, or the pattern is
// "*.suffix" and the name has at least one more label and ends in ".suffix" (the apex "suffix"
// itself never matches). Both are expected normalised; ASCII case differences and one trailing
// dot on either side are tolerated. An empty pattern, "*" or "*." matches nothing.
bool hostnameMatches(std::string_view pattern, std::string_view name);

// True when any pattern matches name (see hostnameMatches). An empty list matches nothing.
bool anyHostnameMatches(const std::vector<std::string>& patterns, std::string_view name);

}  // namespace cellos::core
