#include "core/host_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellos::core {
namespace {

using Lines = std::vector<std::string>;

Lines formatted(const std::vector<Violation>& violations) {
  Lines out;
  for (const Violation& violation : violations) out.push_back(formatViolation(violation));
  return out;
}

Lines policyProblems(const std::string& text) {
  HostPolicyParseResult result = parseHostPolicy(text);
  EXPECT_EQ(result.policy.has_value(), result.violations.empty()) << text;
  return formatted(result.violations);
}

HostPolicy policyFrom(const std::string& text) {
  HostPolicyParseResult result = parseHostPolicy(text);
  EXPECT_TRUE(result.policy) << text << "\n"
                             << ::testing::PrintToString(formatted(result.violations));
  return result.policy.value_or(HostPolicy{});
}

// A valid document: the minimal one with `extra` appended under spec (YAML, two-space indent).
CellDocument document(const std::string& extra = "", uint64_t ttlSeconds = 60) {
  std::string text =
      "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: t-1\n"
      "  lifetime:\n    ttlSeconds: " +
      std::to_string(ttlSeconds) + "\n" + extra;
  ParseResult parsed = parseCellDocument(text);
  EXPECT_TRUE(parsed.document) << text << "\n"
                               << ::testing::PrintToString(formatted(parsed.violations));
  return parsed.document.value_or(CellDocument{});
}

Lines check(const std::string& policy, const CellDocument& doc) {
  return formatted(checkHostPolicy(policyFrom(policy), doc));
}

const std::string kRun = "  run:\n    argv: [/bin/true]\n";

// ---------------------------------------------------------------------------------------------
// The policy file

TEST(HostPolicyFile, ReadsEveryFieldFromYaml) {
  HostPolicy policy = policyFrom(
      "# caps\n"
      "maxTtlSeconds: 3600\n"
      "maxTimeoutMs: 600000\n"
      "maxMemoryBytes: 1073741824\n"
      "maxPidsMax: 512\n"
      "allowedBackends: [linux]\n"
      "allowedImages: [host, \"debian-12\"]\n"
      "allowedEgressHosts: [API.GitHub.com., \"*.pkg.dev\"]\n"
      "allowedEgressCidrs: [10.0.0.0/8, \"FD00::/8\"]\n");
  EXPECT_EQ(policy.maxTtlSeconds, 3600u);
  EXPECT_EQ(policy.maxTimeoutMs, 600000u);
  EXPECT_EQ(policy.maxMemoryBytes, 1073741824u);
  EXPECT_EQ(policy.maxPidsMax, 512u);
  EXPECT_EQ(policy.allowedBackends, Lines({"linux"}));
  EXPECT_EQ(policy.allowedImages, Lines({"host", "debian-12"}));
  // Normalised as the document's hostnames are, so they compare directly.
  EXPECT_EQ(policy.allowedEgressHosts, Lines({"api.github.com", "*.pkg.dev"}));
  EXPECT_EQ(policy.allowedEgressCidrs, Lines({"10.0.0.0/8", "fd00::/8"}));
}

TEST(HostPolicyFile, JsonReadsTheSameAsYaml) {
  HostPolicy policy = policyFrom(
      R"({"maxTtlSeconds": 3600, "maxPidsMax": 64, "allowedEgressHosts": ["a.example"],
          "allowedEgressCidrs": []})");
  EXPECT_EQ(policy.maxTtlSeconds, 3600u);
  EXPECT_EQ(policy.maxPidsMax, 64u);
  EXPECT_FALSE(policy.maxTimeoutMs);
  EXPECT_EQ(policy.allowedEgressHosts, Lines({"a.example"}));
  EXPECT_EQ(policy.allowedEgressCidrs, Lines{});
}

TEST(HostPolicyFile, AbsentFieldsRestrictNothingAndEmptyListsGrantNothing) {
  HostPolicy open = policyFrom("{}");
  EXPECT_FALSE(open.maxTtlSeconds || open.maxTimeoutMs || open.maxMemoryBytes || open.maxPidsMax);
  EXPECT_FALSE(open.allowedBackends || open.allowedImages || open.allowedEgressHosts ||
               open.allowedEgressCidrs);
  HostPolicy closed = policyFrom("allowedEgressHosts: []\nallowedEgressCidrs: []\n");
  ASSERT_TRUE(closed.allowedEgressHosts && closed.allowedEgressCidrs);
  EXPECT_TRUE(closed.allowedEgressHosts->empty());
  EXPECT_TRUE(closed.allowedEgressCidrs->empty());
}

TEST(HostPolicyFile, UnknownAndDuplicateKeysAreRefused) {
  EXPECT_EQ(policyProblems("maxTTLSeconds: 60\nallowedHosts: [a.example]\n"),
            Lines({"$: unknown field \"maxTTLSeconds\"", "$: unknown field \"allowedHosts\""}));
  EXPECT_EQ(policyProblems("maxTtlSeconds: 60\nmaxTtlSeconds: 6000\n"),
            Lines({"$: duplicate key \"maxTtlSeconds\""}));
  EXPECT_EQ(policyProblems(R"({"maxTtlSeconds": 60, "maxTtlSeconds": 6000})"),
            Lines({"$: duplicate key \"maxTtlSeconds\""}));
  // A cell document is not a policy.
  EXPECT_EQ(policyProblems("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec: {}\n"),
            Lines({"$: unknown field \"apiVersion\"", "$: unknown field \"kind\"",
                   "$: unknown field \"spec\""}));
}

TEST(HostPolicyFile, CapsArePositiveIntegers) {
  EXPECT_EQ(policyProblems("maxTtlSeconds: 0\n"),
            Lines({"maxTtlSeconds: must be positive, got 0"}));
  EXPECT_EQ(policyProblems("maxTimeoutMs: -5\n"),
            Lines({"maxTimeoutMs: must be positive, got -5"}));
  EXPECT_EQ(policyProblems("maxMemoryBytes: \"1073741824\"\n"),
            Lines({"maxMemoryBytes: expected an integer, got string"}));
  EXPECT_EQ(policyProblems("maxMemoryBytes: 1G\n"),
            Lines({"maxMemoryBytes: expected an integer, got string"}));
  EXPECT_EQ(policyProblems("maxPidsMax: 1.5\n"),
            Lines({"maxPidsMax: expected an integer, got 1.5"}));
  // A forgotten value must not quietly mean "no cap".
  EXPECT_EQ(policyProblems("maxTtlSeconds:\n"),
            Lines({"maxTtlSeconds: expected an integer, got null"}));
  EXPECT_EQ(policyProblems(R"({"maxPidsMax": true})"),
            Lines({"maxPidsMax: expected an integer, got boolean"}));
}

// Each cap is bounded like the field it caps: the field's bound is accepted, one more refused.
TEST(HostPolicyFile, CapsAreBoundedLikeTheFieldsTheyCap) {
  const std::pair<const char*, uint64_t> caps[] = {{"maxTtlSeconds", kMaxTtlSeconds},
                                                   {"maxTimeoutMs", kMaxTimeoutMs},
                                                   {"maxMemoryBytes", kMaxMemoryMaxBytes},
                                                   {"maxPidsMax", kMaxPidsMax}};
  for (const auto& [name, bound] : caps) {
    EXPECT_EQ(policyProblems(std::string(name) + ": " + std::to_string(bound) + "\n"), Lines{})
        << name;
    EXPECT_EQ(policyProblems(std::string(name) + ": " + std::to_string(bound + 1) + "\n"),
              Lines({std::string(name) + ": " + std::to_string(bound + 1) +
                     " exceeds the maximum " + std::to_string(bound)}));
  }
  EXPECT_EQ(policyProblems("maxTtlSeconds: 9223372036854775807\n"),
            Lines({"maxTtlSeconds: 9223372036854775807 exceeds the maximum 31536000"}));
  // Beyond 64 bits, named as written (the reader holds it as a double).
  EXPECT_EQ(policyProblems("maxTtlSeconds: 18446744073709551616\n"),
            Lines({"maxTtlSeconds: 18446744073709551616 exceeds the maximum 31536000"}));
  EXPECT_EQ(policyProblems(R"({"maxPidsMax": -99999999999999999999})"),
            Lines({"maxPidsMax: must be positive, got -99999999999999999999"}));
  EXPECT_EQ(policyProblems("maxMemoryBytes: 1e30\n"),
            Lines({"maxMemoryBytes: expected an integer, got 1e30"}));
}

TEST(HostPolicyFile, ListsAreArraysOfStrings) {
  EXPECT_EQ(policyProblems("allowedImages: host\n"),
            Lines({"allowedImages: expected an array, got string"}));
  EXPECT_EQ(policyProblems("allowedEgressHosts:\n"),
            Lines({"allowedEgressHosts: expected an array, got null"}));
  EXPECT_EQ(policyProblems("allowedEgressCidrs: [10.0.0.0/8, 5, {a: b}]\n"),
            Lines({"allowedEgressCidrs[1]: expected a string, got number",
                   "allowedEgressCidrs[2]: expected a string, got object"}));
}

TEST(HostPolicyFile, BackendsAndImages) {
  EXPECT_EQ(policyProblems("allowedBackends: [linux, kvm, linux]\n"),
            Lines({"allowedBackends[1]: \"kvm\" is not one of linux, gvisor, microvm, firecracker",
                   "allowedBackends[2]: \"linux\" is already listed at [0]"}));
  EXPECT_EQ(policyProblems("allowedBackends: []\nallowedImages: []\n"),
            Lines({"allowedBackends: must not be empty: every cell has one, so nothing could run "
                   "(leave allowedBackends out for no restriction)",
                   "allowedImages: must not be empty: every cell has one, so nothing could run "
                   "(leave allowedImages out for no restriction)"}));
  EXPECT_EQ(policyProblems("allowedImages: [\"\", \"my image\", host, host]\n"),
            Lines({"allowedImages[0]: must not be empty",
                   "allowedImages[1]: must not contain whitespace, got \"my image\"",
                   "allowedImages[3]: \"host\" is already listed at [2]"}));
}

TEST(HostPolicyFile, HostsAreHostnamesOrWildcards) {
  EXPECT_EQ(policyProblems("allowedEgressHosts: [\"*\", \"a.*.example\", \"-bad.example\", "
                           "10.0.0.1, A.example, a.example.]\n"),
            Lines({"allowedEgressHosts[0]: wildcard \"*\" alone is not allowed",
                   "allowedEgressHosts[1]: wildcard must be a single leading \"*.\"",
                   "allowedEgressHosts[2]: label \"-bad\" must not start or end with '-'",
                   "allowedEgressHosts[3]: \"10.0.0.1\" is not a hostname: its last label is all "
                   "digits (addresses go in allowedEgressCidrs)",
                   "allowedEgressHosts[5]: \"a.example\" is already listed at [4]"}));
}

TEST(HostPolicyFile, CidrsAreRangesWithoutHostBits) {
  EXPECT_EQ(policyProblems("allowedEgressCidrs: [10.0.0.0, 10.0.0.1/8, 10.0.0.0/33, "
                           "\"fd00::/129\", example.com/8, \"fd00::/8\", \"FD00:0::/8\"]\n"),
            Lines({"allowedEgressCidrs[0]: must be an address range like \"10.0.0.0/8\", got "
                   "\"10.0.0.0\"",
                   "allowedEgressCidrs[1]: \"10.0.0.1/8\" has host bits set; the range is "
                   "\"10.0.0.0/8\"",
                   "allowedEgressCidrs[2]: prefix length 33 is out of range 0..32",
                   "allowedEgressCidrs[3]: prefix length 129 is out of range 0..128",
                   "allowedEgressCidrs[4]: must be an address range like \"10.0.0.0/8\", got "
                   "\"example.com/8\"",
                   "allowedEgressCidrs[6]: \"fd00::/8\" is already listed at [5]"}));
}

// Issue 14: the host is never a destination unless the policy lists it; nothing by default.
TEST(HostPolicyFile, AllowHostDestinationsIsAnExplicitListOfRangesAndEmptyByDefault) {
  EXPECT_TRUE(policyFrom("maxTtlSeconds: 60\n").allowHostDestinations.empty());
  EXPECT_TRUE(policyFrom("allowHostDestinations: []\n").allowHostDestinations.empty());
  EXPECT_EQ(
      policyFrom("allowHostDestinations: [10.215.0.1/32, \"FD00::/8\"]\n").allowHostDestinations,
      Lines({"10.215.0.1/32", "fd00::/8"}));
  EXPECT_EQ(policyFrom("{\"allowHostDestinations\": [\"10.215.0.1/32\"]}").allowHostDestinations,
            Lines({"10.215.0.1/32"}));
  EXPECT_EQ(policyProblems("allowHostDestinations: [10.215.0.1, 10.215.0.1/24, yes, "
                           "10.215.0.1/32, 10.215.0.1/32]\n"),
            Lines({"allowHostDestinations[0]: must be an address range like \"10.0.0.0/8\", "
                   "got \"10.215.0.1\"",
                   "allowHostDestinations[1]: \"10.215.0.1/24\" has host bits set; the range is "
                   "\"10.215.0.0/24\"",
                   "allowHostDestinations[2]: must be an address range like \"10.0.0.0/8\", "
                   "got \"yes\"",
                   "allowHostDestinations[4]: \"10.215.0.1/32\" is already listed at [3]"}));
  EXPECT_EQ(policyProblems("allowHostDestinations: true\n"),
            Lines({"allowHostDestinations: expected an array, got boolean"}));
}

TEST(HostPolicyFile, EveryViolationAtOnce) {
  EXPECT_EQ(
      policyProblems("maxTtlSeconds: 0\nmaxPidsMax: many\nallowedBackends: [qemu]\n"
                     "extra: 1\n"),
      Lines({"$: unknown field \"extra\"", "maxTtlSeconds: must be positive, got 0",
             "maxPidsMax: expected an integer, got string",
             "allowedBackends[0]: \"qemu\" is not one of linux, gvisor, microvm, firecracker"}));
}

TEST(HostPolicyFile, UnreadableFilesAreRefusedWithOneViolation) {
  EXPECT_EQ(policyProblems(""), Lines({"$: policy is empty"}));
  EXPECT_EQ(policyProblems("# nothing but a comment\n"), Lines({"$: policy is empty"}));
  EXPECT_EQ(policyProblems("- maxTtlSeconds: 60\n"), Lines({"$: expected an object, got array"}));
  EXPECT_EQ(policyProblems("maxTtlSeconds: 60\n---\nmaxTtlSeconds: 6000\n"),
            Lines({"$: unsupported YAML at line 2, column 1: a file holds one host policy, found a "
                   "second"}));
  EXPECT_EQ(policyProblems("maxTtlSeconds: !!int 60\n"),
            Lines({"$: unsupported YAML at line 1, column 16: tag \"tag:yaml.org,2002:int\" is "
                   "not supported"}));
  EXPECT_EQ(policyProblems(std::string("maxTtlSeconds: 60\n\0maxPidsMax: 1\n", 32)),
            Lines({"$: control character U+0000 at line 2, column 1"}));
  EXPECT_EQ(policyProblems(std::string("maxTtlSeconds: 60\x01\n")),
            Lines({"$: control character U+0001 at line 1, column 18"}));
  EXPECT_EQ(policyProblems(std::string(kMaxHostPolicyBytes + 1, ' ')),
            Lines({"$: policy is 1048577 bytes, over the 1048576-byte limit"}));

  Lines yaml = policyProblems("maxTtlSeconds: [60\n");
  ASSERT_EQ(yaml.size(), 1u);
  EXPECT_TRUE(yaml[0].starts_with("$: invalid YAML at line ")) << yaml[0];
  EXPECT_EQ(policyProblems("{\"maxTtlSeconds\": 60,}"),
            Lines({"$: invalid JSON at line 1, column 22: syntax error while parsing object key - "
                   "unexpected '}'; expected string literal"}));
}

TEST(HostPolicyFile, AliasesCannotBlowUp) {
  // Each level doubles the values an alias-expanding reader would produce: 2^30 at the end. The
  // reader refuses the first anchor instead of expanding anything.
  std::string text = "a0: &a0 [x, x]\n";
  for (int i = 1; i <= 30; ++i) {
    text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) +
            ", *a" + std::to_string(i - 1) + "]\n";
  }
  EXPECT_EQ(
      policyProblems(text),
      Lines({"$: unsupported YAML at line 1, column 5: anchors (\"&a0\") are not supported"}));
}

// Found by fuzzing: yaml-cpp's node API (YAML::Load) allocated gigabytes for these few hundred
// bytes; the event-driven reader refuses the tag and stops.
TEST(HostPolicyFile, InputThatMadeYamlCppAllocateWithoutBoundIsRefusedCheaply) {
  std::string text =
      "# ExplrId: corp\n       , not the default.\napiVersion: cellos.io/v1\nkind: ExecutionCell\n"
      "spec:\n  id: t-1\n  n/true]etime:\n    ttlSeconds: 60\n  placement:\n    poolId: !!str 42\n";
  Lines problems = policyProblems(text);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(problems[0].starts_with("$: ")) << problems[0];
}

// ---------------------------------------------------------------------------------------------
// Checking documents

TEST(HostPolicyCheck, AnEmptyPolicyGrantsWhateverTheDocumentAsks) {
  CellDocument doc = document(
      "  placement: {backend: gvisor}\n"
      "  authority:\n"
      "    egressRules:\n"
      "      - {host: evil.example, port: 443, protocol: tcp}\n"
      "      - {cidr: 0.0.0.0/0, port: 443, protocol: tcp}\n"
      "    dnsAuthority: {hostnameAllowlist: [evil.example]}\n"
      "  run:\n    argv: [/bin/true]\n    image: anything\n    timeoutMs: 60000\n"
      "    limits: {memoryMaxBytes: 99999999999, pidsMax: 99999}\n",
      86400);
  EXPECT_EQ(formatted(checkHostPolicy(HostPolicy{}, doc)), Lines{});
  EXPECT_EQ(check("{}", doc), Lines{});
}

TEST(HostPolicyCheck, TtlAboveTheMaximum) {
  EXPECT_EQ(check("maxTtlSeconds: 3600\n", document("", 7200)),
            Lines({"spec.lifetime.ttlSeconds: 7200 exceeds the host's maximum 3600"}));
  EXPECT_EQ(check("maxTtlSeconds: 3600\n", document("", 3600)), Lines{});
}

TEST(HostPolicyCheck, TimeoutAboveTheMaximum) {
  EXPECT_EQ(check("maxTimeoutMs: 600000\n", document(kRun + "    timeoutMs: 900000\n", 3600)),
            Lines({"spec.run.timeoutMs: 900000 exceeds the host's maximum 600000"}));
  EXPECT_EQ(check("maxTimeoutMs: 600000\n", document(kRun + "    timeoutMs: 600000\n", 3600)),
            Lines{});
  // Absent: it would be the whole ttl, and the cap becomes its default instead (see below).
  EXPECT_EQ(check("maxTimeoutMs: 600000\n", document(kRun, 3600)), Lines{});
}

TEST(HostPolicyCheck, MemoryAndPidsAboveTheMaximum) {
  std::string policy = "maxMemoryBytes: 268435456\nmaxPidsMax: 64\n";
  EXPECT_EQ(
      check(policy, document(kRun + "    limits: {memoryMaxBytes: 536870912, pidsMax: 65}\n")),
      Lines({"spec.run.limits.memoryMaxBytes: 536870912 exceeds the host's maximum 268435456",
             "spec.run.limits.pidsMax: 65 exceeds the host's maximum 64"}));
  EXPECT_EQ(
      check(policy, document(kRun + "    limits: {memoryMaxBytes: 268435456, pidsMax: 64}\n")),
      Lines{});
  // Absent: the caps become the defaults.
  EXPECT_EQ(check(policy, document(kRun)), Lines{});
}

TEST(HostPolicyFile, DefaultBackendIsABackendTheHostAllows) {
  EXPECT_EQ(policyFrom("defaultBackend: gvisor\n").defaultBackend, "gvisor");
  EXPECT_FALSE(policyFrom("maxPidsMax: 64\n").defaultBackend);
  EXPECT_EQ(policyProblems("defaultBackend: kvm\n"),
            Lines({"defaultBackend: \"kvm\" is not one of linux, gvisor, microvm, firecracker"}));
  EXPECT_EQ(policyProblems("defaultBackend: [gvisor]\n"),
            Lines({"defaultBackend: expected a string, got array"}));
  EXPECT_EQ(policyProblems("defaultBackend: gvisor\nallowedBackends: [linux]\n"),
            Lines({"defaultBackend: \"gvisor\" is not in allowedBackends (linux): no document "
                   "could use it"}));
  EXPECT_TRUE(policyProblems("defaultBackend: gvisor\nallowedBackends: [gvisor, linux]\n").empty());
}

TEST(HostPolicyCheck, ADocumentWithoutABackendIsHeldToTheHostsDefault) {
  EXPECT_EQ(check("defaultBackend: gvisor\nallowedBackends: [gvisor]\n", document()), Lines{});
  EXPECT_EQ(check("defaultBackend: gvisor\nallowedBackends: [gvisor]\n",
                  document("  placement: {backend: linux}\n")),
            Lines({"spec.placement.backend: \"linux\" is not allowed on this host (allowed: "
                   "gvisor)"}));
}

TEST(HostPolicyDefaults, ADocumentWithoutABackendGetsTheHostsDefault) {
  CellDocument doc = document(kRun);
  applyHostPolicyDefaults(policyFrom("defaultBackend: gvisor\n"), doc);
  EXPECT_EQ(doc.spec.placement.backend, "gvisor");
  CellDocument named = document("  placement: {backend: linux}\n" + kRun);
  applyHostPolicyDefaults(policyFrom("defaultBackend: gvisor\n"), named);
  EXPECT_EQ(named.spec.placement.backend, "linux") << "what the document says is kept";
  CellDocument none = document(kRun);
  applyHostPolicyDefaults(HostPolicy{}, none);
  EXPECT_FALSE(none.spec.placement.backend) << "no policy default: the runner's (linux)";
}

TEST(HostPolicyCheck, Backends) {
  std::string policy = "allowedBackends: [linux, firecracker]\n";
  EXPECT_EQ(check(policy, document("  placement: {backend: gvisor}\n")),
            Lines({"spec.placement.backend: \"gvisor\" is not allowed on this host (allowed: "
                   "linux, firecracker)"}));
  EXPECT_EQ(check(policy, document("  placement: {backend: firecracker}\n")), Lines{});
  EXPECT_EQ(check(policy, document()), Lines{});
  // A document that leaves the backend to the host is held to the default it will get.
  EXPECT_EQ(check("allowedBackends: [gvisor]\n", document()),
            Lines({"spec.placement.backend: \"linux\" (the default) is not allowed on this host "
                   "(allowed: gvisor)"}));
}

TEST(HostPolicyCheck, Images) {
  std::string policy = "allowedImages: [debian-12]\n";
  EXPECT_EQ(check(policy, document(kRun + "    image: ubuntu\n")),
            Lines({"spec.run.image: \"ubuntu\" is not allowed on this host (allowed: debian-12)"}));
  EXPECT_EQ(check(policy, document(kRun + "    image: debian-12\n")), Lines{});
  EXPECT_EQ(check(policy, document(kRun)),
            Lines({"spec.run.image: \"host\" (the default) is not allowed on this host (allowed: "
                   "debian-12)"}));
  // Without `run` the cell still boots on the default image.
  EXPECT_EQ(check(policy, document()),
            Lines({"spec.run.image: \"host\" (the default) is not allowed on this host (allowed: "
                   "debian-12)"}));
  EXPECT_EQ(check("allowedImages: [host]\n", document()), Lines{});
}

// Egress host rules need their names in the DNS allowlist; this writes both.
std::string hostRules(const std::vector<std::string>& hosts) {
  std::string rules, names;
  for (const std::string& host : hosts) {
    rules += "      - {host: \"" + host + "\", port: 443, protocol: tcp}\n";
    names += (names.empty() ? "\"" : ", \"") + host + "\"";
  }
  return "  authority:\n    egressRules:\n" + rules + "    dnsAuthority:\n" +
         "      hostnameAllowlist: [" + names + "]\n";
}

TEST(HostPolicyCheck, EgressHostsMustBeCovered) {
  std::string policy = "allowedEgressHosts: [api.github.com, \"*.pkg.dev\"]\n";
  EXPECT_EQ(check(policy, document(hostRules({"api.github.com", "a.pkg.dev", "a.b.pkg.dev"}))),
            Lines{});
  EXPECT_EQ(
      check(policy, document(hostRules({"api.github.com", "evil.example", "pkg.dev"}))),
      Lines({"spec.authority.egressRules[1].host: \"evil.example\" is not allowed on this host",
             "spec.authority.egressRules[2].host: \"pkg.dev\" is not allowed on this host",
             "spec.authority.dnsAuthority.hostnameAllowlist[1]: \"evil.example\" is not allowed "
             "on this host",
             "spec.authority.dnsAuthority.hostnameAllowlist[2]: \"pkg.dev\" is not allowed on "
             "this host"}));
}

TEST(HostPolicyCheck, ADocumentWildcardNeedsAPolicyWildcardThatCoversIt) {
  // Covered: the same wildcard, or one over its suffix.
  EXPECT_EQ(check("allowedEgressHosts: [\"*.pkg.dev\"]\n", document(hostRules({"*.pkg.dev"}))),
            Lines{});
  EXPECT_EQ(check("allowedEgressHosts: [\"*.dev\"]\n", document(hostRules({"*.pkg.dev"}))),
            Lines{});
  // Not covered: a plain name (it grants one name, the wildcard asks for all of them), and a
  // narrower wildcard.
  Lines refused = {
      "spec.authority.egressRules[0].host: \"*.pkg.dev\" is not allowed on this host",
      "spec.authority.dnsAuthority.hostnameAllowlist[0]: \"*.pkg.dev\" is not allowed on this "
      "host"};
  EXPECT_EQ(check("allowedEgressHosts: [pkg.dev, a.pkg.dev]\n", document(hostRules({"*.pkg.dev"}))),
            refused);
  EXPECT_EQ(check("allowedEgressHosts: [\"*.a.pkg.dev\"]\n", document(hostRules({"*.pkg.dev"}))),
            refused);
}

TEST(HostPolicyCheck, AnEmptyHostListRefusesEveryName) {
  EXPECT_EQ(check("allowedEgressHosts: []\n", document(hostRules({"a.example"}))),
            Lines({"spec.authority.egressRules[0].host: \"a.example\" is not allowed on this host",
                   "spec.authority.dnsAuthority.hostnameAllowlist[0]: \"a.example\" is not "
                   "allowed on this host"}));
  // CIDR rules are not host rules: the host list says nothing about them.
  EXPECT_EQ(check("allowedEgressHosts: []\n",
                  document("  authority:\n    egressRules:\n"
                           "      - {cidr: 10.0.0.0/8, port: 443, protocol: tcp}\n")),
            Lines{});
}

std::string cidrRules(const std::vector<std::string>& cidrs) {
  std::string rules;
  for (const std::string& cidr : cidrs) {
    rules += "      - {cidr: \"" + cidr + "\", port: 443, protocol: tcp}\n";
  }
  return "  authority:\n    egressRules:\n" + rules;
}

TEST(HostPolicyCheck, EgressCidrsMustLieInsideAnAllowedRange) {
  std::string policy = "allowedEgressCidrs: [10.20.0.0/16, \"fd00::/8\"]\n";
  EXPECT_EQ(check(policy, document(cidrRules({"10.20.0.0/16", "10.20.30.0/24", "10.20.30.40/32",
                                              "fd00:10::/32", "fdff::1/128"}))),
            Lines{});
  EXPECT_EQ(
      check(policy, document(cidrRules({"10.0.0.0/8", "10.21.0.0/16", "0.0.0.0/0", "fc00::/7",
                                        "::ffff:10.20.0.0/112", "2001:db8::/32"}))),
      Lines({"spec.authority.egressRules[0].cidr: \"10.0.0.0/8\" is not allowed on this host",
             "spec.authority.egressRules[1].cidr: \"10.21.0.0/16\" is not allowed on this host",
             "spec.authority.egressRules[2].cidr: \"0.0.0.0/0\" is not allowed on this host",
             "spec.authority.egressRules[3].cidr: \"fc00::/7\" is not allowed on this host",
             "spec.authority.egressRules[4].cidr: \"::ffff:10.20.0.0/112\" is not allowed on "
             "this host",
             "spec.authority.egressRules[5].cidr: \"2001:db8::/32\" is not allowed on this host"}));
  EXPECT_EQ(check("allowedEgressCidrs: []\n", document(cidrRules({"10.20.0.0/16"}))),
            Lines({"spec.authority.egressRules[0].cidr: \"10.20.0.0/16\" is not allowed on this "
                   "host"}));
  EXPECT_EQ(check("allowedEgressCidrs: [0.0.0.0/0]\n", document(cidrRules({"0.0.0.0/0"}))),
            Lines{});
}

TEST(HostPolicyCheck, ResolversMustLieInsideAnAllowedRange) {
  std::string resolvers =
      "  authority:\n    dnsAuthority:\n      resolvers:\n"
      "        - {resolverId: a, endpoint: \"10.0.0.2:53\", protocol: do53-udp}\n"
      "        - {resolverId: b, endpoint: \"[fd00::53]:53\", protocol: do53-udp}\n"
      "        - {resolverId: c, endpoint: \"192.0.2.1:53\", protocol: do53-tcp}\n";
  EXPECT_EQ(check("allowedEgressCidrs: [10.0.0.2/32, \"fd00::/8\"]\n", document(resolvers)),
            Lines({"spec.authority.dnsAuthority.resolvers[2].endpoint: \"192.0.2.1:53\" is not "
                   "allowed on this host"}));
}

TEST(HostPolicyCheck, EveryViolationAtOnceInSchemaOrder) {
  std::string policy =
      "maxTtlSeconds: 600\nmaxTimeoutMs: 60000\nmaxMemoryBytes: 1000000\nmaxPidsMax: 10\n"
      "allowedBackends: [linux]\nallowedImages: [host]\nallowedEgressHosts: [a.example]\n"
      "allowedEgressCidrs: [10.0.0.0/8]\n";
  CellDocument doc = document(
      "  placement: {backend: gvisor}\n"
      "  authority:\n"
      "    egressRules:\n"
      "      - {host: a.example, port: 443, protocol: tcp}\n"
      "      - {host: evil.example, port: 443, protocol: tcp}\n"
      "      - {cidr: 192.168.0.0/16, port: 5432, protocol: tcp}\n"
      "    dnsAuthority:\n"
      "      hostnameAllowlist: [a.example, evil.example]\n"
      "      resolvers: [{resolverId: r, endpoint: \"192.0.2.1:53\", protocol: do53-udp}]\n"
      "  run:\n    argv: [/bin/true]\n    image: ubuntu\n    timeoutMs: 120000\n"
      "    limits: {memoryMaxBytes: 2000000, pidsMax: 11}\n",
      7200);
  EXPECT_EQ(
      check(policy, doc),
      Lines({"spec.placement.backend: \"gvisor\" is not allowed on this host (allowed: linux)",
             "spec.lifetime.ttlSeconds: 7200 exceeds the host's maximum 600",
             "spec.authority.egressRules[1].host: \"evil.example\" is not allowed on this host",
             "spec.authority.egressRules[2].cidr: \"192.168.0.0/16\" is not allowed on this host",
             "spec.authority.dnsAuthority.hostnameAllowlist[1]: \"evil.example\" is not allowed "
             "on this host",
             "spec.authority.dnsAuthority.resolvers[0].endpoint: \"192.0.2.1:53\" is not allowed "
             "on this host",
             "spec.run.image: \"ubuntu\" is not allowed on this host (allowed: host)",
             "spec.run.timeoutMs: 120000 exceeds the host's maximum 60000",
             "spec.run.limits.memoryMaxBytes: 2000000 exceeds the host's maximum 1000000",
             "spec.run.limits.pidsMax: 11 exceeds the host's maximum 10"}));
}

// ---------------------------------------------------------------------------------------------
// Defaults from the caps

TEST(HostPolicyDefaults, CapsBecomeTheDefaultsOfWhatTheDocumentLeftOut) {
  HostPolicy policy =
      policyFrom("maxTimeoutMs: 600000\nmaxMemoryBytes: 268435456\nmaxPidsMax: 64\n");
  CellDocument doc = document(kRun, 3600);
  applyHostPolicyDefaults(policy, doc);
  ASSERT_TRUE(doc.spec.run);
  EXPECT_EQ(doc.spec.run->limits.memoryMaxBytes, 268435456u);
  EXPECT_EQ(doc.spec.run->limits.pidsMax, 64u);
  EXPECT_EQ(doc.spec.run->timeoutMs, 600000u);  // not the ttl's 3600000
}

TEST(HostPolicyDefaults, WhatTheDocumentSaysIsKept) {
  HostPolicy policy =
      policyFrom("maxTimeoutMs: 600000\nmaxMemoryBytes: 268435456\nmaxPidsMax: 64\n");
  CellDocument doc = document(
      kRun + "    timeoutMs: 1000\n    limits: {memoryMaxBytes: 4096, pidsMax: 2}\n", 3600);
  applyHostPolicyDefaults(policy, doc);
  EXPECT_EQ(doc.spec.run->limits.memoryMaxBytes, 4096u);
  EXPECT_EQ(doc.spec.run->limits.pidsMax, 2u);
  EXPECT_EQ(doc.spec.run->timeoutMs, 1000u);
}

TEST(HostPolicyDefaults, ATtlWithinTheTimeoutCapStaysTheTimeout) {
  HostPolicy policy = policyFrom("maxTimeoutMs: 600000\n");
  CellDocument doc = document(kRun, 600);  // 600000 ms: exactly the cap
  applyHostPolicyDefaults(policy, doc);
  EXPECT_FALSE(doc.spec.run->timeoutMs);
  CellDocument huge = document(kRun, kMaxTtlSeconds);  // the longest ttl a document may have
  applyHostPolicyDefaults(policy, huge);
  EXPECT_EQ(huge.spec.run->timeoutMs, 600000u);
}

// A document and a host that leave the limits open still get bounded ones (issue 17: a probe
// cell wrote 3 GB to /tmp and allocated 2 GB more); the timeout stays the ttl.
TEST(HostPolicyDefaults, NoCapsGiveTheBuiltInLimitsAndNoRunNoChange) {
  CellDocument doc = document(kRun, 3600);
  applyHostPolicyDefaults(HostPolicy{}, doc);
  EXPECT_EQ(doc.spec.run->limits.memoryMaxBytes, kDefaultMemoryBytes);
  EXPECT_EQ(doc.spec.run->limits.pidsMax, kDefaultPidsMax);
  EXPECT_FALSE(doc.spec.run->timeoutMs);
  CellDocument vm = document(kRun + "", 3600);
  vm.spec.placement.backend = "microvm";
  applyHostPolicyDefaults(HostPolicy{}, vm);
  EXPECT_EQ(vm.spec.run->limits.memoryMaxBytes, kDefaultMicrovmMemoryBytes);
  CellDocument bare = document();
  applyHostPolicyDefaults(policyFrom("maxPidsMax: 64\n"), bare);
  EXPECT_FALSE(bare.spec.run);
}

// The policy's own defaults come first, the cap holds the built-in one down, and a default
// above its cap is refused when the policy is read.
TEST(HostPolicyDefaults, PolicyDefaultsThenCapsThenBuiltIn) {
  CellDocument doc = document(kRun, 3600);
  applyHostPolicyDefaults(
      policyFrom("defaultMemoryBytes: 67108864\ndefaultPidsMax: 32\nmaxPidsMax: 64\n"), doc);
  EXPECT_EQ(doc.spec.run->limits.memoryMaxBytes, 67108864u);
  EXPECT_EQ(doc.spec.run->limits.pidsMax, 32u);
  CellDocument small = document(kRun, 3600);
  applyHostPolicyDefaults(policyFrom("maxPidsMax: 100\n"), small);
  EXPECT_EQ(small.spec.run->limits.pidsMax, 100u);  // the cap, as before
  EXPECT_EQ(small.spec.run->limits.memoryMaxBytes, kDefaultMemoryBytes);
  auto refused = parseHostPolicy("defaultPidsMax: 65\nmaxPidsMax: 64\n");
  ASSERT_FALSE(refused.policy);
  ASSERT_EQ(refused.violations.size(), 1u);
  EXPECT_EQ(refused.violations[0].path, "defaultPidsMax");
  EXPECT_NE(refused.violations[0].message.find("exceeds maxPidsMax 64"), std::string::npos)
      << refused.violations[0].message;
  EXPECT_FALSE(parseHostPolicy("defaultMemoryBytes: 0\n").policy);
}

TEST(CidrContains, RangesAndFamilies) {
  EXPECT_TRUE(cidrContains("10.0.0.0/8", "10.0.0.0/8"));
  EXPECT_TRUE(cidrContains("10.0.0.0/8", "10.255.255.255/32"));
  EXPECT_TRUE(cidrContains("0.0.0.0/0", "192.0.2.0/24"));
  EXPECT_FALSE(cidrContains("10.0.0.0/8", "0.0.0.0/0"));
  EXPECT_FALSE(cidrContains("10.0.0.0/8", "11.0.0.0/8"));
  EXPECT_TRUE(cidrContains("::/0", "fd00::/8"));
  EXPECT_FALSE(cidrContains("::/0", "10.0.0.0/8"));          // families never mix
  EXPECT_FALSE(cidrContains("0.0.0.0/0", "::ffff:0:0/96"));  // not even IPv4-mapped
  EXPECT_TRUE(cidrContains("fd00::/8", "fd12:3456::/32"));
  EXPECT_FALSE(cidrContains("fd00::/8", "fe80::/10"));
  EXPECT_FALSE(cidrContains("10.0.0.0/8", "garbage"));
  EXPECT_FALSE(cidrContains("10.0.0.1/8", "10.0.0.1/32"));  // host bits: not a range
}

}  // namespace
}  // namespace cellos::core
