// CloudEvents Verifiability (DSSE): digests, signing, and every reason to discard an event.

#include "core/digest.h"
#include "core/encoding.h"
#include "core/jcs.h"
#include "core/verifiability.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace cellos::core {
namespace {

nlohmann::json sampleEvent() {
  return {
      {"specversion", "1.0"},
      {"id", "01890a5d-ac96-774b-bcce-b302099a8057"},
      {"source", "urn:cellos:host:test-host"},
      {"type", "dev.cellos.events.cell.command.v1.completed"},
      {"subject", "urn:cellos:cell:demo"},
      {"time", "2026-11-29T10:00:00.123456Z"},
      {"datacontenttype", "application/json"},
      {"data",
       {{"cellId", "demo"}, {"exitCode", 0}, {"durationMs", 12.5}, {"note", "caf\u00e9 \u2713"}}},
      {"sequence", formatSequence(7)},
      {"cellosprev", genesisLink()},
  };
}

Keyset keysetOf(const SigningKey& key) {
  return {{key.keyId(), key.publicKey()}};
}

// The reason verifyEventSignature gives, or "ok".
std::string verdict(const nlohmann::json& event, const Keyset& keys) {
  return verifyEventSignature(event, keys).value_or("ok");
}

TEST(Pae, DsseSpecExample) {
  EXPECT_EQ(pae("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  EXPECT_EQ(pae("", ""), "DSSEv1 0  0 ");
  // Lengths are byte counts, not characters.
  EXPECT_EQ(pae("t", "\u00e9"), "DSSEv1 1 t 2 \u00e9");
}

TEST(CoreDigest, EmptyEventHashesEmptyStrings) {
  std::string empty = sha256("");
  std::string expected;
  for (int i = 0; i < 9; ++i) expected += empty;
  EXPECT_EQ(coreDigest(nlohmann::json::object()), sha256(expected));
  EXPECT_EQ(coreDigest(nlohmann::json::object()).size(), 32u);
}

// An independent spelling of CORE_DIGEST for the sample event.
TEST(CoreDigest, MatchesDefinition) {
  nlohmann::json event = sampleEvent();
  std::string expected = sha256(event["id"].get<std::string>()) +
                         sha256(event["source"].get<std::string>()) + sha256("1.0") +
                         sha256(event["type"].get<std::string>()) + sha256("application/json") +
                         sha256("") /* dataschema */ + sha256(event["subject"].get<std::string>()) +
                         sha256("2026-11-29T10:00:00Z") + sha256(canonicalJson(event["data"]));
  EXPECT_EQ(coreDigest(event), sha256(expected));
  // Extension attributes (and dssematerial) are not part of the core digest.
  event["sequence"] = formatSequence(8);
  event["dssematerial"] = "x";
  EXPECT_EQ(coreDigest(event), sha256(expected));
}

TEST(CoreDigest, StableUnderReserialisation) {
  const char* compact =
      R"({"specversion":"1.0","id":"a","source":"s","type":"t","time":"2026-01-02T03:04:05.5Z",)"
      R"("data":{"b":[1,2.50,{"y":"\u00e9","x":null}],"a":"caf\u00e9"}})";
  const char* reordered = R"(
    {
      "data" : { "a" : "café", "b" : [ 1, 2.5e0, { "x" : null, "y" : "é" } ] },
      "time" : "2026-01-02T03:04:05.500000Z",
      "type" : "t", "source" : "s", "id" : "a", "specversion" : "1.0"
    })";
  auto first = nlohmann::json::parse(compact);
  auto second = nlohmann::json::parse(reordered);
  EXPECT_EQ(coreDigest(first), coreDigest(second));
  EXPECT_EQ(coreDigest(first), coreDigest(nlohmann::json::parse(first.dump(4))));
  second["data"]["a"] = "cafe";
  EXPECT_NE(coreDigest(first), coreDigest(second));
}

TEST(CoreDigest, TimeAtSecondPrecision) {
  nlohmann::json a = sampleEvent();
  nlohmann::json b = sampleEvent();
  a["time"] = "2026-11-29T10:00:00.123456Z";
  b["time"] = "2026-11-29T10:00:00.999999Z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  b["time"] = "2026-11-29T10:00:00Z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  b["time"] = "2026-11-29t10:00:00.5z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  b["time"] = "2026-11-29T11:00:00.7+01:00";  // same instant, other offset
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  b["time"] = "2026-11-29T04:30:00-05:30";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  b["time"] = "2026-11-29T10:00:01Z";  // one second later
  EXPECT_NE(coreDigest(a), coreDigest(b));
}

TEST(CoreDigest, OffsetsCrossDayAndYear) {
  nlohmann::json a = sampleEvent();
  nlohmann::json b = sampleEvent();
  a["time"] = "2026-01-01T00:30:00+01:00";
  b["time"] = "2025-12-31T23:30:00Z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
  a["time"] = "2024-02-28T23:59:59-00:01";  // leap year
  b["time"] = "2024-02-29T00:00:59Z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
}

TEST(CoreDigest, RejectsBadTimesAndTypes) {
  const char* badTimes[] = {"",
                            "2026-11-29",
                            "2026-11-29 10:00:00Z",   // space separator
                            "2026-11-29T10:00:00.Z",  // empty fraction
                            "2026-11-29T24:00:00Z",
                            "2026-11-29T10:60:00Z",
                            "2026-11-29T10:00:60Z",  // leap second
                            "2026-02-30T10:00:00Z",
                            "2026-13-01T10:00:00Z",
                            "2026-11-29T10:00:00+0100",
                            "2026-11-29T10:00:00+24:00",
                            "0000-01-01T00:00:00+00:01",  // before year 0
                            "2026-11-29T10:00:00Zjunk",
                            "+2026-11-29T10:00:00Z"};
  for (const char* time : badTimes) {
    nlohmann::json event = sampleEvent();
    event["time"] = time;
    EXPECT_THROW(coreDigest(event), std::invalid_argument) << time;
  }
  for (const char* name : {"id", "source", "specversion", "type", "datacontenttype", "dataschema",
                           "subject", "time"}) {
    nlohmann::json event = sampleEvent();
    event[name] = 5;
    EXPECT_THROW(coreDigest(event), std::invalid_argument) << name;
  }
  EXPECT_THROW(coreDigest(nlohmann::json::array()), std::invalid_argument);
  nlohmann::json both = sampleEvent();
  both["data_base64"] = "AA==";
  EXPECT_THROW(coreDigest(both), std::invalid_argument);
}

// The extension's Timestamp rule: a value without an offset is UTC (protobuf-format producers).
TEST(CoreDigest, TimeWithoutOffsetIsUtc) {
  nlohmann::json a = sampleEvent();
  nlohmann::json b = sampleEvent();
  a["time"] = "2026-11-29T10:00:00.5";
  b["time"] = "2026-11-29T10:00:00Z";
  EXPECT_EQ(coreDigest(a), coreDigest(b));
}

TEST(CoreDigest, DataForms) {
  nlohmann::json event = nlohmann::json::object();
  auto digestWithData = [](std::string_view bytes) {
    std::string empty = sha256("");
    std::string list;
    for (int i = 0; i < 8; ++i) list += empty;
    return sha256(list + sha256(bytes));
  };
  event["data"] = "abc";  // a JSON string is hashed as its JCS text, quotes included
  EXPECT_EQ(coreDigest(event), digestWithData("\"abc\""));
  event["data"] = {{"z", 1}, {"a", 1.0}};
  EXPECT_EQ(coreDigest(event), digestWithData(R"({"a":1,"z":1})"));
  event.erase("data");
  event["data_base64"] = base64Encode(std::string("\x00\xff raw", 6));
  EXPECT_EQ(coreDigest(event), digestWithData(std::string("\x00\xff raw", 6)));
  event["data_base64"] = "not base64";
  EXPECT_THROW(coreDigest(event), std::invalid_argument);
  // A string under a non-JSON datacontenttype is the payload itself (JSON event format 3.1).
  event.erase("data_base64");
  event["data"] = "abc";
  event["datacontenttype"] = "Text/Plain; charset=utf-8";
  std::string empty = sha256(""), list;
  for (int i = 0; i < 8; ++i) list += i == 4 ? sha256("Text/Plain; charset=utf-8") : empty;
  EXPECT_EQ(coreDigest(event), sha256(list + sha256("abc")));
  event["datacontenttype"] = "application/cloudevents+json";  // a +json suffix is JSON
  list.clear();
  for (int i = 0; i < 8; ++i) list += i == 4 ? sha256("application/cloudevents+json") : empty;
  EXPECT_EQ(coreDigest(event), sha256(list + sha256("\"abc\"")));
  nlohmann::json bare = nlohmann::json::object();
  bare["data"] = "abc";
  EXPECT_EQ(coreDigest(bare), digestWithData("\"abc\""));  // absent type: application/json
}

TEST(ExtDigest, Definition) {
  nlohmann::json event = sampleEvent();
  EXPECT_EQ(extDigest(event, {"sequence", "cellosprev"}),
            sha256(sha256(formatSequence(7)) + sha256(genesisLink())));
  EXPECT_EQ(extDigest(event, {"cellosprev", "sequence"}),
            sha256(sha256(genesisLink()) + sha256(formatSequence(7))));
  EXPECT_EQ(extDigest(event, {"absent"}), sha256(sha256("")));
  EXPECT_EQ(extDigest(event, {}), sha256(""));
  event["flag"] = true;
  event["count"] = 42;
  EXPECT_EQ(extDigest(event, {"flag", "count"}), sha256(sha256("true") + sha256("42")));
  event["obj"] = nlohmann::json::object();
  EXPECT_THROW(extDigest(event, {"obj"}), std::invalid_argument);
}

TEST(Sequence, FormatAndParse) {
  EXPECT_EQ(formatSequence(0), "00000000000000000000");
  EXPECT_EQ(formatSequence(42), "00000000000000000042");
  EXPECT_EQ(formatSequence(UINT64_MAX), "18446744073709551615");
  EXPECT_EQ(parseSequence("00000000000000000042"), 42u);
  EXPECT_EQ(parseSequence(formatSequence(UINT64_MAX)), UINT64_MAX);
  EXPECT_EQ(parseSequence("42"), std::nullopt);
  EXPECT_EQ(parseSequence("18446744073709551616"), std::nullopt);
  EXPECT_EQ(parseSequence("-0000000000000000042"), std::nullopt);
  EXPECT_EQ(parseSequence("0000000000000000004a"), std::nullopt);
}

TEST(Chain, Links) {
  EXPECT_EQ(genesisLink(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
  EXPECT_EQ(chainLink("abc"), base64Encode(sha256("abc")));
  EXPECT_EQ(base64Decode(chainLink("x"))->size(), 32u);
}

class SignBothAlgorithms : public ::testing::TestWithParam<KeyAlgorithm> {};

TEST_P(SignBothAlgorithms, SignThenVerify) {
  SigningKey key = SigningKey::generate(GetParam());
  nlohmann::json event = sampleEvent();
  signEvent(event, key);
  ASSERT_TRUE(event.contains("dssematerial"));
  VerifiedMaterial verified;
  EXPECT_EQ(verifyEventSignature(event, keysetOf(key), &verified), std::nullopt);
  EXPECT_EQ(verified.keyId, key.keyId());
  EXPECT_EQ(verified.signedExtAttrs, kSignedExtensions);

  // The envelope has the shape events.md gives.
  auto envelope = nlohmann::json::parse(*base64Decode(event["dssematerial"].get<std::string>()));
  EXPECT_EQ(envelope["payloadType"], kDssePayloadType);
  ASSERT_EQ(envelope["signatures"].size(), 1u);
  EXPECT_EQ(envelope["signatures"][0]["keyid"], key.keyId());
  auto material = nlohmann::json::parse(*base64Decode(envelope["payload"].get<std::string>()));
  EXPECT_EQ(material["core"], base64Encode(coreDigest(event)));
  EXPECT_EQ(material["ext"], base64Encode(extDigest(event, kSignedExtensions)));
  EXPECT_EQ(material["signedextattrs"], nlohmann::json(kSignedExtensions));
  std::string sig = *base64Decode(envelope["signatures"][0]["sig"].get<std::string>());
  EXPECT_TRUE(key.publicKey().verify(
      pae(kDssePayloadType, *base64Decode(envelope["payload"].get<std::string>())), sig));

  // Still valid after a consumer re-serialises the event.
  auto reparsed = nlohmann::json::parse(event.dump(2));
  reparsed["time"] = "2026-11-29T10:00:00.123Z";
  EXPECT_EQ(verdict(reparsed, keysetOf(key)), "ok");
}

INSTANTIATE_TEST_SUITE_P(Keys, SignBothAlgorithms,
                         ::testing::Values(KeyAlgorithm::kEd25519, KeyAlgorithm::kEcdsaP256),
                         [](const auto& info) { return std::string(algorithmName(info.param)); });

TEST(SignEvent, RefusesUnsignableInput) {
  SigningKey key = SigningKey::generate();
  nlohmann::json event = sampleEvent();
  event.erase("cellosprev");
  EXPECT_THROW(signEvent(event, key), std::invalid_argument);
  event = sampleEvent();
  EXPECT_THROW(signEvent(event, key, {"sequence", "type"}), std::invalid_argument);
  EXPECT_THROW(signEvent(event, key, {"sequence", "sequence"}), std::invalid_argument);
  EXPECT_THROW(signEvent(event, key, {"dssematerial"}), std::invalid_argument);
  event["time"] = "yesterday";
  EXPECT_THROW(signEvent(event, key), std::invalid_argument);
  EXPECT_FALSE(event.contains("dssematerial"));
}

class Tampering : public ::testing::Test {
 protected:
  void SetUp() override {
    event_ = sampleEvent();
    signEvent(event_, key_);
    ASSERT_EQ(verdict(event_, keys_), "ok");
  }
  SigningKey key_ = SigningKey::generate();
  Keyset keys_ = keysetOf(key_);
  nlohmann::json event_;
};

TEST_F(Tampering, DataField) {
  event_["data"]["exitCode"] = 1;
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, DataAddedField) {
  event_["data"]["extra"] = true;
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, Type) {
  event_["type"] = "dev.cellos.events.cell.command.v1.failed";
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, TimeSecond) {
  event_["time"] = "2026-11-29T10:00:01.123456Z";
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, Subject) {
  event_["subject"] = "urn:cellos:cell:other";
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, SubjectRemoved) {
  event_.erase("subject");
  EXPECT_EQ(verdict(event_, keys_), "core digest mismatch");
}

TEST_F(Tampering, Sequence) {
  event_["sequence"] = formatSequence(8);
  EXPECT_EQ(verdict(event_, keys_), "ext digest mismatch");
}

TEST_F(Tampering, Cellosprev) {
  event_["cellosprev"] = chainLink("something else");
  EXPECT_EQ(verdict(event_, keys_), "ext digest mismatch");
}

TEST_F(Tampering, SignatureBytes) {
  auto envelope = nlohmann::json::parse(*base64Decode(event_["dssematerial"].get<std::string>()));
  std::string sig = *base64Decode(envelope["signatures"][0]["sig"].get<std::string>());
  sig[10] = static_cast<char>(sig[10] ^ 0x40);
  envelope["signatures"][0]["sig"] = base64Encode(sig);
  event_["dssematerial"] = base64Encode(envelope.dump());
  EXPECT_EQ(verdict(event_, keys_), "bad signature");
}

TEST_F(Tampering, UnknownKey) {
  SigningKey stranger = SigningKey::generate();
  EXPECT_EQ(verdict(event_, keysetOf(stranger)), "unknown keyid \"" + key_.keyId() + "\"");
  // Re-signed by an untrusted key after an edit: still refused.
  event_["data"]["exitCode"] = 1;
  signEvent(event_, stranger);
  EXPECT_EQ(verdict(event_, keys_), "unknown keyid \"" + stranger.keyId() + "\"");
}

TEST_F(Tampering, KeyidRelabelled) {
  // A trusted keyid attached to a signature by another key.
  SigningKey stranger = SigningKey::generate();
  nlohmann::json forged = sampleEvent();
  forged["data"]["exitCode"] = 1;
  signEvent(forged, stranger);
  auto envelope = nlohmann::json::parse(*base64Decode(forged["dssematerial"].get<std::string>()));
  envelope["signatures"][0]["keyid"] = key_.keyId();
  forged["dssematerial"] = base64Encode(envelope.dump());
  EXPECT_EQ(verdict(forged, keys_), "bad signature");
}

TEST_F(Tampering, MaterialMissingOrGarbled) {
  nlohmann::json event = event_;
  event.erase("dssematerial");
  EXPECT_EQ(verdict(event, keys_), "missing dssematerial");
  event["dssematerial"] = 5;
  EXPECT_EQ(verdict(event, keys_), "dssematerial is not a string");
  event["dssematerial"] = "";
  EXPECT_EQ(verdict(event, keys_), "empty dssematerial");
  event["dssematerial"] = event_["dssematerial"].get<std::string>() + "\n";
  EXPECT_EQ(verdict(event, keys_), "bad base64 in dssematerial");
  event["dssematerial"] = base64Encode("{\"payloadType\":");
  EXPECT_EQ(verdict(event, keys_).rfind("bad UTF-8/JSON in dssematerial envelope", 0), 0u);
  event["dssematerial"] = base64Encode("{\"payloadType\":\"\xff\"}");
  EXPECT_EQ(verdict(event, keys_).rfind("bad UTF-8/JSON in dssematerial envelope", 0), 0u);
  EXPECT_EQ(verdict(nlohmann::json::array(), keys_), "event is not a JSON object");
}

// Builds dssematerial around an arbitrary material text, correctly signed by `key`, so that the
// checks after signature verification are reached.
std::string signedMaterial(const SigningKey& key, std::string_view material,
                           std::string_view payloadType = kDssePayloadType) {
  nlohmann::json envelope = {
      {"payload", base64Encode(material)},
      {"payloadType", payloadType},
      {"signatures",
       {{{"keyid", key.keyId()}, {"sig", base64Encode(key.sign(pae(payloadType, material)))}}}}};
  return base64Encode(envelope.dump());
}

TEST_F(Tampering, VerifiersMustDiscard) {
  const std::string core = base64Encode(coreDigest(event_));
  const std::string ext = base64Encode(extDigest(event_, kSignedExtensions));
  const std::string names = R"(["sequence","cellosprev"])";
  const std::pair<std::string, std::string> cases[] = {
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":)" + names + "}", "ok"},
      {R"({"core":")" + base64Encode("short") + R"(","ext":")" + ext + R"(","signedextattrs":)" +
           names + "}",
       "core digest is not 32 bytes"},
      {R"({"core":")" + core + R"(","ext":")" + base64Encode(std::string(33, 'x')) +
           R"(","signedextattrs":)" + names + "}",
       "ext digest is not 32 bytes"},
      {R"({"core":")" + core + R"(","ext":")" + ext + R"("})", "ext without signedextattrs"},
      {R"({"core":")" + core + R"(","signedextattrs":)" + names + "}",
       "signedextattrs without ext"},
      {R"({"core":")" + core + R"(","ext":")" + ext +
           R"(","signedextattrs":["sequence","sequence"]})",
       "signedextattrs names \"sequence\" twice"},
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":["sequence","type"]})",
       "signedextattrs names a core attribute (\"type\")"},
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":["time"]})",
       "signedextattrs names a core attribute (\"time\")"},
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":["dssematerial"]})",
       "signedextattrs names dssematerial"},
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":"sequence"})",
       "signedextattrs is not an array"},
      {R"({"core":"***","ext":")" + ext + R"(","signedextattrs":)" + names + "}",
       "bad base64 in core digest"},
      {R"({"core":")" + core + R"(","core":")" + core + R"("})",
       "bad UTF-8/JSON in verification material: duplicate member name \"core\""},
      {"not json", "bad UTF-8/JSON in verification material"},
      // The extension: unknown members of the material MUST be ignored.
      {R"({"core":")" + core + R"(","ext":")" + ext + R"(","signedextattrs":)" + names +
           R"(,"extra":1})",
       "ok"},
      {R"({"core":")" + base64Encode(std::string(32, '\0')) + R"("})", "core digest mismatch"},
      {R"({"core":")" + core + R"(","ext":")" + base64Encode(std::string(32, '\0')) +
           R"(","signedextattrs":)" + names + "}",
       "ext digest mismatch"},
  };
  for (const auto& [material, reason] : cases) {
    nlohmann::json event = event_;
    event["dssematerial"] = signedMaterial(key_, material);
    EXPECT_EQ(verdict(event, keys_).substr(0, reason.size()), reason) << material;
  }
  nlohmann::json event = event_;
  std::string good = R"({"core":")" + core + R"("})";
  event["dssematerial"] = signedMaterial(key_, good, "application/vnd.in-toto+json");
  EXPECT_EQ(verdict(event, keys_), "wrong payloadType");
}

TEST_F(Tampering, EnvelopeShape) {
  auto envelope = nlohmann::json::parse(*base64Decode(event_["dssematerial"].get<std::string>()));
  auto withEnvelope = [&](const nlohmann::json& modified) {
    nlohmann::json event = event_;
    event["dssematerial"] = base64Encode(modified.dump());
    return verdict(event, keys_);
  };
  auto e = envelope;
  e["signatures"] = nlohmann::json::array();
  EXPECT_EQ(withEnvelope(e), "dssematerial envelope has no signatures");
  e = envelope;
  e["signatures"][0].erase("keyid");
  EXPECT_EQ(withEnvelope(e), "malformed signature entry in dssematerial");
  e = envelope;
  e["signatures"][0]["sig"] = "!!";
  EXPECT_EQ(withEnvelope(e), "bad base64 in signature");
  e = envelope;
  e["payload"] = "%%%";
  EXPECT_EQ(withEnvelope(e), "bad base64 in envelope payload");
  e = envelope;
  e["unsigned"] = "extra";  // unknown members are ignored, as the extension requires
  e["signatures"][0]["note"] = "extra";
  EXPECT_EQ(withEnvelope(e), "ok");
  e = envelope;
  e.erase("payloadType");
  EXPECT_EQ(withEnvelope(e), "dssematerial envelope lacks payloadType or payload");
  // A second, valid signature next to an unknown one is enough.
  e = envelope;
  nlohmann::json stranger = {{"keyid", "ed25519:0000000000000000"}, {"sig", "AAAA"}};
  e["signatures"].insert(e["signatures"].begin(), stranger);
  EXPECT_EQ(withEnvelope(e), "ok");
}

TEST_F(Tampering, EventAttributeOfWrongType) {
  event_["subject"] = nlohmann::json::array({"urn:cellos:cell:demo"});
  EXPECT_EQ(verdict(event_, keys_), "invalid event: attribute \"subject\" must be a string");
}

}  // namespace
}  // namespace cellos::core
