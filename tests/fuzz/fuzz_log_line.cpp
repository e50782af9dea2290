// libFuzzer harness for everything `cellos verify` reads from untrusted files: event log lines,
// dssematerial envelopes and verification material, keysets, base64.
//
// The first input byte picks what the rest is fed to. Because nobody can forge a signature,
// some modes sign fuzzer-chosen bytes with a fixed test key so the checks behind signature
// verification (material parsing, digests, chain linkage) are reached too.

#include "core/encoding.h"
#include "core/jcs.h"
#include "core/log_verifier.h"
#include "core/verifiability.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace cellos::core;

// RFC 8032 section 7.1 TEST 2 key: public test material, not a secret.
constexpr std::string_view kTestKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIEzNCJso/5banbbDRuwRTg9bijGfNaumJNqM9u1PuKb7\n"
    "-----END PRIVATE KEY-----\n";

nlohmann::json templateEvent(uint64_t sequence, const std::string& previous) {
  return {
      {"specversion", "1.0"},
      {"id", "01890a5d-ac96-774b-bcce-b30209" + std::to_string(100000 + sequence)},
      {"source", "urn:cellos:host:fuzz"},
      {"type", "dev.cellos.events.cell.lifecycle.v1.started"},
      {"subject", "urn:cellos:cell:fuzz"},
      {"time", "2026-11-29T10:00:00.000001Z"},
      {"datacontenttype", "application/json"},
      {"data", {{"cellId", "fuzz"}, {"n", sequence}}},
      {"sequence", formatSequence(sequence)},
      {"cellosprev", previous.empty() ? genesisLink() : chainLink(previous)},
  };
}

struct Fixture {
  SigningKey key = SigningKey::fromPem(kTestKeyPem);
  Keyset keys = {{key.keyId(), key.publicKey()}};
  std::vector<std::string> chain;  // three valid lines

  Fixture() {
    std::string previous;
    for (uint64_t i = 0; i < 3; ++i) {
      nlohmann::json event = templateEvent(i, previous);
      signEvent(event, key);
      previous = event["dssematerial"].get<std::string>();
      chain.push_back(event.dump());
    }
  }
};

const Fixture& fixture() {
  static const Fixture instance;
  return instance;
}

void check(bool condition) {
  if (!condition) std::abort();
}

// Splits into lines and verifies them as one file.
void feedLog(std::string_view text) {
  LogVerifier verifier(fixture().keys, true);
  size_t number = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    if (end == std::string_view::npos) {
      verifier.finishFile("fuzz", number + 1, false);
      break;
    }
    verifier.feedLine("fuzz", ++number, text.substr(0, end));
    text.remove_prefix(end + 1);
  }
  verifier.finishFile("fuzz", number, true);
  check(verifier.failure().has_value() || verifier.eventsVerified() == number);
}

void decoders(std::string_view text) {
  if (auto bytes = base64Decode(text)) check(base64Encode(*bytes) == text);
  if (auto bytes = base64UrlDecode(text)) check(base64UrlDecode(base64UrlEncode(*bytes)) == *bytes);
  std::string error;
  parseKeyset(text, &error);
  if (auto value = parseStrictJson(text, &error)) {
    try {
      std::string canonical = canonicalJson(*value);
      // Canonical form is a fixed point.
      auto again = parseStrictJson(canonical, nullptr);
      check(again.has_value() && canonicalJson(*again) == canonical);
    } catch (const std::invalid_argument&) {
    }
    try {
      coreDigest(*value);
    } catch (const std::invalid_argument&) {
    }
    verifyEventSignature(*value, fixture().keys);
  }
}

// Fuzzer-chosen JSON as event data: signing then verifying must succeed, also after the event
// is re-serialised.
void signedData(std::string_view text) {
  auto data = parseStrictJson(text, nullptr);
  if (!data) return;
  nlohmann::json event = templateEvent(0, "");
  event["data"] = std::move(*data);
  try {
    signEvent(event, fixture().key);
  } catch (const std::invalid_argument&) {
    return;  // e.g. nesting deeper than canonicalJson accepts
  }
  check(!verifyEventSignature(event, fixture().keys).has_value());
  auto reparsed = parseStrictJson(event.dump(), nullptr);
  check(reparsed.has_value() && !verifyEventSignature(*reparsed, fixture().keys).has_value());
  LogVerifier verifier(fixture().keys, true);
  check(verifier.feedLine("fuzz", 1, event.dump()));
}

// Fuzzer-chosen verification material inside a correctly signed envelope.
void signedMaterial(std::string_view material) {
  std::string payload(material);
  nlohmann::json envelope = {
      {"payload", base64Encode(payload)},
      {"payloadType", kDssePayloadType},
      {"signatures",
       {{{"keyid", fixture().key.keyId()},
         {"sig", base64Encode(fixture().key.sign(pae(kDssePayloadType, payload)))}}}}};
  nlohmann::json event = templateEvent(0, "");
  event["dssematerial"] =
      base64Encode(envelope.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  verifyEventSignature(event, fixture().keys);
}

// Fuzzer-chosen envelope bytes as dssematerial.
void rawEnvelope(std::string_view envelope) {
  nlohmann::json event = templateEvent(0, "");
  event["dssematerial"] = base64Encode(envelope);
  verifyEventSignature(event, fixture().keys);
}

// Byte edits to a valid chain: [line, offset hi, offset lo, op, byte]...
void editedChain(std::string_view edits) {
  std::vector<std::string> lines = fixture().chain;
  while (edits.size() >= 5) {
    auto& line = lines[static_cast<uint8_t>(edits[0]) % lines.size()];
    size_t offset = ((static_cast<uint8_t>(edits[1]) << 8) | static_cast<uint8_t>(edits[2])) %
                    (line.size() + 1);
    switch (static_cast<uint8_t>(edits[3]) % 4) {
      case 0:
        if (offset < line.size()) line[offset] = edits[4];
        break;
      case 1:
        line.insert(offset, 1, edits[4]);
        break;
      case 2:
        line.erase(offset, static_cast<uint8_t>(edits[4]) % 8);
        break;
      case 3:
        std::swap(lines[0], lines[static_cast<uint8_t>(edits[4]) % lines.size()]);
        break;
    }
    edits.remove_prefix(5);
  }
  LogVerifier verifier(fixture().keys, true);
  for (size_t i = 0; i < lines.size(); ++i) verifier.feedLine("fuzz", i + 1, lines[i]);
  verifier.finishFile("fuzz", lines.size(), true);
  if (lines == fixture().chain) check(!verifier.failure().has_value());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      feedLog(input);
      break;
    case 1:
      decoders(input);
      break;
    case 2:
      signedData(input);
      break;
    case 3:
      signedMaterial(input);
      break;
    case 4:
      rawEnvelope(input);
      break;
    case 5:
      editedChain(input);
      break;
  }
  return 0;
}
