// Signing keys, public keys, key ids and keysets.

#include "core/digest.h"
#include "core/encoding.h"
#include "core/signing.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <stdexcept>

namespace cellos::core {
namespace {

std::string fromHex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return out;
}

// PEM armour around DER, 64 columns.
std::string pem(std::string_view label, std::string_view der) {
  std::string body = base64Encode(der);
  std::string out = "-----BEGIN " + std::string(label) + "-----\n";
  for (size_t i = 0; i < body.size(); i += 64) out += body.substr(i, 64) + "\n";
  return out + "-----END " + std::string(label) + "-----\n";
}

// PKCS#8 for an Ed25519 seed (RFC 8410 section 7): fixed prefix + the 32-byte seed.
std::string ed25519Pkcs8(std::string_view seedHex) {
  return pem("PRIVATE KEY", fromHex("302e020100300506032b657004220420") + fromHex(seedHex));
}

// SubjectPublicKeyInfo PEM of a private key, written by OpenSSL directly (not by our code).
std::string spkiPemOf(const SigningKey& key) {
  std::string privatePem = key.privatePem();
  BIO* in = BIO_new_mem_buf(privatePem.data(), static_cast<int>(privatePem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(out, pkey);
  char* data = nullptr;
  long length = BIO_get_mem_data(out, &data);
  std::string text(data, static_cast<size_t>(length));
  BIO_free(out);
  EVP_PKEY_free(pkey);
  BIO_free(in);
  return text;
}

// A PEM private key of a kind we must refuse.
std::string foreignPrivatePem(const char* type, const char* group) {
  EVP_PKEY* pkey = group ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, group)
                         : EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(out, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long length = BIO_get_mem_data(out, &data);
  std::string text(data, static_cast<size_t>(length));
  BIO_free(out);
  EVP_PKEY_free(pkey);
  return text;
}

// RFC 8032 section 7.1, TEST 2.
TEST(Ed25519, Rfc8032KnownAnswer) {
  SigningKey key = SigningKey::fromPem(
      ed25519Pkcs8("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"));
  EXPECT_EQ(key.algorithm(), KeyAlgorithm::kEd25519);
  EXPECT_EQ(hexEncode(key.rawPublicKey()),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  std::string signature = key.sign("\x72");
  EXPECT_EQ(hexEncode(signature),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  auto publicKey = PublicKey::fromRaw(KeyAlgorithm::kEd25519, key.rawPublicKey());
  ASSERT_TRUE(publicKey.has_value());
  EXPECT_TRUE(publicKey->verify("\x72", signature));
  EXPECT_FALSE(publicKey->verify("\x73", signature));
}

// A signature made by the openssl CLI (DER, converted to r || s by hand) over
// "cellos event chain" verifies: our P-256 wire form is plain r || s over SHA-256.
TEST(EcdsaP256, VerifiesIndependentSignature) {
  std::string raw = fromHex(
      "04fa2c573dd0e8a26f3fb05843990cec8ccff4c422287ca99714feeaa3f0bc65c6879d2484c57e7ddc5d2ad98efa"
      "44f542f2ba9cc2a57b4523c3d1630f93dbb2b8");
  std::string signature = fromHex(
      "c3450c16f2ba73d78cc80a55a744289b53e6aca8b607dc8ca18c3bca4cdb73e7"
      "4b2342540332845f98107eff0b9c382f4982864cd47e458f3b6f4e28507c1596");
  auto key = PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, raw);
  ASSERT_TRUE(key.has_value());
  EXPECT_TRUE(key->verify("cellos event chain", signature));
  EXPECT_FALSE(key->verify("cellos event chaim", signature));

  auto fromPem = PublicKey::fromPem(
      "-----BEGIN PUBLIC KEY-----\n"
      "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+ixXPdDoom8/sFhDmQzsjM/0xCIo\n"
      "fKmXFP7qo/C8ZcaHnSSExX593F0q2Y76RPVC8rqcwqV7RSPD0WMPk9uyuA==\n"
      "-----END PUBLIC KEY-----\n");
  ASSERT_TRUE(fromPem.has_value());
  EXPECT_EQ(fromPem->algorithm(), KeyAlgorithm::kEcdsaP256);
  EXPECT_EQ(fromPem->rawPublicKey(), raw);
  EXPECT_TRUE(fromPem->verify("cellos event chain", signature));
}

class BothAlgorithms : public ::testing::TestWithParam<KeyAlgorithm> {};

TEST_P(BothAlgorithms, SignVerifyAndRejectTampering) {
  SigningKey key = SigningKey::generate(GetParam());
  EXPECT_EQ(key.algorithm(), GetParam());
  std::string signature = key.sign("message");
  EXPECT_EQ(signature.size(), 64u);
  PublicKey publicKey = key.publicKey();
  EXPECT_TRUE(publicKey.verify("message", signature));
  EXPECT_FALSE(publicKey.verify("messagE", signature));
  EXPECT_FALSE(publicKey.verify("message", ""));
  EXPECT_FALSE(publicKey.verify("message", signature.substr(0, 63)));
  EXPECT_FALSE(publicKey.verify("message", signature + "x"));
  for (size_t byte : {0ul, 31ul, 32ul, 63ul}) {
    std::string flipped = signature;
    flipped[byte] = static_cast<char>(flipped[byte] ^ 0x01);
    EXPECT_FALSE(publicKey.verify("message", flipped)) << byte;
  }
  SigningKey other = SigningKey::generate(GetParam());
  EXPECT_FALSE(other.publicKey().verify("message", signature));
}

TEST_P(BothAlgorithms, RawKeysAndKeyIds) {
  SigningKey key = SigningKey::generate(GetParam());
  std::string raw = key.rawPublicKey();
  const bool ed = GetParam() == KeyAlgorithm::kEd25519;
  EXPECT_EQ(raw.size(), ed ? 32u : 65u);
  if (!ed) {
    EXPECT_EQ(raw[0], '\x04');
  }
  EXPECT_EQ(algorithmName(GetParam()), ed ? "ed25519" : "p256");
  EXPECT_EQ(key.keyId(),
            std::string(ed ? "ed25519:" : "p256:") + hexEncode(sha256(raw)).substr(0, 16));
  EXPECT_TRUE(std::regex_match(key.keyId(), std::regex("^(ed25519|p256):[0-9a-f]{16}$")));
  EXPECT_EQ(key.keyId(), keyIdFor(GetParam(), raw));
  EXPECT_EQ(key.publicKey().keyId(), key.keyId());
  EXPECT_NE(SigningKey::generate(GetParam()).keyId(), key.keyId());

  auto reloaded = PublicKey::fromRaw(GetParam(), raw);
  ASSERT_TRUE(reloaded.has_value());
  EXPECT_EQ(reloaded->rawPublicKey(), raw);
  EXPECT_TRUE(reloaded->verify("m", key.sign("m")));
}

TEST_P(BothAlgorithms, PemRoundTrips) {
  SigningKey key = SigningKey::generate(GetParam());
  std::string privatePem = key.privatePem();
  EXPECT_EQ(privatePem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  SigningKey reloaded = SigningKey::fromPem(privatePem);
  EXPECT_EQ(reloaded.algorithm(), GetParam());
  EXPECT_EQ(reloaded.rawPublicKey(), key.rawPublicKey());
  EXPECT_TRUE(key.publicKey().verify("m", reloaded.sign("m")));

  auto publicKey = PublicKey::fromPem(spkiPemOf(key));
  ASSERT_TRUE(publicKey.has_value());
  EXPECT_EQ(publicKey->algorithm(), GetParam());
  EXPECT_EQ(publicKey->rawPublicKey(), key.rawPublicKey());
  EXPECT_TRUE(publicKey->verify("m", key.sign("m")));
  // A private key is not a public key PEM.
  EXPECT_FALSE(PublicKey::fromPem(privatePem).has_value());
}

TEST_P(BothAlgorithms, MoveTransfersOwnership) {
  SigningKey key = SigningKey::generate(GetParam());
  std::string keyId = key.keyId();
  SigningKey moved = std::move(key);
  EXPECT_EQ(moved.keyId(), keyId);
  static_assert(!std::is_copy_constructible_v<SigningKey>);
  static_assert(std::is_copy_constructible_v<PublicKey>);
}

INSTANTIATE_TEST_SUITE_P(Keys, BothAlgorithms,
                         ::testing::Values(KeyAlgorithm::kEd25519, KeyAlgorithm::kEcdsaP256),
                         [](const auto& info) { return std::string(algorithmName(info.param)); });

// r and s are zero-padded to 32 bytes each: over many signatures some have a leading zero byte.
TEST(EcdsaP256, ManySignaturesVerify) {
  SigningKey key = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  PublicKey publicKey = key.publicKey();
  for (int i = 0; i < 300; ++i) {
    std::string message = "m" + std::to_string(i);
    std::string signature = key.sign(message);
    ASSERT_EQ(signature.size(), 64u);
    ASSERT_TRUE(publicKey.verify(message, signature)) << i;
  }
}

TEST(SigningKey, FromPemRefusesOtherKeys) {
  EXPECT_THROW(SigningKey::fromPem(""), std::runtime_error);
  EXPECT_THROW(
      SigningKey::fromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
      std::runtime_error);
  try {
    SigningKey::fromPem(foreignPrivatePem("EC", "P-384"));
    FAIL() << "P-384 accepted";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("unsupported key type"), std::string::npos);
  }
  EXPECT_THROW(SigningKey::fromPem(foreignPrivatePem("X25519", nullptr)), std::runtime_error);
  EXPECT_THROW(SigningKey::fromPem(foreignPrivatePem("ED448", nullptr)), std::runtime_error);
}

// Must fail rather than prompt for a passphrase on the terminal.
TEST(SigningKey, FromPemRefusesEncryptedKey) {
  SigningKey key = SigningKey::generate();
  std::string plain = key.privatePem();
  BIO* in = BIO_new_mem_buf(plain.data(), static_cast<int>(plain.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  char passphrase[] = "secret";
  ASSERT_EQ(
      PEM_write_bio_PKCS8PrivateKey(out, pkey, EVP_aes_256_cbc(), passphrase, 6, nullptr, nullptr),
      1);
  char* data = nullptr;
  long length = BIO_get_mem_data(out, &data);
  std::string encrypted(data, static_cast<size_t>(length));
  BIO_free(out);
  EVP_PKEY_free(pkey);
  BIO_free(in);
  EXPECT_NE(encrypted.find("ENCRYPTED PRIVATE KEY"), std::string::npos);
  EXPECT_THROW(SigningKey::fromPem(encrypted), std::runtime_error);
}

TEST(PublicKey, FromRawRejectsBadKeys) {
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEd25519, std::string(31, 'a')).has_value());
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEd25519, std::string(33, 'a')).has_value());
  SigningKey p256 = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  std::string raw = p256.rawPublicKey();
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, raw.substr(0, 64)).has_value());
  std::string offCurve = raw;
  offCurve[64] = static_cast<char>(offCurve[64] ^ 0x01);
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, offCurve).has_value());
  std::string compressed = raw.substr(0, 33);
  compressed[0] = static_cast<char>(0x02 + (raw[64] & 1));
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, compressed).has_value());
  std::string zeros(65, '\0');
  zeros[0] = 0x04;
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, zeros).has_value());
  // An Ed25519 key is not a P-256 key and vice versa.
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEcdsaP256, SigningKey::generate().rawPublicKey())
                   .has_value());
  EXPECT_FALSE(PublicKey::fromRaw(KeyAlgorithm::kEd25519, raw).has_value());
}

TEST(PublicKey, FromPemRejectsOthers) {
  EXPECT_FALSE(PublicKey::fromPem("").has_value());
  EXPECT_FALSE(PublicKey::fromPem("not a pem").has_value());
  EXPECT_FALSE(PublicKey::fromPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                   .has_value());
}

TEST(Keyset, SerializeAndParseRoundTrip) {
  SigningKey ed = SigningKey::generate(KeyAlgorithm::kEd25519);
  SigningKey ec = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  std::string text = serializeKeyset({ed.publicKey(), ec.publicKey()});
  auto json = nlohmann::json::parse(text);
  EXPECT_EQ(json[ed.keyId()], base64UrlEncode(ed.rawPublicKey()));
  EXPECT_EQ(json[ec.keyId()], base64UrlEncode(ec.rawPublicKey()));
  EXPECT_EQ(text.find(' '), std::string::npos);

  std::string error;
  auto keys = parseKeyset(text, &error);
  ASSERT_TRUE(keys.has_value()) << error;
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->at(ed.keyId()).verify("m", ed.sign("m")));
  EXPECT_TRUE(keys->at(ec.keyId()).verify("m", ec.sign("m")));
  EXPECT_EQ(keys->at(ec.keyId()).algorithm(), KeyAlgorithm::kEcdsaP256);
}

TEST(Keyset, StructuredFormAndPemEntries) {
  SigningKey ed = SigningKey::generate(KeyAlgorithm::kEd25519);
  SigningKey ec = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  nlohmann::json document = {{"keys",
                              {{{"keyid", ed.keyId()},
                                {"algorithm", "ed25519"},
                                {"publicKey", base64UrlEncode(ed.rawPublicKey())}},
                               {{"keyid", "hsm-key-1"},
                                {"algorithm", "p256"},
                                {"publicKey", base64UrlEncode(ec.rawPublicKey())}},
                               {{"keyid", "any name"}, {"publicKey", spkiPemOf(ec)}}}}};
  std::string error;
  auto keys = parseKeyset(document.dump(), &error);
  ASSERT_TRUE(keys.has_value()) << error;
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->at("hsm-key-1").verify("m", ec.sign("m")));
  EXPECT_TRUE(keys->at("any name").verify("m", ec.sign("m")));
  EXPECT_EQ(keys->at("any name").algorithm(), KeyAlgorithm::kEcdsaP256);

  // Plain form with a PEM value under an arbitrary keyid and a bare entry.
  nlohmann::json plain = {{"release-2026", spkiPemOf(ed)},
                          {ec.keyId(), base64UrlEncode(ec.rawPublicKey())}};
  keys = parseKeyset(plain.dump(), &error);
  ASSERT_TRUE(keys.has_value()) << error;
  EXPECT_TRUE(keys->at("release-2026").verify("m", ed.sign("m")));

  // Plain form with an algorithm hint for an unprefixed bare entry.
  nlohmann::json hinted = {{"algorithm", "ed25519"}, {"mykey", base64UrlEncode(ed.rawPublicKey())}};
  keys = parseKeyset(hinted.dump(), &error);
  ASSERT_TRUE(keys.has_value()) << error;
  EXPECT_EQ(keys->size(), 1u);
  EXPECT_TRUE(keys->at("mykey").verify("m", ed.sign("m")));
}

TEST(Keyset, RejectsBadKeysets) {
  SigningKey ed = SigningKey::generate(KeyAlgorithm::kEd25519);
  SigningKey ec = SigningKey::generate(KeyAlgorithm::kEcdsaP256);
  std::string rawEd = base64UrlEncode(ed.rawPublicKey());
  std::string otherId = SigningKey::generate().keyId();
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {"{}", "holds no keys"},
      {R"({"keys":[]})", "holds no keys"},
      {nlohmann::json{{otherId, rawEd}}.dump(), "keyid does not match"},
      {nlohmann::json{{"nokind", rawEd}}.dump(), "cannot tell the algorithm"},
      {nlohmann::json{{ed.keyId(), "***"}}.dump(), "neither base64url nor PEM"},
      {nlohmann::json{{"p256:" + ed.keyId().substr(8), rawEd}}.dump(), "not a valid raw p256"},
      {nlohmann::json{{ed.keyId(), 5}}.dump(), "must be a string"},
      {"{\"" + ed.keyId() + "\":\"" + rawEd + "\",\"" + ed.keyId() + "\":\"" + rawEd + "\"}",
       "duplicate member name"},
      {nlohmann::json{
           {"keys", {{{"keyid", ed.keyId()}, {"algorithm", "p256"}, {"publicKey", rawEd}}}}}
           .dump(),
       "algorithm does not match"},
      {nlohmann::json{{"keys", {{{"keyid", "x"}, {"algorithm", "rsa"}, {"publicKey", rawEd}}}}}
           .dump(),
       "\"algorithm\" must be"},
      {nlohmann::json{{"keys", {{{"keyid", "x"}, {"algorithm", "ed25519"}}}}}.dump(),
       "needs \"keyid\" and \"publicKey\""},
      {nlohmann::json{{"keys",
                       {{{"keyid", "x"}, {"algorithm", "ed25519"}, {"publicKey", rawEd}},
                        {{"keyid", "x"}, {"algorithm", "ed25519"}, {"publicKey", rawEd}}}}}
           .dump(),
       "twice"},
      {nlohmann::json{
           {"keys", {{{"keyid", "x"}, {"publicKey", spkiPemOf(ec)}, {"algorithm", "ed25519"}}}}}
           .dump(),
       "does not match the PEM"},
      {nlohmann::json{{"keys", {{{"keyid", "x"}, {"publicKey", rawEd}, {"comment", "y"}}}}}.dump(),
       "unknown member"},
  };
  for (const auto& [text, reason] : cases) {
    std::string error;
    EXPECT_FALSE(parseKeyset(text, &error).has_value()) << text;
    EXPECT_NE(error.find(reason), std::string::npos) << text << " -> " << error;
  }
  EXPECT_FALSE(parseKeyset("{}", nullptr).has_value());
}

}  // namespace
}  // namespace cellos::core
