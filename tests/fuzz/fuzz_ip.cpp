// libFuzzer harness for core/ip_address.h, the one reader of address and range text: a cell
// document's "cidr" and resolver endpoints, a host policy's ranges, the launcher's address pool
// and host addresses, the DNS helper's rebinding-guard ranges. Beyond "never crashes", it holds
// the grammar's promises: what parses writes back to text that parses to the same thing, a range
// has no host bits and holds its own network, a refused range names the right problem, and the
// callers built on it (the address pool's IPv4 reader, the rebinding guard's ranges) agree with
// it.
//
// The input is one text, or two separated by the first '\n' (an outer and an inner range, for
// containment).

#include "core/address_pool.h"
#include "core/dns_policy.h"
#include "core/ip_address.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace cellos::core;

void require(bool condition) {
  if (!condition) std::abort();
}

void checkAddress(std::string_view text) {
  std::optional<IpAddress> address = parseIpAddress(text);
  if (!address) return;
  require(text.find_first_of(" \t\r\n/[]%") == std::string_view::npos);
  require(address->ipv6 == (text.find(':') != std::string_view::npos));
  std::string shown = formatIpAddress(*address);
  require(shown.size() <= 45);
  require(parseIpAddress(shown) == address);
  require(ipAddressFromBytes(address->span()) == address);
  require(ipRangeContains(hostRange(*address), *address));
  require(ipRangeContains(ipv6Form(hostRange(*address)), ipv6Form(*address)));
}

void checkRange(std::string_view text) {
  IpRangeError why;
  std::optional<IpRange> range = parseCidr(text, &why);
  if (range) {
    unsigned bits = range->ipv6 ? 128 : 32;
    require(range->prefix <= bits);
    require(parseCidr(formatIpRange(*range)) == range);
    require(parseIpRange(text) == range);
    IpAddress network = rangeNetwork(*range);
    require(ipRangeContains(*range, network));
    require(ipRangeContains(*range, *range));
    require(hostRange(network) == *range || range->prefix < bits);
    for (unsigned bit = range->prefix; bit < bits; ++bit) {
      require((range->bytes[bit / 8] & (0x80u >> (bit % 8))) == 0);
    }
    IpRange mapped = ipv6Form(*range);
    require(mapped.ipv6 && mapped.prefix == range->prefix + (range->ipv6 ? 0 : 96));
    require(ipRangeContains(mapped, ipv6Form(network)));
    require(parseAddressRange(text) == mapped);
  } else {
    switch (why.problem) {
      case IpRangeProblem::kNoPrefix:
        require(text.find('/') == std::string_view::npos);
        break;
      case IpRangeProblem::kBadAddress:
        require(!parseIpAddress(text.substr(0, text.find('/'))));
        break;
      case IpRangeProblem::kBadPrefixLength:
        break;
      case IpRangeProblem::kPrefixOutOfRange:
        require(why.prefix > why.maxPrefix && (why.maxPrefix == 32 || why.maxPrefix == 128));
        break;
      case IpRangeProblem::kHostBitsSet: {
        // The range meant: canonical, with the prefix written, and holding the address written.
        require(why.network.prefix == why.prefix);
        require(parseCidr(formatIpRange(why.network)) == why.network);
        std::optional<IpAddress> written = parseIpAddress(text.substr(0, text.find('/')));
        require(written && ipRangeContains(why.network, *written));
        require(rangeNetwork(why.network) != *written);
        break;
      }
    }
    if (text.find('/') != std::string_view::npos) {
      require(!parseIpRange(text));
      require(!parseAddressRange(text));
    }
  }
  // The address pool reads IPv4 ranges with the same grammar.
  std::string error;
  std::optional<Ipv4Network> pool = parseIpv4Cidr(text, &error);
  require(pool.has_value() == (range && !range->ipv6));
  require(pool || !error.empty());
}

void checkContainment(std::string_view outerText, std::string_view innerText) {
  std::optional<IpRange> outer = parseIpRange(outerText);
  std::optional<IpRange> inner = parseIpRange(innerText);
  if (!outer || !inner) return;
  if (ipRangeContains(*outer, *inner)) {
    require(outer->ipv6 == inner->ipv6 && outer->prefix <= inner->prefix);
    require(ipRangeContains(*outer, rangeNetwork(*inner)));
    require(ipRangeContains(ipv6Form(*outer), ipv6Form(*inner)));
    if (ipRangeContains(*inner, *outer)) require(*inner == *outer);
  } else if (outer->ipv6 == inner->ipv6 && outer->prefix <= inner->prefix) {
    require(!ipRangeContains(*outer, rangeNetwork(*inner)));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t newline = input.find('\n');
  if (newline == std::string_view::npos) {
    checkAddress(input);
    checkRange(input);
    checkAddress(input.substr(0, input.find('/')));
  } else {
    std::string_view outer = input.substr(0, newline), inner = input.substr(newline + 1);
    checkRange(outer);
    checkRange(inner);
    checkContainment(outer, inner);
  }
  return 0;
}
