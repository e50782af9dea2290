#include "core/spec.h"

#include "core/structured_text.h"

#include "core/digest.h"
#include "core/encoding.h"
#include "core/hostname.h"
#include "core/jcs.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <span>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace cellos::core {
namespace {

using Tree = StructuredTree;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
constexpr size_t kMaxNameBytes = 255;  // NAME_MAX: names that become file or variable names
constexpr size_t kMaxIdLength = 63;    // spec.id is also a cgroup leaf and a netns name

// ---------------------------------------------------------------------------------------------
// Paths and message fragments

std::string q(std::string_view text) {
  return quotedForMessage(text);
}

bool hasControlCharacter(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

bool onlyChars(std::string_view text, bool (*allowed)(char)) {
  return std::all_of(text.begin(), text.end(), allowed);
}

bool isLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool isIdChar(char c) {
  return isLowerAlnum(c) || c == '.' || c == '_' || c == '-';
}
bool isNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || isLowerAlnum(c) || c == '.' || c == '_' || c == '-';
}
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

// ---------------------------------------------------------------------------------------------
// Typed access with violations

class Checker {
 public:
  Checker(std::vector<Violation>& violations, const NumberTexts& numberTexts)
      : violations_(violations), numberTexts_(numberTexts) {}

  void fail(const std::string& path, std::string message) {
    violations_.push_back({path, std::move(message)});
  }

  // `value` as an object whose member names are all in `known` (reports the others), or null
  // after reporting that it is not an object.
  const Tree* object(const Tree& value, const std::string& path,
                     std::initializer_list<std::string_view> known) {
    if (!value.is_object()) {
      fail(path, "expected an object, got " + typeName(value));
      return nullptr;
    }
    for (const auto& [name, member] : value.items()) {
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        fail(path, "unknown field " + q(name));
      }
    }
    return &value;
  }

  // An optional member: null when absent or JSON null (null means "not given", as in the
  // reference's serde Option fields).
  static const Tree* optional(const Tree& object, const std::string& name) {
    auto it = object.find(name);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
  }

  // A required member; reports "is required" when absent. A null value is returned, so the typed
  // accessor reports it as the wrong type.
  const Tree* required(const Tree& object, const std::string& name, const std::string& path) {
    auto it = object.find(name);
    if (it == object.end()) {
      fail(memberPath(path, name), "is required");
      return nullptr;
    }
    return &*it;
  }

  std::optional<std::string> string(const Tree& value, const std::string& path) {
    if (!value.is_string()) {
      fail(path, "expected a string, got " + typeName(value));
      return std::nullopt;
    }
    return value.get<std::string>();
  }

  const Tree* array(const Tree& value, const std::string& path) {
    if (!value.is_array()) {
      fail(path, "expected an array, got " + typeName(value));
      return nullptr;
    }
    return &value;
  }

  // An integer in min..max, a choice from a small range: outside it, "70000 is out of range
  // 1..65535". Negative, too small, non-integer and overflowing values are refused.
  std::optional<uint64_t> integer(const Tree& value, const std::string& path, uint64_t min,
                                  uint64_t max = kU64Max) {
    return read(value, path, min, max, false);
  }

  // A duration or a size: at least `min`, at most `max` (kMax* in spec.h). Above it, "... exceeds
  // the maximum M", whatever the number's spelling (also beyond 64 bits).
  std::optional<uint64_t> bounded(const Tree& value, const std::string& path, uint64_t min,
                                  uint64_t max) {
    return read(value, path, min, max, true);
  }

  // A string that must be one of `choices`.
  std::optional<std::string> oneOf(const Tree& value, const std::string& path,
                                   std::initializer_list<std::string_view> choices) {
    return oneOf(value, path, std::span<const std::string_view>(choices.begin(), choices.size()));
  }
  std::optional<std::string> oneOf(const Tree& value, const std::string& path,
                                   std::span<const std::string_view> choices) {
    std::optional<std::string> text = string(value, path);
    if (!text) return std::nullopt;
    if (std::find(choices.begin(), choices.end(), *text) != choices.end()) return text;
    std::string list;
    for (std::string_view choice : choices)
      list += (list.empty() ? "" : ", ") + std::string(choice);
    fail(path, q(*text) + " is not one of " + list);
    return std::nullopt;
  }

  size_t count() const { return violations_.size(); }

 private:
  std::optional<uint64_t> read(const Tree& value, const std::string& path, uint64_t min,
                               uint64_t max, bool bound) {
    auto tooLarge = [&](const std::string& shown) {
      fail(path, shown + " exceeds the maximum " + std::to_string(max));
      return std::nullopt;
    };
    auto outOfRange = [&](const std::string& shown) {
      if (max != kU64Max && !bound) {
        fail(path, shown + " is out of range " + std::to_string(min) + ".." + std::to_string(max));
      } else if (min == 1) {
        fail(path, "must be positive, got " + shown);
      } else {
        fail(path, shown + " is below the minimum " + std::to_string(min));
      }
      return std::nullopt;
    };
    if (value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0)) {
      uint64_t number = value.is_number_unsigned() ? value.get<uint64_t>()
                                                   : static_cast<uint64_t>(value.get<int64_t>());
      if (bound && number > max) return tooLarge(std::to_string(number));
      if (number < min || number > max) return outOfRange(std::to_string(number));
      return number;
    }
    if (value.is_number_integer()) return outOfRange(std::to_string(value.get<int64_t>()));
    if (value.is_number_float()) {
      auto it = numberTexts_.find(path);
      std::string text = it != numberTexts_.end() ? it->second : value.dump();
      std::string shown = text.size() > 40 ? text.substr(0, 40) + "..." : text;
      bool integerSyntax = text.find_first_of(".eE") == std::string::npos;
      if (!integerSyntax) {
        fail(path, "expected an integer, got " + shown);
      } else if (text.starts_with("-") || (max != kU64Max && !bound)) {
        return outOfRange(shown);  // an integer beyond 64 bits, so beyond any range here
      } else if (bound) {
        return tooLarge(shown);
      } else {
        fail(path, shown + " is too large (maximum " + std::to_string(kU64Max) + ")");
      }
      return std::nullopt;
    }
    fail(path, "expected an integer, got " + typeName(value));
    return std::nullopt;
  }

  std::vector<Violation>& violations_;
  const NumberTexts& numberTexts_;
};

// ---------------------------------------------------------------------------------------------
// Field rules that do not depend on the tree

// Empty when `path` is absolute and normalised, else the problem.
std::string absolutePathProblem(std::string_view path) {
  if (path.empty() || path.front() != '/') return "must be an absolute path, got " + q(path);
  if (hasControlCharacter(path)) return "must not contain NUL or other control characters";
  if (path == "/") return {};
  bool normalised = path.back() != '/';
  for (size_t start = 1; normalised && start <= path.size();) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(start, end - start);
    if (segment.empty() || segment == "." || segment == "..") normalised = false;
    start = end + 1;
  }
  if (!normalised) {
    return "must be normalised (no empty, \".\" or \"..\" segments, no trailing \"/\"), got " +
           q(path);
  }
  return {};
}

// RFC 7230 token characters, for media types.
bool isTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || isDigit(c) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// "type/subtype" with optional "; parameters" (RFC 6838 / RFC 7231 section 3.1.1.1). It is sent
// as an HTTP header, so nothing outside visible ASCII, space and tab is allowed.
bool isMediaType(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == 0 || slash == std::string_view::npos) return false;
  size_t end = text.find(';');
  std::string_view type = text.substr(0, slash);
  std::string_view subtype = text.substr(
      slash + 1, end == std::string_view::npos ? std::string_view::npos : end - slash - 1);
  while (!subtype.empty() && (subtype.back() == ' ' || subtype.back() == '\t')) {
    subtype.remove_suffix(1);
  }
  if (subtype.empty() || !onlyChars(type, isTokenChar) || !onlyChars(subtype, isTokenChar)) {
    return false;
  }
  if (end == std::string_view::npos) return true;
  return std::all_of(text.begin() + static_cast<std::ptrdiff_t>(end), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return c == '\t' || (byte >= 0x20 && byte < 0x7f);
  });
}

// Decimal without sign or leading zeros, at most `maxDigits` digits.
std::optional<uint64_t> parseDecimal(std::string_view text, size_t maxDigits) {
  if (text.empty() || text.size() > maxDigits || !onlyChars(text, isDigit)) return std::nullopt;
  if (text.size() > 1 && text.front() == '0') return std::nullopt;
  uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// "a.b.c.d:port" or "[v6]:port" into address text and port; the problem otherwise.
std::string endpointProblem(std::string_view text, Resolver& out) {
  std::string general = "must be an IP address and port like \"10.0.0.2:53\" or " +
                        std::string("\"[fd00::53]:53\", got ") + q(text);
  std::string_view address, port;
  if (text.starts_with("[")) {
    size_t close = text.find("]:");
    if (close == std::string_view::npos) return general;
    address = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (address.find(':') == std::string_view::npos) return general;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return general;
    address = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (address.find(':') != std::string_view::npos) return general;  // IPv6 needs brackets
  }
  std::optional<IpAddress> ip = parseIpAddress(address);
  if (!ip) return general;
  std::optional<uint64_t> number = parseDecimal(port, 5);
  if (!number) return general;
  if (*number < 1 || *number > 65535) {
    return "port " + std::to_string(*number) + " is out of range 1..65535";
  }
  if (isUnspecified(*ip)) {
    return q(address) + " is the unspecified address, not a resolver";
  }
  out.address = std::string(address);
  out.port = static_cast<uint16_t>(*number);
  return {};
}

// Problems with a hostname beyond what normaliseHostname checks: an all-digit last label reads
// as an IP address (RFC 3696 section 2: top-level domains are never all-numeric), and addresses
// belong in "cidr" where the range is explicit.
std::string numericHostProblem(const std::string& host) {
  size_t dot = host.rfind('.');
  std::string_view last =
      dot == std::string::npos ? std::string_view(host) : std::string_view(host).substr(dot + 1);
  if (!onlyChars(last, isDigit)) return {};
  return q(host) + " is not a hostname: its last label is all digits (addresses go in \"cidr\")";
}

// Whether an allowlist entry lets the cell resolve every name an egress host rule may reach.
bool allowlistCovers(const std::vector<std::string>& allowlist, const std::string& host) {
  if (!host.starts_with("*.")) return anyHostnameMatches(allowlist, host);
  std::string_view suffix = std::string_view(host).substr(2);
  return std::any_of(allowlist.begin(), allowlist.end(), [&](const std::string& entry) {
    return entry == host || (entry.starts_with("*.") && hostnameMatches(entry, suffix));
  });
}

// ---------------------------------------------------------------------------------------------
// The schema, in cell-spec.md order

// What the rules relating two fields need to know after every field was read.
struct CrossFacts {
  std::optional<uint64_t> ttlSeconds;
  bool allowlistUsable = true;  // false when dnsAuthority or its allowlist had the wrong shape
  std::vector<std::pair<std::string, std::string>> egressHosts;  // path, normalised host
  std::optional<std::pair<std::string, uint64_t>> timeoutMs;     // path, value
  bool secretsByEnv = false;
  std::vector<std::pair<std::string, std::string>> envNames;  // path, name
  bool workingDirectoryValid = true;
  std::vector<std::pair<std::string, std::string>> artifactPaths;  // path, value
};

class SpecReader {
 public:
  SpecReader(Checker& check, CellDocument& document) : check_(check), doc_(document) {}

  void read(const Tree& root) {
    const Tree* top = check_.object(root, "$", {"apiVersion", "kind", "spec"});
    if (!top) return;
    exact(*top, "$", "apiVersion", kCellApiVersion, doc_.apiVersion);
    exact(*top, "$", "kind", kCellKind, doc_.kind);
    if (const Tree* spec = check_.required(*top, "spec", "$")) readSpec(*spec, "spec");
    crossRules();
  }

 private:
  void exact(const Tree& object, const std::string& parent, const std::string& name,
             std::string_view expected, std::string& out) {
    const Tree* value = check_.required(object, name, parent);
    if (!value) return;
    std::string path = memberPath(parent, name);
    std::optional<std::string> text = check_.string(*value, path);
    if (!text) return;
    if (*text != expected) {
      check_.fail(path, "must be " + q(expected) + ", got " + q(*text));
      return;
    }
    out = *text;
  }

  // A free-text field: non-empty, at most kMaxNameBytes, no control characters.
  std::optional<std::string> freeText(const Tree& value, const std::string& path) {
    std::optional<std::string> s = check_.string(value, path);
    if (!s) return std::nullopt;
    size_t before = check_.count();
    if (s->empty()) check_.fail(path, "must not be empty");
    if (s->size() > kMaxNameBytes) {
      check_.fail(path, "must be at most " + std::to_string(kMaxNameBytes) + " bytes, got " +
                            std::to_string(s->size()));
    }
    if (hasControlCharacter(*s)) check_.fail(path, "must not contain control characters");
    if (check_.count() != before) return std::nullopt;
    return s;
  }

  void readSpec(const Tree& value, const std::string& path) {
    const Tree* spec = check_.object(
        value, path, {"id", "correlation", "placement", "lifetime", "authority", "run", "export"});
    if (!spec) return;
    if (const Tree* id = check_.required(*spec, "id", path)) readId(*id, memberPath(path, "id"));
    if (const Tree* v = Checker::optional(*spec, "correlation")) {
      std::string at = memberPath(path, "correlation");
      if (const Tree* correlation = check_.object(*v, at, {"correlationId"})) {
        if (const Tree* c = Checker::optional(*correlation, "correlationId")) {
          doc_.spec.correlationId = freeText(*c, memberPath(at, "correlationId"));
        }
      }
    }
    if (const Tree* v = Checker::optional(*spec, "placement")) {
      readPlacement(*v, memberPath(path, "placement"));
    }
    if (const Tree* v = check_.required(*spec, "lifetime", path)) {
      std::string at = memberPath(path, "lifetime");
      if (const Tree* lifetime = check_.object(*v, at, {"ttlSeconds"})) {
        if (const Tree* ttl = check_.required(*lifetime, "ttlSeconds", at)) {
          facts_.ttlSeconds = check_.bounded(*ttl, memberPath(at, "ttlSeconds"), 1, kMaxTtlSeconds);
          doc_.spec.lifetime.ttlSeconds = facts_.ttlSeconds.value_or(0);
        }
      }
    }
    if (const Tree* v = Checker::optional(*spec, "authority")) {
      readAuthority(*v, memberPath(path, "authority"));
    }
    if (const Tree* v = Checker::optional(*spec, "run")) readRun(*v, memberPath(path, "run"));
    if (const Tree* v = Checker::optional(*spec, "export")) {
      readExport(*v, memberPath(path, "export"));
    }
  }

  void readId(const Tree& value, const std::string& path) {
    std::optional<std::string> id = check_.string(value, path);
    if (!id) return;
    if (id->empty()) {
      check_.fail(path, "must not be empty");
      return;
    }
    if (id->size() > kMaxIdLength) {
      check_.fail(path, "must be at most " + std::to_string(kMaxIdLength) + " characters, got " +
                            std::to_string(id->size()));
    }
    if (!isLowerAlnum(id->front())) check_.fail(path, "must start with [a-z0-9], got " + q(*id));
    if (!onlyChars(*id, isIdChar)) {
      check_.fail(path, "must contain only [a-z0-9._-], got " + q(*id));
    }
    doc_.spec.id = *id;
  }

  void readPlacement(const Tree& value, const std::string& path) {
    const Tree* placement = check_.object(value, path, {"backend", "poolId"});
    if (!placement) return;
    if (const Tree* v = Checker::optional(*placement, "backend")) {
      doc_.spec.placement.backend = check_.oneOf(*v, memberPath(path, "backend"), kBackendNames);
    }
    if (const Tree* v = Checker::optional(*placement, "poolId")) {
      doc_.spec.placement.poolId = freeText(*v, memberPath(path, "poolId"));
    }
  }

  // ---- authority

  void readAuthority(const Tree& value, const std::string& path) {
    const Tree* authority =
        check_.object(value, path, {"secretRefs", "egressRules", "dnsAuthority"});
    if (!authority) {
      facts_.allowlistUsable = false;
      return;
    }
    if (const Tree* v = Checker::optional(*authority, "secretRefs")) {
      readSecretRefs(*v, memberPath(path, "secretRefs"));
    }
    if (const Tree* v = Checker::optional(*authority, "egressRules")) {
      std::string at = memberPath(path, "egressRules");
      if (const Tree* rules = check_.array(*v, at)) {
        for (size_t i = 0; i < rules->size(); ++i) readEgressRule((*rules)[i], indexPath(at, i));
      }
    }
    if (const Tree* v = Checker::optional(*authority, "dnsAuthority")) {
      readDnsAuthority(*v, memberPath(path, "dnsAuthority"));
    }
  }

  void readSecretRefs(const Tree& value, const std::string& path) {
    const Tree* refs = check_.array(value, path);
    if (!refs) return;
    std::map<std::string, size_t> firstAt;
    for (size_t i = 0; i < refs->size(); ++i) {
      std::string at = indexPath(path, i);
      std::optional<std::string> name = check_.string((*refs)[i], at);
      if (!name) continue;
      size_t before = check_.count();
      if (name->empty()) {
        check_.fail(at, "must not be empty");
        continue;
      }
      if (!onlyChars(*name, isNameChar)) {
        check_.fail(at, "must contain only [A-Za-z0-9_.-], got " + q(*name));
      }
      // With secretDelivery "file" the name is a file name under /run/secrets.
      if (*name == "." || *name == "..") check_.fail(at, "must not be \".\" or \"..\"");
      if (name->size() > kMaxNameBytes) {
        check_.fail(at, "must be at most " + std::to_string(kMaxNameBytes) + " characters, got " +
                            std::to_string(name->size()));
      }
      if (check_.count() != before) continue;
      if (auto [it, fresh] = firstAt.emplace(*name, i); !fresh) {
        check_.fail(at, q(*name) + " is already listed at [" + std::to_string(it->second) + "]");
        continue;
      }
      doc_.spec.authority.secretRefs.push_back(*name);
    }
  }

  void readEgressRule(const Tree& value, const std::string& path) {
    const Tree* rule = check_.object(value, path, {"host", "cidr", "port", "protocol"});
    if (!rule) return;
    EgressRule out;
    const Tree* host = Checker::optional(*rule, "host");
    const Tree* cidr = Checker::optional(*rule, "cidr");
    if (host == nullptr && cidr == nullptr) {
      check_.fail(path, "needs exactly one of \"host\" or \"cidr\", got neither");
    } else if (host != nullptr && cidr != nullptr) {
      check_.fail(path, "needs exactly one of \"host\" or \"cidr\", got both");
    }
    if (host != nullptr) {
      std::string at = memberPath(path, "host");
      if (std::optional<std::string> name = hostname(*host, at)) {
        out.host = *name;
        facts_.egressHosts.emplace_back(at, *name);
      }
    }
    if (cidr != nullptr) {
      std::string at = memberPath(path, "cidr");
      if (std::optional<std::string> range = check_.string(*cidr, at)) {
        if (std::string problem; !parseRangeField(*range, "10.20.0.0/16", &problem)) {
          check_.fail(at, problem);
        } else {
          out.cidr = *range;
        }
      }
    }
    if (const Tree* port = check_.required(*rule, "port", path)) {
      out.port = static_cast<uint16_t>(
          check_.integer(*port, memberPath(path, "port"), 1, 65535).value_or(0));
    }
    if (const Tree* protocol = check_.required(*rule, "protocol", path)) {
      out.protocol =
          check_.oneOf(*protocol, memberPath(path, "protocol"), {"tcp", "udp"}).value_or("");
    }
    doc_.spec.authority.egressRules.push_back(std::move(out));
  }

  // A hostname or "*.suffix" pattern, lower-cased.
  std::optional<std::string> hostname(const Tree& value, const std::string& path) {
    std::optional<std::string> text = check_.string(value, path);
    if (!text) return std::nullopt;
    std::string error;
    std::optional<std::string> name = normaliseHostname(*text, true, &error);
    if (!name) {
      check_.fail(path, error);
      return std::nullopt;
    }
    if (std::string problem = numericHostProblem(*name); !problem.empty()) {
      check_.fail(path, problem);
      return std::nullopt;
    }
    return name;
  }

  void readDnsAuthority(const Tree& value, const std::string& path) {
    const Tree* dns =
        check_.object(value, path, {"hostnameAllowlist", "allowedQueryTypes", "resolvers"});
    if (!dns) {
      facts_.allowlistUsable = false;
      return;
    }
    DnsAuthority& out = doc_.spec.authority.dnsAuthority;
    if (const Tree* v = Checker::optional(*dns, "hostnameAllowlist")) {
      std::string at = memberPath(path, "hostnameAllowlist");
      if (const Tree* list = check_.array(*v, at)) {
        std::map<std::string, size_t> firstAt;
        for (size_t i = 0; i < list->size(); ++i) {
          std::string entryPath = indexPath(at, i);
          std::optional<std::string> name = hostname((*list)[i], entryPath);
          if (!name) continue;
          if (auto [it, fresh] = firstAt.emplace(*name, i); !fresh) {
            check_.fail(entryPath,
                        q(*name) + " is already listed at [" + std::to_string(it->second) + "]");
            continue;
          }
          out.hostnameAllowlist.push_back(*name);
        }
      } else {
        facts_.allowlistUsable = false;
      }
    }
    if (const Tree* v = Checker::optional(*dns, "allowedQueryTypes")) {
      std::string at = memberPath(path, "allowedQueryTypes");
      out.allowedQueryTypes.clear();
      if (const Tree* list = check_.array(*v, at)) {
        std::map<std::string, size_t> firstAt;
        for (size_t i = 0; i < list->size(); ++i) {
          std::string entryPath = indexPath(at, i);
          std::optional<std::string> type =
              check_.oneOf((*list)[i], entryPath,
                           {"A", "AAAA", "CNAME", "HTTPS", "SVCB", "MX", "TXT", "SRV", "PTR", "NS",
                            "SOA", "CAA"});
          if (!type) continue;
          if (auto [it, fresh] = firstAt.emplace(*type, i); !fresh) {
            check_.fail(entryPath,
                        q(*type) + " is already listed at [" + std::to_string(it->second) + "]");
            continue;
          }
          out.allowedQueryTypes.push_back(*type);
        }
      }
    }
    if (const Tree* v = Checker::optional(*dns, "resolvers")) {
      std::string at = memberPath(path, "resolvers");
      if (const Tree* list = check_.array(*v, at)) {
        std::map<std::string, size_t> firstAt;
        for (size_t i = 0; i < list->size(); ++i) {
          readResolver((*list)[i], indexPath(at, i), firstAt, i);
        }
      }
    }
  }

  void readResolver(const Tree& value, const std::string& path,
                    std::map<std::string, size_t>& firstAt, size_t index) {
    const Tree* resolver = check_.object(value, path, {"resolverId", "endpoint", "protocol"});
    if (!resolver) return;
    Resolver out;
    if (const Tree* v = check_.required(*resolver, "resolverId", path)) {
      std::string at = memberPath(path, "resolverId");
      if (std::optional<std::string> id = check_.string(*v, at)) {
        if (id->empty()) {
          check_.fail(at, "must not be empty");
        } else if (id->size() > kMaxIdLength) {
          check_.fail(at, "must be at most " + std::to_string(kMaxIdLength) + " characters, got " +
                              std::to_string(id->size()));
        } else if (!onlyChars(*id, isNameChar)) {
          check_.fail(at, "must contain only [A-Za-z0-9_.-], got " + q(*id));
        } else if (auto [it, fresh] = firstAt.emplace(*id, index); !fresh) {
          check_.fail(at,
                      q(*id) + " is already used by resolvers[" + std::to_string(it->second) + "]");
        } else {
          out.resolverId = *id;
        }
      }
    }
    if (const Tree* v = check_.required(*resolver, "endpoint", path)) {
      std::string at = memberPath(path, "endpoint");
      if (std::optional<std::string> endpoint = check_.string(*v, at)) {
        if (std::string problem = endpointProblem(*endpoint, out); !problem.empty()) {
          check_.fail(at, problem);
        } else {
          out.endpoint = *endpoint;
        }
      }
    }
    if (const Tree* v = check_.required(*resolver, "protocol", path)) {
      out.protocol =
          check_.oneOf(*v, memberPath(path, "protocol"), {"do53-udp", "do53-tcp"}).value_or("");
    }
    doc_.spec.authority.dnsAuthority.resolvers.push_back(std::move(out));
  }

  // ---- run

  void readRun(const Tree& value, const std::string& path) {
    const Tree* run = check_.object(
        value, path,
        {"argv", "env", "workingDirectory", "image", "secretDelivery", "timeoutMs", "limits"});
    if (!run) return;
    RunSpec& out = doc_.spec.run.emplace();
    if (const Tree* v = check_.required(*run, "argv", path)) readArgv(*v, memberPath(path, "argv"));
    if (const Tree* v = Checker::optional(*run, "env")) readEnv(*v, memberPath(path, "env"));
    if (const Tree* v = Checker::optional(*run, "workingDirectory")) {
      std::string at = memberPath(path, "workingDirectory");
      facts_.workingDirectoryValid = false;
      if (std::optional<std::string> dir = check_.string(*v, at)) {
        if (std::string problem = absolutePathProblem(*dir); !problem.empty()) {
          check_.fail(at, problem);
        } else if (*dir == "/") {
          check_.fail(at, "must not be \"/\" (it becomes a fresh tmpfs)");
        } else {
          out.workingDirectory = *dir;
          facts_.workingDirectoryValid = true;
        }
      }
    }
    if (const Tree* v = Checker::optional(*run, "image")) {
      std::string at = memberPath(path, "image");
      if (std::optional<std::string> image = freeText(*v, at)) {
        if (image->find_first_of(" \t") != std::string::npos) {
          check_.fail(at, "must not contain whitespace, got " + q(*image));
        } else {
          out.image = *image;
        }
      }
    }
    if (const Tree* v = Checker::optional(*run, "secretDelivery")) {
      std::optional<std::string> mode =
          check_.oneOf(*v, memberPath(path, "secretDelivery"), {"env", "file"});
      if (mode) out.secretDelivery = *mode;
    }
    facts_.secretsByEnv = out.secretDelivery == "env";
    if (const Tree* v = Checker::optional(*run, "timeoutMs")) {
      std::string at = memberPath(path, "timeoutMs");
      out.timeoutMs = check_.bounded(*v, at, 1, kMaxTimeoutMs);
      if (out.timeoutMs) facts_.timeoutMs.emplace(at, *out.timeoutMs);
    }
    if (const Tree* v = Checker::optional(*run, "limits")) {
      readLimits(*v, memberPath(path, "limits"), out.limits);
    }
  }

  void readArgv(const Tree& value, const std::string& path) {
    const Tree* argv = check_.array(value, path);
    if (!argv) return;
    if (argv->empty()) {
      check_.fail(path, "must not be empty");
      return;
    }
    std::vector<std::string>& out = doc_.spec.run->argv;
    bool allStrings = true;
    for (size_t i = 0; i < argv->size(); ++i) {
      std::string at = indexPath(path, i);
      std::optional<std::string> arg = check_.string((*argv)[i], at);
      if (!arg) {
        allStrings = false;
        continue;
      }
      if (arg->find('\0') != std::string::npos) check_.fail(at, "must not contain NUL");
      if (i == 0 && !arg->starts_with("/")) {
        check_.fail(at, "must be an absolute path, got " + q(*arg));
      }
      out.push_back(std::move(*arg));
    }
    if (!allStrings) return;
    if (size_t size = argvEncodedSize(out); size > kMaxArgvEncodedBytes) {
      check_.fail(path, "encodes to " + std::to_string(size) + " bytes (base64 of its JSON), " +
                            "over the " + std::to_string(kMaxArgvEncodedBytes) + "-byte limit");
    }
  }

  void readEnv(const Tree& value, const std::string& path) {
    if (!value.is_object()) {
      check_.fail(path, "expected an object, got " + typeName(value));
      return;
    }
    for (const auto& [name, entry] : value.items()) {
      std::string at = memberPath(path, name);
      bool nameOk = !name.empty() && !isDigit(name.front()) &&
                    onlyChars(name, [](char c) { return isNameChar(c) && c != '.' && c != '-'; });
      if (!nameOk) check_.fail(at, "is not a variable name ([A-Za-z_][A-Za-z0-9_]*)");
      std::optional<std::string> setting = check_.string(entry, at);
      if (!setting) continue;
      if (setting->find('\0') != std::string::npos) {
        check_.fail(at, "must not contain NUL");
        continue;
      }
      if (!nameOk) continue;
      facts_.envNames.emplace_back(at, name);
      doc_.spec.run->env.emplace_back(name, std::move(*setting));
    }
  }

  void readLimits(const Tree& value, const std::string& path, Limits& out) {
    const Tree* limits = check_.object(
        value, path, {"memoryMaxBytes", "cpuMax", "pidsMax", "gracefulShutdownSeconds"});
    if (!limits) return;
    if (const Tree* v = Checker::optional(*limits, "memoryMaxBytes")) {
      out.memoryMaxBytes =
          check_.bounded(*v, memberPath(path, "memoryMaxBytes"), 1, kMaxMemoryMaxBytes);
    }
    if (const Tree* v = Checker::optional(*limits, "cpuMax")) {
      std::string at = memberPath(path, "cpuMax");
      if (const Tree* cpu = check_.object(*v, at, {"quotaMicros", "periodMicros"})) {
        CpuMax& cpuOut = out.cpuMax.emplace();
        if (const Tree* quota = check_.required(*cpu, "quotaMicros", at)) {
          cpuOut.quotaMicros =
              check_.bounded(*quota, memberPath(at, "quotaMicros"), 1000, kMaxCpuQuotaMicros)
                  .value_or(0);
        }
        // The kernel refuses a CFS period outside 1 ms..1 s (kernel/sched/core.c,
        // min_cfs_quota_period / max_cfs_quota_period); refusing it here names the field.
        if (const Tree* period = Checker::optional(*cpu, "periodMicros")) {
          cpuOut.periodMicros =
              check_.integer(*period, memberPath(at, "periodMicros"), 1000, 1000000).value_or(0);
        }
      }
    }
    if (const Tree* v = Checker::optional(*limits, "pidsMax")) {
      out.pidsMax = check_.bounded(*v, memberPath(path, "pidsMax"), 1, kMaxPidsMax);
    }
    if (const Tree* v = Checker::optional(*limits, "gracefulShutdownSeconds")) {
      out.gracefulShutdownSeconds = check_.bounded(*v, memberPath(path, "gracefulShutdownSeconds"),
                                                   1, kMaxGracefulShutdownSeconds);
    }
  }

  // ---- export

  void readExport(const Tree& value, const std::string& path) {
    const Tree* exportSpec = check_.object(value, path, {"artifacts"});
    if (!exportSpec) return;
    const Tree* v = Checker::optional(*exportSpec, "artifacts");
    if (v == nullptr) return;
    std::string at = memberPath(path, "artifacts");
    const Tree* list = check_.array(*v, at);
    if (!list) return;
    std::map<std::string, size_t> firstAt;
    for (size_t i = 0; i < list->size(); ++i) {
      std::string entryPath = indexPath(at, i);
      const Tree* artifact = check_.object((*list)[i], entryPath, {"name", "path", "contentType"});
      if (!artifact) continue;
      Artifact out;
      if (const Tree* name = check_.required(*artifact, "name", entryPath)) {
        std::string namePath = memberPath(entryPath, "name");
        if (std::optional<std::string> portable = artifactName(*name, namePath)) {
          if (auto [it, fresh] = firstAt.emplace(*portable, i); !fresh) {
            check_.fail(namePath, q(*portable) + " is already used by artifacts[" +
                                      std::to_string(it->second) + "]");
          }
          out.name = *portable;
        }
      }
      if (const Tree* p = check_.required(*artifact, "path", entryPath)) {
        std::string pathPath = memberPath(entryPath, "path");
        if (std::optional<std::string> inCell = check_.string(*p, pathPath)) {
          if (std::string problem = absolutePathProblem(*inCell); !problem.empty()) {
            check_.fail(pathPath, problem);
          } else {
            out.path = *inCell;
            facts_.artifactPaths.emplace_back(pathPath, *inCell);
          }
        }
      }
      if (const Tree* type = Checker::optional(*artifact, "contentType")) {
        std::string typePath = memberPath(entryPath, "contentType");
        if (std::optional<std::string> media = check_.string(*type, typePath)) {
          if (!isMediaType(*media)) {
            check_.fail(typePath,
                        "must be a media type like \"application/xml\", got " + q(*media));
          } else {
            out.contentType = *media;
          }
        }
      }
      doc_.spec.exportSpec.artifacts.push_back(std::move(out));
    }
  }

  // A portable file name: the export sinks use it as one path segment on every target.
  std::optional<std::string> artifactName(const Tree& value, const std::string& path) {
    std::optional<std::string> name = check_.string(value, path);
    if (!name) return std::nullopt;
    if (name->empty()) {
      check_.fail(path, "must not be empty");
      return std::nullopt;
    }
    size_t before = check_.count();
    if (name->find('/') != std::string::npos) check_.fail(path, "must not contain \"/\"");
    if (name->find('\\') != std::string::npos) check_.fail(path, "must not contain a backslash");
    if (hasControlCharacter(*name)) {
      check_.fail(path, "must not contain NUL or other control characters");
    }
    if (name->find("..") != std::string::npos) check_.fail(path, "must not contain \"..\"");
    if (*name == ".") check_.fail(path, "must not be \".\"");
    if (name->front() == '~') check_.fail(path, "must not start with \"~\"");
    if (name->size() > kMaxNameBytes) {
      check_.fail(path, "must be at most " + std::to_string(kMaxNameBytes) + " bytes, got " +
                            std::to_string(name->size()));
    }
    if (check_.count() != before) return std::nullopt;
    return name;
  }

  // ---- rules relating fields, after every field was read

  void crossRules() {
    if (facts_.allowlistUsable) {
      const std::vector<std::string>& allowlist =
          doc_.spec.authority.dnsAuthority.hostnameAllowlist;
      for (const auto& [path, host] : facts_.egressHosts) {
        if (!allowlistCovers(allowlist, host)) {
          check_.fail(path, q(host) + " is not covered by spec.authority.dnsAuthority." +
                                "hostnameAllowlist, so the cell could never resolve it");
        }
      }
    }
    // A variable and a secret of the same name: one would silently replace the other.
    if (facts_.secretsByEnv) {
      const std::vector<std::string>& secrets = doc_.spec.authority.secretRefs;
      for (const auto& [path, name] : facts_.envNames) {
        if (std::find(secrets.begin(), secrets.end(), name) != secrets.end()) {
          check_.fail(path, "collides with secret " + q(name) + ", which is delivered in env");
        }
      }
    }
    if (facts_.timeoutMs && facts_.ttlSeconds) {
      uint64_t ttl = *facts_.ttlSeconds;
      uint64_t timeout = facts_.timeoutMs->second;
      // Both are within their bounds here (bounded() refused anything else), so ttl * 1000
      // cannot overflow.
      static_assert(kMaxTtlSeconds <= kU64Max / 1000);
      if (timeout > ttl * 1000) {
        check_.fail(facts_.timeoutMs->first, std::to_string(timeout) +
                                                 " exceeds spec.lifetime.ttlSeconds * 1000 (" +
                                                 std::to_string(ttl) + "000)");
      }
    }
    if (facts_.workingDirectoryValid) {
      std::string workingDirectory =
          doc_.spec.run ? doc_.spec.run->workingDirectory : RunSpec{}.workingDirectory;
      for (const auto& [path, value] : facts_.artifactPaths) {
        if (!value.starts_with(workingDirectory + "/")) {
          check_.fail(path, q(value) + " is not inside workingDirectory " + q(workingDirectory));
        }
      }
    }
  }

  Checker& check_;
  CellDocument& doc_;
  CrossFacts facts_;
};

// ---------------------------------------------------------------------------------------------
// Result assembly

nlohmann::json toJson(const Tree& tree) {
  switch (tree.type()) {
    case Tree::value_t::object: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [name, member] : tree.items()) out[name] = toJson(member);
      return out;
    }
    case Tree::value_t::array: {
      nlohmann::json out = nlohmann::json::array();
      for (const Tree& element : tree) out.push_back(toJson(element));
      return out;
    }
    case Tree::value_t::boolean:
      return tree.get<bool>();
    case Tree::value_t::number_integer:
      return tree.get<int64_t>();
    case Tree::value_t::number_unsigned:
      return tree.get<uint64_t>();
    case Tree::value_t::number_float:
      return tree.get<double>();
    case Tree::value_t::string:
      return tree.get<std::string>();
    default:
      return nullptr;
  }
}

// Writes the normalised hostnames of a valid document back into its JSON, so the digest covers
// the names as the cell will use them ("API.GitHub.com" and "api.github.com" are one grant).
void lowerCaseHostnames(nlohmann::json& root, const CellDocument& document) {
  nlohmann::json& spec = root["spec"];
  if (!spec.contains("authority") || !spec["authority"].is_object()) return;
  nlohmann::json& authority = spec["authority"];
  if (authority.contains("egressRules") && authority["egressRules"].is_array()) {
    nlohmann::json& rules = authority["egressRules"];
    const std::vector<EgressRule>& parsed = document.spec.authority.egressRules;
    for (size_t i = 0; i < rules.size() && i < parsed.size(); ++i) {
      if (parsed[i].host && rules[i].contains("host")) rules[i]["host"] = *parsed[i].host;
    }
  }
  if (authority.contains("dnsAuthority") && authority["dnsAuthority"].is_object() &&
      authority["dnsAuthority"].contains("hostnameAllowlist") &&
      authority["dnsAuthority"]["hostnameAllowlist"].is_array()) {
    nlohmann::json& list = authority["dnsAuthority"]["hostnameAllowlist"];
    const std::vector<std::string>& parsed = document.spec.authority.dnsAuthority.hostnameAllowlist;
    for (size_t i = 0; i < list.size() && i < parsed.size(); ++i) list[i] = parsed[i];
  }
}

}  // namespace

ParseResult parseCellDocument(std::string_view bytes) {
  ParseResult result;
  if (bytes.size() > kMaxDocumentBytes) {
    result.violations.push_back({"$", "document is " + std::to_string(bytes.size()) +
                                          " bytes, over the " + std::to_string(kMaxDocumentBytes) +
                                          "-byte limit"});
    return result;
  }
  StructuredText read =
      readStructuredText(bytes, {.maxDepth = kMaxDocumentDepth, .documentName = "cell document"});
  if (read.fatal) {
    result.violations.push_back({"$", *read.fatal});
    return result;
  }
  result.violations = std::move(read.violations);
  CellDocument document;
  Checker check(result.violations, read.numberTexts);
  SpecReader(check, document).read(read.tree);
  result.canonicalJson = toJson(read.tree);
  if (result.violations.empty()) {
    lowerCaseHostnames(result.canonicalJson, document);
    result.document = std::move(document);
  }
  return result;
}

std::string specDigest(const ParseResult& result) {
  if (!result.document) return {};
  return hexEncode(sha256(canonicalJson(result.canonicalJson)));
}

ParseResult chooseBackend(const ParseResult& parsed, const std::string& backend) {
  ParseResult chosen;
  chosen.canonicalJson = parsed.canonicalJson;
  if (!parsed.document) {
    chosen.violations = parsed.violations;
    return chosen;
  }
  const auto& named = parsed.document->spec.placement.backend;
  if (named && *named != backend) {
    chosen.violations.push_back({"spec.placement.backend", "the document names " + q(*named) +
                                                               ", not the chosen " + q(backend)});
    return chosen;
  }
  // Through the validator, so the name is held to the same list and rules as the field.
  nlohmann::json document = parsed.canonicalJson;
  document["spec"]["placement"]["backend"] = backend;
  ParseResult reparsed = parseCellDocument(document.dump());
  chosen.document = std::move(reparsed.document);
  chosen.violations = std::move(reparsed.violations);
  return chosen;
}

size_t argvEncodedSize(const std::vector<std::string>& argv) {
  std::string compact =
      nlohmann::json(argv).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return (compact.size() + 2) / 3 * 4;
}

std::optional<IpRange> parseRangeField(std::string_view text, std::string_view example,
                                       std::string* problem) {
  IpRangeError why;
  std::optional<IpRange> range = parseCidr(text, &why);
  if (range) return range;
  switch (why.problem) {
    case IpRangeProblem::kPrefixOutOfRange:
      *problem = "prefix length " + std::to_string(why.prefix) + " is out of range 0.." +
                 std::to_string(why.maxPrefix);
      break;
    case IpRangeProblem::kHostBitsSet:
      *problem = q(text) + " has host bits set; the range is " + q(formatIpRange(why.network));
      break;
    case IpRangeProblem::kNoPrefix:
    case IpRangeProblem::kBadAddress:
    case IpRangeProblem::kBadPrefixLength:
      *problem = "must be an address range like " + q(example) + ", got " + q(text);
      break;
  }
  return std::nullopt;
}

}  // namespace cellos::core
