#include "core/key_forms.h"

#include "core/encoding.h"
#include "core/jcs.h"

namespace cellos::core {
namespace {

constexpr std::string_view kPemBegin = "-----BEGIN PUBLIC KEY-----";
constexpr std::string_view kPemEnd = "-----END PUBLIC KEY-----";
constexpr std::string_view kKeyidLine = "keyid: ";
constexpr size_t kCoordinateSize = 32;

// A required string member of a JWK, or nullptr.
const std::string* jwkString(const nlohmann::json& jwk, std::string_view name) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) return nullptr;
  return &it->get_ref<const std::string&>();
}

// Adds `key` under `keyid`; false with *error set if the keyid is taken.
bool addKey(Keyset& keys, const std::string& keyid, const PublicKey& key, std::string* error) {
  if (keys.emplace(keyid, key).second) return true;
  if (error) *error = "keyid " + quotedForMessage(keyid) + " is listed twice";
  return false;
}

std::optional<Keyset> parsePem(std::string_view text, std::string* error) {
  Keyset keys;
  std::string pendingKeyid;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line = text.substr(pos, end == std::string_view::npos ? end : end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with(kKeyidLine)) {
      pendingKeyid = std::string(line.substr(kKeyidLine.size()));
    } else if (line == kPemBegin) {
      size_t blockEnd = text.find(kPemEnd, pos);
      if (blockEnd == std::string_view::npos) {
        if (error) *error = "PEM block without \"" + std::string(kPemEnd) + "\"";
        return std::nullopt;
      }
      blockEnd += kPemEnd.size();
      auto key = PublicKey::fromPem(text.substr(pos, blockEnd - pos));
      if (!key) {
        if (error) *error = "a PEM block is not an Ed25519 or P-256 SubjectPublicKeyInfo key";
        return std::nullopt;
      }
      std::string keyid = pendingKeyid.empty() ? key->keyId() : pendingKeyid;
      if (!addKey(keys, keyid, *key, error)) return std::nullopt;
      pendingKeyid.clear();
      end = text.find('\n', blockEnd);
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  if (keys.empty()) {
    if (error) {
      *error = text.find("PRIVATE KEY-----") != std::string_view::npos
                   ? "holds a private key; give the public key (openssl pkey -pubout)"
                   : "no \"BEGIN PUBLIC KEY\" block";
    }
    return std::nullopt;
  }
  return keys;
}

}  // namespace

std::string keysetAsPem(const Keyset& keys) {
  std::string out;
  for (const auto& [keyid, key] : keys) {
    out += std::string(kKeyidLine) + keyid + "\n" + key.spkiPem();
  }
  return out;
}

nlohmann::json jwkOf(const std::string& keyid, const PublicKey& key) {
  const std::string raw = key.rawPublicKey();
  if (key.algorithm() == KeyAlgorithm::kEd25519) {
    return {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", base64UrlEncode(raw)},
            {"kid", keyid}, {"alg", "EdDSA"},   {"use", "sig"}};
  }
  // raw = 0x04 || X || Y (uncompressed point).
  return {{"kty", "EC"},
          {"crv", "P-256"},
          {"x", base64UrlEncode(raw.substr(1, kCoordinateSize))},
          {"y", base64UrlEncode(raw.substr(1 + kCoordinateSize, kCoordinateSize))},
          {"kid", keyid},
          {"alg", "ES256"},
          {"use", "sig"}};
}

nlohmann::json jwkSetOf(const Keyset& keys) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [keyid, key] : keys) list.push_back(jwkOf(keyid, key));
  return {{"keys", list}};
}

std::optional<PublicKey> publicKeyFromJwk(const nlohmann::json& jwk, std::string* keyid,
                                          std::string* error) {
  auto fail = [&](std::string reason) -> std::optional<PublicKey> {
    if (error) *error = "JWK: " + std::move(reason);
    return std::nullopt;
  };
  if (!jwk.is_object()) return fail("not a JSON object");
  // A verification key file has no business holding a private key; refuse rather than ignore.
  if (jwk.contains("d")) return fail("holds a private key (\"d\"); give the public key only");
  const std::string* kty = jwkString(jwk, "kty");
  const std::string* crv = jwkString(jwk, "crv");
  if (!kty || !crv) return fail("needs string \"kty\" and \"crv\"");
  auto coordinate = [&](std::string_view name) -> std::optional<std::string> {
    const std::string* text = jwkString(jwk, name);
    if (!text) return std::nullopt;
    auto bytes = base64UrlDecode(*text);
    if (!bytes || bytes->size() != kCoordinateSize) return std::nullopt;
    return bytes;
  };
  std::optional<PublicKey> key;
  std::string expectedAlg;
  if (*kty == "OKP" && *crv == "Ed25519") {  // RFC 8037
    auto x = coordinate("x");
    if (!x) return fail("\"x\" must be base64url of 32 bytes");
    key = PublicKey::fromRaw(KeyAlgorithm::kEd25519, *x);
    expectedAlg = "EdDSA";
  } else if (*kty == "EC" && *crv == "P-256") {  // RFC 7518 section 6.2
    auto x = coordinate("x");
    auto y = coordinate("y");
    if (!x || !y) return fail("\"x\" and \"y\" must be base64url of 32 bytes each");
    key = PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, "\x04" + *x + *y);
    expectedAlg = "ES256";
  } else {
    return fail("kty " + quotedForMessage(*kty) + " crv " + quotedForMessage(*crv) +
                " is not Ed25519 (OKP) or P-256 (EC)");
  }
  if (!key) return fail("not a valid public key (point not on the curve)");
  if (jwk.contains("alg") && jwk["alg"] != expectedAlg) {
    return fail("\"alg\" does not match the key (expected " + expectedAlg + ")");
  }
  if (jwk.contains("use") && jwk["use"] != "sig") return fail("\"use\" is not \"sig\"");
  if (keyid) {
    const std::string* kid = jwkString(jwk, "kid");
    if (jwk.contains("kid") && (!kid || kid->empty())) return fail("\"kid\" must be a string");
    *keyid = kid ? *kid : key->keyId();
  }
  return key;
}

std::optional<Keyset> parseVerificationKeys(std::string_view text, std::string* error) {
  // JSON starts with '{'; anything else holding a PEM boundary is PEM text.
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] != '{' &&
      text.find("-----BEGIN ") != std::string_view::npos) {
    return parsePem(text, error);
  }
  std::string parseError;
  auto document = parseStrictJson(text, &parseError);
  if (!document) {
    if (error) *error = "neither PEM nor valid JSON: " + parseError;
    return std::nullopt;
  }
  auto isJwk = [](const nlohmann::json& value) {
    return value.is_object() && value.contains("kty");
  };
  std::vector<const nlohmann::json*> jwks;
  if (isJwk(*document)) {
    jwks.push_back(&*document);
  } else if (document->is_object() && document->contains("keys") &&
             (*document)["keys"].is_array() && !(*document)["keys"].empty() &&
             isJwk((*document)["keys"][0])) {
    for (const auto& entry : (*document)["keys"]) jwks.push_back(&entry);
  } else {
    return parseKeyset(text, error);
  }
  Keyset keys;
  for (const auto* jwk : jwks) {
    std::string keyid;
    auto key = publicKeyFromJwk(*jwk, &keyid, error);
    if (!key || !addKey(keys, keyid, *key, error)) return std::nullopt;
  }
  return keys;
}

}  // namespace cellos::core
