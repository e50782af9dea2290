// End-to-end: the real signer and broker write signed checkpoints (C2SP tlog-checkpoint in a
// signed note, RFC 9162 tree) beside the log, and `cellos verify --checkpoint` catches what the
// hash chain alone cannot: a cut tail. Also a prefix rewritten and re-signed under another key,
// a broker killed with -9 mid-run (log and checkpoints still verify, the declared gap in the
// tree), an inclusion proof for one event, and a checker that is not cellos (python3 hashlib
// and the openssl CLI) agreeing on a checkpoint's signature and root.

#include "core/checkpoint.h"
#include "core/encoding.h"
#include "core/merkle.h"
#include "core/verifiability.h"
#include "tests/e2e/cellos_process.h"
#include "tests/e2e/event_daemons.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

namespace cellos::testing {
namespace {

std::string joinLines(const std::vector<std::string>& lines, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) out += lines[i] + "\n";
  return out;
}

class Checkpoints : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    char pattern[] = "/tmp/cellos-checkpoints.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    chmod(dir_.c_str(), 0755);
    daemons_ = std::make_unique<EventDaemons>(dir_);
  }
  void TearDown() override {
    daemons_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Signer with a checkpoint after (nearly) every reported batch, helpers and broker.
  void start(std::vector<std::string> brokerExtra = {}) {
    daemons_->startSigner({"--checkpoint-interval=0.001"});
    daemons_->startHelpers();
    daemons_->startBroker(std::move(brokerExtra));
  }

  // `batches` submissions of two rejected documents: two events per signing batch.
  void submit(const std::string& tag, size_t batches) {
    for (size_t i = 0; i < batches; ++i) {
      auto r = submitDocuments(daemons_->socket("broker"),
                               {rejectedDocument(tag + std::to_string(2 * i)),
                                rejectedDocument(tag + std::to_string(2 * i + 1))});
      ASSERT_TRUE(r[0].delivered && r[1].delivered) << r[0].error;
    }
  }

  std::string checkpointsPath() const { return daemons_->eventsPath() + ".checkpoints"; }
  std::string keyset() const { return daemons_->signerDir() + "/keyset.json"; }

  VerifyResult verifyWithCheckpoints(const std::string& log, const std::string& keys) {
    return cellosVerify({"--keys", keys, "--checkpoint", checkpointsPath(), log});
  }

  std::string dir_;
  std::unique_ptr<EventDaemons> daemons_;
};

TEST_F(Checkpoints, CutTailOfOneTwoOrTenLinesFailsNamingTheRange) {
  start();
  submit("cut", 12);
  daemons_->stopAll();
  auto lines = readLines(daemons_->eventsPath());
  ASSERT_EQ(lines.size(), 24u);
  std::string error;
  auto notes = core::parseSignedNotes(readFile(checkpointsPath()), &error);
  ASSERT_TRUE(notes) << error;
  EXPECT_GE(notes->size(), 2u);  // while events flowed, and at shutdown

  auto ok = verifyWithCheckpoints(daemons_->eventsPath(), keyset());
  ASSERT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("the latest commits to 24 events"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("each consistent with the one before"), std::string::npos) << ok.out;
  // `cellos verify events.jsonl.* events.jsonl` names the checkpoint file too: it is used.
  auto globbed = cellosVerify({"--keys", keyset(), checkpointsPath(), daemons_->eventsPath()});
  EXPECT_EQ(globbed.status, 0) << globbed.out;
  EXPECT_NE(globbed.out.find("checkpoints verified"), std::string::npos) << globbed.out;

  for (size_t cut : {1, 2, 10}) {
    SCOPED_TRACE(cut);
    std::string path = dir_ + "/cut.jsonl";
    writeFile(path, joinLines(lines, lines.size() - cut));
    // The chain alone cannot tell: what is left is a valid chain.
    auto chainOnly = cellosVerify({"--keys", keyset(), path});
    EXPECT_EQ(chainOnly.status, 0) << chainOnly.out;
    auto result = verifyWithCheckpoints(path, keyset());
    EXPECT_EQ(result.status, 1) << result.out;
    std::string range = "events " + std::to_string(24 - cut) + "..23 (" + std::to_string(cut) +
                        ", tree leaves " + std::to_string(24 - cut) + "..23) are missing";
    EXPECT_NE(result.out.find(range), std::string::npos) << result.out;
  }
}

TEST_F(Checkpoints, RewrittenPrefixResignedWithAnotherKeyFails) {
  start();
  submit("rewrite", 5);
  daemons_->stopAll();
  auto lines = readLines(daemons_->eventsPath());
  ASSERT_EQ(lines.size(), 10u);
  // The holder of the log rewrites event 2 and re-signs the whole chain with a key of its own.
  core::SigningKey forger = core::SigningKey::generate();
  std::string prevLink = core::genesisLink();
  std::string forged;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto event = nlohmann::json::parse(lines[i]);
    if (i == 2) event["data"]["cellId"] = "rewritten";
    event.erase("dssematerial");
    event["cellosprev"] = prevLink;
    core::signEvent(event, forger);
    prevLink = core::chainLink(event["dssematerial"].get<std::string>());
    forged += event.dump() + "\n";
  }
  std::string path = dir_ + "/forged.jsonl";
  writeFile(path, forged);
  // Trusting the forger's key too, the chain verifies; the checkpoints (by the signer's key)
  // do not match it.
  auto genuine = nlohmann::json::parse(readFile(keyset()));
  genuine[forger.keyId()] = core::base64UrlEncode(forger.rawPublicKey());
  writeFile(dir_ + "/both.json", genuine.dump());
  auto chainOnly = cellosVerify({"--keys", dir_ + "/both.json", path});
  EXPECT_EQ(chainOnly.status, 0) << chainOnly.out;
  auto result = verifyWithCheckpoints(path, dir_ + "/both.json");
  EXPECT_EQ(result.status, 1) << result.out;
  EXPECT_NE(result.out.find("do not hash to its root"), std::string::npos) << result.out;
  // A checkpoint file re-signed by the forger is no checkpoint of this signer.
  std::string forgedNote =
      core::signCheckpoint("cellos/forged/0", 10, std::string(32, '\x07'), forger);
  writeFile(checkpointsPath(), forgedNote);
  result = verifyWithCheckpoints(daemons_->eventsPath(), keyset());
  EXPECT_EQ(result.status, 1) << result.out;
  EXPECT_NE(result.out.find("no signature by a trusted Ed25519 key"), std::string::npos)
      << result.out;
}

// The broker is killed (-9) holding a signed batch it never wrote; the restarted broker
// declares the gap. Log and checkpoints verify: the tree resumes where the chain does, the lost
// events are not in it, the declared-gap event is.
TEST_F(Checkpoints, BrokerKilledMidRunLogAndCheckpointsVerify) {
  start({"--test-hold-signed-batch=3"});
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), {rejectedDocument("k0")})[0].delivered);
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), {rejectedDocument("k1")})[0].delivered);
  // The third signed batch is held in memory, never written; the broker is killed there.
  std::thread held([&]() {
    submitDocuments(daemons_->socket("broker"),
                    {rejectedDocument("k2"), rejectedDocument("k3"), rejectedDocument("k4")});
  });
  bool holding = daemons_->waitForLog("broker", "test hook: holding", std::chrono::seconds(30));
  if (holding) daemons_->kill9("broker");
  held.join();
  ASSERT_TRUE(holding) << daemons_->log("broker");
  daemons_->startBroker();
  submit("after", 3);
  daemons_->stopAll();

  auto result = verifyWithCheckpoints(daemons_->eventsPath(), keyset());
  EXPECT_EQ(result.status, 0) << result.out;
  EXPECT_NE(result.out.find("declared gap: events 2.."), std::string::npos) << result.out;
  auto lines = readLines(daemons_->eventsPath());
  // 2 before the kill, the resumed event, 6 after: every line is in the tree.
  ASSERT_EQ(lines.size(), 9u);
  EXPECT_NE(result.out.find("the latest commits to 9 events"), std::string::npos) << result.out;
  EXPECT_EQ(nlohmann::json::parse(lines[2])["type"], "dev.cellos.events.log.v1.resumed");
}

// The signer is killed (-9) between batches: its tree was persisted with its chain head, so
// after a restart the checkpoints continue the same tree and the whole log still verifies.
TEST_F(Checkpoints, SignerKilledMidRunTreeContinues) {
  start();
  submit("s", 3);
  daemons_->kill9("signer");
  daemons_->stop("broker");  // it exits on losing the signer anyway
  daemons_->startSigner({"--checkpoint-interval=0.001"});
  daemons_->startBroker();
  submit("t", 3);
  daemons_->stopAll();
  auto result = verifyWithCheckpoints(daemons_->eventsPath(), keyset());
  EXPECT_EQ(result.status, 0) << result.out;
  auto lines = readLines(daemons_->eventsPath());
  ASSERT_EQ(lines.size(), 12u);
  EXPECT_NE(result.out.find("the latest commits to 12 events"), std::string::npos) << result.out;
}

// One event shown to an auditor without the log: its leaf, the audit path, the checkpoint.
TEST_F(Checkpoints, InclusionProofOfOneEvent) {
  start();
  submit("prove", 4);
  daemons_->stopAll();
  auto result = cellosVerify({"--keys", keyset(), "--checkpoint", checkpointsPath(), "--prove", "5",
                              daemons_->eventsPath()});
  ASSERT_EQ(result.status, 0) << result.out;
  auto json = nlohmann::json::parse(result.out.substr(result.out.find("\n{") + 1));
  EXPECT_EQ(json["leafIndex"], 5);
  EXPECT_EQ(json["treeSize"], 8);
  auto event = nlohmann::json::parse(json["event"].get<std::string>());
  EXPECT_EQ(event["sequence"], core::formatSequence(5));
  std::vector<std::string> proof;
  for (const auto& hash : json["inclusionProof"]) {
    proof.push_back(*core::base64Decode(hash.get<std::string>()));
  }
  std::string error;
  auto notes = core::parseSignedNotes(json["checkpoint"].get<std::string>(), &error);
  ASSERT_TRUE(notes) << error;
  auto keys = core::parseKeyset(readFile(keyset()), &error);
  ASSERT_TRUE(keys) << error;
  auto checkpoint = core::verifyCheckpoint(notes->front(), *keys, &error);
  ASSERT_TRUE(checkpoint) << error;
  std::string leaf = core::checkpointLeafHash(event["dssematerial"].get<std::string>());
  EXPECT_TRUE(core::verifyMerkleInclusion(5, 8, leaf, proof, checkpoint->root));
  std::string other = core::checkpointLeafHash("another event");
  EXPECT_FALSE(core::verifyMerkleInclusion(5, 8, other, proof, checkpoint->root));
}

// A checker that is not cellos: python3 (hashlib, base64) and the openssl CLI.
TEST_F(Checkpoints, IndependentCheckerVerifiesSignatureAndRoot) {
  start();
  submit("python", 6);
  daemons_->stopAll();
  auto pem = runShell(binary("cellos") + " keys --state-dir " + daemons_->stateDir());
  ASSERT_EQ(pem.status, 0) << pem.out;
  size_t begin = pem.out.find("-----BEGIN");
  writeFile(dir_ + "/key.pem", pem.out.substr(begin));
  const std::string checker =
      std::string(CELLOS_TEST_SOURCE_DIR) + "/tests/e2e/check_checkpoint.py ";
  auto ok = runShell("python3 " + checker + daemons_->eventsPath() + " " + checkpointsPath() + " " +
                     dir_ + "/key.pem");
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("OK: cellos/ed25519:"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("tree size 12"), std::string::npos) << ok.out;
  // It, too, refuses a cut log and a changed checkpoint.
  auto lines = readLines(daemons_->eventsPath());
  writeFile(dir_ + "/cut.jsonl", joinLines(lines, lines.size() - 1));
  auto cut = runShell("python3 " + checker + dir_ + "/cut.jsonl " + checkpointsPath() + " " + dir_ +
                      "/key.pem");
  EXPECT_NE(cut.status, 0) << cut.out;
  std::string notes = readFile(checkpointsPath());
  size_t sizeLine = notes.rfind("\n12\n");
  ASSERT_NE(sizeLine, std::string::npos);
  notes.replace(sizeLine, 4, "\n11\n");
  writeFile(dir_ + "/changed.checkpoints", notes);
  auto changed = runShell("python3 " + checker + daemons_->eventsPath() + " " + dir_ +
                          "/changed.checkpoints " + dir_ + "/key.pem");
  EXPECT_NE(changed.status, 0) << changed.out;
  EXPECT_NE(changed.out.find("bad checkpoint signature"), std::string::npos) << changed.out;
}

}  // namespace
}  // namespace cellos::testing
