// The real cellos-event-signer: key custody (generated, operator PEM Ed25519 / P-256, systemd
// credential), rotation, one signer per state directory, and kill -9 at any point of a stream
// of signing: after restarts no sequence is ever handed out twice and the chain never forks.
// The test signs as root (the signer runs with --broker-user=root).

#include "core/encoding.h"
#include "core/log_verifier.h"
#include "core/verifiability.h"
#include "ipc/signer.capnp.h"
#include "ipc/socket.h"
#include "tests/e2e/event_daemons.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <kj/async-io.h>
#include <nlohmann/json.hpp>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string unsignedEvent(size_t n) {
  return nlohmann::json{{"specversion", "1.0"},
                        {"id", "evt-" + std::to_string(n)},
                        {"source", "urn:cellos:host:signer-test"},
                        {"type", "dev.cellos.events.cell.lifecycle.v1.started"},
                        {"subject", "urn:cellos:cell:signer-test"},
                        {"time", "2026-11-29T10:00:00.000001Z"},
                        {"datacontenttype", "application/json"},
                        {"data", {{"cellId", "signer-test"}, {"n", n}}}}
      .dump();
}

// Signs batches of `batchSize` on one connection until `stop` is set or a call fails; returns
// every signed event received, in order.
std::vector<nlohmann::json> signStream(const std::string& socket, size_t batchSize,
                                       size_t maxBatches, std::atomic<bool>* stop,
                                       size_t* counter) {
  std::vector<nlohmann::json> received;
  auto io = kj::setupAsyncIo();
  try {
    ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(socket), {.maxFdsPerMessage = 0},
                      capnp::rpc::twoparty::Side::CLIENT, nullptr);
    auto signer = link.bootstrap<ipc::EventSigner>();
    for (size_t b = 0; b < maxBatches && !(stop && *stop); ++b) {
      auto request = signer.signRequest();
      auto list = request.initEvents(batchSize);
      for (size_t i = 0; i < batchSize; ++i) {
        std::string text = unsignedEvent((*counter)++);
        list.set(i, kj::arrayPtr(reinterpret_cast<const capnp::byte*>(text.data()), text.size()));
      }
      auto response =
          ipc::withTimeout(io.provider->getTimer(), 30 * kj::SECONDS, "sign", request.send())
              .wait(io.waitScope);
      for (auto event : response.getSigned()) {
        received.push_back(nlohmann::json::parse(
            std::string(reinterpret_cast<const char*>(event.begin()), event.size())));
      }
    }
  } catch (const kj::Exception&) {
    // The signer died under us: what arrived before is what counts.
  }
  return received;
}

class SignerDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the signer switches to cellos-signer";
    char dir[] = "/tmp/cellos-signer-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    chmod(dir, 0755);
    daemons_ = std::make_unique<EventDaemons>(dir_);
  }
  void TearDown() override {
    daemons_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void startSigner(std::vector<std::string> extra = {}, std::vector<std::string> env = {}) {
    extra.push_back("--broker-user=root");
    daemons_->startSigner(extra, env);
  }
  std::vector<nlohmann::json> sign(size_t count) {
    return signStream(daemons_->socket("signer"), count, 1, nullptr, &counter_);
  }
  core::Keyset keyset() {
    std::string error;
    auto keys = core::parseKeyset(readText(daemons_->signerDir() + "/keyset.json"), &error);
    EXPECT_TRUE(keys.has_value()) << error;
    return keys.value_or(core::Keyset{});
  }
  static std::string keyIdOf(const nlohmann::json& event) {
    auto envelope =
        nlohmann::json::parse(*core::base64Decode(event["dssematerial"].get<std::string>()));
    return envelope["signatures"][0]["keyid"];
  }
  // Verifies `events` as one log; returns the failure, if any.
  std::optional<core::VerifyFailure> verifyChain(const std::vector<nlohmann::json>& events,
                                                 core::LogVerifier* out = nullptr) {
    core::LogVerifier verifier(keyset(), true);
    for (size_t i = 0; i < events.size(); ++i) verifier.feedLine("log", i + 1, events[i].dump());
    if (out) *out = verifier;
    return verifier.failure();
  }
  // Writes a PKCS#8 key made by openssl, readable by the signer's user only.
  std::string operatorKey(const std::string& name, const std::string& genpkeyArgs) {
    std::string path = dir_ + "/" + name + ".pem";
    auto made = runShell("openssl genpkey " + genpkeyArgs + " -out " + path);
    EXPECT_EQ(made.status, 0) << made.out;
    passwd* signer = getpwnam("cellos-signer");
    EXPECT_NE(signer, nullptr);
    if (signer) {
      EXPECT_EQ(chown(path.c_str(), signer->pw_uid, signer->pw_gid), 0);
    }
    chmod(path.c_str(), 0600);
    return path;
  }

  std::string dir_;
  std::unique_ptr<EventDaemons> daemons_;
  size_t counter_ = 0;
};

TEST_F(SignerDaemon, KillNineAtAnyPointNeverReusesASequenceOrForksTheChain) {
  std::mt19937 random(std::random_device{}());
  std::vector<nlohmann::json> all;
  size_t wholeBatchRounds = 0;
  for (int round = 0; round < 8; ++round) {
    startSigner();
    std::atomic<bool> stop = false;
    std::vector<nlohmann::json> received;
    std::thread client(
        [&]() { received = signStream(daemons_->socket("signer"), 64, 100000, &stop, &counter_); });
    // Anywhere: before the first batch, mid-batch, while the head is being written, between.
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 60000));
    daemons_->kill9("signer");
    stop = true;
    client.join();
    if (received.size() % 64 == 0) ++wholeBatchRounds;  // every answered batch arrived whole
    all.insert(all.end(), received.begin(), received.end());
  }
  ASSERT_GT(all.size(), 0u);
  EXPECT_EQ(wholeBatchRounds, 8u) << "a batch is answered whole or not at all";
  // No sequence twice; each received event either continues the previous one exactly (the
  // chain did not fork) or follows a gap of events signed but never delivered (the head had
  // been persisted, then the signer died before answering).
  for (size_t i = 1; i < all.size(); ++i) {
    uint64_t previous = *core::parseSequence(all[i - 1]["sequence"].get<std::string>());
    uint64_t current = *core::parseSequence(all[i]["sequence"].get<std::string>());
    ASSERT_GT(current, previous) << "sequence reused at event " << i;
    if (current == previous + 1) {
      EXPECT_EQ(all[i]["cellosprev"],
                core::chainLink(all[i - 1]["dssematerial"].get<std::string>()))
          << "the chain forked at sequence " << current;
    }
  }
  // After a last restart the signer continues after everything it ever handed out.
  startSigner();
  auto next = sign(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_GT(*core::parseSequence(next[0]["sequence"].get<std::string>()),
            *core::parseSequence(all.back()["sequence"].get<std::string>()));
  for (const auto& e : all) EXPECT_EQ(core::verifyEventSignature(e, keyset()), std::nullopt);
}

TEST_F(SignerDaemon, RotationOfflineAndOnlineContinuesTheChainAndKeepsOldKeys) {
  startSigner();
  auto events = sign(3);
  std::string first = keyIdOf(events[0]);
  daemons_->stop("signer");

  // Offline: no signer holds the state directory, so rotate changes the files directly.
  auto offline =
      runShell(binary("cellos-event-signer") + " rotate --state-dir " + daemons_->signerDir() +
               " --socket " + daemons_->socket("signer") + " --config /dev/null");
  ASSERT_EQ(offline.status, 0) << offline.out;
  EXPECT_NE(offline.out.find("no signer running"), std::string::npos) << offline.out;
  startSigner();
  auto more = sign(2);
  std::string second = keyIdOf(more[0]);
  EXPECT_NE(second, first);
  EXPECT_EQ(more[0]["sequence"], core::formatSequence(3)) << "the chain continues";

  // Online: the running signer switches between two batches.
  auto online = runShell(binary("cellos-event-signer") + " rotate --algorithm p256 --state-dir " +
                         daemons_->signerDir() + " --socket " + daemons_->socket("signer") +
                         " --config /dev/null");
  ASSERT_EQ(online.status, 0) << online.out;
  EXPECT_NE(online.out.find("running signer now signs with p256:"), std::string::npos)
      << online.out;
  auto last = sign(2);
  EXPECT_EQ(keyIdOf(last[0]).rfind("p256:", 0), 0u);
  events.insert(events.end(), more.begin(), more.end());
  events.insert(events.end(), last.begin(), last.end());

  // Every key that ever signed is still in the keyset; the chain verifies across both changes.
  auto keys = keyset();
  EXPECT_EQ(keys.size(), 3u);
  for (const auto& id : {first, second, keyIdOf(last[0])}) EXPECT_TRUE(keys.count(id)) << id;
  core::LogVerifier verifier(keys, true);
  auto failure = verifyChain(events, &verifier);
  EXPECT_FALSE(failure.has_value()) << failure->reason;
  EXPECT_EQ(verifier.keyChanges().size(), 2u);
  // The head keeps the audit trail: which key signed from which sequence.
  auto head = nlohmann::json::parse(readText(daemons_->signerDir() + "/chain-head.json"));
  ASSERT_EQ(head["keys"].size(), 3u) << head.dump();
  EXPECT_EQ(head["keys"][1]["fromSequence"], 3);
  EXPECT_EQ(head["keys"][2]["fromSequence"], 5);
  // The old private key is gone from the state directory.
  EXPECT_FALSE(std::filesystem::exists(daemons_->signerDir() + "/signing-key.pem.new"));

  // Only root may rotate a running signer: a member of group cellos, which may read the
  // keyset over the same socket, is refused.
  passwd* cellos = getpwnam("cellos");
  ASSERT_NE(cellos, nullptr);
  pid_t child = fork();
  if (child == 0) {
    setgroups(0, nullptr);
    if (setresgid(cellos->pw_gid, cellos->pw_gid, cellos->pw_gid) < 0 ||
        setresuid(cellos->pw_uid, cellos->pw_uid, cellos->pw_uid) < 0) {
      _exit(3);
    }
    try {
      auto io = kj::setupAsyncIo();
      ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(daemons_->socket("signer")),
                        {.maxFdsPerMessage = 0}, capnp::rpc::twoparty::Side::CLIENT, nullptr);
      auto signer = link.bootstrap<ipc::EventSigner>();
      signer.keysetRequest().send().wait(io.waitScope);  // allowed
      signer.rotateRequest().send().wait(io.waitScope);  // refused
      _exit(0);
    } catch (const kj::Exception& e) {
      bool refused =
          std::string(e.getDescription().cStr()).find("only root may rotate") != std::string::npos;
      _exit(refused ? 1 : 2);
    }
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "status " << status;
  EXPECT_EQ(keyIdOf(sign(1)[0]), keyIdOf(last[0])) << "the key did not change";
}

TEST_F(SignerDaemon, OperatorKeysEd25519AndP256AndSystemdCredential) {
  std::string p256 = operatorKey("p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256");
  std::string ed = operatorKey("ed", "-algorithm ed25519");
  startSigner({"--key-file=" + p256});
  auto events = sign(2);
  EXPECT_EQ(keyIdOf(events[0]).rfind("p256:", 0), 0u);
  // An operator's key is rotated by replacing it, not by `rotate`.
  auto refused =
      runShell(binary("cellos-event-signer") + " rotate --state-dir " + daemons_->signerDir() +
               " --socket " + daemons_->socket("signer") + " --config /dev/null");
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.out.find("operator"), std::string::npos) << refused.out;
  daemons_->stop("signer");

  // The operator's next key, here delivered as a systemd credential: the chain continues.
  std::string credentials = dir_ + "/credentials";
  std::filesystem::create_directory(credentials);
  std::filesystem::rename(ed, credentials + "/signing-key");
  chmod(credentials.c_str(), 0755);
  startSigner({}, {"CREDENTIALS_DIRECTORY=" + credentials});
  auto more = sign(2);
  EXPECT_EQ(keyIdOf(more[0]).rfind("ed25519:", 0), 0u);
  EXPECT_EQ(more[0]["sequence"], core::formatSequence(2));
  events.insert(events.end(), more.begin(), more.end());
  auto failure = verifyChain(events);
  EXPECT_FALSE(failure.has_value()) << failure->reason;
  EXPECT_EQ(keyset().size(), 2u);
  // No private key was written to the state directory for an operator key.
  EXPECT_FALSE(std::filesystem::exists(daemons_->signerDir() + "/signing-key.pem"));
}

TEST_F(SignerDaemon, OneSignerPerStateDirectory) {
  startSigner();
  EventDaemons second(dir_);  // another runtime directory, the same signer state
  try {
    second.startSigner({"--broker-user=root"});
    ADD_FAILURE() << "a second signer started on the same state directory";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("another cellos-event-signer serves this state directory"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(sign(1).size(), 1u) << "the first signer still serves";
}

}  // namespace
}  // namespace cellos::testing
