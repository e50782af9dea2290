#include "core/dns_policy.h"
#include "core/hostname.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <array>
#include <string>
#include <vector>

namespace cellos::core {
namespace {

// Runs normaliseHostname expecting failure and returns the message.
std::string errorFor(std::string_view text, bool allowWildcard = false) {
  std::string error;
  std::optional<std::string> result = normaliseHostname(text, allowWildcard, &error);
  EXPECT_FALSE(result.has_value()) << "accepted: " << text;
  return error;
}

std::string label(std::size_t length, char c = 'a') {
  return std::string(length, c);
}

TEST(NormaliseHostname, AcceptsAndLowerCases) {
  std::string error;
  EXPECT_EQ(normaliseHostname("api.github.com", false, &error), "api.github.com");
  EXPECT_EQ(normaliseHostname("API.GitHub.Com", false, &error), "api.github.com");
  EXPECT_EQ(normaliseHostname("localhost", false, &error), "localhost");
  EXPECT_EQ(normaliseHostname("a-b.c0-9.x", false, &error), "a-b.c0-9.x");
  EXPECT_EQ(normaliseHostname("1.2.3.4", false, &error), "1.2.3.4");
  EXPECT_TRUE(error.empty());
}

TEST(NormaliseHostname, RemovesOneTrailingDot) {
  EXPECT_EQ(normaliseHostname("example.com.", false, nullptr), "example.com");
  EXPECT_EQ(errorFor("example.com.."), "hostname \"example.com.\" has an empty label");
  EXPECT_EQ(errorFor("."), "hostname \".\" has no labels");
}

TEST(NormaliseHostname, RejectsWithExactMessages) {
  EXPECT_EQ(errorFor(""), "hostname must not be empty");
  EXPECT_EQ(errorFor("-bad.example.com"), "label \"-bad\" must not start or end with '-'");
  EXPECT_EQ(errorFor("bad-.example.com"), "label \"bad-\" must not start or end with '-'");
  EXPECT_EQ(errorFor("a..b"), "hostname \"a..b\" has an empty label");
  EXPECT_EQ(errorFor(".example.com"), "hostname \".example.com\" has an empty label");
  EXPECT_EQ(errorFor("under_score.com"), "label \"under_score\" has invalid character '_'");
  EXPECT_EQ(errorFor("sp ace.com"), "label \"sp ace\" has invalid character ' '");
  EXPECT_EQ(errorFor("Caf\xc3\xa9.com"), "label \"caf\\xc3\\xa9\" has invalid character '\\xc3'");
  EXPECT_EQ(errorFor(std::string_view("nul\0.com", 8)),
            "label \"nul\\x00\" has invalid character '\\x00'");
  EXPECT_EQ(errorFor("q\"uote.com"), "label \"q\\x22uote\" has invalid character '\\x22'");
}

TEST(NormaliseHostname, NullErrorPointerIsAllowed) {
  EXPECT_FALSE(normaliseHostname("-x", false, nullptr).has_value());
}

TEST(NormaliseHostname, LabelLengthLimit63) {
  EXPECT_EQ(normaliseHostname(label(63) + ".com", false, nullptr), label(63) + ".com");
  EXPECT_EQ(errorFor(label(64) + ".com"),
            "label \"" + label(64) + "\" is longer than 63 characters");
}

TEST(NormaliseHostname, TotalLengthLimit253) {
  // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters.
  const std::string longest = label(63) + "." + label(63) + "." + label(63) + "." + label(61);
  ASSERT_EQ(longest.size(), 253u);
  EXPECT_EQ(normaliseHostname(longest, false, nullptr), longest);
  EXPECT_EQ(normaliseHostname(longest + ".", false, nullptr), longest);  // dot not counted

  const std::string tooLong = longest + "b";
  ASSERT_EQ(tooLong.size(), 254u);
  EXPECT_EQ(errorFor(tooLong), "hostname is 254 characters, more than 253");
}

TEST(NormaliseHostname, Wildcards) {
  std::string error;
  EXPECT_EQ(normaliseHostname("*.pkg.dev", true, &error), "*.pkg.dev");
  EXPECT_EQ(normaliseHostname("*.PKG.Dev.", true, &error), "*.pkg.dev");
  EXPECT_EQ(errorFor("*.pkg.dev", false), "wildcards are not allowed here");
  EXPECT_EQ(errorFor("*", true), "wildcard \"*\" alone is not allowed");
  EXPECT_EQ(errorFor("*.", true), "wildcard \"*\" alone is not allowed");
  EXPECT_EQ(errorFor("a.*.com", true), "wildcard must be a single leading \"*.\"");
  EXPECT_EQ(errorFor("*.*.com", true), "wildcard must be a single leading \"*.\"");
  EXPECT_EQ(errorFor("*a.com", true), "wildcard must be a single leading \"*.\"");
  EXPECT_EQ(errorFor("**.com", true), "wildcard must be a single leading \"*.\"");
  EXPECT_EQ(errorFor("*.-x.com", true), "label \"-x\" must not start or end with '-'");
  EXPECT_EQ(errorFor("*..com", true), "hostname \"*..com\" has an empty label");
}

TEST(HostnameMatches, ExactNames) {
  EXPECT_TRUE(hostnameMatches("api.github.com", "api.github.com"));
  EXPECT_FALSE(hostnameMatches("api.github.com", "github.com"));
  EXPECT_FALSE(hostnameMatches("api.github.com", "xapi.github.com"));
  EXPECT_FALSE(hostnameMatches("api.github.com", "api.github.com.evil.test"));
  EXPECT_FALSE(hostnameMatches("", ""));
  EXPECT_FALSE(hostnameMatches("", "a.com"));
}

TEST(HostnameMatches, WildcardCoversSubdomainsNotApex) {
  EXPECT_TRUE(hostnameMatches("*.example.com", "a.example.com"));
  EXPECT_TRUE(hostnameMatches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(hostnameMatches("*.example.com", "example.com"));
  EXPECT_FALSE(hostnameMatches("*.example.com", ".example.com"));
  EXPECT_FALSE(hostnameMatches("*.example.com", "a..example.com"));
  EXPECT_FALSE(hostnameMatches("*.example.com", "aexample.com"));
  EXPECT_FALSE(hostnameMatches("*.example.com", "a.example.com.evil.test"));
  EXPECT_FALSE(hostnameMatches("*.example.com", "a.example.org"));
  EXPECT_FALSE(hostnameMatches("*", "anything"));
  EXPECT_FALSE(hostnameMatches("*.", "anything"));
}

TEST(HostnameMatches, ToleratesCaseAndTrailingDot) {
  EXPECT_TRUE(hostnameMatches("API.github.com", "api.GITHUB.com"));
  EXPECT_TRUE(hostnameMatches("*.Example.COM", "WWW.example.com"));
  EXPECT_TRUE(hostnameMatches("api.github.com.", "api.github.com"));
  EXPECT_TRUE(hostnameMatches("*.example.com", "www.example.com."));
}

TEST(AnyHostnameMatches, ChecksEveryPattern) {
  const std::vector<std::string> allowlist = {"api.github.com", "*.pkg.dev"};
  EXPECT_TRUE(anyHostnameMatches(allowlist, "api.github.com"));
  EXPECT_TRUE(anyHostnameMatches(allowlist, "us-docker.pkg.dev"));
  EXPECT_FALSE(anyHostnameMatches(allowlist, "pkg.dev"));
  EXPECT_FALSE(anyHostnameMatches(allowlist, "github.com"));
  EXPECT_FALSE(anyHostnameMatches({}, "api.github.com"));
}

TEST(AddressRange, ParsesBothFamiliesAndRefusesHostBitsAndJunk) {
  auto v4 = parseAddressRange("10.0.0.0/8");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->prefix, 104u) << "IPv4 is held as IPv4-mapped IPv6";
  auto host = parseAddressRange("192.0.2.1");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix, 128u);
  auto v6 = parseAddressRange("fd00::/8");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->prefix, 8u);
  for (const char* bad : {"10.0.0.1/8", "10.0.0.0/33", "fd00::1/8", "::/129", "example.com",
                          "10.0.0.0/", "10.0.0.0/x", "", "/8", "10.0.0.0/0008"}) {
    EXPECT_FALSE(parseAddressRange(bad)) << bad;
  }
}

TEST(RebindingGuard, RefusesLoopbackLinkLocalAndConfiguredRangesOnly) {
  std::vector<DnsAddressRange> configured = {*parseAddressRange("10.213.0.4/30"),
                                             *parseAddressRange("fd00::/8")};
  auto v4 = [&](uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    std::array<uint8_t, 4> bytes = {a, b, c, d};
    return rebindingGuarded(bytes, configured);
  };
  auto v6 = [&](const char* text) {
    std::array<uint8_t, 16> bytes{};
    EXPECT_EQ(inet_pton(AF_INET6, text, bytes.data()), 1) << text;
    return rebindingGuarded(bytes, configured);
  };
  EXPECT_TRUE(v4(127, 0, 0, 1));
  EXPECT_TRUE(v4(127, 255, 1, 2));
  EXPECT_TRUE(v4(169, 254, 169, 254)) << "cloud metadata";
  EXPECT_TRUE(v4(0, 0, 0, 0));
  EXPECT_TRUE(v4(224, 0, 0, 251));
  EXPECT_TRUE(v4(10, 213, 0, 5)) << "the cell's own subnet";
  EXPECT_TRUE(v4(10, 213, 0, 7));
  EXPECT_FALSE(v4(10, 213, 0, 8)) << "the next cell's /30 is not configured here";
  EXPECT_FALSE(v4(10, 214, 0, 1));
  EXPECT_FALSE(v4(93, 184, 216, 34));
  EXPECT_TRUE(v6("::1"));
  EXPECT_TRUE(v6("::"));
  EXPECT_TRUE(v6("fe80::1"));
  EXPECT_TRUE(v6("ff02::1"));
  EXPECT_TRUE(v6("fd12::1")) << "configured";
  EXPECT_TRUE(v6("::ffff:127.0.0.1")) << "IPv4-mapped loopback in an AAAA record";
  EXPECT_TRUE(v6("::ffff:10.213.0.6"));
  EXPECT_FALSE(v6("2001:db8::1"));
  EXPECT_TRUE(rebindingGuarded(std::vector<uint8_t>{1, 2, 3}, configured)) << "not an address";
  EXPECT_FALSE(rebindingGuarded(std::array<uint8_t, 4>{10, 213, 0, 5}, {}))
      << "without the cell's subnet configured";
}

// Issue 14: IPv6 forms that stand for an IPv4 loopback (or any guarded IPv4 address) are refused
// as that address, whatever route the cell has.
TEST(RebindingGuard, RefusesEveryIpv6FormThatEmbedsAGuardedIpv4Address) {
  std::vector<DnsAddressRange> configured = {*parseAddressRange("10.213.0.4/30")};
  auto v6 = [&](const char* text) {
    std::array<uint8_t, 16> bytes{};
    EXPECT_EQ(inet_pton(AF_INET6, text, bytes.data()), 1) << text;
    return rebindingGuarded(bytes, configured);
  };
  EXPECT_TRUE(v6("::127.0.0.1")) << "IPv4-compatible loopback";
  EXPECT_TRUE(v6("::ffff:127.0.0.1")) << "IPv4-mapped loopback";
  EXPECT_TRUE(v6("::ffff:0:7f00:1")) << "SIIT loopback";
  EXPECT_TRUE(v6("64:ff9b::7f00:1")) << "NAT64 loopback";
  EXPECT_TRUE(v6("64:ff9b::127.0.0.1"));
  EXPECT_TRUE(v6("64:ff9b:1:7f00:0:100::")) << "NAT64 local-use /48 loopback (u-octet skipped)";
  EXPECT_TRUE(v6("2002:7f00:1::1")) << "6to4 around loopback";
  EXPECT_TRUE(v6("2001:0:7f00:1::1")) << "Teredo server loopback";
  EXPECT_TRUE(v6("2001:0:5db8:1:0:0:80ff:fffe")) << "Teredo client 127.0.0.1, stored inverted";
  EXPECT_TRUE(v6("64:ff9b::a9fe:a9fe")) << "NAT64 cloud metadata";
  EXPECT_TRUE(v6("::ffff:0:a9fe:a9fe")) << "SIIT link-local";
  EXPECT_TRUE(v6("64:ff9b::ad5:6")) << "NAT64 form of the cell's own subnet";
  EXPECT_FALSE(v6("64:ff9b::5db8:d822")) << "NAT64 of a public address: not the guard's business";
  EXPECT_FALSE(v6("2002:5db8:d822::1"));
  EXPECT_FALSE(v6("2001:0:5db8:d822::a247:27dd")) << "Teredo: server and client both public";
}

}  // namespace
}  // namespace cellos::core
