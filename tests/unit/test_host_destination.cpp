// Issue 14: the host is never a destination. The pure decision behind the launcher's nftables
// set, its check of DNS-learned addresses and the DNS child's `host_destination` refusal.

#include "core/host_destination.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace cellos::core {
namespace {

std::vector<uint8_t> address(const char* text) {
  std::vector<uint8_t> bytes(16);
  if (inet_pton(AF_INET, text, bytes.data()) == 1) {
    bytes.resize(4);
    return bytes;
  }
  EXPECT_EQ(inet_pton(AF_INET6, text, bytes.data()), 1) << text;
  return bytes;
}

std::vector<std::string> texts(const std::vector<IpRange>& ranges) {
  std::vector<std::string> out;
  for (const auto& range : ranges) out.push_back(formatIpRange(range));
  return out;
}

TEST(IpRange, ParsesBothFamiliesAndKeepsThemApart) {
  auto v4 = parseIpRange("10.213.0.0/16");
  ASSERT_TRUE(v4);
  EXPECT_FALSE(v4->ipv6);
  EXPECT_EQ(v4->prefix, 16u);
  EXPECT_EQ(formatIpRange(*v4), "10.213.0.0/16");
  auto host = parseIpRange("10.215.0.1");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix, 32u);
  auto mapped = parseIpRange("::ffff:0:0/96");
  ASSERT_TRUE(mapped);
  EXPECT_TRUE(mapped->ipv6);
  // The IPv6 range of mapped addresses does not hold IPv4 addresses (DnsAddressRange would).
  EXPECT_FALSE(ipRangeContains(*mapped, address("10.0.0.1")));
  EXPECT_TRUE(ipRangeContains(*mapped, address("::ffff:10.0.0.1")));
  EXPECT_FALSE(ipRangeContains(*v4, address("::ffff:10.213.0.1")));
  EXPECT_EQ(formatIpRange(*parseIpRange("FD00::/8")), "fd00::/8");
  for (const char* bad : {"10.213.0.1/16", "10.0.0.0/33", "::1/129", "fd00::1/8", "", "/8",
                          "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/8 ", "host.test", "10.0.0/8"}) {
    EXPECT_FALSE(parseIpRange(bad)) << bad;
  }
  EXPECT_FALSE(parseIpRange(std::string_view("10.0.0.0\0/8", 11)));
  EXPECT_THROW(parseIpRanges({"10.0.0.0/8", "nonsense"}), std::invalid_argument);
}

TEST(HostDestination, EveryBuiltinFormIsAHostDestinationOnEveryHost) {
  const auto& builtin = builtinHostDestinations();
  for (const char* text : {
           "127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "169.254.169.254", "::1",
           "::", "fe80::1", "febf::1",
           // The IPv6 forms that stand for an IPv4 address, as whole ranges.
           "::127.0.0.1", "::10.215.0.1", "::93.184.216.34",   // IPv4-compatible
           "::ffff:127.0.0.1", "::ffff:93.184.216.34",         // IPv4-mapped
           "::ffff:0:7f00:1", "::ffff:0:5db8:d822",            // SIIT
           "64:ff9b::7f00:1", "64:ff9b::5db8:d822",            // NAT64
           "64:ff9b:1::1", "64:ff9b:1:ffff:ffff::",            // NAT64 local use
           "2002:7f00:1::1", "2002:5db8:d822::1",              // 6to4
           "2001:0:7f00:1::1", "2001:0:5db8:d822::a247:27dd",  // Teredo
       }) {
    EXPECT_TRUE(isHostDestination(address(text), builtin, {})) << text;
  }
  for (const char* text :
       {"93.184.216.34", "10.214.0.1", "1.0.0.1", "126.255.255.255", "128.0.0.0", "169.253.255.255",
        "169.255.0.0", "2001:db8::1", "2001:1::1", "2003::1", "64:ff9b:2::1", "64:ff9b:0:1::1",
        "::1:0:0:1", "::fffe:0:0:1", "fec0::1", "fe7f::1"}) {
    EXPECT_FALSE(isHostDestination(address(text), builtin, {})) << text;
  }
  EXPECT_TRUE(isHostDestination(std::vector<uint8_t>{1, 2, 3}, builtin, {})) << "not an address";
  EXPECT_TRUE(isHostDestination(std::vector<uint8_t>{}, {}, {}));
}

TEST(HostDestination, TheHostsAddressesAndTheWholePoolAreHostDestinations) {
  auto ranges = hostDestinationRanges({"10.215.0.1", "10.216.0.1", "10.213.0.1", "127.0.0.1",
                                       "192.0.2.7", "2001:db8::7", "fe80::1"},
                                      "10.213.0.0/16");
  for (const char* text : {"10.215.0.1", "10.216.0.1", "192.0.2.7", "2001:db8::7", "10.213.0.1",
                           "10.213.0.2", "10.213.7.5", "10.213.255.254"}) {
    EXPECT_TRUE(isHostDestination(address(text), ranges, {})) << text;
  }
  for (const char* text :
       {"10.215.0.2", "192.0.2.8", "2001:db8::8", "10.214.0.1", "10.212.255.255"}) {
    EXPECT_FALSE(isHostDestination(address(text), ranges, {})) << text;
  }
  // Nested entries are dropped (an nftables interval set refuses overlaps), the rest sorted:
  // IPv4 first, then by address.
  auto shown = texts(ranges);
  EXPECT_EQ(std::count(shown.begin(), shown.end(), "10.213.0.1/32"), 0);
  EXPECT_EQ(std::count(shown.begin(), shown.end(), "127.0.0.1/32"), 0);
  EXPECT_EQ(std::count(shown.begin(), shown.end(), "fe80::1/128"), 0);
  EXPECT_EQ(std::count(shown.begin(), shown.end(), "10.213.0.0/16"), 1);
  EXPECT_EQ(shown.front(), "0.0.0.0/8");
  for (size_t i = 0; i < ranges.size(); ++i) {
    for (size_t j = 0; j < ranges.size(); ++j) {
      if (i == j || ranges[i].ipv6 != ranges[j].ipv6) continue;
      EXPECT_FALSE(
          ipRangeContains(ranges[i], std::span(ranges[j].bytes.data(), ranges[j].ipv6 ? 16 : 4)))
          << shown[i] << " overlaps " << shown[j];
    }
  }
  // Duplicates collapse.
  EXPECT_EQ(hostDestinationRanges({"10.215.0.1", "10.215.0.1"}, "10.213.0.0/16").size(),
            builtinHostDestinations().size() + 2);
  EXPECT_THROW(hostDestinationRanges({"10.215.0.0/24"}, "10.213.0.0/16"), std::invalid_argument)
      << "a host address is an address";
  EXPECT_THROW(hostDestinationRanges({"eth0"}, "10.213.0.0/16"), std::invalid_argument);
  EXPECT_THROW(hostDestinationRanges({}, "10.213.0.1/16"), std::invalid_argument);
}

TEST(HostDestination, OnlyWhatThePolicyListsIsOpenedAndNothingElse) {
  auto ranges = hostDestinationRanges({"10.215.0.1", "10.215.0.9"}, "10.213.0.0/16");
  auto allowed = parseIpRanges({"10.215.0.1/32", "64:ff9b::/96"});
  EXPECT_FALSE(isHostDestination(address("10.215.0.1"), ranges, allowed));
  EXPECT_TRUE(isHostDestination(address("10.215.0.9"), ranges, allowed)) << "not listed";
  EXPECT_TRUE(isHostDestination(address("::ffff:10.215.0.1"), ranges, allowed))
      << "the IPv4 grant does not open its mapped form";
  EXPECT_FALSE(isHostDestination(address("64:ff9b::5db8:d822"), ranges, allowed))
      << "an operator who runs NAT64 opens its prefix deliberately";
  EXPECT_TRUE(isHostDestination(address("10.213.0.1"), ranges, allowed));
  EXPECT_TRUE(isHostDestination(address("127.0.0.1"), ranges, allowed));
}

TEST(EmbeddedIpv4, DecodesEachTranslationForm) {
  auto embedded = [](const char* text) {
    std::array<uint8_t, 16> bytes{};
    EXPECT_EQ(inet_pton(AF_INET6, text, bytes.data()), 1) << text;
    std::vector<std::string> out;
    for (const auto& v4 : embeddedIpv4(bytes)) {
      char shown[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, v4.data(), shown, sizeof shown);
      out.push_back(shown);
    }
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(embedded("::127.0.0.1"), V{"127.0.0.1"});
  EXPECT_EQ(embedded("::ffff:127.0.0.1"), V{"127.0.0.1"});
  EXPECT_EQ(embedded("::ffff:0:7f00:1"), V{"127.0.0.1"});
  EXPECT_EQ(embedded("64:ff9b::7f00:1"), V{"127.0.0.1"});
  EXPECT_EQ(embedded("64:ff9b:1:7f00:0:100::"), V{"127.0.0.1"});
  EXPECT_EQ(embedded("64:ff9b:1:a0b:c:d00::"), V{"10.11.12.13"});
  EXPECT_EQ(embedded("2002:a0b:c0d::1"), V{"10.11.12.13"});
  EXPECT_EQ(embedded("2001:0:a0b:c0d::80ff:fffe"), (V{"10.11.12.13", "127.0.0.1"}));
  EXPECT_EQ(embedded("::1"), V{"0.0.0.1"});
  EXPECT_EQ(embedded("2001:db8::1"), V{});
  EXPECT_EQ(embedded("fe80::1"), V{});
  EXPECT_EQ(embedded("::1:0:7f00:1"), V{}) << "not a translation form";
}

}  // namespace
}  // namespace cellos::core
