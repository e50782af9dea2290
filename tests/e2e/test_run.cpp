// End-to-end: the real `cellos` binary running real cells, as a user would.

#include "tests/e2e/cellos_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

class CellosRun : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: embedded mode starts privileged daemons";
    stateDir_ = makeTempDir();
    events_ = stateDir_ + "/events.jsonl";
  }
  void TearDown() override {
    if (!stateDir_.empty()) std::filesystem::remove_all(stateDir_);
  }

  std::vector<std::string> runArgs(const std::string& document) {
    return {"run", document, "--state-dir", stateDir_, "--events", events_};
  }
  std::string example(const std::string& name) { return sourceDir() + "/examples/" + name; }
  std::string writeDocument(const std::string& name, const std::string& yaml) {
    std::string path = stateDir_ + "/" + name;
    writeFile(path, yaml);
    return path;
  }
  RunResult verify() { return runCellos({"verify", "--state-dir", stateDir_, events_}); }
  std::vector<nlohmann::json> events() {
    std::vector<nlohmann::json> out;
    for (const auto& line : readLines(events_)) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  std::vector<std::string> eventTypes() {
    std::vector<std::string> out;
    for (const auto& e : events()) out.push_back(e["type"].get<std::string>());
    return out;
  }

  std::string stateDir_, events_;
};

// A cell that runs `script` under /bin/sh.
std::string shellCell(const std::string& id, const std::string& script,
                      const std::string& extraAuthority = "") {
  nlohmann::json argv = {"/bin/sh", "-c", script};
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
         "\n  lifetime: {ttlSeconds: 60}\n" + extraAuthority + "  run:\n    argv: " + argv.dump() +
         "\n";
}

TEST_F(CellosRun, HelloPrintsTheGreetingAndExitsZero) {
  auto result = runCellos(runArgs(example("hello.yaml")));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "Hello from cell hello\n");
  EXPECT_NE(result.err.find("events written to " + events_), std::string::npos) << result.err;
  auto types = eventTypes();
  ASSERT_GE(types.size(), 4u);
  EXPECT_EQ(types.front(), "dev.cellos.events.cell.admission.v1.accepted");
  EXPECT_NE(std::find(types.begin(), types.end(), "dev.cellos.events.cell.lifecycle.v1.started"),
            types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "dev.cellos.events.cell.command.v1.completed"),
            types.end());
  EXPECT_EQ(types.back(), "dev.cellos.events.cell.lifecycle.v1.destroyed");
  auto destroyed = events().back();
  EXPECT_EQ(destroyed["data"]["outcome"], "succeeded");
  EXPECT_EQ(destroyed["data"]["residue"]["clean"], true);
}

TEST_F(CellosRun, ExitStatusOfTheCellIsTheExitStatusOfRun) {
  auto result = runCellos(runArgs(example("exit3.yaml")));
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_NE(result.err.find("about to fail"), std::string::npos);
  for (const auto& e : events()) {
    if (e["type"] == "dev.cellos.events.cell.command.v1.completed") {
      EXPECT_EQ(e["data"]["exitCode"], 3);
    }
  }
}

TEST_F(CellosRun, InvalidDocumentExitsTwoAndCreatesNothing) {
  auto doc = writeDocument("bad.yaml",
                           "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: Bad!\n");
  auto result = runCellos(runArgs(doc));
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("spec.id"), std::string::npos) << result.err;
  EXPECT_FALSE(std::filesystem::exists(events_)) << "nothing may be created for a bad document";
  EXPECT_TRUE(ourResidue().empty());
}

// Issue 17: a runner that cannot start says so in one line, exits 125 and does not claim that
// events were written.
TEST_F(CellosRun, ARunnerThatCannotStartIsOnePlainLineAnd125AndNoEventsClaimed) {
  std::string notADirectory = stateDir_ + "/plain-file";
  writeFile(notADirectory, "");
  auto result =
      runCellos({"run", example("hello.yaml"), "--state-dir", notADirectory, "--events", events_});
  EXPECT_EQ(result.status, 125) << result.err;
  EXPECT_EQ(result.out, "");
  EXPECT_NE(result.err.find("cellos run: filesystem error: cannot create directories: Not a "
                            "directory [" +
                            notADirectory),
            std::string::npos)
      << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_EQ(result.err.find("events written to"), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("stack: "), std::string::npos) << result.err;
  EXPECT_FALSE(std::filesystem::exists(events_));
  EXPECT_TRUE(hostResidue().empty());
}

TEST_F(CellosRun, VerifyAcceptsTheLogAndNamesTheLineOfAnyChangedByte) {
  ASSERT_EQ(runCellos(runArgs(example("hello.yaml"))).status, 0);
  ASSERT_EQ(runCellos(runArgs(example("exit3.yaml"))).status, 3);
  auto ok = verify();
  ASSERT_EQ(ok.status, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("chain intact"), std::string::npos) << ok.out;

  const std::string original = readFile(events_);
  auto lines = readLines(events_);
  ASSERT_GE(lines.size(), 8u);
  // One byte changed in each event, at a place inside the JSON that carries meaning (a value
  // in data, the type, the time, a signature), must fail verification naming that line.
  size_t offset = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    for (const char* anchor :
         {"\"cellId\":\"", "\"type\":\"dev.", "\"time\":\"2", "\"dssematerial\":\"e"}) {
      auto at = lines[i].find(anchor);
      ASSERT_NE(at, std::string::npos) << anchor;
      std::string tampered = original;
      size_t byte = offset + at + strlen(anchor) + 1;
      tampered[byte] = tampered[byte] == 'x' ? 'y' : 'x';
      writeFile(events_, tampered);
      auto bad = verify();
      EXPECT_EQ(bad.status, 1) << "line " << i + 1 << " anchor " << anchor;
      EXPECT_NE(bad.out.find(events_ + ":" + std::to_string(i + 1) + ":"), std::string::npos)
          << "line " << i + 1 << " anchor " << anchor << ": " << bad.out;
    }
    offset += lines[i].size() + 1;
  }
  writeFile(events_, original);
  EXPECT_EQ(verify().status, 0);
}

TEST_F(CellosRun, DaemonsRunUnprivilegedUnderSeccompWhileACellRuns) {
  auto doc = writeDocument("wait.yaml", shellCell("privilege-check", "echo ready; sleep 3"));
  CellosProcess run(runArgs(doc));
  ASSERT_TRUE(run.waitForStdout("ready", 30s)) << run.err();
  std::map<std::string, pid_t> daemons;
  for (pid_t child : childrenOf(run.pid())) daemons[exeName(child)] = child;
  ASSERT_EQ(daemons.size(), 4u) << run.err();
  // The residue check sees a running cell (so its empty answer after a run means something).
  EXPECT_FALSE(hostResidue().empty());
  pid_t dnsChild = -1;
  for (pid_t p : childrenOf(daemons["cellos-dns-helper"])) {
    if (exeName(p) == "cellos-dns-helper") dnsChild = p;
  }
  ASSERT_GT(dnsChild, 0) << "no per-cell DNS child";

  auto uidOf = [](pid_t pid) { return std::stoi(statusField(pid, "Uid")); };
  std::set<int> uids;
  for (pid_t pid : {daemons["cellos-broker"], daemons["cellos-event-signer"], dnsChild}) {
    SCOPED_TRACE(exeName(pid) + " " + std::to_string(pid));
    EXPECT_NE(uidOf(pid), 0);
    EXPECT_EQ(statusField(pid, "CapEff"), "0000000000000000");
    EXPECT_EQ(statusField(pid, "Seccomp"), "2");
    EXPECT_EQ(statusField(pid, "NoNewPrivs"), "1");
    uids.insert(uidOf(pid));
  }
  EXPECT_EQ(uids.size(), 3u) << "broker, signer and DNS child must be three different users";

  // The VM launcher keeps exactly its documented set (see vmm-agent/main.cpp), not full root.
  // SYS_ADMIN(21) NET_ADMIN(12) SETUID(7) SETGID(6) SYS_CHROOT(18) KILL(5) DAC_OVERRIDE(1)
  // SETPCAP(8)
  uint64_t expected = (1ull << 21) | (1ull << 12) | (1ull << 7) | (1ull << 6) | (1ull << 18) |
                      (1ull << 5) | (1ull << 1) | (1ull << 8);
  // CHOWN(0) as well when the gvisor backend is on (runsc installed): docs/security.md.
  if (access("/usr/bin/runsc", X_OK) == 0) expected |= 1ull << 0;
  pid_t agent = daemons["cellos-vmm-agent"];
  EXPECT_EQ(std::stoull(statusField(agent, "CapEff"), nullptr, 16), expected);
  EXPECT_EQ(std::stoull(statusField(agent, "CapBnd"), nullptr, 16), expected);
  EXPECT_EQ(statusField(agent, "Seccomp"), "2");
  // The DNS spawner: SYS_ADMIN NET_BIND_SERVICE(10) SETUID SETGID SETPCAP.
  uint64_t spawner = (1ull << 21) | (1ull << 10) | (1ull << 7) | (1ull << 6) | (1ull << 8);
  EXPECT_EQ(std::stoull(statusField(daemons["cellos-dns-helper"], "CapEff"), nullptr, 16), spawner);
  EXPECT_EQ(run.wait(), 0) << run.err();
}

}  // namespace
}  // namespace cellos::testing
