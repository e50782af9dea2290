// Streaming verification of signed, chained JSONL event logs.

#include "core/jcs.h"
#include "core/log_verifier.h"
#include "core/uuid.h"
#include "core/verifiability.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellos::core {
namespace {

// One signed chain as the broker would write it, one event per line.
class Chain {
 public:
  explicit Chain(const SigningKey& key, std::string cell = "demo")
      : key_(key), cell_(std::move(cell)) {}

  // Appends event number `sequence_`; `signedExtAttrs` overrides what is signed.
  std::string next(const std::vector<std::string>& signedExtAttrs = kSignedExtensions) {
    nlohmann::json event = {
        {"specversion", "1.0"},
        {"id", newUuidV7()},
        {"source", "urn:cellos:host:test"},
        {"type", "dev.cellos.events.cell.lifecycle.v1.started"},
        {"subject", "urn:cellos:cell:" + cell_},
        {"time", "2026-11-29T10:00:0" + std::to_string(sequence_ % 10) + ".250000Z"},
        {"datacontenttype", "application/json"},
        {"data", {{"cellId", cell_}, {"specId", "spec-1"}, {"step", sequence_}}},
        {"sequence", formatSequence(sequence_)},
        {"cellosprev", previous_.empty() ? genesisLink() : chainLink(previous_)},
    };
    signEvent(event, key_, signedExtAttrs);
    previous_ = event["dssematerial"].get<std::string>();
    ++sequence_;
    return event.dump();
  }

  std::vector<std::string> lines(size_t count) {
    std::vector<std::string> out;
    for (size_t i = 0; i < count; ++i) out.push_back(next());
    return out;
  }

 private:
  const SigningKey& key_;
  std::string cell_;
  uint64_t sequence_ = 0;
  std::string previous_;
};

// Feeds `lines` as one file, each ending in a newline; returns the verifier.
LogVerifier verifyLines(const Keyset& keys, const std::vector<std::string>& lines,
                        bool checkChain = true) {
  LogVerifier verifier(keys, checkChain);
  size_t number = 0;
  for (const auto& line : lines) {
    if (!verifier.feedLine("events.jsonl", ++number, line)) break;
  }
  verifier.finishFile("events.jsonl", number, true);
  return verifier;
}

class LogVerifierTest : public ::testing::Test {
 protected:
  SigningKey key_ = SigningKey::generate();
  Keyset keys_ = {{key_.keyId(), key_.publicKey()}};
  Chain chain_{key_};
  std::vector<std::string> lines_ = chain_.lines(4);

  // Asserts that verifying `lines` fails first at `line` with a reason containing `reason`.
  void expectFailure(const std::vector<std::string>& lines, size_t line, std::string_view reason) {
    LogVerifier verifier = verifyLines(keys_, lines);
    ASSERT_TRUE(verifier.failure().has_value());
    EXPECT_EQ(verifier.failure()->file, "events.jsonl");
    EXPECT_EQ(verifier.failure()->line, line) << verifier.failure()->reason;
    EXPECT_NE(verifier.failure()->reason.find(reason), std::string::npos)
        << verifier.failure()->reason;
    EXPECT_EQ(verifier.eventsVerified(), line - 1);
  }
};

TEST_F(LogVerifierTest, IntactChainVerifies) {
  LogVerifier verifier = verifyLines(keys_, lines_);
  EXPECT_FALSE(verifier.failure().has_value()) << verifier.failure()->reason;
  EXPECT_EQ(verifier.eventsVerified(), 4u);
  EXPECT_EQ(verifier.firstSequence(), 0u);
  EXPECT_EQ(verifier.lastSequence(), 3u);
}

TEST_F(LogVerifierTest, ChainContinuesAcrossRotatedFiles) {
  LogVerifier verifier(keys_, true);
  EXPECT_TRUE(verifier.feedLine("events.jsonl.1", 1, lines_[0]));
  EXPECT_TRUE(verifier.feedLine("events.jsonl.1", 2, lines_[1]));
  EXPECT_TRUE(verifier.finishFile("events.jsonl.1", 2, true));
  EXPECT_TRUE(verifier.feedLine("events.jsonl", 1, lines_[2]));
  EXPECT_TRUE(verifier.feedLine("events.jsonl", 2, lines_[3]));
  EXPECT_TRUE(verifier.finishFile("events.jsonl", 2, true));
  EXPECT_EQ(verifier.eventsVerified(), 4u);
}

TEST_F(LogVerifierTest, LogMayStartMidChain) {
  // The oldest rotated file is gone: the first event present has sequence 1.
  LogVerifier verifier = verifyLines(keys_, {lines_[1], lines_[2], lines_[3]});
  EXPECT_FALSE(verifier.failure().has_value());
  EXPECT_EQ(verifier.firstSequence(), 1u);
  EXPECT_EQ(verifier.lastSequence(), 3u);
}

TEST_F(LogVerifierTest, DeletedLine) {
  expectFailure({lines_[0], lines_[2], lines_[3]}, 2, "sequence 2 does not follow 0");
}

TEST_F(LogVerifierTest, DeletedLastLineOfOneFileAndFirstOfNext) {
  LogVerifier verifier(keys_, true);
  EXPECT_TRUE(verifier.feedLine("a", 1, lines_[0]));
  EXPECT_TRUE(verifier.finishFile("a", 1, true));
  EXPECT_FALSE(verifier.feedLine("b", 1, lines_[3]));
  ASSERT_TRUE(verifier.failure().has_value());
  EXPECT_EQ(verifier.failure()->file, "b");
  EXPECT_EQ(verifier.failure()->line, 1u);
}

TEST_F(LogVerifierTest, SwappedLines) {
  expectFailure({lines_[0], lines_[2], lines_[1], lines_[3]}, 2, "does not follow");
}

TEST_F(LogVerifierTest, DuplicatedLine) {
  expectFailure({lines_[0], lines_[1], lines_[1], lines_[2]}, 3, "sequence 1 does not follow 1");
}

TEST_F(LogVerifierTest, SplicedLineFromAnotherChainSameKey) {
  // Same key, same sequence numbers, other history: only cellosprev exposes it.
  Chain other(key_, "intruder");
  std::vector<std::string> foreign = other.lines(4);
  expectFailure({lines_[0], lines_[1], foreign[2], lines_[3]}, 3,
                "cellosprev does not match the previous event");
}

TEST_F(LogVerifierTest, SplicedLineFromAnotherSigner) {
  SigningKey otherKey = SigningKey::generate();
  Chain other(otherKey);
  std::vector<std::string> foreign = other.lines(4);
  expectFailure({lines_[0], lines_[1], foreign[2], lines_[3]}, 3, "unknown keyid");
  // Even when that signer is trusted too, its chain does not continue ours.
  keys_.emplace(otherKey.keyId(), otherKey.publicKey());
  expectFailure({lines_[0], lines_[1], foreign[2], lines_[3]}, 3, "mid-chain");
}

TEST_F(LogVerifierTest, TruncatedLastLine) {
  // The caller reports a final line without newline instead of feeding it.
  LogVerifier verifier(keys_, true);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(verifier.feedLine("events.jsonl", i + 1, lines_[i]));
  EXPECT_FALSE(verifier.finishFile("events.jsonl", 4, false));
  ASSERT_TRUE(verifier.failure().has_value());
  EXPECT_EQ(verifier.failure()->line, 4u);
  EXPECT_EQ(verifier.failure()->reason, "truncated last line (no newline)");
  EXPECT_EQ(verifier.eventsVerified(), 3u);
}

TEST_F(LogVerifierTest, TruncatedLineFedAnyway) {
  std::string cut = lines_[3].substr(0, lines_[3].size() / 2);
  expectFailure({lines_[0], lines_[1], lines_[2], cut}, 4, "invalid JSON");
  // A cut that happens to leave valid JSON is still caught by the signature.
  std::string cutAtData = lines_[1];
  nlohmann::json event = nlohmann::json::parse(cutAtData);
  event.erase("data");
  expectFailure({lines_[0], event.dump()}, 2, "core digest mismatch");
}

TEST_F(LogVerifierTest, EditedFields) {
  const std::pair<std::string, std::string> edits[] = {
      {"/data/step", "core digest mismatch"}, {"/type", "core digest mismatch"},
      {"/time", "core digest mismatch"},      {"/subject", "core digest mismatch"},
      {"/id", "core digest mismatch"},
  };
  for (const auto& [pointer, reason] : edits) {
    nlohmann::json event = nlohmann::json::parse(lines_[2]);
    nlohmann::json::json_pointer at(pointer);
    if (pointer == "/data/step")
      event[at] = 99;
    else if (pointer == "/time")
      event[at] = "2026-11-29T10:00:09Z";
    else
      event[at] = event[at].get<std::string>() + "x";
    std::vector<std::string> lines = lines_;
    lines[2] = event.dump();
    SCOPED_TRACE(pointer);
    expectFailure(lines, 3, reason);
  }
}

TEST_F(LogVerifierTest, ForgedSequenceAndLink) {
  // Renumbering a later event to hide a deletion breaks its signature.
  nlohmann::json event = nlohmann::json::parse(lines_[2]);
  event["sequence"] = formatSequence(1);
  event["cellosprev"] =
      chainLink(nlohmann::json::parse(lines_[0])["dssematerial"].get<std::string>());
  expectFailure({lines_[0], event.dump(), lines_[3]}, 2, "ext digest mismatch");
}

TEST_F(LogVerifierTest, ReserialisedLinesStillVerify) {
  std::vector<std::string> pretty;
  for (const auto& line : lines_) {
    nlohmann::json event = nlohmann::json::parse(line);
    std::string text = event.dump(-1, ' ', true);  // \u escapes instead of UTF-8
    pretty.push_back(text);
  }
  LogVerifier verifier = verifyLines(keys_, pretty);
  EXPECT_FALSE(verifier.failure().has_value()) << verifier.failure()->reason;
}

TEST_F(LogVerifierTest, MalformedLines) {
  expectFailure({lines_[0], ""}, 2, "empty line");
  expectFailure({"[1,2]"}, 1, "not a JSON object");
  expectFailure({"{\"a\":1,\"a\":1}"}, 1, "duplicate member name");
  nlohmann::json event = nlohmann::json::parse(lines_[1]);
  event.erase("id");
  expectFailure({lines_[0], event.dump()}, 2, "missing attribute id");
  event = nlohmann::json::parse(lines_[1]);
  event["sequence"] = 1;
  expectFailure({lines_[0], event.dump()}, 2, "attribute sequence is not a string");
  event = nlohmann::json::parse(lines_[1]);
  event["sequence"] = "1";
  expectFailure({lines_[0], event.dump()}, 2, "sequence is not 20 decimal digits");
  event = nlohmann::json::parse(lines_[1]);
  event["specversion"] = "0.3";
  expectFailure({lines_[0], event.dump()}, 2, "specversion is not 1.0");
}

TEST_F(LogVerifierTest, GenesisMustLinkToZero) {
  Chain bad(key_);
  nlohmann::json first = nlohmann::json::parse(bad.next());
  first["cellosprev"] = chainLink("invented history");
  first.erase("dssematerial");
  signEvent(first, key_);
  expectFailure({first.dump()}, 1, "does not link to genesis");
}

TEST_F(LogVerifierTest, SignatureMustCoverTheChain) {
  Chain weak(key_);
  std::string line = weak.next({"cellosprev"});
  expectFailure({line}, 1, "signature does not cover sequence");
}

TEST_F(LogVerifierTest, WithoutChainCheckOnlySignaturesMatter) {
  LogVerifier verifier = verifyLines(keys_, {lines_[3], lines_[0], lines_[2]}, false);
  EXPECT_FALSE(verifier.failure().has_value());
  EXPECT_EQ(verifier.eventsVerified(), 3u);
  std::string tampered = lines_[1];
  tampered.replace(tampered.find("spec-1"), 6, "spec-2");
  LogVerifier strict = verifyLines(keys_, {tampered}, false);
  ASSERT_TRUE(strict.failure().has_value());
  EXPECT_EQ(strict.failure()->reason, "core digest mismatch");
}

TEST_F(LogVerifierTest, StopsAtFirstFailure) {
  LogVerifier verifier(keys_, true);
  EXPECT_TRUE(verifier.feedLine("f", 1, lines_[0]));
  EXPECT_FALSE(verifier.feedLine("f", 2, "garbage"));
  EXPECT_FALSE(verifier.feedLine("f", 3, lines_[1]));  // would have been valid
  EXPECT_FALSE(verifier.finishFile("f", 3, false));
  ASSERT_TRUE(verifier.failure().has_value());
  EXPECT_EQ(verifier.failure()->line, 2u);
  EXPECT_EQ(verifier.eventsVerified(), 1u);
  EXPECT_EQ(verifier.lastSequence(), 0u);
}

// Whatever the signer accepts as data, the verifier can read back: the depth limits agree.
TEST_F(LogVerifierTest, DeepestSignableDataVerifies) {
  nlohmann::json data = nlohmann::json::array();
  for (size_t i = 1; i < kMaxJsonDepth - 1; ++i) data = nlohmann::json::array({data});
  nlohmann::json event = nlohmann::json::parse(lines_[0]);
  event["data"] = data;  // the event object + kMaxJsonDepth - 1 arrays
  signEvent(event, key_);
  expectFailure({event.dump(), "x"}, 2, "invalid JSON");  // line 1 verified
  event["data"] = nlohmann::json::array({data});
  EXPECT_THROW(signEvent(event, key_), std::invalid_argument);
}

}  // namespace
}  // namespace cellos::core
