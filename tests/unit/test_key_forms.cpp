// Public keys as PEM and JWK: what `cellos keys` prints and `cellos verify --keys` reads.

#include "core/encoding.h"
#include "core/key_forms.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace cellos::core {
namespace {

std::string dataFile(const std::string& name) {
  const char* dir = std::getenv("CELLOS_SOURCE_DIR");
  std::ifstream in(std::string(dir && *dir ? dir : CELLOS_TEST_SOURCE_DIR) +
                   "/tests/data/verifiability/" + name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Keyset twoKeys() {
  SigningKey ed = SigningKey::generate(KeyAlgorithm::kEd25519);
  SigningKey p256 = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  return {{ed.keyId(), ed.publicKey()}, {p256.keyId(), p256.publicKey()}};
}

void expectSameKeys(const Keyset& a, const Keyset& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [keyid, key] : a) {
    auto it = b.find(keyid);
    ASSERT_NE(it, b.end()) << keyid;
    EXPECT_EQ(it->second.rawPublicKey(), key.rawPublicKey()) << keyid;
    EXPECT_EQ(it->second.algorithm(), key.algorithm()) << keyid;
  }
}

TEST(KeyForms, PemRoundTripsWithKeyids) {
  Keyset keys = twoKeys();
  keys.emplace("a-foreign-name", keys.begin()->second);  // a keyid that is not derived
  std::string pem = keysetAsPem(keys);
  EXPECT_NE(pem.find("keyid: a-foreign-name\n-----BEGIN PUBLIC KEY-----\n"), std::string::npos);
  std::string error;
  auto back = parseVerificationKeys(pem, &error);
  ASSERT_TRUE(back) << error;
  expectSameKeys(keys, *back);
}

TEST(KeyForms, JwkRoundTrips) {
  Keyset keys = twoKeys();
  nlohmann::json set = jwkSetOf(keys);
  std::string error;
  auto back = parseVerificationKeys(set.dump(), &error);
  ASSERT_TRUE(back) << error;
  expectSameKeys(keys, *back);
  for (const auto& [keyid, key] : keys) {
    auto one = parseVerificationKeys(jwkOf(keyid, key).dump(), &error);
    ASSERT_TRUE(one) << error;
    expectSameKeys({{keyid, key}}, *one);
  }
}

// The spec's published P-256 test key: its X and Y (decimal in the spec) as JWK coordinates,
// converted independently (Python int.to_bytes + base64url).
TEST(KeyForms, SpecKeyAsJwk) {
  std::string error;
  auto keys = parseVerificationKeys(dataFile("spec-p256-public.pem"), &error);
  ASSERT_TRUE(keys) << error;
  ASSERT_EQ(keys->size(), 1u);
  nlohmann::json jwk = jwkOf("testkey", keys->begin()->second);
  EXPECT_EQ(jwk["kty"], "EC");
  EXPECT_EQ(jwk["crv"], "P-256");
  EXPECT_EQ(jwk["alg"], "ES256");
  EXPECT_EQ(jwk["x"], "Z805D3eqNZywjCI19lInBJOp7YMrCrzAH3CVTAOQ0jg");
  EXPECT_EQ(jwk["y"], "DHgr1U4mkSWkT0Qzr_FDLOlOErynOqZ6yAzqEmCN33Q");
  EXPECT_EQ(jwk["kid"], "testkey");
  // A PEM without a keyid line is listed under the key's derived id.
  EXPECT_EQ(keys->begin()->first, keys->begin()->second.keyId());
}

TEST(KeyForms, Ed25519JwkIsRfc8037) {
  SigningKey key = SigningKey::generate();
  nlohmann::json jwk = jwkOf(key.keyId(), key.publicKey());
  EXPECT_EQ(jwk["kty"], "OKP");
  EXPECT_EQ(jwk["crv"], "Ed25519");
  EXPECT_EQ(jwk["alg"], "EdDSA");
  EXPECT_EQ(*base64UrlDecode(jwk["x"].get<std::string>()), key.rawPublicKey());
  EXPECT_FALSE(jwk.contains("d"));
}

TEST(KeyForms, RefusesWhatIsNotAPublicVerificationKey) {
  SigningKey ed = SigningKey::generate();
  SigningKey p256 = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  nlohmann::json okp = jwkOf("k", ed.publicKey());
  nlohmann::json ec = jwkOf("k", p256.publicKey());
  auto reason = [](const nlohmann::json& jwk) {
    std::string error, keyid;
    return publicKeyFromJwk(jwk, &keyid, &error) ? std::string("ok") : error;
  };
  EXPECT_EQ(reason(okp), "ok");
  EXPECT_EQ(reason(ec), "ok");
  auto with = [](nlohmann::json jwk, const std::string& name, nlohmann::json value) {
    if (value.is_null()) {
      jwk.erase(name);
    } else {
      jwk[name] = value;
    }
    return jwk;
  };
  EXPECT_NE(reason(with(okp, "d", "AAAA")).find("private key"), std::string::npos);
  EXPECT_NE(reason(with(okp, "crv", "X25519")), "ok");
  EXPECT_NE(reason(with(ec, "crv", "P-384")), "ok");
  EXPECT_NE(reason(with(okp, "x", base64UrlEncode(std::string(31, 'a')))), "ok");
  EXPECT_NE(reason(with(ec, "y", nullptr)), "ok");
  EXPECT_NE(reason(with(ec, "y", base64UrlEncode(std::string(32, '\x01')))), "ok");  // off curve
  EXPECT_NE(reason(with(okp, "alg", "ES256")), "ok");
  EXPECT_NE(reason(with(ec, "use", "enc")), "ok");
  EXPECT_EQ(reason(with(ec, "key_ops", nlohmann::json::array({"verify"}))), "ok");  // ignored

  std::string error;
  nlohmann::json twice = {{"keys", {okp, okp}}};
  EXPECT_FALSE(parseVerificationKeys(twice.dump(), &error));
  EXPECT_NE(error.find("twice"), std::string::npos) << error;
  EXPECT_FALSE(parseVerificationKeys(dataFile("spec-p256-private.pem"), &error));
  EXPECT_NE(error.find("private key"), std::string::npos) << error;
  EXPECT_FALSE(parseVerificationKeys("-----BEGIN PUBLIC KEY-----\nAAAA\n", &error));
  EXPECT_FALSE(parseVerificationKeys("not a key", &error));
}

TEST(KeyForms, KeysetFilesStillRead) {
  std::string error;
  auto keys = parseVerificationKeys(dataFile("keyset.json"), &error);
  ASSERT_TRUE(keys) << error;
  EXPECT_EQ(keys->count("testkey"), 1u);
  EXPECT_EQ(keys->count("vectors-ed25519"), 1u);
  SigningKey key = SigningKey::generate();
  auto ours = parseVerificationKeys(serializeKeyset({key.publicKey()}), &error);
  ASSERT_TRUE(ours) << error;
  EXPECT_EQ(ours->count(key.keyId()), 1u);
}

}  // namespace
}  // namespace cellos::core
