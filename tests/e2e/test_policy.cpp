// End-to-end: `cellos run --policy` with the real binaries. A document the host policy refuses
// leaves nothing behind but one admission.v1.rejected event; one within it runs as usual.

#include "tests/e2e/cellos_process.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <regex>

namespace cellos::testing {
namespace {

class CellosPolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: embedded mode starts privileged daemons";
    stateDir_ = makeTempDir();
    events_ = stateDir_ + "/events.jsonl";
  }
  void TearDown() override {
    if (!stateDir_.empty()) std::filesystem::remove_all(stateDir_);
  }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = stateDir_ + "/" + name;
    writeFile(path, content);
    return path;
  }
  // A document named <id>.yaml whose cell runs `script` under /bin/sh, with no limits.
  std::string shellCell(const std::string& id, const std::string& script) {
    return write(id + ".yaml", "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
                                   "\n  lifetime: {ttlSeconds: 60}\n  run:\n    argv: " +
                                   nlohmann::json({"/bin/sh", "-c", script}).dump() + "\n");
  }
  RunResult run(const std::string& document, const std::string& policy) {
    return runCellos(
        {"run", document, "--policy", policy, "--state-dir", stateDir_, "--events", events_});
  }
  std::vector<nlohmann::json> events() {
    std::vector<nlohmann::json> out;
    for (const auto& line : readLines(events_)) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  std::string stateDir_, events_;
};

const char* kPolicy =
    "maxTtlSeconds: 300\n"
    "maxTimeoutMs: 60000\n"
    "maxMemoryBytes: 268435456\n"
    "maxPidsMax: 64\n"
    "allowedBackends: [linux]\n"
    "allowedImages: [host]\n"
    "allowedEgressHosts: [\"*.allowed.test\"]\n"
    "allowedEgressCidrs: [10.20.0.0/16]\n";

TEST_F(CellosPolicy, ADocumentAskingForMoreIsRefusedWithEveryViolationAndLeavesOnlyTheEvent) {
  std::string policy = write("policy.yaml", kPolicy);
  std::string document = write("greedy.yaml",
                               "apiVersion: cellos.io/v1\n"
                               "kind: ExecutionCell\n"
                               "spec:\n"
                               "  id: greedy\n"
                               "  lifetime: {ttlSeconds: 7200}\n"
                               "  authority:\n"
                               "    egressRules:\n"
                               "      - {host: api.allowed.test, port: 443, protocol: tcp}\n"
                               "      - {host: evil.example, port: 443, protocol: tcp}\n"
                               "      - {cidr: 0.0.0.0/0, port: 443, protocol: tcp}\n"
                               "    dnsAuthority:\n"
                               "      hostnameAllowlist: [api.allowed.test, evil.example]\n"
                               "  run:\n"
                               "    argv: [/bin/sh, -c, \"echo must not run\"]\n"
                               "    limits: {memoryMaxBytes: 1073741824, pidsMax: 4096}\n");
  auto result = run(document, policy);
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_EQ(result.out, "") << "the command must not run";

  const std::vector<std::pair<std::string, std::string>> expected = {
      {"spec.lifetime.ttlSeconds", "7200 exceeds the host's maximum 300"},
      {"spec.authority.egressRules[1].host", "\"evil.example\" is not allowed on this host"},
      {"spec.authority.egressRules[2].cidr", "\"0.0.0.0/0\" is not allowed on this host"},
      {"spec.authority.dnsAuthority.hostnameAllowlist[1]",
       "\"evil.example\" is not allowed on this host"},
      {"spec.run.limits.memoryMaxBytes", "1073741824 exceeds the host's maximum 268435456"},
      {"spec.run.limits.pidsMax", "4096 exceeds the host's maximum 64"},
  };
  for (const auto& [path, message] : expected) {
    EXPECT_NE(result.err.find("\n  " + path + ": " + message + "\n"), std::string::npos)
        << path << "\n"
        << result.err;
  }

  auto log = events();
  ASSERT_EQ(log.size(), 1u) << readFile(events_);
  EXPECT_EQ(log[0]["type"], "dev.cellos.events.cell.admission.v1.rejected");
  EXPECT_EQ(log[0]["subject"], "urn:cellos:cell:greedy");
  nlohmann::json violations = nlohmann::json::array();
  for (const auto& [path, message] : expected) {
    violations.push_back({{"path", path}, {"message", message}});
  }
  EXPECT_EQ(log[0]["data"]["violations"], violations);

  auto verified = runCellos({"verify", "--state-dir", stateDir_, events_});
  EXPECT_EQ(verified.status, 0) << verified.out << verified.err;
  auto residue = ourResidue();
  EXPECT_TRUE(residue.empty()) << residue.front();
}

TEST_F(CellosPolicy, ADocumentWithinThePolicyRunsAndIsAdmittedWithItsDigest) {
  std::string policy = write("policy.yaml", kPolicy);
  std::string document = write("modest.yaml",
                               "apiVersion: cellos.io/v1\n"
                               "kind: ExecutionCell\n"
                               "spec:\n"
                               "  id: modest\n"
                               "  lifetime: {ttlSeconds: 60}\n"
                               "  authority:\n"
                               "    egressRules:\n"
                               "      - {host: api.allowed.test, port: 443, protocol: tcp}\n"
                               "      - {cidr: 10.20.30.0/24, port: 5432, protocol: tcp}\n"
                               "    dnsAuthority: {hostnameAllowlist: [api.allowed.test]}\n"
                               "  run:\n"
                               "    argv: [/bin/sh, -c, \"echo within policy\"]\n"
                               "    timeoutMs: 30000\n"
                               "    limits: {memoryMaxBytes: 134217728, pidsMax: 32}\n");
  auto result = run(document, policy);
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "within policy\n");

  auto validated = runCellos({"validate", document});
  std::smatch digest;
  ASSERT_TRUE(std::regex_search(validated.out, digest, std::regex("specDigest ([0-9a-f]{64})")))
      << validated.out;

  auto log = events();
  ASSERT_GE(log.size(), 4u);
  EXPECT_EQ(log.front()["type"], "dev.cellos.events.cell.admission.v1.accepted");
  EXPECT_EQ(log.front()["data"]["specDigest"], digest[1].str());
  EXPECT_EQ(log.back()["type"], "dev.cellos.events.cell.lifecycle.v1.destroyed");
  EXPECT_EQ(log.back()["data"]["outcome"], "succeeded");
  EXPECT_EQ(runCellos({"verify", "--state-dir", stateDir_, events_}).status, 0);
  EXPECT_TRUE(ourResidue().empty());
}

TEST_F(CellosPolicy, AbsentLimitsGetTheHostsCapsInsteadOfNone) {
  // The document sets no pidsMax; the host caps it at 8, which the cell must then hit.
  std::string policy = write("policy.yaml", "maxPidsMax: 8\n");
  std::string document = shellCell(
      "forks", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 3 & done; echo all-started");
  auto capped = run(document, policy);
  EXPECT_EQ(capped.out.find("all-started"), std::string::npos) << capped.out << capped.err;
  EXPECT_TRUE(ourResidue().empty());

  // The same document without a policy is not capped.
  std::string open = write("open.yaml", "{}\n");
  auto uncapped = run(document, open);
  EXPECT_EQ(uncapped.status, 0) << uncapped.err;
  EXPECT_NE(uncapped.out.find("all-started"), std::string::npos) << uncapped.err;
}

// A document that declares no limits on a host whose policy sets none still runs bounded
// (issue 17: a probe cell wrote 3 GB to its /tmp and allocated 2 GB more): the built-in
// defaults, recorded in the admission event, and each scratch tmpfs at half its memory limit.
TEST_F(CellosPolicy, NoLimitsAnywhereStillRunsUnderTheBuiltInDefaults) {
  std::string open = write("open.yaml", "{}\n");
  std::string document = shellCell("sizes",
                                   "grep -E ' (/tmp|/dev/shm|/workspace) ' /proc/mounts | "
                                   "grep -o 'size=[0-9]*k' | sort | uniq -c");
  auto result = run(document, open);
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "      3 size=524288k\n");
  for (const auto& e : events()) {
    if (e["type"] != "dev.cellos.events.cell.admission.v1.accepted") continue;
    EXPECT_EQ(e["data"]["limits"]["memoryMaxBytes"], 1073741824u) << e.dump();
    EXPECT_EQ(e["data"]["limits"]["pidsMax"], 1024u) << e.dump();
  }
}

// The host's defaults bound what the document left out: writing past it to /tmp or the working
// directory fails with ENOSPC, allocating past it is an OOM kill; what fits, fits.
TEST_F(CellosPolicy, TheHostsDefaultMemoryBoundsScratchSpaceAndAllocation) {
  std::string policy = write("policy.yaml", "defaultMemoryBytes: 67108864\n");
  auto tmp = run(shellCell("fill-tmp",
                           "dd if=/dev/zero of=/tmp/f bs=1M count=100 2>&1 | head -1; "
                           "rm /tmp/f; dd if=/dev/zero of=f bs=1M count=100 2>&1 | head -1"),
                 policy);
  EXPECT_EQ(tmp.status, 0) << tmp.err;
  EXPECT_EQ(tmp.out,
            "dd: error writing '/tmp/f': No space left on device\n"
            "dd: error writing 'f': No space left on device\n");
  auto hog = run(shellCell("hog", "dd if=/dev/zero of=/dev/null bs=100M count=1"), policy);
  EXPECT_EQ(hog.status, 128 + 9) << hog.err;
  bool oom = false;
  for (const auto& e : events()) {
    if (e["type"] == "dev.cellos.events.cell.command.v1.completed" &&
        e["subject"] == "urn:cellos:cell:hog") {
      oom = e["data"]["oomKilled"] == true;
    }
  }
  EXPECT_TRUE(oom);
  auto fits = run(
      shellCell("fits", "dd if=/dev/zero of=/tmp/f bs=1M count=16 2>/dev/null && echo ok"), policy);
  EXPECT_EQ(fits.out, "ok\n") << fits.err;
  EXPECT_TRUE(ourResidue().empty());
}

TEST_F(CellosPolicy, AnInvalidDocumentIsRefusedBeforeAnythingStarts) {
  std::string policy = write("policy.yaml", kPolicy);
  std::string document = write("bad.yaml",
                               "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n"
                               "  id: Bad!\n  lifetime: {ttlSeconds: 7200}\n");
  auto result = run(document, policy);
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("spec.id: must start with [a-z0-9], got \"Bad!\""), std::string::npos)
      << result.err;
  EXPECT_FALSE(std::filesystem::exists(events_)) << "no broker may have seen it";
  EXPECT_TRUE(ourResidue().empty());
}

TEST_F(CellosPolicy, AnInvalidPolicyIsAUsageErrorAndStartsNothing) {
  std::string policy = write("policy.yaml", "maxTtlSeconds: 0\nallowedHosts: [a.test]\n");
  std::string document = write("ok.yaml",
                               "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n"
                               "  id: ok\n  lifetime: {ttlSeconds: 60}\n");
  auto result = run(document, policy);
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find(policy + ": invalid host policy\n"
                                     "  $: unknown field \"allowedHosts\"\n"
                                     "  maxTtlSeconds: must be positive, got 0\n"),
            std::string::npos)
      << result.err;
  EXPECT_FALSE(std::filesystem::exists(events_));
  EXPECT_TRUE(ourResidue().empty());

  auto missing = run(document, stateDir_ + "/no-such-policy.yaml");
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("no-such-policy.yaml: cannot open"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace cellos::testing
