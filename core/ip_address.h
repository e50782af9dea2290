#pragma once
// IP addresses and address ranges as text: one grammar for every part of cellos that reads them
// (the cell document's egress ranges and resolver endpoints, core/spec.h; the host policy's
// ranges, core/host_policy.h; the launcher's address pool, core/address_pool.h; the host
// destinations, core/host_destination.h; the DNS helper's rebinding-guard ranges,
// core/dns_policy.h; and the nftables text made from them, core/nft_rules.h), so a text one of
// them accepts means the same range to all of them.
//
//   address  dotted-quad IPv4 ("10.0.0.1": four decimal octets, no leading zeros) or RFC 4291
//            IPv6 text ("fd00::1", "::ffff:10.0.0.1"), exactly as inet_pton(3) reads them, and
//            nothing around them: no zone ("%eth0"), brackets or whitespace. An embedded NUL is
//            refused first (inet_pton would stop reading there and accept the part before it).
//   range    address "/" prefix length, the length decimal, one to three digits without a
//            leading zero ("/08" is refused), at most 32 (IPv4) or 128 (IPv6), and every
//            address bit past it zero: "10.0.0.1/8" is an error, never quietly 10.0.0.0/8.
//
// An IPv4-mapped IPv6 address ("::ffff:10.0.0.1") is IPv6: the families never mix, so
// 0.0.0.0/0 does not hold it and ::ffff:0:0/96 does not hold 10.0.0.1. A caller that wants one
// comparison for both (the rebinding guard) asks for the IPv6 form (ipv6Form) explicitly.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cellos::core {

struct IpAddress {
  bool ipv6 = false;
  std::array<uint8_t, 16> bytes{};  // network order; IPv4: the first 4, the rest zero

  size_t size() const { return ipv6 ? 16 : 4; }
  std::span<const uint8_t> span() const { return {bytes.data(), size()}; }
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// An address literal in the grammar above; nullopt for anything else.
std::optional<IpAddress> parseIpAddress(std::string_view text);
// The address of 4 (IPv4) or 16 (IPv6) bytes in network order; nullopt for any other length.
std::optional<IpAddress> ipAddressFromBytes(std::span<const uint8_t> bytes);
// inet_ntop's text: "10.0.0.1", "fd00::1" (lower case, the longest zero run as "::"),
// "::ffff:10.0.0.1".
std::string formatIpAddress(const IpAddress& address);
// 0.0.0.0 or ::.
bool isUnspecified(const IpAddress& address);

// An IPv4 or IPv6 range with its host bits zero.
struct IpRange {
  bool ipv6 = false;
  std::array<uint8_t, 16> bytes{};  // the network; IPv4: the first 4
  unsigned prefix = 0;              // 0..32 or 0..128
  friend bool operator==(const IpRange&, const IpRange&) = default;
};

// Why a text is not a range, for the caller to phrase in its own terms.
enum class IpRangeProblem {
  kNoPrefix,          // no "/"
  kBadAddress,        // what precedes the "/" is not an address
  kBadPrefixLength,   // what follows it is not 1-3 decimal digits without a leading zero
  kPrefixOutOfRange,  // longer than the family's 32 or 128 bits
  kHostBitsSet,       // address bits past the prefix are not all zero
};

struct IpRangeError {
  IpRangeProblem problem = IpRangeProblem::kNoPrefix;
  unsigned prefix = 0;     // the length written (kPrefixOutOfRange, kHostBitsSet)
  unsigned maxPrefix = 0;  // 32 or 128 (kPrefixOutOfRange, kHostBitsSet)
  IpRange network;         // kHostBitsSet: the range the text names once its host bits are cleared
};

// "address/prefix" in the grammar above. nullopt otherwise, with the reason in *error (when not
// null). The problems are checked in the order of the enum, so the first one the text has is
// the one reported.
std::optional<IpRange> parseCidr(std::string_view text, IpRangeError* error = nullptr);
// parseCidr, or a bare address as the range of that address alone (/32 or /128).
std::optional<IpRange> parseIpRange(std::string_view text);
// "10.213.0.0/16", "fd00::/8", "::ffff:0.0.0.0/96": the network as formatIpAddress writes it,
// and the prefix length. parseCidr reads it back to the same range.
std::string formatIpRange(const IpRange& range);

// The range holding `address` alone (/32 or /128).
IpRange hostRange(const IpAddress& address);
// The range's network address.
IpAddress rangeNetwork(const IpRange& range);

// True when `address` (4 bytes IPv4 or 16 bytes IPv6) is of the range's family and inside it.
bool ipRangeContains(const IpRange& range, std::span<const uint8_t> address);
bool ipRangeContains(const IpRange& range, const IpAddress& address);
// True when `inner` lies inside `outer`: the same family, a prefix at least as long, the same
// network bits. A range holds itself.
bool ipRangeContains(const IpRange& outer, const IpRange& inner);

// The IPv6 form: an IPv4 address a.b.c.d as ::ffff:a.b.c.d, an IPv4 range a.b.c.d/n as
// ::ffff:a.b.c.d/(96 + n); IPv6 unchanged.
IpAddress ipv6Form(const IpAddress& address);
IpRange ipv6Form(const IpRange& range);

}  // namespace cellos::core
