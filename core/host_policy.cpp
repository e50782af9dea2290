#include "core/host_policy.h"

#include "core/hostname.h"
#include "core/jcs.h"
#include "core/structured_text.h"

#include <algorithm>
#include <map>

namespace cellos::core {
namespace {

using Json = StructuredTree;

// A policy is a handful of fields; anything this deep is a mistake.
constexpr size_t kMaxPolicyDepth = 16;
constexpr size_t kMaxImageBytes = 255;

std::string q(std::string_view text) {
  return quotedForMessage(text);
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Address ranges

// Whether one of `ranges` (a policy list, already parsed once) holds `inner`.
bool anyRangeContains(const std::vector<std::string>& ranges, const IpRange& inner) {
  return std::any_of(ranges.begin(), ranges.end(), [&](const std::string& text) {
    std::optional<IpRange> outer = parseCidr(text);
    return outer && ipRangeContains(*outer, inner);
  });
}

// Whether a policy host list grants a document's host (or "*.suffix") rule: a plain name when an
// entry matches it; a wildcard only when an entry matches every name the wildcard does, i.e. the
// same wildcard or a wildcard over its suffix. A plain "a.b" never grants "*.a.b".
bool hostGranted(const std::vector<std::string>& granted, const std::string& host) {
  if (!host.starts_with("*.")) return anyHostnameMatches(granted, host);
  std::string_view suffix = std::string_view(host).substr(2);
  return std::any_of(granted.begin(), granted.end(), [&](const std::string& entry) {
    return entry == host || (entry.starts_with("*.") && hostnameMatches(entry, suffix));
  });
}

// ---------------------------------------------------------------------------------------------
// The fields

class PolicyReader {
 public:
  PolicyReader(std::vector<Violation>& violations, const NumberTexts& numberTexts)
      : violations_(violations), numberTexts_(numberTexts) {}

  HostPolicy read(const Json& root) {
    HostPolicy out;
    if (!root.is_object()) {
      fail("$", "expected an object, got " + typeName(root));
      return out;
    }
    static constexpr std::string_view kKnown[] = {
        "maxTtlSeconds",      "maxTimeoutMs",       "maxMemoryBytes",     "maxPidsMax",
        "defaultMemoryBytes", "defaultPidsMax",     "defaultBackend",     "allowedBackends",
        "allowedImages",      "allowedEgressHosts", "allowedEgressCidrs", "allowHostDestinations"};
    for (const auto& [name, value] : root.items()) {
      if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
        fail("$", "unknown field " + q(name));
      }
    }
    // A cap above what any document may ask for would be no cap: the same bounds as the fields.
    out.maxTtlSeconds = cap(root, "maxTtlSeconds", kMaxTtlSeconds);
    out.maxTimeoutMs = cap(root, "maxTimeoutMs", kMaxTimeoutMs);
    out.maxMemoryBytes = cap(root, "maxMemoryBytes", kMaxMemoryMaxBytes);
    out.maxPidsMax = cap(root, "maxPidsMax", kMaxPidsMax);
    out.defaultMemoryBytes = cap(root, "defaultMemoryBytes", kMaxMemoryMaxBytes);
    out.defaultPidsMax = cap(root, "defaultPidsMax", kMaxPidsMax);
    auto notAboveCap = [&](const char* name, const std::optional<uint64_t>& value,
                           const char* capName, const std::optional<uint64_t>& cap) {
      if (value && cap && *value > *cap) {
        fail(name, std::to_string(*value) + " exceeds " + capName + " " + std::to_string(*cap) +
                       ": no document could be given it");
      }
    };
    notAboveCap("defaultMemoryBytes", out.defaultMemoryBytes, "maxMemoryBytes", out.maxMemoryBytes);
    notAboveCap("defaultPidsMax", out.defaultPidsMax, "maxPidsMax", out.maxPidsMax);
    out.allowedBackends =
        list(root, "allowedBackends", false,
             [&](const std::string& at, const std::string& text) { return backend(at, text); });
    if (auto it = root.find("defaultBackend"); it != root.end()) {
      if (!it->is_string()) {
        fail("defaultBackend", "expected a string, got " + typeName(*it));
      } else {
        out.defaultBackend = backend("defaultBackend", it->get<std::string>());
      }
    }
    if (out.defaultBackend && out.allowedBackends &&
        std::find(out.allowedBackends->begin(), out.allowedBackends->end(), *out.defaultBackend) ==
            out.allowedBackends->end()) {
      fail("defaultBackend", q(*out.defaultBackend) + " is not in allowedBackends (" +
                                 joined(*out.allowedBackends) + "): no document could use it");
    }
    out.allowedImages =
        list(root, "allowedImages", false,
             [&](const std::string& at, const std::string& text) { return image(at, text); });
    out.allowedEgressHosts =
        list(root, "allowedEgressHosts", true,
             [&](const std::string& at, const std::string& text) { return host(at, text); });
    out.allowedEgressCidrs =
        list(root, "allowedEgressCidrs", true,
             [&](const std::string& at, const std::string& text) { return cidr(at, text); });
    out.allowHostDestinations =
        list(root, "allowHostDestinations", true,
             [&](const std::string& at, const std::string& text) { return cidr(at, text); })
            .value_or(std::vector<std::string>{});
    return out;
  }

 private:
  void fail(const std::string& path, std::string message) {
    violations_.push_back({path, std::move(message)});
  }

  // A positive integer of at most `max`. Present but null is refused: "maxTtlSeconds:" with the
  // value forgotten must not quietly mean "no cap".
  std::optional<uint64_t> cap(const Json& root, const std::string& name, uint64_t max) {
    auto it = root.find(name);
    if (it == root.end()) return std::nullopt;
    const Json& value = *it;
    if (value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0)) {
      uint64_t number = value.get<uint64_t>();
      if (number == 0) {
        fail(name, "must be positive, got 0");
        return std::nullopt;
      }
      if (number > max) {
        fail(name, std::to_string(number) + " exceeds the maximum " + std::to_string(max));
        return std::nullopt;
      }
      return number;
    }
    if (value.is_number_integer()) {
      fail(name, "must be positive, got " + std::to_string(value.get<int64_t>()));
    } else if (value.is_number_float()) {
      // The source spelling: 1e3 stays 1e3, and an integer beyond 64 bits is named as written.
      auto text = numberTexts_.find(name);
      std::string shown = text != numberTexts_.end() ? text->second : value.dump();
      if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
      if (shown.find_first_of(".eE") != std::string::npos) {
        fail(name, "expected an integer, got " + shown);
      } else if (shown.starts_with("-")) {
        fail(name, "must be positive, got " + shown);
      } else {
        fail(name, shown + " exceeds the maximum " + std::to_string(max));
      }
    } else {
      fail(name, "expected an integer, got " + typeName(value));
    }
    return std::nullopt;
  }

  // A list of strings, each checked by `entry` (which returns the normalised entry, or nullopt
  // after reporting), without duplicates. nullopt when absent or unusable.
  template <typename Entry>
  std::optional<std::vector<std::string>> list(const Json& root, const std::string& name,
                                               bool mayBeEmpty, Entry entry) {
    auto it = root.find(name);
    if (it == root.end()) return std::nullopt;
    if (!it->is_array()) {
      fail(name, "expected an array, got " + typeName(*it));
      return std::nullopt;
    }
    if (it->empty() && !mayBeEmpty) {
      fail(name, "must not be empty: every cell has one, so nothing could run (leave " + name +
                     " out for no restriction)");
      return std::nullopt;
    }
    std::vector<std::string> out;
    std::map<std::string, size_t> firstAt;
    for (size_t i = 0; i < it->size(); ++i) {
      std::string at = indexPath(name, i);
      const Json& value = (*it)[i];
      if (!value.is_string()) {
        fail(at, "expected a string, got " + typeName(value));
        continue;
      }
      std::optional<std::string> normal = entry(at, value.get<std::string>());
      if (!normal) continue;
      if (auto [seen, fresh] = firstAt.emplace(*normal, i); !fresh) {
        fail(at, q(*normal) + " is already listed at [" + std::to_string(seen->second) + "]");
        continue;
      }
      out.push_back(*normal);
    }
    return out;
  }

  std::optional<std::string> backend(const std::string& at, const std::string& text) {
    if (std::find(std::begin(kBackendNames), std::end(kBackendNames), text) !=
        std::end(kBackendNames)) {
      return text;
    }
    std::string list;
    for (std::string_view name : kBackendNames)
      list += (list.empty() ? "" : ", ") + std::string(name);
    fail(at, q(text) + " is not one of " + list);
    return std::nullopt;
  }

  // The document's rules for run.image, so every entry could match some document.
  std::optional<std::string> image(const std::string& at, const std::string& text) {
    size_t before = violations_.size();
    if (text.empty()) fail(at, "must not be empty");
    if (text.size() > kMaxImageBytes) {
      fail(at, "must be at most " + std::to_string(kMaxImageBytes) + " bytes, got " +
                   std::to_string(text.size()));
    }
    if (std::any_of(text.begin(), text.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
      fail(at, "must not contain control characters");
    } else if (text.find(' ') != std::string::npos) {
      fail(at, "must not contain whitespace, got " + q(text));
    }
    if (violations_.size() != before) return std::nullopt;
    return text;
  }

  std::optional<std::string> host(const std::string& at, const std::string& text) {
    std::string error;
    std::optional<std::string> name = normaliseHostname(text, true, &error);
    if (!name) {
      fail(at, error);
      return std::nullopt;
    }
    // The document refuses host rules whose last label is all digits, so such an entry could
    // only be a mistaken address.
    size_t dot = name->rfind('.');
    std::string_view last = dot == std::string::npos ? std::string_view(*name)
                                                     : std::string_view(*name).substr(dot + 1);
    if (std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fail(at, q(*name) +
                   " is not a hostname: its last label is all digits (addresses go in "
                   "allowedEgressCidrs)");
      return std::nullopt;
    }
    return name;
  }

  std::optional<std::string> cidr(const std::string& at, const std::string& text) {
    std::string error;
    std::optional<IpRange> range = parseRangeField(text, "10.0.0.0/8", &error);
    if (!range) {
      fail(at, error);
      return std::nullopt;
    }
    // Duplicates compare as ranges ("FD00::/8" and "fd00::/8" are one range).
    return formatIpRange(*range);
  }

  std::vector<Violation>& violations_;
  const NumberTexts& numberTexts_;
};

// ---------------------------------------------------------------------------------------------
// Checking a document

std::string exceeds(uint64_t value, uint64_t maximum) {
  return std::to_string(value) + " exceeds the host's maximum " + std::to_string(maximum);
}

std::string notAllowed(const std::string& value, bool isDefault,
                       const std::vector<std::string>& allowed) {
  return q(value) + (isDefault ? " (the default)" : "") +
         " is not allowed on this host (allowed: " + joined(allowed) + ")";
}

}  // namespace

HostPolicyParseResult parseHostPolicy(std::string_view bytes) {
  HostPolicyParseResult result;
  if (bytes.size() > kMaxHostPolicyBytes) {
    result.violations.push_back({"$", "policy is " + std::to_string(bytes.size()) +
                                          " bytes, over the " +
                                          std::to_string(kMaxHostPolicyBytes) + "-byte limit"});
    return result;
  }
  StructuredText read = readStructuredText(bytes, {.maxDepth = kMaxPolicyDepth,
                                                   .documentName = "host policy",
                                                   .emptyMessage = "policy is empty"});
  if (read.fatal) {
    result.violations = {{"$", *read.fatal}};
    return result;
  }
  result.violations = std::move(read.violations);
  HostPolicy policy = PolicyReader(result.violations, read.numberTexts).read(read.tree);
  if (result.violations.empty()) result.policy = std::move(policy);
  return result;
}

std::vector<Violation> checkHostPolicy(const HostPolicy& policy, const CellDocument& document) {
  std::vector<Violation> out;
  const CellSpec& spec = document.spec;
  const std::string notHere = " is not allowed on this host";

  if (policy.allowedBackends) {
    std::string backend = spec.placement.backend.value_or(policy.defaultBackend.value_or("linux"));
    const auto& allowed = *policy.allowedBackends;
    if (std::find(allowed.begin(), allowed.end(), backend) == allowed.end()) {
      out.push_back({"spec.placement.backend",
                     notAllowed(backend, !spec.placement.backend.has_value(), allowed)});
    }
  }
  if (policy.maxTtlSeconds && spec.lifetime.ttlSeconds > *policy.maxTtlSeconds) {
    out.push_back(
        {"spec.lifetime.ttlSeconds", exceeds(spec.lifetime.ttlSeconds, *policy.maxTtlSeconds)});
  }

  const Authority& authority = spec.authority;
  for (size_t i = 0; i < authority.egressRules.size(); ++i) {
    const EgressRule& rule = authority.egressRules[i];
    std::string at = indexPath("spec.authority.egressRules", i);
    if (rule.host && policy.allowedEgressHosts &&
        !hostGranted(*policy.allowedEgressHosts, *rule.host)) {
      out.push_back({at + ".host", q(*rule.host) + notHere});
    }
    if (rule.cidr && policy.allowedEgressCidrs) {
      std::optional<IpRange> range = parseCidr(*rule.cidr);
      if (!range || !anyRangeContains(*policy.allowedEgressCidrs, *range)) {
        out.push_back({at + ".cidr", q(*rule.cidr) + notHere});
      }
    }
  }
  const DnsAuthority& dns = authority.dnsAuthority;
  if (policy.allowedEgressHosts) {
    for (size_t i = 0; i < dns.hostnameAllowlist.size(); ++i) {
      if (!hostGranted(*policy.allowedEgressHosts, dns.hostnameAllowlist[i])) {
        out.push_back({indexPath("spec.authority.dnsAuthority.hostnameAllowlist", i),
                       q(dns.hostnameAllowlist[i]) + notHere});
      }
    }
  }
  if (policy.allowedEgressCidrs) {
    for (size_t i = 0; i < dns.resolvers.size(); ++i) {
      const Resolver& resolver = dns.resolvers[i];
      std::optional<IpAddress> address = parseIpAddress(resolver.address);
      bool inside = address && anyRangeContains(*policy.allowedEgressCidrs, hostRange(*address));
      if (!inside) {
        out.push_back({indexPath("spec.authority.dnsAuthority.resolvers", i) + ".endpoint",
                       q(resolver.endpoint) + notHere});
      }
    }
  }

  const RunSpec defaults;
  const RunSpec& run = spec.run ? *spec.run : defaults;
  if (policy.allowedImages) {
    const auto& allowed = *policy.allowedImages;
    if (std::find(allowed.begin(), allowed.end(), run.image) == allowed.end()) {
      // Without `run` (or `run.image`) the cell still boots on the default image.
      bool isDefault = !spec.run || run.image == defaults.image;
      out.push_back({"spec.run.image", notAllowed(run.image, isDefault, allowed)});
    }
  }
  if (policy.maxTimeoutMs && run.timeoutMs && *run.timeoutMs > *policy.maxTimeoutMs) {
    out.push_back({"spec.run.timeoutMs", exceeds(*run.timeoutMs, *policy.maxTimeoutMs)});
  }
  if (policy.maxMemoryBytes && run.limits.memoryMaxBytes &&
      *run.limits.memoryMaxBytes > *policy.maxMemoryBytes) {
    out.push_back({"spec.run.limits.memoryMaxBytes",
                   exceeds(*run.limits.memoryMaxBytes, *policy.maxMemoryBytes)});
  }
  if (policy.maxPidsMax && run.limits.pidsMax && *run.limits.pidsMax > *policy.maxPidsMax) {
    out.push_back({"spec.run.limits.pidsMax", exceeds(*run.limits.pidsMax, *policy.maxPidsMax)});
  }
  return out;
}

void applyHostPolicyDefaults(const HostPolicy& policy, CellDocument& document) {
  if (policy.defaultBackend && !document.spec.placement.backend) {
    document.spec.placement.backend = policy.defaultBackend;
  }
  if (!document.spec.run) return;
  RunSpec& run = *document.spec.run;
  // The policy's default, else its cap, else the built-in default held to the cap.
  auto fill = [](std::optional<uint64_t>& limit, const std::optional<uint64_t>& preferred,
                 const std::optional<uint64_t>& cap, uint64_t builtin) {
    if (limit) return;
    limit = preferred ? preferred : cap ? cap : std::optional<uint64_t>(builtin);
    if (cap && *limit > *cap) limit = cap;
  };
  const BackendTraits* backend = backendTraits(document.spec.placement.backend.value_or("linux"));
  fill(run.limits.memoryMaxBytes, policy.defaultMemoryBytes, policy.maxMemoryBytes,
       backend ? backend->defaultMemoryBytes : kDefaultMemoryBytes);
  fill(run.limits.pidsMax, policy.defaultPidsMax, policy.maxPidsMax, kDefaultPidsMax);
  // ttlSeconds * 1000 > maxTimeoutMs, compared without the multiplication (it can overflow).
  if (policy.maxTimeoutMs && !run.timeoutMs &&
      document.spec.lifetime.ttlSeconds > *policy.maxTimeoutMs / 1000) {
    run.timeoutMs = policy.maxTimeoutMs;
  }
}

bool cidrContains(std::string_view outer, std::string_view inner) {
  std::optional<IpRange> a = parseCidr(outer);
  std::optional<IpRange> b = parseCidr(inner);
  return a && b && ipRangeContains(*a, *b);
}

}  // namespace cellos::core
