// A peer that dies at any point of any call must never corrupt another process (issue 14,
// finding 1). The four daemons are started one by one; the broker holds every run in one phase
// with that phase's helper call in flight (--test-hold-phase); then the broker, or the signer,
// is killed with SIGKILL. The VM launcher and the DNS helper must tear the cell down on their
// own, keep running, stop cleanly when asked (exit status 0: no abort, no SIGSYS from a
// filter), write no sanitizer report, and leave nothing behind. scripts/test also runs this
// suite against ASan/UBSan builds of the daemons, where a use after free is a report, not luck.

#include "tests/e2e/cellos_process.h"
#include "tests/e2e/event_daemons.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

struct PeerDeath {
  std::string phase;   // where the broker holds the run
  std::string victim;  // "broker" or "signer"
  // Stop the helpers at once, as `cellos run` does when its broker dies, racing the teardown
  // the broker's death started (the original finding: the agent's state was gone before the
  // capability the RPC system still held), instead of waiting for it.
  bool raceShutdown = false;
};

void PrintTo(const PeerDeath& d, std::ostream* os) {
  *os << d.victim << "@" << d.phase << (d.raceShutdown ? "+shutdown" : "");
}

// What a sanitizer, glibc's heap checks or a KJ assertion writes when memory went wrong.
const char* const kCorruptionSigns[] = {"AddressSanitizer", "UndefinedBehaviorSanitizer",
                                        "runtime error:",   "double free",
                                        "free(): ",         "corrupted",
                                        "LeakSanitizer",    "stack smashing"};

std::string describe(int status) {
  if (status < 0) return "never exited";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool waitUntilGone(EventDaemons& daemons, const std::string& name, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (daemons.running(name)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

class PeerDeaths : public ::testing::TestWithParam<PeerDeath> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    stateDir_ = makeTempDir();
    chmod(stateDir_.c_str(), 0755);  // the signer, as its own user, makes its directory inside
    baseline_ = hostResidue();
  }
  void TearDown() override {
    daemons_.reset();
    if (!stateDir_.empty()) std::filesystem::remove_all(stateDir_);
  }
  std::vector<std::string> newResidue() {
    std::vector<std::string> out;
    for (const auto& r : hostResidue()) {
      if (std::find(baseline_.begin(), baseline_.end(), r) == baseline_.end()) out.push_back(r);
    }
    return out;
  }

  std::string stateDir_;
  std::vector<std::string> baseline_;
  std::unique_ptr<EventDaemons> daemons_;
};

TEST_P(PeerDeaths, TheOtherDaemonsTearTheCellDownStopCleanlyAndLeaveNothing) {
  const PeerDeath& death = GetParam();
  daemons_ = std::make_unique<EventDaemons>(stateDir_);
  auto& d = *daemons_;
  d.startSigner();
  d.startHelpers();
  d.startBroker({"--enable-test-faults", "--test-hold-phase=" + death.phase},
                {"CELLOS_SECRET_TOKEN=peer-death-secret"});

  // Every phase has work to do: a secret to deliver, a DNS child, an artifact to export.
  std::string id = "death-" + death.phase;
  std::replace(id.begin(), id.end(), '_', '-');
  std::string document = stateDir_ + "/cell.yaml";
  writeFile(document, "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
                          "\n  lifetime: {ttlSeconds: 120}\n"
                          "  authority:\n    secretRefs: [TOKEN]\n"
                          "    dnsAuthority: {hostnameAllowlist: [example.test]}\n"
                          "  run:\n    secretDelivery: file\n"
                          "    argv: [/bin/sh, -c, 'echo out > /workspace/out.txt; sleep 3']\n"
                          "  export:\n    artifacts: [{name: out, path: /workspace/out.txt}]\n");
  CellosProcess submit({"submit", "--wait", document, "--socket=" + d.socket("broker")});

  ASSERT_TRUE(d.waitForLog("broker", "holding in phase " + death.phase, 60s))
      << d.log("broker") << d.log("vmm");
  d.kill9(death.victim);
  if (death.victim == "signer") {
    // A broker that loses its signer stops, loudly (it cannot write a signed record).
    ASSERT_TRUE(waitUntilGone(d, "broker", 30s)) << d.log("broker");
    int status = d.lastStatus("broker");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << describe(status) << "\n"
                                                                << d.log("broker");
  }
  if (!death.raceShutdown) submit.wait(30s);

  if (!death.raceShutdown) {
    // A cell exists from network_scope on; the launcher must destroy it by itself.
    bool cellBuilt = death.phase != "admission";
    if (cellBuilt) {
      EXPECT_TRUE(d.waitForLog("vmm", "destroyed, no residue", 30s)) << d.log("vmm");
    }
    // The helpers are still serving: they were not killed by what the dead peer left them.
    EXPECT_TRUE(d.running("vmm")) << describe(d.lastStatus("vmm")) << "\n" << d.log("vmm");
    EXPECT_TRUE(d.running("dns")) << describe(d.lastStatus("dns")) << "\n" << d.log("dns");
  }

  // Asked to stop, each survivor shuts down cleanly.
  for (const char* name : {"broker", "dns", "vmm", "signer"}) {
    if (!d.running(name)) continue;
    int status = d.stop(name);
    EXPECT_EQ(describe(status), "exit 0") << name << ":\n" << d.log(name);
  }
  for (const char* name : {"broker", "dns", "vmm", "signer"}) {
    std::string log = d.log(name);
    for (const char* sign : kCorruptionSigns) {
      EXPECT_EQ(log.find(sign), std::string::npos) << name << " wrote \"" << sign << "\":\n" << log;
    }
  }
  // The launcher half exits once the agent has gone (its socket closes): give it a moment.
  auto residue = newResidue();
  for (int i = 0; i < 100 && !residue.empty(); ++i) {
    std::this_thread::sleep_for(100ms);
    residue = newResidue();
  }
  std::string text;
  for (const auto& r : residue) text += r + "\n";
  EXPECT_TRUE(residue.empty()) << text;
}

std::vector<PeerDeath> everyPhaseAndVictim() {
  std::vector<PeerDeath> out;
  for (const char* victim : {"broker", "signer"}) {
    for (const char* phase :
         {"admission", "network_scope", "secrets", "run", "export", "destroy", "revoke"}) {
      out.push_back({phase, victim});
      if (std::string(victim) == "broker") out.push_back({phase, victim, true});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(EachPhase, PeerDeaths, ::testing::ValuesIn(everyPhaseAndVictim()),
                         [](const ::testing::TestParamInfo<PeerDeath>& info) {
                           return info.param.victim + "_" + info.param.phase +
                                  (info.param.raceShutdown ? "_shutdown" : "");
                         });

}  // namespace
}  // namespace cellos::testing
