// Address and uid pools, the nftables ruleset of a cell and the reading of its counters.

#include "core/address_pool.h"
#include "core/nft_rules.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace cellos::core {
namespace {

TEST(Ipv4Cidr, ParsesAndRefusesHostBitsAndJunk) {
  std::string error;
  auto net = parseIpv4Cidr("10.213.0.0/16", &error);
  ASSERT_TRUE(net) << error;
  EXPECT_EQ(net->address, 0x0ad50000u);
  EXPECT_EQ(net->prefix, 16u);
  EXPECT_FALSE(parseIpv4Cidr("10.213.0.1/16", &error));
  EXPECT_NE(error.find("host bits"), std::string::npos) << error;
  for (const char* bad :
       {"10.213.0.0", "10.213.0/16", "10.213.0.0/33", "10.213.0.0/", "010.1.0.0/16",
        "10.256.0.0/16", "10.1.0.0/-1", "a.b.c.d/8", "10.1.0.0/16 "}) {
    EXPECT_FALSE(parseIpv4Cidr(bad, &error)) << bad;
  }
  EXPECT_TRUE(parseIpv4Cidr("0.0.0.0/0", &error));
  EXPECT_EQ(formatIpv4(0x0ad50001u), "10.213.0.1");
}

TEST(AddressPool, CarvesSlashThirtiesInOrder) {
  std::string error;
  auto pool = AddressPool::parse("10.213.0.0/16", &error);
  ASSERT_TRUE(pool) << error;
  EXPECT_EQ(pool->slotCount(), 16384u);
  EXPECT_EQ(pool->describe(), "10.213.0.0/16");
  EXPECT_EQ(pool->leaseName(), "addr-10.213.0.0-16");
  auto first = pool->slot(0);
  EXPECT_EQ(formatIpv4(first.network), "10.213.0.0");
  EXPECT_EQ(formatIpv4(first.uplink), "10.213.0.1");
  EXPECT_EQ(formatIpv4(first.cell), "10.213.0.2");
  auto last = pool->slot(16383);
  EXPECT_EQ(formatIpv4(last.uplink), "10.213.255.253");
  EXPECT_EQ(formatIpv4(last.cell), "10.213.255.254");
  EXPECT_THROW(pool->slot(16384), std::out_of_range);
  auto single = AddressPool::parse("192.168.7.4/30", &error);
  ASSERT_TRUE(single) << error;
  EXPECT_EQ(single->slotCount(), 1u);
  EXPECT_FALSE(AddressPool::parse("10.0.0.0/31", &error));
  EXPECT_NE(error.find("8..30"), std::string::npos) << error;
  EXPECT_FALSE(AddressPool::parse("10.0.0.0/7", &error));
}

TEST(UidRangePool, RangesDoNotOverlapAndStayBelowTheInvalidId) {
  std::string error;
  auto pool = UidRangePool::make(0x70000000, 65536, 1024, &error);
  ASSERT_TRUE(pool) << error;
  EXPECT_EQ(pool->rangeBase(0), 0x70000000u);
  EXPECT_EQ(pool->rangeBase(1), 0x70010000u);
  EXPECT_EQ(pool->rangeBase(1023), 0x70000000u + 1023u * 65536u);
  EXPECT_THROW(pool->rangeBase(1024), std::out_of_range);
  EXPECT_EQ(pool->describe(), "uid-1879048192-65536-1024");
  EXPECT_FALSE(UidRangePool::make(1000, 65536, 4, &error));  // would map login accounts
  EXPECT_NE(error.find(">= 65536"), std::string::npos);
  EXPECT_FALSE(UidRangePool::make(0xffff0000ull, 65536, 1, &error));  // reaches (uid_t)-1
  EXPECT_FALSE(UidRangePool::make(100000, 0, 1, &error));
  EXPECT_FALSE(UidRangePool::make(100000, 1, 0, &error));
  EXPECT_TRUE(UidRangePool::make(0xfffe0000ull, 65535, 1, &error)) << error;
}

NftPlan samplePlan() {
  NftPlan plan;
  plan.dnsUid = 997;
  plan.resolvers.push_back({"corp-dns", "10.214.0.53", 53, "do53-udp"});
  plan.resolvers.push_back({"v6", "fd00::53", 53, "do53-tcp"});
  plan.egress.push_back({std::nullopt, "10.214.0.0/24", 8080, "tcp"});
  plan.egress.push_back({"api.github.com", std::nullopt, 443, "tcp"});
  plan.egress.push_back({std::nullopt, "fd00:10::/32", 53, "udp"});
  return plan;
}

TEST(NftRules, DefaultDropWithEveryDeclaredRuleInOrder) {
  auto rules = nftRules(samplePlan());
  std::vector<std::string> ids;
  for (const auto& r : rules) ids.push_back(r.chain + "/" + r.id + "/" + r.verdict);
  EXPECT_EQ(ids, (std::vector<std::string>{
                     "output/loopback/accept", "output/established/accept",
                     "output/host-destination:v4/drop", "output/host-destination:v6/drop",
                     "output/resolver:corp-dns/accept", "output/resolver:v6/accept",
                     "output/egress[0]/accept", "output/egress[1]:v4/accept",
                     "output/egress[1]:v6/accept", "output/egress[2]/accept",
                     "output/default-drop/drop", "input/input-loopback/accept",
                     "input/input-established/accept", "input/input-drop/drop"}));
  EXPECT_EQ(rules[2].match, "ip daddr @host_v4");
  EXPECT_EQ(rules[3].match, "ip6 daddr @host_v6");
  EXPECT_EQ(rules[4].match, "ip daddr 10.214.0.53 udp dport 53 meta skuid 997");
  EXPECT_EQ(rules[5].match, "ip6 daddr fd00::53 tcp dport 53 meta skuid 997");
  EXPECT_EQ(rules[6].match, "ip daddr 10.214.0.0/24 tcp dport 8080");
  EXPECT_EQ(rules[7].match, "ip daddr @egress_1_v4 tcp dport 443");
  EXPECT_EQ(rules[8].match, "ip6 daddr @egress_1_v6 tcp dport 443");
  EXPECT_EQ(rules[9].match, "ip6 daddr fd00:10::/32 udp dport 53");
}

// Issue 16: a VM cell's workload is a guest behind a TAP device. Its rules, with the ids a
// linux cell's have, filter what the guest sends (forward, from the TAP only); the cell's own
// output holds only the DNS helper's resolver access; the guest may reach the helper's port 53
// and nothing else of the namespace; its address is masqueraded on the way out.
TEST(NftRules, AGuestsTrafficIsFilteredOnTheForwardPathWithTheSameRuleIds) {
  NftPlan plan = samplePlan();
  plan.guest = NftGuest{"tap0", "169.254.0.2", "169.254.0.1"};
  auto rules = nftRules(plan);
  std::vector<std::string> ids;
  for (const auto& r : rules) ids.push_back(r.chain + "/" + r.id + "/" + r.verdict);
  EXPECT_EQ(ids, (std::vector<std::string>{"output/loopback/accept",
                                           "output/established/accept",
                                           "output/dns-helper-host-destination:v4/drop",
                                           "output/dns-helper-host-destination:v6/drop",
                                           "output/resolver:corp-dns/accept",
                                           "output/resolver:v6/accept",
                                           "output/dns-helper-default-drop/drop",
                                           "forward/guest-established/accept",
                                           "forward/host-destination:v4/drop",
                                           "forward/host-destination:v6/drop",
                                           "forward/egress[0]/accept",
                                           "forward/egress[1]:v4/accept",
                                           "forward/egress[1]:v6/accept",
                                           "forward/egress[2]/accept",
                                           "forward/default-drop/drop",
                                           "input/input-loopback/accept",
                                           "input/input-established/accept",
                                           "input/guest-dns:udp/accept",
                                           "input/guest-dns:tcp/accept",
                                           "postrouting/guest-masquerade/masquerade",
                                           "input/input-drop/drop"}));
  // Established flows pass both ways (the replies to the guest arrive on the uplink); every
  // other forward rule matches only what the guest sends.
  EXPECT_EQ(rules[7].match, "ct state established,related");
  for (const auto& r : rules) {
    if (r.chain == "forward" && !r.match.empty() && r.id != "guest-established") {
      EXPECT_EQ(r.match.rfind("iifname \"tap0\" ", 0), 0u) << r.id << ": " << r.match;
    }
  }
  EXPECT_EQ(rules[10].match, "iifname \"tap0\" ip daddr 10.214.0.0/24 tcp dport 8080");
  EXPECT_EQ(rules[17].match, "iifname \"tap0\" ip daddr 169.254.0.1 udp dport 53");
  EXPECT_EQ(rules[19].match, "oifname != \"tap0\" ip saddr 169.254.0.2");
  std::string text = nftRuleset(plan);
  EXPECT_NE(text.find("type filter hook forward priority 0; policy drop;"), std::string::npos);
  EXPECT_NE(text.find("type nat hook postrouting priority srcnat; policy accept;"),
            std::string::npos);
  EXPECT_NE(text.find("counter masquerade comment \"guest-masquerade\""), std::string::npos);

  plan.guest->interface = "tap0\" accept";
  EXPECT_THROW(nftRules(plan), std::invalid_argument);
  plan.guest = NftGuest{"tap0", "fd00::2", "169.254.0.1"};
  EXPECT_THROW(nftRules(plan), std::invalid_argument);
  EXPECT_EQ(nftRules(samplePlan()).size(), 14u) << "a linux cell's rules do not change";
}

// Issue 14: the host is never a destination. The drop of host destinations comes before every
// accept a document controls (resolvers, cidr rules, host rules), and only the policy's
// allowHostDestinations are exempt from it.
TEST(NftRules, HostDestinationsAreDroppedBeforeEveryAcceptADocumentControls) {
  NftPlan plan = samplePlan();
  plan.egress.push_back({std::nullopt, "0.0.0.0/0", 7000, "tcp"});
  plan.egress.push_back({std::nullopt, "::/0", 7000, "tcp"});
  plan.hostDestinations =
      hostDestinationRanges({"10.215.0.1", "10.213.0.1", "2001:db8::7"}, "10.213.0.0/16");
  auto rules = nftRules(plan);
  size_t firstDrop = rules.size(), firstDocumentAccept = rules.size();
  for (size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].id.rfind("host-destination:", 0) == 0 && firstDrop == rules.size()) firstDrop = i;
    bool document = rules[i].id.rfind("resolver:", 0) == 0 || rules[i].id.rfind("egress[", 0) == 0;
    if (document && firstDocumentAccept == rules.size()) firstDocumentAccept = i;
  }
  ASSERT_LT(firstDrop, rules.size());
  EXPECT_LT(firstDrop, firstDocumentAccept);
  EXPECT_EQ(rules[firstDrop].match, "ip daddr @host_v4");
  EXPECT_EQ(rules[firstDrop + 1].match, "ip6 daddr @host_v6");
  EXPECT_EQ(rules[firstDrop].verdict, "drop");
  EXPECT_EQ(rules[0].id, "loopback") << "the cell's own lo (its DNS helper) stays reachable";

  std::string text = nftRuleset(plan);
  EXPECT_NE(text.find("  set host_v4 { type ipv4_addr; flags interval; elements = { 0.0.0.0/8, "
                      "10.213.0.0/16, 10.215.0.1, 127.0.0.0/8, 169.254.0.0/16 }; }\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  set host_v6 { type ipv6_addr; flags interval; elements = { ::/96, "
                      "::ffff:0.0.0.0/96, ::ffff:0:0:0/96, 64:ff9b::/96, 64:ff9b:1::/48, "
                      "2001::/32, 2001:db8::7, 2002::/16, fe80::/10 }; }\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("host_allowed"), std::string::npos) << "nothing allowed, no exemption";
  // In the output chain the drop is written before the first accept of a resolver or rule.
  size_t drop = text.find("ip daddr @host_v4 counter drop comment \"host-destination:v4\"");
  ASSERT_NE(drop, std::string::npos) << text;
  EXPECT_LT(drop, text.find("comment \"resolver:corp-dns\""));
  EXPECT_LT(drop, text.find("ip daddr 0.0.0.0/0 tcp dport 7000 counter accept"));
  EXPECT_LT(text.find("ip6 daddr @host_v6 counter drop"),
            text.find("ip6 daddr ::/0 tcp dport 7000"));

  // A plan nobody told about the host still keeps the built-in destinations out.
  std::string untold = nftRuleset(samplePlan());
  EXPECT_NE(untold.find("elements = { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 }"), std::string::npos)
      << untold;

  // The policy's grant: one host address exempt, by family.
  plan.allowedHostDestinations = parseIpRanges({"10.215.0.1/32"});
  rules = nftRules(plan);
  EXPECT_EQ(rules[firstDrop].match, "ip daddr @host_v4 ip daddr != @host_allowed_v4");
  EXPECT_EQ(rules[firstDrop + 1].match, "ip6 daddr @host_v6") << "no IPv6 grant";
  text = nftRuleset(plan);
  EXPECT_NE(text.find("  set host_allowed_v4 { type ipv4_addr; flags interval; auto-merge; "
                      "elements = { 10.215.0.1 }; }\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("host_allowed_v6"), std::string::npos);

  // The launcher's refresh when the host's addresses change: both sets replaced at once.
  plan.hostDestinations = hostDestinationRanges({"10.215.0.2"}, "10.213.0.0/16");
  EXPECT_EQ(nftHostDestinationElements(plan),
            "flush set inet cellos host_v4\n"
            "add element inet cellos host_v4 { 0.0.0.0/8, 10.213.0.0/16, 10.215.0.2, 127.0.0.0/8, "
            "169.254.0.0/16 }\n"
            "flush set inet cellos host_v6\n"
            "add element inet cellos host_v6 { ::/96, ::ffff:0.0.0.0/96, ::ffff:0:0:0/96, "
            "64:ff9b::/96, 64:ff9b:1::/48, 2001::/32, 2002::/16, fe80::/10 }\n");
}

TEST(NftRules, RulesetDeclaresSetsChainsCountersAndComments) {
  std::string text = nftRuleset(samplePlan());
  EXPECT_EQ(text.rfind("table inet cellos {\n", 0), 0u) << text;
  EXPECT_NE(text.find("set egress_1_v4 { type ipv4_addr; flags timeout; }"), std::string::npos);
  EXPECT_NE(text.find("set egress_1_v6 { type ipv6_addr; flags timeout; }"), std::string::npos);
  EXPECT_EQ(text.find("egress_0_v4"), std::string::npos) << "a cidr rule has no set";
  EXPECT_NE(text.find("type filter hook output priority 0; policy drop;"), std::string::npos);
  EXPECT_NE(text.find("type filter hook input priority 0; policy drop;"), std::string::npos);
  EXPECT_NE(text.find("    counter drop comment \"default-drop\"\n"), std::string::npos) << text;
  EXPECT_NE(text.find("oifname \"lo\" counter accept comment \"loopback\""), std::string::npos);
  // Every rule counts.
  size_t rules = 0, counters = 0;
  for (size_t p = text.find("comment \""); p != std::string::npos;
       p = text.find("comment \"", p + 1))
    ++rules;
  for (size_t p = text.find(" counter "); p != std::string::npos; p = text.find(" counter ", p + 1))
    ++counters;
  EXPECT_EQ(rules, 14u);
  EXPECT_EQ(counters, 14u);
}

TEST(NftLearnedElements, AddsDeduplicatedAddressesWithTimeoutRefreshingOldOnes) {
  std::vector<std::vector<uint8_t>> v4 = {{10, 214, 0, 1}, {192, 0, 2, 7}, {10, 214, 0, 1}};
  std::vector<std::vector<uint8_t>> v6 = {
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}};
  std::string text = nftLearnedElements(samplePlan(), 1, v4, v6, 300);
  EXPECT_EQ(text,
            "add element inet cellos egress_1_v4 { 10.214.0.1, 192.0.2.7 }\n"
            "delete element inet cellos egress_1_v4 { 10.214.0.1, 192.0.2.7 }\n"
            "add element inet cellos egress_1_v4 { 10.214.0.1 timeout 300s, 192.0.2.7 timeout "
            "300s }\n"
            "add element inet cellos egress_1_v6 { 2001:db8::1 }\n"
            "delete element inet cellos egress_1_v6 { 2001:db8::1 }\n"
            "add element inet cellos egress_1_v6 { 2001:db8::1 timeout 300s }\n");
  EXPECT_EQ(nftLearnedElements(samplePlan(), 1, {}, {}, 300), "");
}

TEST(NftLearnedElements, RefusesCidrRulesBadAddressesAndTimeouts) {
  std::vector<std::vector<uint8_t>> v4 = {{10, 214, 0, 1}};
  EXPECT_THROW(nftLearnedElements(samplePlan(), 0, v4, {}, 60), std::invalid_argument)
      << "egress[0] is a cidr rule";
  EXPECT_THROW(nftLearnedElements(samplePlan(), 9, v4, {}, 60), std::invalid_argument);
  EXPECT_THROW(nftLearnedElements(samplePlan(), 1, {{10, 0, 0}}, {}, 60), std::invalid_argument);
  EXPECT_THROW(nftLearnedElements(samplePlan(), 1, {}, {{1, 2, 3, 4}}, 60), std::invalid_argument);
  EXPECT_THROW(nftLearnedElements(samplePlan(), 1, v4, {}, 0), std::invalid_argument);
  EXPECT_THROW(nftLearnedElements(samplePlan(), 1, v4, {}, 86401), std::invalid_argument);
}

TEST(NftRules, RefusesAnythingThatIsNotAnAddressPortOrProtocol) {
  auto withEgress = [](NftEgress e) {
    NftPlan plan;
    plan.egress.push_back(std::move(e));
    return plan;
  };
  EXPECT_THROW(nftRules(withEgress({std::nullopt, "10.0.0.1/24", 1, "tcp"})),
               std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({std::nullopt, "10.0.0.0/24; flush ruleset", 1, "tcp"})),
               std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({std::nullopt, "fd00::1/64", 1, "tcp"})), std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({std::nullopt, "10.0.0.0/24", 0, "tcp"})),
               std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({std::nullopt, "10.0.0.0/24", 1, "icmp"})),
               std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({"a.example", "10.0.0.0/24", 1, "tcp"})), std::invalid_argument);
  EXPECT_THROW(nftRules(withEgress({std::nullopt, std::nullopt, 1, "tcp"})), std::invalid_argument);
  NftPlan badResolver;
  badResolver.resolvers.push_back({"x\" accept", "10.0.0.1", 53, "do53-udp"});
  EXPECT_THROW(nftRules(badResolver), std::invalid_argument);
  badResolver.resolvers = {{"ok", "dns.example", 53, "do53-udp"}};
  EXPECT_THROW(nftRules(badResolver), std::invalid_argument);
}

TEST(NftCounters, ReadsCommentedRulesFromListTableJson) {
  const char* json = R"({"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "cellos", "handle": 1}},
    {"rule": {"family": "inet", "table": "cellos", "chain": "output", "handle": 3,
              "comment": "loopback", "expr": [
      {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
      {"counter": {"packets": 12, "bytes": 840}}, {"accept": null}]}},
    {"rule": {"family": "inet", "table": "cellos", "chain": "output", "handle": 9,
              "comment": "default-drop", "expr": [
      {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
    {"rule": {"family": "inet", "table": "cellos", "chain": "output", "handle": 10,
              "expr": [{"accept": null}]}}
  ]})";
  auto counters = parseNftCounters(json);
  ASSERT_EQ(counters.size(), 2u);
  EXPECT_EQ(counters[0].id, "loopback");
  EXPECT_EQ(counters[0].verdict, "accept");
  EXPECT_EQ(counters[0].packets, 12u);
  EXPECT_EQ(counters[0].bytes, 840u);
  EXPECT_EQ(counters[1].id, "default-drop");
  EXPECT_EQ(counters[1].verdict, "drop");
  EXPECT_EQ(counters[1].packets, 3u);
  EXPECT_THROW(parseNftCounters("not json"), std::runtime_error);
  EXPECT_THROW(parseNftCounters("{\"x\": 1}"), std::runtime_error);
}

}  // namespace
}  // namespace cellos::core
