// The three legitimate ways a log differs from one unbroken run of lines by one key: key
// rotation, dead-lettered events, and gaps declared by a signed log.v1.resumed event — and the
// forgeries each must not let through.

#include "core/log_verifier.h"
#include "core/uuid.h"
#include "core/verifiability.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellos::core {
namespace {

// A chain whose signing key can change between events, as the signer's does on rotation.
class RotatingChain {
 public:
  std::string next(const SigningKey& key, nlohmann::json event = nullptr) {
    if (event.is_null()) {
      event = {{"specversion", "1.0"},
               {"id", newUuidV7()},
               {"source", "urn:cellos:host:test"},
               {"type", "dev.cellos.events.cell.lifecycle.v1.started"},
               {"subject", "urn:cellos:cell:demo"},
               {"time", "2026-11-29T10:00:00.250000Z"},
               {"datacontenttype", "application/json"},
               {"data", {{"cellId", "demo"}, {"step", sequence_}}}};
    }
    event["sequence"] = formatSequence(sequence_);
    event["cellosprev"] = previous_.empty() ? genesisLink() : chainLink(previous_);
    signEvent(event, key);
    previous_ = event["dssematerial"].get<std::string>();
    ++sequence_;
    return event.dump();
  }
  // Events signed but lost before anyone wrote them.
  void lose(const SigningKey& key, size_t count) {
    for (size_t i = 0; i < count; ++i) next(key);
  }
  const std::string& previous() const { return previous_; }
  uint64_t sequence() const { return sequence_; }

 private:
  uint64_t sequence_ = 0;
  std::string previous_;
};

struct Fed {
  std::optional<VerifyFailure> failure;
  LogVerifier verifier;
};

class ContinuityTest : public ::testing::Test {
 protected:
  SigningKey a_ = SigningKey::generate();
  SigningKey b_ = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  Keyset keys_ = {{a_.keyId(), a_.publicKey()}, {b_.keyId(), b_.publicKey()}};
  RotatingChain chain_;

  LogVerifier feed(const std::vector<std::string>& lines,
                   const std::vector<std::pair<uint64_t, std::string>>& deadLetters = {}) {
    LogVerifier verifier(keys_, true);
    for (const auto& [sequence, line] : deadLetters) {
      verifier.addDeadLetter(sequence, "dead/" + std::to_string(sequence) + ".json", line);
    }
    for (size_t i = 0; i < lines.size(); ++i) {
      if (!verifier.feedLine("log", i + 1, lines[i])) break;
    }
    verifier.finishFile("log", lines.size(), true);
    return verifier;
  }
  std::string resumed(uint64_t lastWritten, const std::string& lastDssematerial) {
    return chain_.next(a_, makeLogResumedEvent("test", newUuidV7(), "2026-11-29T10:00:01Z",
                                               lastWritten, lastDssematerial, "crash"));
  }
};

TEST_F(ContinuityTest, RotationContinuesTheChainUnderTheNewKey) {
  std::vector<std::string> lines = {chain_.next(a_), chain_.next(a_), chain_.next(b_),
                                    chain_.next(b_)};
  auto verifier = feed(lines);
  ASSERT_FALSE(verifier.failure()) << verifier.failure()->reason;
  ASSERT_EQ(verifier.keyChanges().size(), 1u);
  EXPECT_EQ(verifier.keyChanges()[0].line, 3u);
  EXPECT_EQ(verifier.keyChanges()[0].fromKeyId, a_.keyId());
  EXPECT_EQ(verifier.keyChanges()[0].toKeyId, b_.keyId());
}

TEST_F(ContinuityTest, ARetiredKeyNeverSignsAgain) {
  std::vector<std::string> lines = {chain_.next(a_), chain_.next(b_), chain_.next(a_)};
  auto verifier = feed(lines);
  ASSERT_TRUE(verifier.failure());
  EXPECT_EQ(verifier.failure()->line, 3u);
  EXPECT_NE(verifier.failure()->reason.find("a key the chain was rotated away from"),
            std::string::npos)
      << verifier.failure()->reason;
}

TEST_F(ContinuityTest, DeadLettersFillTheirPlaceVerified) {
  std::vector<std::string> lines = {chain_.next(a_), chain_.next(a_)};
  std::string dead2 = chain_.next(a_), dead3 = chain_.next(a_);
  lines.push_back(chain_.next(a_));
  auto verifier = feed(lines, {{2, dead2}, {3, dead3}});
  ASSERT_FALSE(verifier.failure()) << verifier.failure()->reason;
  EXPECT_EQ(verifier.eventsVerified(), 5u);
  EXPECT_EQ(verifier.deadLettersVerified(), 2u);

  // A tampered dead letter fails, named by its file.
  auto event = nlohmann::json::parse(dead3);
  event["data"]["step"] = 99;
  verifier = feed(lines, {{2, dead2}, {3, event.dump()}});
  ASSERT_TRUE(verifier.failure());
  EXPECT_EQ(verifier.failure()->file, "dead/3.json");
  EXPECT_EQ(verifier.failure()->reason, "core digest mismatch");

  // Missing one of them: the gap is reported at the log line after it.
  verifier = feed(lines, {{2, dead2}});
  ASSERT_TRUE(verifier.failure());
  EXPECT_EQ(verifier.failure()->line, 3u);
  EXPECT_NE(
      verifier.failure()->reason.find("sequence 4 does not follow 2: events 3..3 are missing"),
      std::string::npos)
      << verifier.failure()->reason;
}

TEST_F(ContinuityTest, ASignedResumedEventDeclaresTheGapBeforeIt) {
  std::vector<std::string> lines = {chain_.next(a_), chain_.next(a_)};
  std::string lastWritten = chain_.previous();
  chain_.lose(a_, 3);  // sequences 2..4: signed, never written
  lines.push_back(resumed(1, lastWritten));
  lines.push_back(chain_.next(a_));
  auto verifier = feed(lines);
  ASSERT_FALSE(verifier.failure()) << verifier.failure()->reason;
  ASSERT_EQ(verifier.declaredGaps().size(), 1u);
  EXPECT_EQ(verifier.declaredGaps()[0].line, 3u);
  EXPECT_EQ(verifier.declaredGaps()[0].firstMissing, 2u);
  EXPECT_EQ(verifier.declaredGaps()[0].lastMissing, 4u);
}

TEST_F(ContinuityTest, AResumedEventMustNameTheLineBeforeIt) {
  std::vector<std::string> lines = {chain_.next(a_), chain_.next(a_), chain_.next(a_)};
  std::string written1 = nlohmann::json::parse(lines[1])["dssematerial"];
  chain_.lose(a_, 2);
  lines.push_back(resumed(1, written1));  // names line 2, but follows line 3
  auto verifier = feed(lines);
  ASSERT_TRUE(verifier.failure());
  EXPECT_EQ(verifier.failure()->line, 4u);
  EXPECT_NE(verifier.failure()->reason.find("does not name the previous line"), std::string::npos);
}

TEST_F(ContinuityTest, AnUnsignedOrForeignGapDeclarationDoesNotCount) {
  std::vector<std::string> lines = {chain_.next(a_)};
  std::string lastWritten = chain_.previous();
  chain_.lose(a_, 2);
  RotatingChain beforeDeclaration = chain_;
  // Signed by a key the verifier does not trust.
  SigningKey stranger = SigningKey::generate();
  lines.push_back(chain_.next(
      stranger,
      makeLogResumedEvent("test", newUuidV7(), "2026-11-29T10:00:01Z", 0, lastWritten, "crash")));
  auto verifier = feed(lines);
  ASSERT_TRUE(verifier.failure());
  EXPECT_EQ(verifier.failure()->line, 2u);
  EXPECT_NE(verifier.failure()->reason.find("unknown keyid"), std::string::npos);
  // An ordinary event cannot declare a gap however its data reads.
  nlohmann::json imitation = nlohmann::json::parse(lines[1]);
  imitation["type"] = "dev.cellos.events.cell.lifecycle.v1.started";
  imitation.erase("dssematerial");
  imitation.erase("sequence");
  imitation.erase("cellosprev");
  lines[1] = beforeDeclaration.next(a_, imitation);
  verifier = feed(lines);
  ASSERT_TRUE(verifier.failure());
  EXPECT_NE(verifier.failure()->reason.find("sequence 3 does not follow 0"), std::string::npos)
      << verifier.failure()->reason;
}

}  // namespace
}  // namespace cellos::core
