#include "core/nft_rules.h"

#include "core/ip_address.h"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace cellos::core {

namespace {

// Whether a range with zero host bits is IPv6; throws for anything that is not such a range.
bool cidrIsIpv6(const std::string& cidr) {
  IpRangeError why;
  std::optional<IpRange> range = parseCidr(cidr, &why);
  if (range) return range->ipv6;
  switch (why.problem) {
    case IpRangeProblem::kNoPrefix:
      throw std::invalid_argument("\"" + cidr + "\" is not a range");
    case IpRangeProblem::kBadPrefixLength:
    case IpRangeProblem::kPrefixOutOfRange:
      throw std::invalid_argument("\"" + cidr + "\" has no valid prefix length");
    case IpRangeProblem::kHostBitsSet:
      throw std::invalid_argument("\"" + cidr + "\" has host bits set");
    case IpRangeProblem::kBadAddress:
      break;
  }
  throw std::invalid_argument("\"" + cidr + "\" is not an IPv4 or IPv6 range");
}

std::string transport(const std::string& protocol) {
  if (protocol == "tcp" || protocol == "do53-tcp") return "tcp";
  if (protocol == "udp" || protocol == "do53-udp") return "udp";
  throw std::invalid_argument("protocol \"" + protocol + "\" is not tcp or udp");
}

std::string port(uint16_t value) {
  if (value == 0) throw std::invalid_argument("port 0");
  return std::to_string(value);
}

// Resolver ids become part of a rule comment: keep them to the document's own alphabet.
void checkId(const std::string& id) {
  if (id.empty() || id.size() > 63 ||
      id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
          std::string::npos) {
    throw std::invalid_argument("resolver id \"" + id + "\" is not 1-63 of [A-Za-z0-9_.-]");
  }
}

// The elements of an interval set: the ranges of one family, a /32 or /128 as its address.
std::string setElements(const std::vector<IpRange>& ranges, bool ipv6) {
  std::string text;
  for (const IpRange& range : ranges) {
    if (range.ipv6 != ipv6) continue;
    std::string shown = formatIpRange(range);
    if (range.prefix == (ipv6 ? 128u : 32u)) shown.erase(shown.find('/'));
    text += (text.empty() ? "" : ", ") + shown;
  }
  return text;
}

bool hasFamily(const std::vector<IpRange>& ranges, bool ipv6) {
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const IpRange& range) { return range.ipv6 == ipv6; });
}

}  // namespace

std::string nftHostSet(bool ipv6, bool allowed) {
  return std::string(allowed ? "host_allowed" : "host") + (ipv6 ? "_v6" : "_v4");
}

std::string nftHostDestinationElements(const NftPlan& plan) {
  std::string text;
  for (bool ipv6 : {false, true}) {
    std::string set = "inet " + std::string(kNftTable) + " " + nftHostSet(ipv6, false);
    text += "flush set " + set + "\n";
    std::string elements = setElements(plan.hostDestinations, ipv6);
    if (!elements.empty()) text += "add element " + set + " { " + elements + " }\n";
  }
  return text;
}

std::string nftHostSet(size_t index, bool ipv6) {
  return "egress_" + std::to_string(index) + (ipv6 ? "_v6" : "_v4");
}

namespace {

// The host-destination drops of `chain`, with `prefix` on their ids and `match` before them.
void addHostDestinationDrops(const NftPlan& plan, const std::string& chain,
                             const std::string& idPrefix, const std::string& match,
                             std::vector<NftRule>& rules) {
  for (bool ipv6 : {false, true}) {
    std::string family = ipv6 ? "ip6" : "ip";
    std::string m = match + family + " daddr @" + nftHostSet(ipv6, false);
    if (hasFamily(plan.allowedHostDestinations, ipv6)) {
      m += " " + family + " daddr != @" + nftHostSet(ipv6, true);
    }
    rules.push_back({idPrefix + "host-destination:" + (ipv6 ? "v6" : "v4"), chain, m, "drop"});
  }
}

// Interface names become part of a match: keep them to what Linux allows and nft quotes safely.
std::string interfaceName(const std::string& name) {
  if (name.empty() || name.size() > 15 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos) {
    throw std::invalid_argument("interface name \"" + name + "\" is not 1-15 of [a-z0-9_.-]");
  }
  return name;
}

std::string ipv4Literal(const std::string& text, const char* what) {
  std::optional<IpAddress> address = parseIpAddress(text);
  if (!address || address->ipv6) {
    throw std::invalid_argument(std::string(what) + " \"" + text + "\" is not an IPv4 address");
  }
  return formatIpAddress(*address);
}

}  // namespace

std::vector<NftRule> nftRules(const NftPlan& plan) {
  std::vector<NftRule> rules;
  rules.push_back({"loopback", "output", "oifname \"lo\"", "accept"});
  rules.push_back({"established", "output", "ct state established,related", "accept"});
  // Before every accept that a document controls: the host is never a destination, through a
  // resolver, a cidr rule (0.0.0.0/0 too) or a DNS-learned address, unless the policy says so.
  // With a guest, only the DNS helper's sockets live in this namespace; the workload's rules
  // keep their ids on the forward path, so a flow's counter reads the same for every backend.
  const std::string helper = plan.guest ? "dns-helper-" : "";
  addHostDestinationDrops(plan, "output", helper, "", rules);
  for (const NftResolver& resolver : plan.resolvers) {
    checkId(resolver.resolverId);
    std::optional<IpAddress> address = parseIpAddress(resolver.address);
    if (!address) {
      throw std::invalid_argument("resolver address \"" + resolver.address + "\" is not an IP");
    }
    std::string family = address->ipv6 ? "ip6" : "ip";
    std::string proto = transport(resolver.protocol);
    rules.push_back({"resolver:" + resolver.resolverId, "output",
                     family + " daddr " + resolver.address + " " + proto + " dport " +
                         port(resolver.port) + " meta skuid " + std::to_string(plan.dnsUid),
                     "accept"});
  }
  // A linux or gvisor workload's sockets are in this namespace (output); a guest's packets
  // arrive on its interface and are routed (forward).
  std::string workloadChain = "output", from;
  if (plan.guest) {
    workloadChain = "forward";
    from = "iifname \"" + interfaceName(plan.guest->interface) + "\" ";
    rules.push_back({helper + "default-drop", "output", "", "drop"});
    // Both ways: the guest's replies leave on its interface, the replies to its own flows
    // arrive on the uplink and go out on it. Nothing new ever comes in from the uplink.
    rules.push_back({"guest-established", "forward", "ct state established,related", "accept"});
    addHostDestinationDrops(plan, "forward", "", from, rules);
  }
  for (size_t i = 0; i < plan.egress.size(); ++i) {
    const NftEgress& rule = plan.egress[i];
    std::string id = "egress[" + std::to_string(i) + "]";
    std::string proto = transport(rule.protocol);
    std::string dport = " " + proto + " dport " + port(rule.port);
    if (rule.cidr && !rule.host) {
      std::string family = cidrIsIpv6(*rule.cidr) ? "ip6" : "ip";
      rules.push_back(
          {id, workloadChain, from + family + " daddr " + *rule.cidr + dport, "accept"});
    } else if (rule.host && !rule.cidr) {
      rules.push_back({id + ":v4", workloadChain,
                       from + "ip daddr @" + nftHostSet(i, false) + dport, "accept"});
      rules.push_back({id + ":v6", workloadChain,
                       from + "ip6 daddr @" + nftHostSet(i, true) + dport, "accept"});
    } else {
      throw std::invalid_argument(id + " needs exactly one of host or cidr");
    }
  }
  rules.push_back({"default-drop", workloadChain, "", "drop"});
  rules.push_back({"input-loopback", "input", "iifname \"lo\"", "accept"});
  rules.push_back({"input-established", "input", "ct state established,related", "accept"});
  if (plan.guest) {
    std::string dns = ipv4Literal(plan.guest->dnsAddress, "guest DNS address");
    for (const char* proto : {"udp", "tcp"}) {
      rules.push_back({std::string("guest-dns:") + proto, "input",
                       from + "ip daddr " + dns + " " + proto + " dport 53", "accept"});
    }
    rules.push_back({"guest-masquerade", "postrouting",
                     "oifname != \"" + plan.guest->interface + "\" ip saddr " +
                         ipv4Literal(plan.guest->address, "guest address"),
                     "masquerade"});
  }
  rules.push_back({"input-drop", "input", "", "drop"});
  return rules;
}

std::string nftRuleset(const NftPlan& plan) {
  std::vector<NftRule> rules = nftRules(plan);
  std::string text = "table inet " + std::string(kNftTable) + " {\n";
  for (bool allowed : {false, true}) {
    const auto& ranges = allowed ? plan.allowedHostDestinations : plan.hostDestinations;
    for (bool ipv6 : {false, true}) {
      if (allowed && !hasFamily(ranges, ipv6)) continue;
      std::string elements = setElements(ranges, ipv6);
      text += "  set " + nftHostSet(ipv6, allowed) + " { type " +
              (ipv6 ? "ipv6_addr" : "ipv4_addr") + "; flags interval; " +
              (allowed ? "auto-merge; " : "") +
              (elements.empty() ? "" : "elements = { " + elements + " }; ") + "}\n";
    }
  }
  for (size_t i = 0; i < plan.egress.size(); ++i) {
    if (!plan.egress[i].host) continue;
    for (bool ipv6 : {false, true}) {
      text += "  set " + nftHostSet(i, ipv6) + " { type " + (ipv6 ? "ipv6_addr" : "ipv4_addr") +
              "; flags timeout; }\n";
    }
  }
  std::vector<std::string> chains = {"input", "output"};
  if (plan.guest) chains.insert(chains.end(), {"forward", "postrouting"});
  for (const std::string& chain : chains) {
    text += "  chain " + chain + " {\n    " +
            (chain == "postrouting" ? "type nat hook postrouting priority srcnat; policy accept;"
                                    : "type filter hook " + chain + " priority 0; policy drop;") +
            "\n";
    for (const NftRule& rule : rules) {
      if (rule.chain != chain) continue;
      text += "    " + (rule.match.empty() ? "" : rule.match + " ") + "counter " + rule.verdict +
              " comment \"" + rule.id + "\"\n";
    }
    text += "  }\n";
  }
  text += "}\n";
  return text;
}

std::string nftLearnedElements(const NftPlan& plan, size_t index,
                               const std::vector<std::vector<uint8_t>>& ipv4,
                               const std::vector<std::vector<uint8_t>>& ipv6,
                               uint32_t timeoutSeconds) {
  if (index >= plan.egress.size() || !plan.egress[index].host) {
    throw std::invalid_argument("egressRules[" + std::to_string(index) + "] is not a host rule");
  }
  if (timeoutSeconds == 0 || timeoutSeconds > 86400) {
    throw std::invalid_argument("timeout " + std::to_string(timeoutSeconds) + " s out of range");
  }
  std::string text;
  for (bool v6 : {false, true}) {
    std::vector<std::vector<uint8_t>> list = v6 ? ipv6 : ipv4;
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());  // nft refuses duplicates
    if (list.empty()) continue;
    std::string plain, timed;
    for (const auto& bytes : list) {
      std::optional<IpAddress> address = ipAddressFromBytes(bytes);
      if (!address || address->ipv6 != v6) {
        throw std::invalid_argument("an address of " + std::to_string(bytes.size()) + " bytes");
      }
      std::string shown = formatIpAddress(*address);
      plain += (plain.empty() ? "" : ", ") + shown;
      timed +=
          (timed.empty() ? "" : ", ") + shown + " timeout " + std::to_string(timeoutSeconds) + "s";
    }
    // add (a no-op when present), delete, add again: one transaction that refreshes the timeout
    // of an address already learned (nft 1.0.6 has no "destroy" or "update" for elements).
    std::string set = "inet " + std::string(kNftTable) + " " + nftHostSet(index, v6);
    text += "add element " + set + " { " + plain + " }\n";
    text += "delete element " + set + " { " + plain + " }\n";
    text += "add element " + set + " { " + timed + " }\n";
  }
  return text;
}

std::vector<NftCounter> parseNftCounters(std::string_view json) {
  nlohmann::json document = nlohmann::json::parse(json, nullptr, false);
  if (document.is_discarded() || !document.is_object() || !document.contains("nftables") ||
      !document["nftables"].is_array()) {
    throw std::runtime_error("nftables JSON output has no \"nftables\" array");
  }
  std::vector<NftCounter> counters;
  for (const auto& item : document["nftables"]) {
    if (!item.is_object() || !item.contains("rule")) continue;
    const auto& rule = item["rule"];
    if (!rule.is_object() || !rule.contains("comment") || !rule["comment"].is_string()) continue;
    NftCounter counter;
    counter.id = rule["comment"].get<std::string>();
    if (rule.contains("expr") && rule["expr"].is_array()) {
      for (const auto& expr : rule["expr"]) {
        if (!expr.is_object()) continue;
        if (expr.contains("counter") && expr["counter"].is_object()) {
          counter.packets = expr["counter"].value("packets", uint64_t{0});
          counter.bytes = expr["counter"].value("bytes", uint64_t{0});
        }
        if (expr.contains("accept")) counter.verdict = "accept";
        if (expr.contains("drop")) counter.verdict = "drop";
        if (expr.contains("masquerade")) counter.verdict = "masquerade";
      }
    }
    counters.push_back(std::move(counter));
  }
  return counters;
}

}  // namespace cellos::core
