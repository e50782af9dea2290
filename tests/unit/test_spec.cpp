#include "core/spec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cellos::core {
namespace {

namespace fs = std::filesystem;

// tests/data/spec: from CELLOS_SOURCE_DIR when set, else the tree this test was built from
// (not __FILE__: with ccache's base_dir it is a relative path).
fs::path dataDir() {
  if (const char* source = std::getenv("CELLOS_SOURCE_DIR"); source && *source) {
    return fs::path(source) / "tests" / "data" / "spec";
  }
  return fs::path(CELLOS_TEST_SOURCE_DIR) / "tests" / "data" / "spec";
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> formatted(const ParseResult& result) {
  std::vector<std::string> out;
  for (const Violation& violation : result.violations) out.push_back(formatViolation(violation));
  return out;
}

// Documents under tests/data/spec/<folder>, sorted, as file names.
std::vector<std::string> documentsIn(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dataDir() / folder, error)) {
    std::string extension = entry.path().extension().string();
    if (extension == ".yaml" || extension == ".json") {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string testName(const testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace_if(
      name.begin(), name.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); },
      '_');
  return name;
}

ParseResult parseFile(const std::string& folder, const std::string& name) {
  return parseCellDocument(readFile(dataDir() / folder / name));
}

// A valid document with `extra` appended under spec (YAML, two-space indent).
std::string minimalYamlWith(const std::string& extra) {
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: t-1\n  lifetime:\n"
         "    ttlSeconds: 60\n" +
         extra;
}

// ---------------------------------------------------------------------------------------------
// Data-driven: every valid document parses clean; every invalid one gives exactly its .expected.

class ValidDocument : public testing::TestWithParam<std::string> {};

TEST_P(ValidDocument, ParsesWithoutViolations) {
  ParseResult result = parseFile("valid", GetParam());
  EXPECT_EQ(formatted(result), std::vector<std::string>{});
  ASSERT_TRUE(result.document.has_value());
  EXPECT_EQ(specDigest(result).size(), 64u);
}

INSTANTIATE_TEST_SUITE_P(Spec, ValidDocument, testing::ValuesIn(documentsIn("valid")), testName);

class InvalidDocument : public testing::TestWithParam<std::string> {};

TEST_P(InvalidDocument, GivesExactlyTheExpectedViolations) {
  fs::path document = dataDir() / "invalid" / GetParam();
  fs::path expectedFile = document;
  expectedFile.replace_extension(".expected");
  ASSERT_TRUE(fs::exists(expectedFile)) << expectedFile;
  ParseResult result = parseCellDocument(readFile(document));
  EXPECT_EQ(formatted(result), lines(readFile(expectedFile)));
  EXPECT_FALSE(result.document.has_value());
  EXPECT_EQ(specDigest(result), "");
}

INSTANTIATE_TEST_SUITE_P(Spec, InvalidDocument, testing::ValuesIn(documentsIn("invalid")),
                         testName);

TEST(SpecData, HasEnoughDocuments) {
  EXPECT_GE(documentsIn("invalid").size(), 60u);
  EXPECT_GE(documentsIn("valid").size(), 4u);
  // Every expectation belongs to a document (a renamed document must not orphan its lines).
  for (const auto& entry : fs::directory_iterator(dataDir() / "invalid")) {
    if (entry.path().extension() != ".expected") continue;
    fs::path stem = entry.path();
    EXPECT_TRUE(fs::exists(fs::path(stem).replace_extension(".yaml")) ||
                fs::exists(fs::path(stem).replace_extension(".json")))
        << entry.path();
  }
}

// ---------------------------------------------------------------------------------------------
// The model

TEST(ParseCellDocument, ReadsEveryFieldOfTheFullDocument) {
  ParseResult result = parseFile("valid", "full.yaml");
  ASSERT_TRUE(result.document) << ::testing::PrintToString(formatted(result));
  const CellDocument& doc = *result.document;
  EXPECT_EQ(doc.apiVersion, "cellos.io/v1");
  EXPECT_EQ(doc.kind, "ExecutionCell");
  const CellSpec& spec = doc.spec;
  EXPECT_EQ(spec.id, "build-42");
  EXPECT_EQ(spec.correlationId, "ci-run-9876");
  EXPECT_EQ(spec.placement.backend, "linux");
  EXPECT_EQ(spec.placement.poolId, "x86-small");
  EXPECT_EQ(spec.lifetime.ttlSeconds, 600u);

  EXPECT_EQ(spec.authority.secretRefs, (std::vector<std::string>{"GITHUB_TOKEN", "db.password"}));
  ASSERT_EQ(spec.authority.egressRules.size(), 4u);
  EXPECT_EQ(spec.authority.egressRules[0].host, "api.github.com");
  EXPECT_FALSE(spec.authority.egressRules[0].cidr);
  EXPECT_EQ(spec.authority.egressRules[0].port, 443);
  EXPECT_EQ(spec.authority.egressRules[0].protocol, "tcp");
  EXPECT_EQ(spec.authority.egressRules[1].host, "*.pkg.dev");
  EXPECT_EQ(spec.authority.egressRules[2].cidr, "10.20.0.0/16");
  EXPECT_FALSE(spec.authority.egressRules[2].host);
  EXPECT_EQ(spec.authority.egressRules[2].port, 5432);
  EXPECT_EQ(spec.authority.egressRules[3].cidr, "fd00:10::/32");
  EXPECT_EQ(spec.authority.egressRules[3].protocol, "udp");

  const DnsAuthority& dns = spec.authority.dnsAuthority;
  EXPECT_EQ(dns.hostnameAllowlist, (std::vector<std::string>{"api.github.com", "*.pkg.dev"}));
  EXPECT_EQ(dns.allowedQueryTypes, (std::vector<std::string>{"A", "AAAA", "CNAME", "HTTPS"}));
  ASSERT_EQ(dns.resolvers.size(), 2u);
  EXPECT_EQ(dns.resolvers[0].resolverId, "corp-dns");
  EXPECT_EQ(dns.resolvers[0].endpoint, "10.0.0.2:53");
  EXPECT_EQ(dns.resolvers[0].address, "10.0.0.2");
  EXPECT_EQ(dns.resolvers[0].port, 53);
  EXPECT_EQ(dns.resolvers[0].protocol, "do53-udp");
  EXPECT_EQ(dns.resolvers[1].endpoint, "[fd00::53]:53");
  EXPECT_EQ(dns.resolvers[1].address, "fd00::53");
  EXPECT_EQ(dns.resolvers[1].protocol, "do53-tcp");

  ASSERT_TRUE(spec.run);
  const RunSpec& run = *spec.run;
  EXPECT_EQ(run.argv, (std::vector<std::string>{"/bin/sh", "-c", "make test"}));
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(run.env, (Env{{"LANG", "C.UTF-8"}, {"TZ", "UTC"}, {"MAKEFLAGS", "-j4"}}));
  EXPECT_EQ(run.workingDirectory, "/workspace");
  EXPECT_EQ(run.image, "host");
  EXPECT_EQ(run.secretDelivery, "env");
  EXPECT_EQ(run.timeoutMs, 300000u);
  EXPECT_EQ(run.limits.memoryMaxBytes, 536870912u);
  ASSERT_TRUE(run.limits.cpuMax);
  EXPECT_EQ(run.limits.cpuMax->quotaMicros, 50000u);
  EXPECT_EQ(run.limits.cpuMax->periodMicros, 100000u);
  EXPECT_EQ(run.limits.pidsMax, 256u);
  EXPECT_EQ(run.limits.gracefulShutdownSeconds, 5u);

  ASSERT_EQ(spec.exportSpec.artifacts.size(), 1u);
  EXPECT_EQ(spec.exportSpec.artifacts[0].name, "junit");
  EXPECT_EQ(spec.exportSpec.artifacts[0].path, "/workspace/out/junit.xml");
  EXPECT_EQ(spec.exportSpec.artifacts[0].contentType, "application/xml");
}

TEST(ParseCellDocument, FullDocumentIsTheSameInJsonAndYaml) {
  ParseResult yaml = parseFile("valid", "full.yaml");
  ParseResult json = parseFile("valid", "full.json");
  ASSERT_TRUE(yaml.document && json.document);
  EXPECT_EQ(yaml.canonicalJson, json.canonicalJson);
  EXPECT_EQ(yaml.document->spec.run->env, json.document->spec.run->env);
}

TEST(ParseCellDocument, FillsDefaults) {
  ParseResult result = parseCellDocument(minimalYamlWith(
      "  run:\n    argv: [/bin/true]\n    limits:\n      cpuMax: {quotaMicros: 1000}\n"
      "  export:\n    artifacts:\n      - {name: out, path: /workspace/out}\n"));
  ASSERT_TRUE(result.document) << ::testing::PrintToString(formatted(result));
  const CellSpec& spec = result.document->spec;
  EXPECT_FALSE(spec.correlationId);
  EXPECT_FALSE(spec.placement.backend);
  EXPECT_TRUE(spec.authority.secretRefs.empty());
  EXPECT_TRUE(spec.authority.egressRules.empty());
  EXPECT_TRUE(spec.authority.dnsAuthority.hostnameAllowlist.empty());
  EXPECT_EQ(spec.authority.dnsAuthority.allowedQueryTypes,
            (std::vector<std::string>{"A", "AAAA", "CNAME", "HTTPS"}));
  EXPECT_EQ(spec.run->workingDirectory, "/workspace");
  EXPECT_EQ(spec.run->image, "host");
  EXPECT_EQ(spec.run->secretDelivery, "env");
  EXPECT_FALSE(spec.run->timeoutMs);
  EXPECT_FALSE(spec.run->limits.memoryMaxBytes);
  EXPECT_EQ(spec.run->limits.cpuMax->periodMicros, 100000u);
  EXPECT_EQ(spec.exportSpec.artifacts[0].contentType, "application/octet-stream");
  // Defaults are not written into the JSON the digest covers.
  EXPECT_FALSE(result.canonicalJson["spec"]["run"].contains("workingDirectory"));
}

TEST(ParseCellDocument, NoRunMeansNoRunSpec) {
  ParseResult result = parseFile("valid", "minimal.yaml");
  ASSERT_TRUE(result.document);
  EXPECT_FALSE(result.document->spec.run);
}

TEST(ParseCellDocument, EmptyQueryTypeListGrantsNone) {
  ParseResult result = parseCellDocument(
      minimalYamlWith("  authority:\n    dnsAuthority:\n      allowedQueryTypes: []\n"));
  ASSERT_TRUE(result.document);
  EXPECT_TRUE(result.document->spec.authority.dnsAuthority.allowedQueryTypes.empty());
}

TEST(ParseCellDocument, KeepsEnvInDocumentOrder) {
  ParseResult result = parseCellDocument(
      minimalYamlWith("  run:\n    argv: [/bin/env]\n    env:\n      Z: '1'\n      A: '2'\n"
                      "      M: \"\"\n"));
  ASSERT_TRUE(result.document);
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(result.document->spec.run->env, (Env{{"Z", "1"}, {"A", "2"}, {"M", ""}}));
}

TEST(ParseCellDocument, NullOptionalFieldsMeanAbsent) {
  ParseResult result = parseCellDocument(
      R"({"apiVersion": "cellos.io/v1", "kind": "ExecutionCell", "spec": {"id": "t-1",
          "lifetime": {"ttlSeconds": 60}, "correlation": null, "run": null, "export": null,
          "authority": {"secretRefs": null}}})");
  ASSERT_TRUE(result.document) << ::testing::PrintToString(formatted(result));
  EXPECT_FALSE(result.document->spec.run);
}

// ---------------------------------------------------------------------------------------------
// Hostnames

TEST(ParseCellDocument, LowerCasesHostnamesInTheModelAndTheDigest) {
  std::string mixed = minimalYamlWith(
      "  authority:\n    egressRules:\n      - {host: API.GitHub.com., port: 443, protocol: tcp}\n"
      "    dnsAuthority:\n      hostnameAllowlist: [\"*.GITHUB.com\"]\n");
  std::string lower = minimalYamlWith(
      "  authority:\n    egressRules:\n      - {host: api.github.com, port: 443, protocol: tcp}\n"
      "    dnsAuthority:\n      hostnameAllowlist: [\"*.github.com\"]\n");
  ParseResult a = parseCellDocument(mixed);
  ParseResult b = parseCellDocument(lower);
  ASSERT_TRUE(a.document && b.document) << ::testing::PrintToString(formatted(a));
  EXPECT_EQ(a.document->spec.authority.egressRules[0].host, "api.github.com");
  EXPECT_EQ(a.document->spec.authority.dnsAuthority.hostnameAllowlist[0], "*.github.com");
  EXPECT_EQ(a.canonicalJson["spec"]["authority"]["egressRules"][0]["host"], "api.github.com");
  EXPECT_EQ(specDigest(a), specDigest(b));
}

TEST(ParseCellDocument, WildcardAllowlistCoversDeeperNamesButNotTheApex) {
  auto withRule = [](const std::string& host) {
    return minimalYamlWith("  authority:\n    egressRules:\n      - {host: \"" + host +
                           "\", port: 443, protocol: tcp}\n    dnsAuthority:\n"
                           "      hostnameAllowlist: [\"*.example.com\"]\n");
  };
  EXPECT_TRUE(parseCellDocument(withRule("a.example.com")).document);
  EXPECT_TRUE(parseCellDocument(withRule("a.b.example.com")).document);
  EXPECT_TRUE(parseCellDocument(withRule("*.example.com")).document);
  EXPECT_TRUE(parseCellDocument(withRule("*.a.example.com")).document);
  EXPECT_EQ(formatted(parseCellDocument(withRule("example.com"))),
            std::vector<std::string>{
                "spec.authority.egressRules[0].host: \"example.com\" is not covered by "
                "spec.authority.dnsAuthority.hostnameAllowlist, so the cell could never resolve "
                "it"});
}

// ---------------------------------------------------------------------------------------------
// Digest

TEST(SpecDigest, SameDocumentInYamlAndJsonHasTheSameDigest) {
  for (std::string name : {"minimal", "full"}) {
    ParseResult yaml = parseFile("valid", name + ".yaml");
    ParseResult json = parseFile("valid", name + ".json");
    ASSERT_TRUE(yaml.document && json.document) << name;
    EXPECT_EQ(specDigest(yaml), specDigest(json)) << name;
  }
  EXPECT_NE(specDigest(parseFile("valid", "minimal.yaml")),
            specDigest(parseFile("valid", "full.yaml")));
}

TEST(SpecDigest, ChangesWithAnyValue) {
  ParseResult a = parseCellDocument(minimalYamlWith(""));
  ParseResult b = parseCellDocument(
      "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: t-1\n  lifetime:\n"
      "    ttlSeconds: 61\n");
  ASSERT_TRUE(a.document && b.document);
  EXPECT_NE(specDigest(a), specDigest(b));
  EXPECT_EQ(specDigest(a).find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(SpecDigest, EmptyForARejectedDocument) {
  EXPECT_EQ(specDigest(parseCellDocument("kind: nope\n")), "");
}

// ---------------------------------------------------------------------------------------------
// Size and argv limits

TEST(ParseCellDocument, RefusesOneByteOverTheLimitBeforeParsing) {
  // Not even a document: anything over the limit is refused on size alone.
  std::string bytes(kMaxDocumentBytes + 1, '[');
  ParseResult result = parseCellDocument(bytes);
  EXPECT_EQ(formatted(result),
            std::vector<std::string>{"$: document is 1048577 bytes, over the 1048576-byte limit"});
  EXPECT_TRUE(result.canonicalJson.is_null());
}

TEST(ParseCellDocument, AcceptsADocumentOfExactlyTheLimit) {
  std::string bytes = minimalYamlWith("");
  bytes += "#";
  bytes.append(kMaxDocumentBytes - bytes.size() - 1, 'x');
  bytes += "\n";
  ASSERT_EQ(bytes.size(), kMaxDocumentBytes);
  EXPECT_TRUE(parseCellDocument(bytes).document);
}

TEST(ArgvEncodedSize, IsBase64OfCompactJson) {
  // ["/bin/true"] is 13 bytes of JSON: base64 pads to 20.
  EXPECT_EQ(argvEncodedSize({"/bin/true"}), 20u);
  EXPECT_EQ(argvEncodedSize({}), 4u);  // "[]"
  // Escapes count as written: "a\"b" is 6 bytes inside the brackets, 8 with them.
  EXPECT_EQ(argvEncodedSize({"a\"b"}), 12u);
  // UTF-8 counts in bytes: "é" is 2 bytes, ["é"] is 6.
  EXPECT_EQ(argvEncodedSize({"\xc3\xa9"}), 8u);
}

TEST(ParseCellDocument, ArgvLimitIsInclusive) {
  // ["/bin/echo","x..."] is 16 + n bytes of JSON; n = 2288 encodes to exactly 3072.
  auto withArg = [](size_t n) {
    return minimalYamlWith("  run:\n    argv: [/bin/echo, " + std::string(n, 'x') + "]\n");
  };
  EXPECT_EQ(argvEncodedSize({"/bin/echo", std::string(2288, 'x')}), 3072u);
  EXPECT_TRUE(parseCellDocument(withArg(2288)).document);
  EXPECT_EQ(formatted(parseCellDocument(withArg(2289))),
            std::vector<std::string>{"spec.run.argv: encodes to 3076 bytes (base64 of its JSON), "
                                     "over the 3072-byte limit"});
}

TEST(ParseCellDocument, TimeoutMayEqualTheLifetime) {
  EXPECT_TRUE(parseCellDocument(minimalYamlWith("  run:\n    argv: [/bin/true]\n"
                                                "    timeoutMs: 60000\n"))
                  .document);
}

// ---------------------------------------------------------------------------------------------
// Upper bounds of durations and sizes (spec.h kMax*, docs/spec.md): each bound is accepted, one
// more is refused with the field's path and the bound.

// A document with `ttl` and, when given, a run block of `run` (YAML lines under `run:`).
std::string documentWithTtl(const std::string& ttl, const std::string& run = "") {
  std::string out =
      "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: t-1\n  lifetime:\n"
      "    ttlSeconds: " +
      ttl + "\n";
  if (!run.empty()) out += "  run:\n    argv: [/bin/true]\n" + run;
  return out;
}

struct BoundCase {
  const char* path;
  uint64_t bound;
  std::string (*document)(uint64_t value);
};

const BoundCase kBounds[] = {
    {"spec.lifetime.ttlSeconds", kMaxTtlSeconds,
     [](uint64_t v) { return documentWithTtl(std::to_string(v)); }},
    {"spec.run.timeoutMs", kMaxTimeoutMs,
     [](uint64_t v) {
       return documentWithTtl(std::to_string(kMaxTtlSeconds),
                              "    timeoutMs: " + std::to_string(v) + "\n");
     }},
    {"spec.run.limits.memoryMaxBytes", kMaxMemoryMaxBytes,
     [](uint64_t v) {
       return documentWithTtl("60", "    limits: {memoryMaxBytes: " + std::to_string(v) + "}\n");
     }},
    {"spec.run.limits.cpuMax.quotaMicros", kMaxCpuQuotaMicros,
     [](uint64_t v) {
       return documentWithTtl("60",
                              "    limits: {cpuMax: {quotaMicros: " + std::to_string(v) + "}}\n");
     }},
    {"spec.run.limits.pidsMax", kMaxPidsMax,
     [](uint64_t v) {
       return documentWithTtl("60", "    limits: {pidsMax: " + std::to_string(v) + "}\n");
     }},
    {"spec.run.limits.gracefulShutdownSeconds", kMaxGracefulShutdownSeconds,
     [](uint64_t v) {
       return documentWithTtl("60",
                              "    limits: {gracefulShutdownSeconds: " + std::to_string(v) + "}\n");
     }},
};

TEST(SpecBounds, EachDurationAndSizeAcceptsItsBoundAndRefusesOneMore) {
  for (const BoundCase& c : kBounds) {
    ParseResult atBound = parseCellDocument(c.document(c.bound));
    EXPECT_TRUE(atBound.document) << c.path << ": " << ::testing::PrintToString(formatted(atBound));
    EXPECT_EQ(formatted(parseCellDocument(c.document(c.bound + 1))),
              std::vector<std::string>{std::string(c.path) + ": " + std::to_string(c.bound + 1) +
                                       " exceeds the maximum " + std::to_string(c.bound)})
        << c.path;
  }
}

TEST(SpecBounds, TtlNearInt64MaxIsRefusedAtValidation) {
  // The number of issue 14: it fits in 64 bits, and ttlSeconds * 1e9 (a kj::Duration) did not.
  EXPECT_EQ(formatted(parseCellDocument(documentWithTtl("9223372036854775807"))),
            std::vector<std::string>{
                "spec.lifetime.ttlSeconds: 9223372036854775807 exceeds the maximum 31536000"});
  EXPECT_EQ(formatted(parseCellDocument(
                "{\"apiVersion\": \"cellos.io/v1\", \"kind\": \"ExecutionCell\", \"spec\": "
                "{\"id\": \"t-1\", \"lifetime\": {\"ttlSeconds\": 9223372036854775807}}}")),
            std::vector<std::string>{
                "spec.lifetime.ttlSeconds: 9223372036854775807 exceeds the maximum 31536000"});
}

TEST(SpecBounds, EverySpellingOfAnOutOfBoundsNumberGetsItsOwnMessage) {
  auto ttl = [](const std::string& value) {
    return formatted(parseCellDocument(documentWithTtl(value)));
  };
  auto at = [](const std::string& message) {
    return std::vector<std::string>{"spec.lifetime.ttlSeconds: " + message};
  };
  EXPECT_EQ(ttl("18446744073709551615"), at("18446744073709551615 exceeds the maximum 31536000"));
  EXPECT_EQ(ttl("18446744073709551616"), at("18446744073709551616 exceeds the maximum 31536000"));
  EXPECT_EQ(ttl("99999999999999999999999"),
            at("99999999999999999999999 exceeds the maximum 31536000"));
  EXPECT_EQ(ttl("-1"), at("must be positive, got -1"));
  EXPECT_EQ(ttl("-9223372036854775808"), at("must be positive, got -9223372036854775808"));
  EXPECT_EQ(ttl("-99999999999999999999"), at("must be positive, got -99999999999999999999"));
  EXPECT_EQ(ttl("1.5"), at("expected an integer, got 1.5"));
  EXPECT_EQ(ttl("1e30"), at("expected an integer, got 1e30"));
  EXPECT_EQ(ttl("1E3"), at("expected an integer, got 1E3"));
  EXPECT_EQ(ttl("\"60\""), at("expected an integer, got string"));
  // Beyond a double: the reader refuses the whole document, naming the number and where it is.
  EXPECT_EQ(ttl("1e999"), std::vector<std::string>{"$: unsupported YAML at line 6, column 17: "
                                                   "number \"1e999\" is out of range"});
}

TEST(SpecBounds, TimeoutAtTheLongestTtlIsAcceptedAndOneMoreIsRefusedAgainstTheTtl) {
  std::string ttl = std::to_string(kMaxTtlSeconds);
  EXPECT_TRUE(parseCellDocument(documentWithTtl(ttl, "    timeoutMs: 31536000000\n")).document);
  EXPECT_EQ(formatted(parseCellDocument(documentWithTtl("60", "    timeoutMs: 60001\n"))),
            std::vector<std::string>{
                "spec.run.timeoutMs: 60001 exceeds spec.lifetime.ttlSeconds * 1000 (60000)"});
}

// ---------------------------------------------------------------------------------------------
// Formats and typing

TEST(ParseCellDocument, YamlScalarsMeanWhatTheyMeanInJson) {
  auto poolIdOf = [](const std::string& value) {
    return formatted(
        parseCellDocument(minimalYamlWith("  placement:\n    poolId: " + value + "\n")));
  };
  EXPECT_EQ(poolIdOf("'443'"), std::vector<std::string>{});
  EXPECT_EQ(poolIdOf("\"true\""), std::vector<std::string>{});
  EXPECT_EQ(poolIdOf("yes"), std::vector<std::string>{});  // YAML 1.1 booleans stay strings
  EXPECT_EQ(poolIdOf("0x1F"), std::vector<std::string>{});
  EXPECT_EQ(poolIdOf("443"),
            std::vector<std::string>{"spec.placement.poolId: expected a string, got number"});
  EXPECT_EQ(poolIdOf("-1.5e3"),
            std::vector<std::string>{"spec.placement.poolId: expected a string, got number"});
  EXPECT_EQ(poolIdOf("True"),
            std::vector<std::string>{"spec.placement.poolId: expected a string, got boolean"});
  // null for an optional field means absent.
  EXPECT_EQ(poolIdOf("~"), std::vector<std::string>{});
}

TEST(ParseCellDocument, AcceptsAByteOrderMarkAndSurroundingWhitespace) {
  std::string json = readFile(dataDir() / "valid" / "minimal.json");
  EXPECT_TRUE(parseCellDocument("\xEF\xBB\xBF  \n" + json + "\n\n").document);
  std::string yaml = readFile(dataDir() / "valid" / "minimal.yaml");
  EXPECT_TRUE(parseCellDocument("\xEF\xBB\xBF" + yaml).document);
}

TEST(ParseCellDocument, ReadsAFlowStyleYamlDocumentThatIsNotJson) {
  ParseResult result = parseCellDocument(
      "--- {apiVersion: cellos.io/v1, kind: ExecutionCell, spec: {id: t-1, lifetime: "
      "{ttlSeconds: 60}}}\n");
  EXPECT_TRUE(result.document) << ::testing::PrintToString(formatted(result));
}

TEST(ParseCellDocument, ReportsDuplicateKeysInNestedJsonObjects) {
  ParseResult result = parseCellDocument(
      R"({"apiVersion": "cellos.io/v1", "kind": "ExecutionCell", "spec": {"id": "t-1",
          "lifetime": {"ttlSeconds": 60}, "run": {"argv": ["/bin/true"],
          "env": {"A": "1", "A": "2"}}}, "kind": "ExecutionCell"})");
  EXPECT_EQ(formatted(result), (std::vector<std::string>{"spec.run.env: duplicate key \"A\"",
                                                         "$: duplicate key \"kind\""}));
}

TEST(ParseCellDocument, DuplicateKeyKeepsTheFirstValueForTheRemainingChecks) {
  // The second "id" is discarded, so only the duplicate itself is reported.
  ParseResult result = parseCellDocument(
      R"({"apiVersion": "cellos.io/v1", "kind": "ExecutionCell",
          "spec": {"id": "t-1", "id": "BAD", "lifetime": {"ttlSeconds": 60}}})");
  EXPECT_EQ(formatted(result), std::vector<std::string>{"spec: duplicate key \"id\""});
}

TEST(ParseCellDocument, BracketsKeysThatAreNotIdentifiers) {
  ParseResult result = parseCellDocument(minimalYamlWith("  \"odd key\": 1\n"));
  EXPECT_EQ(formatted(result), std::vector<std::string>{"spec: unknown field \"odd key\""});
  result =
      parseCellDocument(minimalYamlWith("  run:\n    argv: [/bin/true]\n    env:\n"
                                        "      \"A B\": x\n"));
  EXPECT_EQ(formatted(result),
            std::vector<std::string>{
                "spec.run.env[\"A B\"]: is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"});
}

TEST(ParseCellDocument, ComplexYamlKeyIsReportedAndSkipped) {
  ParseResult result = parseCellDocument(minimalYamlWith("  ? [a, b]\n  : value\n"));
  EXPECT_EQ(formatted(result), std::vector<std::string>{"spec: expected a string key, got array"});
}

TEST(ParseCellDocument, RefusesDeepNestingInYamlToo) {
  std::string deep = "spec: " + std::string(100, '[') + std::string(100, ']') + "\n";
  ParseResult result = parseCellDocument(deep);
  ASSERT_EQ(result.violations.size(), 1u);
  EXPECT_EQ(result.violations[0].path, "$");
  EXPECT_NE(result.violations[0].message.find("nests deeper than 64 levels"), std::string::npos);
}

TEST(ParseCellDocument, EscapedSurrogatesInYamlAreRefused) {
  ParseResult result =
      parseCellDocument(minimalYamlWith("  placement:\n    poolId: \"\\ud800\"\n"));
  ASSERT_EQ(result.violations.size(), 1u);
  EXPECT_EQ(result.violations[0].path, "$");
}

TEST(ParseCellDocument, NeverThrowsOnHostileSnippets) {
  const char* snippets[] = {"",
                            "{",
                            "}",
                            "[",
                            "- -\n- [",
                            "*x",
                            "&a [*a]",
                            "? ? ? ?\n",
                            "{\"a\":",
                            "\"\\u0000\"",
                            "\t\n",
                            "!!binary aGk=",
                            "%YAML 1.2\n---\na: 1",
                            "a: |\n  x\n b",
                            "{\"spec\": 1e309}",
                            "key: [1, 2, {a: b}]: c"};
  for (const char* snippet : snippets) {
    ParseResult result;
    EXPECT_NO_THROW(result = parseCellDocument(snippet)) << snippet;
    EXPECT_FALSE(result.document) << snippet;
    EXPECT_FALSE(result.violations.empty()) << snippet;
  }
}

TEST(FormatViolation, JoinsPathAndMessage) {
  EXPECT_EQ(
      formatViolation({"spec.authority.egressRules[2].port", "70000 is out of range 1..65535"}),
      "spec.authority.egressRules[2].port: 70000 is out of range 1..65535");
}

// `cellos run --backend`: chooses the backend of a document that names none.
TEST(ChooseBackend, FillsInTheBackendOfADocumentThatNamesNoneAndKeepsTheDigest) {
  ParseResult parsed = parseCellDocument(minimalYamlWith(""));
  ASSERT_TRUE(parsed.document);
  ASSERT_FALSE(parsed.document->spec.placement.backend);
  ParseResult chosen = chooseBackend(parsed, "gvisor");
  ASSERT_TRUE(chosen.document) << formatted(chosen).front();
  EXPECT_EQ(chosen.document->spec.placement.backend, "gvisor");
  EXPECT_EQ(chosen.document->spec.id, parsed.document->spec.id);
  // The digest stays that of the document as written.
  EXPECT_EQ(specDigest(chosen), specDigest(parsed));
}

TEST(ChooseBackend, AnUnknownNameIsAViolationOfTheField) {
  ParseResult chosen = chooseBackend(parseCellDocument(minimalYamlWith("")), "docker");
  EXPECT_FALSE(chosen.document);
  EXPECT_EQ(formatted(chosen), std::vector<std::string>{"spec.placement.backend: \"docker\" is "
                                                        "not one of linux, gvisor, microvm, "
                                                        "firecracker"});
}

TEST(ChooseBackend, ADocumentThatNamesAnotherBackendIsRefusedAndTheSameOneIsKept) {
  ParseResult linux = parseCellDocument(minimalYamlWith("  placement:\n    backend: linux\n"));
  ASSERT_TRUE(linux.document);
  ParseResult other = chooseBackend(linux, "gvisor");
  EXPECT_FALSE(other.document);
  EXPECT_EQ(formatted(other), std::vector<std::string>{"spec.placement.backend: the document "
                                                       "names \"linux\", not the chosen "
                                                       "\"gvisor\""});
  ParseResult same = chooseBackend(linux, "linux");
  ASSERT_TRUE(same.document);
  EXPECT_EQ(same.document->spec.placement.backend, "linux");
}

}  // namespace
}  // namespace cellos::core
