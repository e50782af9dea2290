#pragma once
// Host policy: the broker's configuration of what a cell document may ask for on this host
// (cell-spec.md, "Host policy"). The document parser decides whether a document is well formed;
// the policy decides whether this host grants it. Pure code: the broker reads the file before it
// drops privilege and hands the bytes here, so the parser can be unit-tested and fuzzed.
//
// Absent vs empty, for every list: an absent list places no restriction on that item; an empty
// list grants nothing (`allowedEgressHosts: []` refuses every host rule). `allowedBackends` and
// `allowedImages` may not be empty: every cell has a backend and an image, so an empty list
// would refuse every document, which is a configuration mistake, not a policy.

#include "core/spec.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

struct HostPolicy {
  // Caps. Absent: no cap beyond the document's own rules.
  std::optional<uint64_t> maxTtlSeconds;   // spec.lifetime.ttlSeconds
  std::optional<uint64_t> maxTimeoutMs;    // spec.run.timeoutMs (absent: the ttl, see below)
  std::optional<uint64_t> maxMemoryBytes;  // spec.run.limits.memoryMaxBytes
  std::optional<uint64_t> maxPidsMax;      // spec.run.limits.pidsMax

  // What a document that leaves a limit out runs with (at most the cap above). Absent: the cap,
  // else the built-in default below — a cell is never unbounded.
  std::optional<uint64_t> defaultMemoryBytes;  // spec.run.limits.memoryMaxBytes
  std::optional<uint64_t> defaultPidsMax;      // spec.run.limits.pidsMax

  // The backend of a document that names none (spec.placement.backend). Absent: "linux".
  std::optional<std::string> defaultBackend;

  // Grants. nullopt: unrestricted; an empty list: nothing.
  std::optional<std::vector<std::string>>
      allowedBackends;  // "linux" | "gvisor" | "microvm" | "firecracker"
  std::optional<std::vector<std::string>> allowedImages;  // matched literally ("host", ...)
  // Hostnames or "*.suffix" patterns, normalised as in the document (lower case, no trailing
  // dot). They bound egressRules[].host and dnsAuthority.hostnameAllowlist.
  std::optional<std::vector<std::string>> allowedEgressHosts;
  // Address ranges ("10.0.0.0/8", "fd00::/8"), host bits zero. They bound egressRules[].cidr
  // and the addresses of dnsAuthority.resolvers.
  std::optional<std::vector<std::string>> allowedEgressCidrs;

  // The host is never a destination (core/host_destination.h: its own addresses, the address
  // pool, loopback, link-local, the IPv4-embedding IPv6 forms) except inside these ranges
  // ("10.215.0.1/32": one host service an operator means cells to reach). Unlike the lists above,
  // absent and empty mean the same: nothing of the host is opened unless it is listed here.
  std::vector<std::string> allowHostDestinations;
};

// Built-in tasks of a cell whose document and host policy set none (its memory: the backend's
// BackendTraits::defaultMemoryBytes, core/spec.h).
inline constexpr uint64_t kDefaultPidsMax = 1024;

// Policy files larger than this are refused before parsing.
inline constexpr size_t kMaxHostPolicyBytes = 1 << 20;

// Outcome of parseHostPolicy: `policy` set and no violations, or the reverse.
struct HostPolicyParseResult {
  std::optional<HostPolicy> policy;
  std::vector<Violation> violations;  // paths from the policy's root ("maxTtlSeconds", "$")
};

// Parses a policy file: one object whose members are the fields of HostPolicy, camelCase
// (maxTtlSeconds, maxTimeoutMs, maxMemoryBytes, maxPidsMax, defaultMemoryBytes, defaultPidsMax,
// defaultBackend, allowedBackends,
// allowedImages, allowedEgressHosts, allowedEgressCidrs, allowHostDestinations). JSON when the
// first significant character is '{', else YAML, typed as JSON would type the same text (a quoted
// "3600" is a string). Reports every violation at once: unknown and duplicate keys, wrong types,
// numbers that are not positive integers, invalid or duplicate entries, empty
// allowedBackends/allowedImages, a defaultBackend allowedBackends does not list, a default above
// its cap. Refused outright
// with one violation at "$": over kMaxHostPolicyBytes, syntax errors, several YAML documents,
// explicit YAML tags, an empty file. Never throws for any input (only std::bad_alloc).
HostPolicyParseResult parseHostPolicy(std::string_view bytes);

// Every way `document` (already valid) asks for more than `policy` grants, with paths into the
// document, in schema order, e.g.
//   spec.lifetime.ttlSeconds: 7200 exceeds the host's maximum 3600
//   spec.authority.egressRules[1].host: "evil.example" is not allowed on this host
// Values the document leaves out are checked as they will run: the default backend (the
// policy's defaultBackend, else "linux") and image ("host"). An absent timeoutMs or limit is not a
// violation: applyHostPolicyDefaults gives it the host's default. A host rule is allowed when an
// allowedEgressHosts entry matches it (hostnameMatches); a document wildcard "*.a.b" only when a
// policy wildcard covers every name it matches ("*.a.b" or "*.b"). A CIDR is allowed when it lies
// inside one allowedEgressCidrs range of the same family. The DNS allowlist is held to
// allowedEgressHosts and resolver addresses to allowedEgressCidrs too: a name the cell may resolve,
// and a resolver it queries, are both traffic leaving the host on its behalf.
std::vector<Violation> checkHostPolicy(const HostPolicy& policy, const CellDocument& document);

// Fills in what the document left to the host, so an admitted cell never runs unbounded: an
// absent run.limits.memoryMaxBytes / pidsMax gets defaultMemoryBytes / defaultPidsMax, else the
// cap maxMemoryBytes / maxPidsMax, else the built-in default (the backend's
// BackendTraits::defaultMemoryBytes / kDefaultPidsMax), never more than the cap; an absent
// run.timeoutMs (which would otherwise be the whole ttl) gets min(ttlSeconds * 1000,
// maxTimeoutMs); an absent placement.backend gets defaultBackend. A document without `run` keeps
// no limits to fill. Call after checkHostPolicy found nothing.
void applyHostPolicyDefaults(const HostPolicy& policy, CellDocument& document);

// True when the range `inner` lies inside `outer` (same family, prefix at least as long, same
// network bits). Both are CIDR text; anything unparsable is never inside anything.
bool cidrContains(std::string_view outer, std::string_view inner);

}  // namespace cellos::core
