#pragma once
// The nftables ruleset of one cell's network namespace, as text for libnftables, and the
// reading of its counters back from `list table` JSON. Pure code: the VM launcher applies the
// text inside the cell's namespace (vmm-agent/launcher/network_scope.cpp); nothing here touches a
// socket.
//
// The ruleset is the whole egress authority of a cell:
//   output: loopback; established/related; host destinations (core/host_destination.h: the
//           host's own addresses, the address pool, loopback, link-local, the IPv4-embedding
//           IPv6 forms) dropped unless the host policy allows them, before any accept below, so
//           no resolver, cidr or host rule can reach the host; DNS to each declared resolver only
//           from the DNS helper's uid (meta skuid); each cidr egress rule for its port and
//           protocol; each host egress rule to the addresses in its own sets (filled by the DNS
//           helper as names resolve); everything else counted and dropped.
//   input:  loopback; established/related; everything else counted and dropped.
// A VM cell (NftPlan::guest set) runs its workload in a guest whose traffic enters the cell's
// namespace on a TAP device and is routed, so the workload's rules move to the forward path:
//   output:  as above, but with no workload rules (only the DNS helper's sockets live here);
//   forward: from the guest's interface only: established/related; host destinations dropped;
//            each cidr and host egress rule; everything else counted and dropped;
//   input:   as above, plus the guest's DNS to the DNS helper's address (udp and tcp 53);
//   postrouting (nat): the guest's address masqueraded to the cell's own on the way out, so
//            the uplink sees a VM cell exactly as it sees a linux cell.
// Every rule carries a counter and its id as comment, so counters map back to the document.

#include "core/host_destination.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// The table every cell namespace holds (its only one).
inline constexpr std::string_view kNftTable = "cellos";

// One spec.authority.egressRules entry: exactly one of host / cidr.
struct NftEgress {
  std::optional<std::string> host;  // a hostname or *.suffix (only named in the set's comment)
  std::optional<std::string> cidr;  // IPv4 or IPv6 range
  uint16_t port = 0;
  std::string protocol;  // "tcp" | "udp"
};

// One spec.authority.dnsAuthority.resolvers entry.
struct NftResolver {
  std::string resolverId;
  std::string address;  // IPv4 or IPv6 literal, no brackets
  uint16_t port = 0;
  std::string protocol;  // "do53-udp" | "do53-tcp" (or plain "udp" | "tcp")
};

// The guest link of a VM cell, inside the cell's namespace.
struct NftGuest {
  std::string interface;   // the TAP device ("tap0")
  std::string address;     // the guest's IPv4 address
  std::string dnsAddress;  // the namespace's end of the link, where the DNS helper listens
};

struct NftPlan {
  std::vector<NftEgress> egress;
  std::vector<NftResolver> resolvers;
  uint32_t dnsUid = 0;  // host uid of the DNS helper's per-cell child
  // Dropped before every accept but loopback and established (sets host_v4 / host_v6). The
  // launcher puts its hostDestinationRanges() here; a plan that is never told still keeps the
  // built-in ones out. Ranges must not overlap (hostDestinationRanges() guarantees it).
  std::vector<IpRange> hostDestinations = builtinHostDestinations();
  // The host policy's allowHostDestinations: exempt from that drop (host_allowed_v4 / _v6).
  std::vector<IpRange> allowedHostDestinations;
  // Set for a VM cell: the workload's rules apply to what the guest sends (forward path).
  std::optional<NftGuest> guest;
};

// One rule of the ruleset, in order.
struct NftRule {
  std::string id;       // "loopback", "established", "resolver:<id>", "egress[2]", ...
  std::string chain;    // "output" | "input" | "forward" | "postrouting"
  std::string match;    // the rule's match expression ("" for a catch-all)
  std::string verdict;  // "accept" | "drop"
};

// The rules of `plan`, in evaluation order (output chain first). Throws std::invalid_argument
// for anything that is not a well-formed address, range, port, protocol or id: the document is
// validated upstream, but this text becomes kernel configuration, so it is checked again here.
std::vector<NftRule> nftRules(const NftPlan& plan);

// Names of the address sets of host rule `index`: "egress_<index>_v4" and "egress_<index>_v6".
std::string nftHostSet(size_t index, bool ipv6);

// DNS-learned egress: the commands that put `ipv4` (4 bytes each) and `ipv6` (16 bytes each)
// into host rule `index`'s sets with the given timeout (1..86400 s), refreshing the timeout of
// addresses already there. Throws std::invalid_argument when `index` is not a host rule of
// `plan`, an address has the wrong length, or the timeout is out of range.
std::string nftLearnedElements(const NftPlan& plan, size_t index,
                               const std::vector<std::vector<uint8_t>>& ipv4,
                               const std::vector<std::vector<uint8_t>>& ipv6,
                               uint32_t timeoutSeconds);

// Names of the host-destination sets: "host_v4" / "host_v6", and the allowed ones
// "host_allowed_v4" / "host_allowed_v6".
std::string nftHostSet(bool ipv6, bool allowed);

// The commands that replace the contents of host_v4 / host_v6 with plan.hostDestinations in one
// transaction (the launcher's addresses changed since the ruleset was loaded).
std::string nftHostDestinationElements(const NftPlan& plan);

// The complete ruleset ("table inet cellos { ... }") for nft_run_cmd_from_buffer().
std::string nftRuleset(const NftPlan& plan);

// A rule's counter as read back after the run.
struct NftCounter {
  std::string id;
  std::string verdict;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// Counters of every commented rule in the JSON output of `list table inet cellos` (libnftables
// with NFT_CTX_OUTPUT_JSON), in listing order. Throws std::runtime_error for malformed JSON.
std::vector<NftCounter> parseNftCounters(std::string_view json);

}  // namespace cellos::core
