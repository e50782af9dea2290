// Test vectors of the CloudEvents Verifiability extension (tests/data/verifiability, see its
// README): the spec's own examples with the spec's published P-256 key, and events signed by
// tooling that is not cellos (hashlib + the openssl CLI), Ed25519 and P-256. Each valid vector
// verifies as `cellos verify --no-chain` checks it, and every one-byte change of what it signs
// is rejected.

#include "core/encoding.h"
#include "core/jcs.h"
#include "core/log_verifier.h"
#include "core/verifiability.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cellos::core {
namespace {

std::string dataDir() {
  const char* dir = std::getenv("CELLOS_SOURCE_DIR");
  return std::string(dir && *dir ? dir : CELLOS_TEST_SOURCE_DIR) + "/tests/data/verifiability/";
}

std::string readFile(const std::string& name) {
  std::ifstream in(dataDir() + name, std::ios::binary);
  EXPECT_TRUE(in) << name;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<nlohmann::json> readRecords(const std::string& name) {
  std::vector<nlohmann::json> records;
  std::istringstream lines(readFile(name));
  std::string line;
  while (std::getline(lines, line)) records.push_back(nlohmann::json::parse(line));
  return records;
}

Keyset vectorKeys() {
  std::string error;
  auto keys = parseKeyset(readFile("keyset.json"), &error);
  EXPECT_TRUE(keys) << error;
  return keys.value_or(Keyset{});
}

std::string verdict(const nlohmann::json& event, const Keyset& keys) {
  return verifyEventSignature(event, keys).value_or("ok");
}

// What `cellos verify --no-chain` says of the event as one log line.
std::string lineVerdict(const nlohmann::json& event, const Keyset& keys) {
  LogVerifier verifier(keys, /*checkChain=*/false);
  if (verifier.feedLine("vector", 1, event.dump())) return "ok";
  return verifier.failure()->reason;
}

// The attributes a signature covers: the core ones, the payload, the material itself, and the
// extensions the material names.
std::vector<std::string> signedAttributes(const nlohmann::json& event,
                                          const nlohmann::json& signedExtensions) {
  std::vector<std::string> names;
  for (const char* name : {"id", "source", "specversion", "type", "datacontenttype", "dataschema",
                           "subject", "time", "data", "data_base64", "dssematerial"}) {
    if (event.contains(name)) names.push_back(name);
  }
  for (const auto& name : signedExtensions) {
    if (event.contains(name.get<std::string>())) names.push_back(name.get<std::string>());
  }
  return names;
}

// Every one-byte change (XOR 0x01) of every signed attribute's value, and its removal, must be
// rejected. String values are changed byte by byte; other values (data, Integer and Boolean
// extensions) in their JSON text, re-parsed (a change that is no longer JSON is no event at
// all). The fraction of `time` is exempt: the extension signs time at second precision.
void expectEveryMutationRejected(const nlohmann::json& event,
                                 const nlohmann::json& signedExtensions, const Keyset& keys,
                                 const std::string& label) {
  size_t mutations = 0;
  for (const auto& name : signedAttributes(event, signedExtensions)) {
    const nlohmann::json& value = event[name];
    const bool isString = value.is_string();
    const std::string text = isString ? value.get<std::string>() : canonicalJson(value);
    size_t fractionStart = std::string::npos, fractionEnd = std::string::npos;
    if (name == "time" && text.size() > 19 && text[19] == '.') {
      fractionStart = 20;
      fractionEnd = text.find_first_not_of("0123456789", 20);
    }
    for (size_t i = 0; i < text.size(); ++i) {
      if (i >= fractionStart && i < fractionEnd) continue;
      std::string changed = text;
      changed[i] = static_cast<char>(changed[i] ^ 0x01);
      nlohmann::json mutant = event;
      if (isString) {
        mutant[name] = changed;
      } else {
        auto parsed = nlohmann::json::parse(changed, nullptr, false);
        if (parsed.is_discarded()) continue;
        mutant[name] = parsed;
      }
      ++mutations;
      EXPECT_NE(verdict(mutant, keys), "ok") << label << ": " << name << " byte " << i;
      EXPECT_NE(lineVerdict(mutant, keys), "ok") << label << ": " << name << " byte " << i;
    }
    nlohmann::json removed = event;
    removed.erase(name);
    ++mutations;
    EXPECT_NE(verdict(removed, keys), "ok") << label << ": without " << name;
  }
  EXPECT_GT(mutations, 100u) << label;  // the loop really ran over the material
}

TEST(SpecExamples, EachGivesTheRecordedVerdict) {
  Keyset keys = vectorKeys();
  auto records = readRecords("spec-examples.jsonl");
  ASSERT_EQ(records.size(), 9u);
  for (const auto& record : records) {
    const std::string expected = record["expect"];
    const std::string got = verdict(record["event"], keys);
    EXPECT_EQ(got.substr(0, expected.size()), expected) << record["name"];
    const std::string line = lineVerdict(record["event"], keys);
    EXPECT_EQ(line.substr(0, expected.size()), expected) << record["name"];
  }
}

// The spec's Case 5, exactly as published, with the spec's key: the one example whose
// signature and digests are both consistent with the current text.
TEST(SpecExamples, BinaryDataCaseVerifiesAndEveryMutationFails) {
  Keyset keys = vectorKeys();
  size_t valid = 0;
  for (const auto& record : readRecords("spec-examples.jsonl")) {
    if (record["expect"] != "ok") continue;
    ++valid;
    const auto& event = record["event"];
    VerifiedMaterial verified;
    ASSERT_EQ(verifyEventSignature(event, keys, &verified).value_or("ok"), "ok") << record["name"];
    EXPECT_EQ(verified.keyId, "testkey");
    EXPECT_TRUE(verified.signedExtAttrs.empty());
    EXPECT_EQ(lineVerdict(event, keys), "ok");
    expectEveryMutationRejected(event, nlohmann::json::array(), keys, record["name"]);
  }
  EXPECT_EQ(valid, 1u);
}

TEST(IndependentVectors, EachVerifiesWithItsSignedExtensions) {
  Keyset keys = vectorKeys();
  auto records = readRecords("independent-vectors.jsonl");
  ASSERT_EQ(records.size(), 20u);
  size_t ed25519 = 0, p256 = 0;
  for (const auto& record : records) {
    VerifiedMaterial verified;
    EXPECT_EQ(verifyEventSignature(record["event"], keys, &verified).value_or("ok"), "ok")
        << record["name"];
    EXPECT_EQ(nlohmann::json(verified.signedExtAttrs), record["signedextattrs"]) << record["name"];
    EXPECT_EQ(lineVerdict(record["event"], keys), "ok") << record["name"];
    (verified.keyId == "testkey" ? p256 : ed25519)++;
  }
  EXPECT_EQ(ed25519, 10u);
  EXPECT_EQ(p256, 10u);
}

TEST(IndependentVectors, EveryOneByteMutationIsRejected) {
  Keyset keys = vectorKeys();
  for (const auto& record : readRecords("independent-vectors.jsonl")) {
    expectEveryMutationRejected(record["event"], record["signedextattrs"], keys, record["name"]);
  }
}

// The acceptance cases by name: no `time`, `data_base64`, extra unsigned extensions.
TEST(IndependentVectors, WithoutTimeWithDataBase64AndWithUnsignedExtensionsVerify) {
  Keyset keys = vectorKeys();
  size_t withoutTime = 0, binary = 0, unsignedExtension = 0;
  for (const auto& record : readRecords("independent-vectors.jsonl")) {
    nlohmann::json event = record["event"];
    if (!event.contains("time")) ++withoutTime;
    if (event.contains("data_base64")) ++binary;
    if (event.contains("extb") && record["signedextattrs"] == nlohmann::json({"exta"})) {
      ++unsignedExtension;
      event["extb"] = "changed in transit";  // not signed: may change
      EXPECT_EQ(lineVerdict(event, keys), "ok") << record["name"];
      event["exta"] = "changed in transit";  // signed: may not
      EXPECT_EQ(lineVerdict(event, keys), "ext digest mismatch") << record["name"];
      event = record["event"];
    }
    // Any extension the producer did not sign may be added, by anyone.
    event["addedbyproxy"] = "x";
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    EXPECT_EQ(lineVerdict(event, keys), "ok") << record["name"];
  }
  EXPECT_GE(withoutTime, 2u);
  EXPECT_EQ(binary, 2u);
  EXPECT_EQ(unsignedExtension, 2u);
}

// With the chain checked, such an event is not one of ours: the verifier says what is missing.
TEST(IndependentVectors, ChainCheckStillDemandsOurAttributes) {
  Keyset keys = vectorKeys();
  auto record = readRecords("independent-vectors.jsonl").front();
  LogVerifier verifier(keys, /*checkChain=*/true);
  EXPECT_FALSE(verifier.feedLine("vector", 1, record["event"].dump()));
  EXPECT_EQ(verifier.failure()->reason, "missing attribute time");
}

TEST(NoChain, RequiresWhatCloudEventsRequires) {
  Keyset keys = vectorKeys();
  nlohmann::json event;
  for (const auto& record : readRecords("independent-vectors.jsonl")) {
    if (record["event"]["type"] == "example.bare") event = record["event"];
  }
  ASSERT_FALSE(event.is_null());
  EXPECT_EQ(lineVerdict(event, keys), "ok");
  for (const char* name : {"specversion", "id", "source", "type", "dssematerial"}) {
    nlohmann::json missing = event;
    missing.erase(name);
    EXPECT_EQ(lineVerdict(missing, keys), std::string("missing attribute ") + name);
    nlohmann::json empty = event;
    empty[name] = "";
    EXPECT_EQ(lineVerdict(empty, keys), std::string("attribute ") + name + " is empty");
  }
  event["specversion"] = "0.3";
  EXPECT_EQ(lineVerdict(event, keys), "specversion is not 1.0");
}

}  // namespace
}  // namespace cellos::core
