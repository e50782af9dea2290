// core/ip_address.h: the one grammar of addresses and ranges, and what each caller builds on it.

#include "core/ip_address.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellos::core {
namespace {

IpAddress address(std::string_view text) {
  std::optional<IpAddress> parsed = parseIpAddress(text);
  EXPECT_TRUE(parsed) << text;
  return parsed.value_or(IpAddress{});
}

IpRangeProblem problemOf(std::string_view text) {
  IpRangeError why;
  EXPECT_FALSE(parseCidr(text, &why)) << text;
  return why.problem;
}

TEST(IpAddress, ReadsBothFamiliesAndWritesTheCanonicalText) {
  IpAddress v4 = address("10.213.0.1");
  EXPECT_FALSE(v4.ipv6);
  EXPECT_EQ(v4.size(), 4u);
  EXPECT_EQ(v4.bytes[0], 10);
  EXPECT_EQ(v4.bytes[3], 1);
  EXPECT_EQ(formatIpAddress(v4), "10.213.0.1");
  IpAddress v6 = address("FD00:0:0::0001");
  EXPECT_TRUE(v6.ipv6);
  EXPECT_EQ(v6.size(), 16u);
  EXPECT_EQ(formatIpAddress(v6), "fd00::1");
  EXPECT_TRUE(isUnspecified(address("0.0.0.0")));
  EXPECT_TRUE(isUnspecified(address("::")));
  EXPECT_FALSE(isUnspecified(address("::1")));
}

TEST(IpAddress, RefusesLeadingZerosWhitespaceZonesBracketsAndEmbeddedNul) {
  for (std::string_view bad : {"", "010.0.0.1", "10.0.0.01", "1.2.3", "1.2.3.4.5", "256.0.0.1",
                               "1.2.3.-4", "0x0a.0.0.1", " 10.0.0.1", "10.0.0.1 ", "10.0.0.1\n",
                               "\t::1", "fe80::1%eth0", "[::1]", "::1::2", "12345::", "example.com",
                               "10.0.0.1/32", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555"}) {
    EXPECT_FALSE(parseIpAddress(bad)) << "\"" << bad << "\"";
  }
  // inet_pton would stop at the NUL and accept what precedes it.
  EXPECT_FALSE(parseIpAddress(std::string_view("10.0.0.1\0junk", 13)));
  EXPECT_TRUE(parseIpAddress("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")) << "45 characters";
}

TEST(IpAddress, KeepsIpv4MappedIpv6AsIpv6AndGivesTheMappedFormOnlyWhenAsked) {
  IpAddress mapped = address("::ffff:10.0.0.1");
  EXPECT_TRUE(mapped.ipv6);
  EXPECT_EQ(formatIpAddress(mapped), "::ffff:10.0.0.1");
  EXPECT_NE(mapped, address("10.0.0.1"));
  EXPECT_EQ(ipv6Form(address("10.0.0.1")), mapped);
  EXPECT_EQ(ipv6Form(mapped), mapped);
  EXPECT_FALSE(ipRangeContains(*parseCidr("10.0.0.0/8"), mapped));
  EXPECT_FALSE(ipRangeContains(*parseCidr("0.0.0.0/0"), mapped));
  EXPECT_FALSE(ipRangeContains(*parseCidr("::ffff:0:0/96"), address("10.0.0.1")));
  EXPECT_TRUE(ipRangeContains(*parseCidr("::ffff:0:0/96"), mapped));
  IpRange range = ipv6Form(*parseCidr("10.0.0.0/8"));
  EXPECT_TRUE(range.ipv6);
  EXPECT_EQ(range.prefix, 104u);
  EXPECT_EQ(formatIpRange(range), "::ffff:10.0.0.0/104");
  EXPECT_TRUE(ipRangeContains(range, mapped));
}

TEST(IpAddress, FromBytesTakesOnlyAddressLengths) {
  std::vector<uint8_t> four = {192, 0, 2, 1};
  EXPECT_EQ(ipAddressFromBytes(four), address("192.0.2.1"));
  std::vector<uint8_t> sixteen(16, 0);
  sixteen[15] = 1;
  EXPECT_EQ(ipAddressFromBytes(sixteen), address("::1"));
  EXPECT_FALSE(ipAddressFromBytes(std::vector<uint8_t>{1, 2, 3}));
  EXPECT_FALSE(ipAddressFromBytes(std::vector<uint8_t>(5, 0)));
  EXPECT_FALSE(ipAddressFromBytes({}));
}

TEST(Cidr, ReadsRangesOfBothFamiliesAndWritesThemBack) {
  for (std::string_view text : {"10.213.0.0/16", "0.0.0.0/0", "10.0.0.1/32", "fd00::/8", "::/0",
                                "::1/128", "::ffff:0.0.0.0/96", "2001:db8::/32"}) {
    std::optional<IpRange> range = parseCidr(text);
    ASSERT_TRUE(range) << text;
    EXPECT_EQ(formatIpRange(*range), text);
    EXPECT_EQ(parseCidr(formatIpRange(*range)), range);
  }
  EXPECT_EQ(formatIpRange(*parseCidr("FD00:0::/8")), "fd00::/8");
  IpRange v4 = *parseCidr("10.213.0.0/16");
  EXPECT_FALSE(v4.ipv6);
  EXPECT_EQ(v4.prefix, 16u);
  EXPECT_EQ(rangeNetwork(v4), address("10.213.0.0"));
}

TEST(Cidr, NamesTheFirstProblemInOrder) {
  EXPECT_EQ(problemOf("10.0.0.0"), IpRangeProblem::kNoPrefix);
  EXPECT_EQ(problemOf(""), IpRangeProblem::kNoPrefix);
  EXPECT_EQ(problemOf("/8"), IpRangeProblem::kBadAddress);
  EXPECT_EQ(problemOf("10.0.0.256/8"), IpRangeProblem::kBadAddress);
  EXPECT_EQ(problemOf("010.0.0.0/8"), IpRangeProblem::kBadAddress);
  EXPECT_EQ(problemOf(" 10.0.0.0/8"), IpRangeProblem::kBadAddress);
  EXPECT_EQ(problemOf("10.0.0.300/99"), IpRangeProblem::kBadAddress) << "the address first";
  for (std::string_view bad :
       {"10.0.0.0/", "10.0.0.0/x", "10.0.0.0/08", "10.0.0.0/00", "10.0.0.0/0008", "10.0.0.0/+8",
        "10.0.0.0/8 ", "10.0.0.0/ 8", "10.0.0.0/8/8", "fd00::/08", "10.0.0.0/1000"}) {
    EXPECT_EQ(problemOf(bad), IpRangeProblem::kBadPrefixLength) << bad;
  }
  IpRangeError why;
  EXPECT_FALSE(parseCidr("10.0.0.0/33", &why));
  EXPECT_EQ(why.problem, IpRangeProblem::kPrefixOutOfRange);
  EXPECT_EQ(why.prefix, 33u);
  EXPECT_EQ(why.maxPrefix, 32u);
  EXPECT_FALSE(parseCidr("::/129", &why));
  EXPECT_EQ(why.problem, IpRangeProblem::kPrefixOutOfRange);
  EXPECT_EQ(why.maxPrefix, 128u);
  EXPECT_FALSE(parseCidr("10.0.0.0/999", &why));
  EXPECT_EQ(why.prefix, 999u);
  EXPECT_TRUE(parseCidr("::/128"));
  EXPECT_TRUE(parseCidr("10.0.0.0/32"));
}

// Every caller refuses host bits: a typo must not quietly widen or move a range. The error names
// the range that was probably meant.
TEST(Cidr, RefusesHostBitsAndNamesTheRangeMeant) {
  IpRangeError why;
  EXPECT_FALSE(parseCidr("10.20.5.0/16", &why));
  EXPECT_EQ(why.problem, IpRangeProblem::kHostBitsSet);
  EXPECT_EQ(why.prefix, 16u);
  EXPECT_EQ(formatIpRange(why.network), "10.20.0.0/16");
  EXPECT_FALSE(parseCidr("fd00::1/64", &why));
  EXPECT_EQ(formatIpRange(why.network), "fd00::/64");
  EXPECT_FALSE(parseCidr("0.0.0.1/0", &why));
  EXPECT_EQ(formatIpRange(why.network), "0.0.0.0/0");
  EXPECT_FALSE(parseCidr("10.0.0.1/31", &why));
  EXPECT_EQ(formatIpRange(why.network), "10.0.0.0/31");
  EXPECT_TRUE(parseCidr("10.0.0.2/31"));
  EXPECT_FALSE(parseCidr("fd00::1/127", &why));
  EXPECT_TRUE(parseCidr("fd00::1/128"));
}

TEST(Cidr, ParseIpRangeAlsoTakesABareAddressAsItsHostRange) {
  std::optional<IpRange> v4 = parseIpRange("10.215.0.1");
  ASSERT_TRUE(v4);
  EXPECT_EQ(*v4, *parseCidr("10.215.0.1/32"));
  EXPECT_EQ(*v4, hostRange(address("10.215.0.1")));
  std::optional<IpRange> v6 = parseIpRange("fd00::1");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->prefix, 128u);
  EXPECT_EQ(parseIpRange("10.0.0.0/8"), parseCidr("10.0.0.0/8"));
  for (std::string_view bad : {"", "10.0.0.1/8", "10.0.0.0/08", "example.com", "10.0.0.0/"}) {
    EXPECT_FALSE(parseIpRange(bad)) << bad;
  }
  EXPECT_FALSE(parseIpRange(std::string_view("10.0.0.0\0/8", 11)));
}

TEST(Cidr, ContainsAddressesAndRangesOfItsOwnFamilyOnly) {
  IpRange net = *parseCidr("10.213.0.0/16");
  EXPECT_TRUE(ipRangeContains(net, address("10.213.0.0")));
  EXPECT_TRUE(ipRangeContains(net, address("10.213.255.255")));
  EXPECT_FALSE(ipRangeContains(net, address("10.214.0.0")));
  EXPECT_FALSE(ipRangeContains(net, std::vector<uint8_t>{10, 213, 0}));
  IpRange odd = *parseCidr("10.213.0.4/30");  // a prefix that is not a whole byte
  EXPECT_TRUE(ipRangeContains(odd, address("10.213.0.7")));
  EXPECT_FALSE(ipRangeContains(odd, address("10.213.0.8")));
  EXPECT_TRUE(ipRangeContains(*parseCidr("0.0.0.0/0"), address("255.255.255.255")));
  EXPECT_FALSE(ipRangeContains(*parseCidr("::/0"), address("10.0.0.1")));
  EXPECT_TRUE(ipRangeContains(*parseCidr("fe80::/10"), address("febf::1")));
  EXPECT_FALSE(ipRangeContains(*parseCidr("fe80::/10"), address("fec0::1")));

  EXPECT_TRUE(ipRangeContains(net, net));
  EXPECT_TRUE(ipRangeContains(net, *parseCidr("10.213.4.0/24")));
  EXPECT_FALSE(ipRangeContains(*parseCidr("10.213.4.0/24"), net));
  EXPECT_FALSE(ipRangeContains(net, *parseCidr("10.0.0.0/8")));
  EXPECT_TRUE(ipRangeContains(*parseCidr("::/0"), *parseCidr("fd00::/8")));
  EXPECT_FALSE(ipRangeContains(*parseCidr("::/0"), *parseCidr("10.0.0.0/8")));
  EXPECT_FALSE(ipRangeContains(*parseCidr("0.0.0.0/0"), *parseCidr("::ffff:0:0/96")));
}

}  // namespace
}  // namespace cellos::core
