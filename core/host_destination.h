#pragma once
// "The host is never a destination": which addresses a cell may never reach, whatever its
// egress rules say, unless the host policy opens them (allowHostDestinations). Pure code: the VM
// launcher lists its namespaces' addresses and hands them here; the same ranges become the
// nftables set that drops them (core/nft_rules.h), the DNS child's refusal of answers that
// point at them (reason `host_destination`), and the launcher's check of DNS-learned addresses.
//
// A host destination is
//   - every address of every interface in the namespaces the VM launcher can see (its own and
//     the uplink namespace, lo included), so also every uplink end;
//   - the whole address pool the launcher carves cells' /30s from (every cell's uplink /30);
//   - loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), "this network"
//     (0.0.0.0/8: connect() to 0.0.0.0 reaches the local host on Linux);
//   - every IPv6 form that stands for an IPv4 address: IPv4-mapped ::ffff:0:0/96,
//     IPv4-compatible ::/96 (with :: and ::1), SIIT ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and
//     64:ff9b:1::/48, 6to4 2002::/16 and Teredo 2001::/32. These are refused as whole ranges, not
//     by decoding the IPv4 address inside: where such a packet ends up is up to a translator the
//     cell's ruleset cannot see, so no embedded address can be judged safe from here.
// An address inside an allowed range (the host policy's allowHostDestinations) is not a host
// destination. The rebinding guard (core/dns_policy.h) is separate and not opened by this.

#include "core/ip_address.h"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// The host destinations every host has (loopback, link-local, 0.0.0.0/8 and the IPv4-embedding
// IPv6 forms above).
const std::vector<IpRange>& builtinHostDestinations();

// The host destinations of a VM launcher: the built-in ones, `addressPool` (CIDR text) and each
// of `hostAddresses` (address literals) as a /32 or /128, sorted, with every range that lies
// inside another dropped (CIDR ranges either nest or are disjoint, so what is left never
// overlaps: an nftables interval set takes it as it is). Throws std::invalid_argument naming
// an entry that does not parse.
std::vector<IpRange> hostDestinationRanges(const std::vector<std::string>& hostAddresses,
                                           std::string_view addressPool);

// Parses each of `texts` with parseIpRange; throws std::invalid_argument naming a bad one.
std::vector<IpRange> parseIpRanges(const std::vector<std::string>& texts);

// True when `address` (4 or 16 bytes; anything else is always true) lies in one of
// `hostDestinations` and in none of `allowed`.
bool isHostDestination(std::span<const uint8_t> address,
                       const std::vector<IpRange>& hostDestinations,
                       const std::vector<IpRange>& allowed);

// The IPv4 addresses an IPv6 address stands for under each translation form that embeds one:
// IPv4-mapped, IPv4-compatible, SIIT, NAT64 (64:ff9b::/96, and 64:ff9b:1::/48 with its u-octet),
// 6to4 (the gateway) and Teredo (the server, and the client's address, stored inverted). Empty
// for any other address. The rebinding guard judges each as the IPv4 address it is.
std::vector<std::array<uint8_t, 4>> embeddedIpv4(const std::array<uint8_t, 16>& address);

}  // namespace cellos::core
