// End-to-end: `cellos verify` on a real log written by the real daemons, against every kind of
// tampering the issue names (each caught, naming the line), and the log checked by tools
// nobody here wrote: the `openssl` command line verifies a signature over the DSSE PAE bytes,
// and the npm `cloudevents` SDK parses every line (and what it writes back still verifies).

#include "core/encoding.h"
#include "core/verifiability.h"
#include "tests/e2e/event_daemons.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace cellos::testing {
namespace {

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void writeText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string joinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string hexToBytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2)
    out.push_back(char(std::stoi(hex.substr(i, 2), 0, 16)));
  return out;
}

// SubjectPublicKeyInfo PEM of a raw public key, built from the fixed DER prefixes of RFC 8410
// (Ed25519) and RFC 5480 (P-256 uncompressed point), so openssl gets the key in its own format.
std::string spkiPem(const std::string& raw) {
  std::string der = raw.size() == 32
                        ? hexToBytes("302a300506032b6570032100") + raw
                        : hexToBytes("3059301306072a8648ce3d020106082a8648ce3d030107034200") + raw;
  std::string b64 = core::base64Encode(der);
  std::string pem = "-----BEGIN PUBLIC KEY-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) pem += b64.substr(i, 64) + "\n";
  return pem + "-----END PUBLIC KEY-----\n";
}

// DER INTEGER of a big-endian unsigned number.
std::string derInteger(std::string bytes) {
  while (bytes.size() > 1 && bytes[0] == 0 && !(bytes[1] & 0x80)) bytes.erase(0, 1);
  if (bytes[0] & 0x80) bytes.insert(bytes.begin(), '\0');
  return std::string("\x02", 1) + char(bytes.size()) + bytes;
}

// ECDSA r||s (64 bytes) -> DER SEQUENCE{r, s}, the form `openssl dgst -verify` reads.
std::string ecdsaDer(const std::string& raw) {
  std::string body = derInteger(raw.substr(0, 32)) + derInteger(raw.substr(32));
  return std::string("\x30", 1) + char(body.size()) + body;
}

struct Envelope {
  std::string keyId, payload, signature;
};

Envelope envelopeOf(const nlohmann::json& event) {
  auto envelope =
      nlohmann::json::parse(*core::base64Decode(event["dssematerial"].get<std::string>()));
  return {envelope["signatures"][0]["keyid"],
          *core::base64Decode(envelope["payload"].get<std::string>()),
          *core::base64Decode(envelope["signatures"][0]["sig"].get<std::string>())};
}

class VerifyCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    dir_ = makeDir("/tmp/cellos-verify.XXXXXX");
  }
  void TearDown() override {
    daemons_.reset();
    other_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static std::string makeDir(const char* pattern) {
    std::string buffer = pattern;
    if (!mkdtemp(buffer.data())) throw std::runtime_error("mkdtemp");
    chmod(buffer.c_str(), 0755);
    return buffer;
  }

  // A log of `count` events from real daemons under <dir_>/<name>, written in several batches.
  std::unique_ptr<EventDaemons> writeLog(const std::string& name, size_t count) {
    std::filesystem::create_directory(dir_ + "/" + name);
    auto daemons = std::make_unique<EventDaemons>(dir_ + "/" + name);
    daemons->startAll();
    for (size_t i = 0; i < count; i += 2) {
      auto r = submitDocuments(daemons->socket("broker"),
                               {rejectedDocument(name + std::to_string(i)),
                                rejectedDocument(name + std::to_string(i + 1))});
      EXPECT_TRUE(r[0].delivered && r[1].delivered) << r[0].error;
    }
    daemons->stopAll();
    return daemons;
  }

  VerifyResult verifyText(const std::string& text, const std::string& keyset) {
    std::string path = dir_ + "/tampered.jsonl";
    writeText(path, text);
    return cellosVerify({"--keys", keyset, path});
  }

  std::string dir_;
  std::unique_ptr<EventDaemons> daemons_, other_;
};

TEST_F(VerifyCli, EveryTamperingIsCaughtNamingTheLine) {
  daemons_ = writeLog("main", 8);
  other_ = writeLog("other", 8);
  const std::string keyset = daemons_->signerDir() + "/keyset.json";
  const std::string original = readText(daemons_->eventsPath());
  const auto lines = splitLines(original);
  ASSERT_EQ(lines.size(), 8u);
  const std::string tampered = dir_ + "/tampered.jsonl";

  auto ok = cellosVerify({"--keys", keyset, daemons_->eventsPath()});
  ASSERT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("OK: 8 events verified in 1 file, sequence 0..7, chain intact"),
            std::string::npos)
      << ok.out;

  // Each case: the log with one change, the line that must be named, and why.
  struct Case {
    std::string name;
    std::vector<std::string> lines;
    size_t line;
    std::string reason;
  };
  auto edited = [&](size_t index, const std::function<void(nlohmann::json&)>& edit) {
    auto copy = lines;
    auto event = nlohmann::json::parse(copy[index]);
    edit(event);
    copy[index] = event.dump();
    return copy;
  };
  std::vector<Case> cases = {
      {"data field", edited(3, [](nlohmann::json& e) { e["data"]["cellId"] = "someone-else"; }), 4,
       "core digest mismatch"},
      {"type",
       edited(3,
              [](nlohmann::json& e) { e["type"] = "dev.cellos.events.cell.lifecycle.v1.started"; }),
       4, "core digest mismatch"},
      {"time",
       edited(3,
              [](nlohmann::json& e) {
                std::string t = e["time"];
                t[18] = t[18] == '1' ? '2' : '1';  // another second
                e["time"] = t;
              }),
       4, "core digest mismatch"},
      {"subject", edited(3, [](nlohmann::json& e) { e["subject"] = "urn:cellos:cell:intruder"; }),
       4, "core digest mismatch"},
      {"extension sequence",
       edited(3, [](nlohmann::json& e) { e["sequence"] = core::formatSequence(9); }), 4,
       "ext digest mismatch"},
      {"extension cellosprev",
       edited(3, [](nlohmann::json& e) { e["cellosprev"] = core::genesisLink(); }), 4,
       "ext digest mismatch"},
      {"forged signature",
       edited(3,
              [](nlohmann::json& e) {
                auto envelope = nlohmann::json::parse(
                    *core::base64Decode(e["dssematerial"].get<std::string>()));
                std::string sig =
                    *core::base64Decode(envelope["signatures"][0]["sig"].get<std::string>());
                sig[10] ^= 0x01;
                envelope["signatures"][0]["sig"] = core::base64Encode(sig);
                e["dssematerial"] = core::base64Encode(envelope.dump());
              }),
       4, "bad signature"},
  };
  {
    auto copy = lines;
    copy.erase(copy.begin() + 3);
    cases.push_back({"deleted line", copy, 4, "sequence 4 does not follow 2"});
  }
  {
    auto copy = lines;
    std::swap(copy[3], copy[4]);
    cases.push_back({"swapped lines", copy, 4, "sequence 4 does not follow 2"});
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto result = verifyText(joinLines(c.lines), keyset);
    EXPECT_EQ(result.status, 1) << result.out;
    EXPECT_NE(result.out.find(tampered + ":" + std::to_string(c.line) + ": " + c.reason),
              std::string::npos)
        << result.out;
  }

  // A line spliced in from another log, signed by a key the verifier also trusts: its chain
  // does not continue ours.
  auto both = nlohmann::json::parse(readText(keyset));
  both.update(nlohmann::json::parse(readText(other_->signerDir() + "/keyset.json")));
  writeText(dir_ + "/both.json", both.dump());
  auto spliced = lines;
  spliced[3] = splitLines(readText(other_->eventsPath()))[3];
  auto result = verifyText(joinLines(spliced), dir_ + "/both.json");
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.out.find(tampered + ":4: signed by"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("cellosprev does not match the previous event"), std::string::npos)
      << result.out;
  // ... and with only our keyset, its key is unknown.
  result = verifyText(joinLines(spliced), keyset);
  EXPECT_NE(result.out.find(tampered + ":4: unknown keyid"), std::string::npos) << result.out;

  // A signature by a key nobody trusts: the whole log against the other signer's keyset.
  result = cellosVerify({"--keys", other_->signerDir() + "/keyset.json", daemons_->eventsPath()});
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.out.find(daemons_->eventsPath() + ":1: unknown keyid \"ed25519:"),
            std::string::npos)
      << result.out;

  // A truncated last line (a write cut short).
  result = verifyText(original.substr(0, original.size() - 40), keyset);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.out.find(tampered + ":8: truncated last line (no newline)"), std::string::npos)
      << result.out;

  // --no-chain, for events of another producer: its envelopes name its own key id (DSSE key
  // ids are hints, not signed), its public key comes as PEM under that id, and its events are
  // checked one by one (here also reordered). A changed byte, or the key under another id, fails.
  auto ours = nlohmann::json::parse(readText(keyset));
  std::string pem = spkiPem(*core::base64UrlDecode(ours.begin().value().get<std::string>()));
  writeText(dir_ + "/pem.json", nlohmann::json{{"producer-key-1", pem}}.dump());
  writeText(dir_ + "/pem-other-id.json", nlohmann::json{{"someone-else", pem}}.dump());
  std::vector<std::string> foreign;
  for (const auto& line : lines) {
    auto event = nlohmann::json::parse(line);
    auto envelope =
        nlohmann::json::parse(*core::base64Decode(event["dssematerial"].get<std::string>()));
    envelope["signatures"][0]["keyid"] = "producer-key-1";
    event["dssematerial"] = core::base64Encode(envelope.dump());
    foreign.push_back(event.dump());
  }
  std::swap(foreign[0], foreign[7]);
  writeText(tampered, joinLines(foreign));
  result = cellosVerify({"--no-chain", "--keys", dir_ + "/pem.json", tampered});
  EXPECT_EQ(result.status, 0) << result.out;
  EXPECT_NE(result.out.find("OK: 8 events verified in 1 file"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("signatures only"), std::string::npos) << result.out;
  result = cellosVerify({"--keys", dir_ + "/pem.json", tampered});
  EXPECT_EQ(result.status, 1) << "the chain check sees the reordering: " << result.out;
  result = cellosVerify({"--no-chain", "--keys", dir_ + "/pem-other-id.json", tampered});
  EXPECT_NE(result.out.find(tampered + ":1: unknown keyid \"producer-key-1\""), std::string::npos)
      << result.out;
  auto changed = foreign;
  changed[2].replace(changed[2].find("\"cellId\":\"") + 10, 1, "X");
  writeText(tampered, joinLines(changed));
  result = cellosVerify({"--no-chain", "--keys", dir_ + "/pem.json", tampered});
  EXPECT_NE(result.out.find(tampered + ":3: core digest mismatch"), std::string::npos)
      << result.out;
}

// openssl, independently: rebuild the DSSE PAE bytes from the envelope and let
// `openssl pkeyutl` (Ed25519) and `openssl dgst -sha256` (ECDSA P-256) check the signature.
TEST_F(VerifyCli, OpensslVerifiesTheSignatureOverThePaeBytes) {
  std::filesystem::create_directory(dir_ + "/log");
  daemons_ = std::make_unique<EventDaemons>(dir_ + "/log");
  daemons_->startAll();
  ASSERT_TRUE(
      submitDocuments(daemons_->socket("broker"), {rejectedDocument("ossl-ed")})[0].delivered);
  // Rotate the running signer to P-256: the next event is ECDSA-signed, the chain continues.
  auto rotated = runShell(binary("cellos-event-signer") + " rotate --algorithm p256 --socket " +
                          daemons_->socket("signer") + " --state-dir " + daemons_->signerDir() +
                          " --config /dev/null");
  ASSERT_EQ(rotated.status, 0) << rotated.out;
  ASSERT_TRUE(
      submitDocuments(daemons_->socket("broker"), {rejectedDocument("ossl-p256")})[0].delivered);
  daemons_->stopAll();
  auto keys = nlohmann::json::parse(readText(daemons_->signerDir() + "/keyset.json"));
  auto lines = splitLines(readText(daemons_->eventsPath()));
  ASSERT_EQ(lines.size(), 2u);

  for (size_t i = 0; i < lines.size(); ++i) {
    auto event = nlohmann::json::parse(lines[i]);
    Envelope envelope = envelopeOf(event);
    ASSERT_TRUE(keys.contains(envelope.keyId)) << envelope.keyId;
    std::string raw = *core::base64UrlDecode(keys[envelope.keyId].get<std::string>());
    std::string base = dir_ + "/e" + std::to_string(i);
    writeText(base + ".pub.pem", spkiPem(raw));
    // PAE = "DSSEv1" SP len(type) SP type SP len(payload) SP payload
    std::string pae = "DSSEv1 " + std::to_string(core::kDssePayloadType.size()) + " " +
                      std::string(core::kDssePayloadType) + " " +
                      std::to_string(envelope.payload.size()) + " " + envelope.payload;
    writeText(base + ".pae", pae);
    std::string tamperedPae = pae;
    tamperedPae.back() ^= 0x01;
    writeText(base + ".bad.pae", tamperedPae);
    std::string command;
    if (envelope.keyId.rfind("ed25519:", 0) == 0) {
      writeText(base + ".sig", envelope.signature);
      command = "openssl pkeyutl -verify -pubin -inkey " + base + ".pub.pem -rawin -sigfile " +
                base + ".sig -in ";
    } else {
      ASSERT_EQ(envelope.keyId.rfind("p256:", 0), 0u) << envelope.keyId;
      writeText(base + ".sig", ecdsaDer(envelope.signature));
      command = "openssl dgst -sha256 -verify " + base + ".pub.pem -signature " + base + ".sig ";
    }
    SCOPED_TRACE(envelope.keyId);
    auto good = runShell(command + base + ".pae");
    EXPECT_EQ(good.status, 0) << good.out;
    EXPECT_NE(good.out.find("Verified"), std::string::npos) << good.out;
    auto bad = runShell(command + base + ".bad.pae");
    EXPECT_NE(bad.status, 0) << "openssl must refuse a changed byte: " << bad.out;
    // The payload's core digest is also what openssl computes over the canonical parts.
    auto material = nlohmann::json::parse(envelope.payload);
    EXPECT_EQ(*core::base64Decode(material["core"].get<std::string>()), core::coreDigest(event));
  }
  auto ok =
      cellosVerify({"--keys", daemons_->signerDir() + "/keyset.json", daemons_->eventsPath()});
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("key rotated at " + daemons_->eventsPath() + ":2: ed25519:"),
            std::string::npos)
      << ok.out;
}

// `cellos keys` exports the signer's public keys (from <state-dir>/signer/keyset.json, as the
// signer keeps it): the PEM block under each keyid is all `openssl` needs to check that key's
// event signatures, and the JWK Set reads back to the same keys, for `cellos` and itself.
TEST_F(VerifyCli, ExportedPemVerifiesWithOpensslAloneAndJwkRoundTrips) {
  std::filesystem::create_directory(dir_ + "/log");
  daemons_ = std::make_unique<EventDaemons>(dir_ + "/log");
  daemons_->startAll();
  ASSERT_TRUE(
      submitDocuments(daemons_->socket("broker"), {rejectedDocument("keys-ed")})[0].delivered);
  auto rotated = runShell(binary("cellos-event-signer") + " rotate --algorithm p256 --socket " +
                          daemons_->socket("signer") + " --state-dir " + daemons_->signerDir() +
                          " --config /dev/null");
  ASSERT_EQ(rotated.status, 0) << rotated.out;
  ASSERT_TRUE(
      submitDocuments(daemons_->socket("broker"), {rejectedDocument("keys-p256")})[0].delivered);
  daemons_->stopAll();

  const std::string cellos = binary("cellos");
  auto pem = runShell(cellos + " keys --state-dir " + daemons_->stateDir());
  ASSERT_EQ(pem.status, 0) << pem.out;
  auto jwk = runShell(cellos + " keys --format jwk --state-dir " + daemons_->stateDir());
  ASSERT_EQ(jwk.status, 0) << jwk.out;
  writeText(dir_ + "/keys.pem", pem.out);
  writeText(dir_ + "/keys.jwk", jwk.out);

  auto lines = splitLines(readText(daemons_->eventsPath()));
  ASSERT_EQ(lines.size(), 2u);
  std::set<std::string> algorithms;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto event = nlohmann::json::parse(lines[i]);
    Envelope envelope = envelopeOf(event);
    SCOPED_TRACE(envelope.keyId);
    // The exported block under this event's keyid, as a file of its own.
    size_t at = pem.out.find("keyid: " + envelope.keyId + "\n");
    ASSERT_NE(at, std::string::npos) << pem.out;
    size_t begin = pem.out.find("-----BEGIN PUBLIC KEY-----", at);
    size_t end = pem.out.find("-----END PUBLIC KEY-----\n", begin);
    ASSERT_NE(end, std::string::npos);
    std::string base = dir_ + "/x" + std::to_string(i);
    writeText(
        base + ".pem",
        pem.out.substr(begin, end + std::string("-----END PUBLIC KEY-----\n").size() - begin));
    std::string pae = "DSSEv1 " + std::to_string(core::kDssePayloadType.size()) + " " +
                      std::string(core::kDssePayloadType) + " " +
                      std::to_string(envelope.payload.size()) + " " + envelope.payload;
    writeText(base + ".pae", pae);
    pae.back() ^= 0x01;
    writeText(base + ".bad.pae", pae);
    std::string command;
    if (envelope.keyId.rfind("ed25519:", 0) == 0) {
      writeText(base + ".sig", envelope.signature);
      command = "openssl pkeyutl -verify -pubin -inkey " + base + ".pem -rawin -sigfile " + base +
                ".sig -in ";
    } else {
      writeText(base + ".sig", ecdsaDer(envelope.signature));
      command = "openssl dgst -sha256 -verify " + base + ".pem -signature " + base + ".sig ";
    }
    algorithms.insert(envelope.keyId.substr(0, envelope.keyId.find(':')));
    auto good = runShell(command + base + ".pae");
    EXPECT_EQ(good.status, 0) << good.out;
    EXPECT_NE(good.out.find("Verified"), std::string::npos) << good.out;
    auto bad = runShell(command + base + ".bad.pae");
    EXPECT_NE(bad.status, 0) << bad.out;
  }
  EXPECT_EQ(algorithms, (std::set<std::string>{"ed25519", "p256"}));

  // Both exports verify the whole log, chain included, and read back to the same export.
  for (const char* file : {"/keys.pem", "/keys.jwk"}) {
    auto ok = cellosVerify({"--keys", dir_ + file, daemons_->eventsPath()});
    EXPECT_EQ(ok.status, 0) << file << ": " << ok.out;
  }
  auto jwkAgain = runShell(cellos + " keys --format jwk --keys " + dir_ + "/keys.jwk");
  EXPECT_EQ(jwkAgain.out, jwk.out);
  auto pemFromJwk = runShell(cellos + " keys --keys " + dir_ + "/keys.jwk");
  EXPECT_EQ(pemFromJwk.out, pem.out);
  auto set = nlohmann::json::parse(jwk.out);
  ASSERT_EQ(set["keys"].size(), 2u);
  for (const auto& key : set["keys"]) {
    EXPECT_FALSE(key.contains("d"));
    EXPECT_TRUE(key["kty"] == "OKP" || key["kty"] == "EC") << key;
  }
}

// Events of another producer, with only the attributes CloudEvents requires, verify with
// --no-chain and the spec's key in any form `cellos keys` prints.
TEST_F(VerifyCli, ForeignProducerEventsVerifyWithoutTheChain) {
  const std::string data = std::string(CELLOS_TEST_SOURCE_DIR) + "/tests/data/verifiability/";
  std::string events;
  std::istringstream records(readText(data + "independent-vectors.jsonl"));
  for (std::string line; std::getline(records, line);) {
    events += nlohmann::json::parse(line)["event"].dump() + "\n";
  }
  writeText(dir_ + "/foreign.jsonl", events);
  for (const char* format : {"pem", "jwk", "keyset"}) {
    auto keys =
        runShell(binary("cellos") + " keys --format " + format + " --keys " + data + "keyset.json");
    ASSERT_EQ(keys.status, 0) << keys.out;
    writeText(dir_ + "/spec-keys", keys.out);
    auto ok = cellosVerify({"--no-chain", "--keys", dir_ + "/spec-keys", dir_ + "/foreign.jsonl"});
    EXPECT_EQ(ok.status, 0) << format << ": " << ok.out;
    EXPECT_NE(ok.out.find("OK: 20 events verified"), std::string::npos) << ok.out;
  }
  auto chained = cellosVerify({"--keys", data + "keyset.json", dir_ + "/foreign.jsonl"});
  EXPECT_EQ(chained.status, 1);
  EXPECT_NE(chained.out.find("missing attribute time"), std::string::npos) << chained.out;
}

// The npm `cloudevents` SDK (installed into the build directory from the committed lockfile)
// parses every line in strict mode; the events it writes back still verify, chain included.
TEST_F(VerifyCli, TheCloudEventsSdkParsesTheWholeLog) {
  if (runShell("command -v node && command -v npm").status != 0) {
    GTEST_SKIP() << "node and npm are not installed (scripts/setup installs them)";
  }
  const char* build = getenv("CELLOS_BUILD_DIR");
  std::string prefix = std::string(build ? build : CELLOS_TEST_BUILD_DIR) + "/npm-cloudevents";
  std::string source = std::string(CELLOS_TEST_SOURCE_DIR) + "/tests/e2e/npm";
  if (!std::filesystem::exists(prefix + "/node_modules/cloudevents/package.json")) {
    std::filesystem::create_directories(prefix);
    for (const char* f : {"package.json", "package-lock.json"}) {
      std::filesystem::copy_file(source + "/" + f, prefix + "/" + f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    auto install = runShell("cd " + prefix + " && npm ci --no-audit --no-fund --loglevel=error",
                            std::chrono::seconds(300));
    ASSERT_EQ(install.status, 0) << install.out;
  }
  // Beside its node_modules, so that require() finds the SDK.
  std::filesystem::copy_file(source + "/parse_log.js", prefix + "/parse_log.js",
                             std::filesystem::copy_options::overwrite_existing);
  daemons_ = writeLog("sdk", 6);
  std::string out = dir_ + "/sdk-written.jsonl";
  auto parsed = runShell("node " + prefix + "/parse_log.js " + daemons_->eventsPath() + " " + out);
  ASSERT_EQ(parsed.status, 0) << parsed.out;
  auto summary = nlohmann::json::parse(parsed.out.substr(parsed.out.find('{')));
  EXPECT_EQ(summary["events"], 6);
  auto lines = splitLines(readText(daemons_->eventsPath()));
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(summary["ids"][i], nlohmann::json::parse(lines[i])["id"]);
  }
  EXPECT_EQ(summary["types"]["dev.cellos.events.cell.admission.v1.rejected"], 6);
  // The SDK re-serialises (it shortens the time to milliseconds); signatures cover the time at
  // second precision and the chain covers dssematerial, so its output verifies as it is.
  EXPECT_NE(readText(out), readText(daemons_->eventsPath()));
  auto ok = cellosVerify({"--keys", daemons_->signerDir() + "/keyset.json", out});
  EXPECT_EQ(ok.status, 0) << ok.out;
  // The SDK does refuse what is not a CloudEvent: the control for the parse above.
  writeText(dir_ + "/bad.jsonl", "{\"id\":\"x\",\"source\":\"urn:x\",\"type\":\"t\"}\n");
  auto refused = runShell("node " + prefix + "/parse_log.js " + dir_ + "/bad.jsonl " + dir_ +
                          "/bad-out.jsonl");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("line 1:"), std::string::npos) << refused.out;
}

}  // namespace
}  // namespace cellos::testing
