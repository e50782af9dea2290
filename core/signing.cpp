// Only the OpenSSL 3 EVP interfaces: refuse to compile against anything deprecated.
#define OPENSSL_NO_DEPRECATED 1

#include "core/signing.h"

#include "core/digest.h"
#include "core/encoding.h"
#include "core/jcs.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include <climits>
#include <cstring>
#include <stdexcept>

namespace cellos::core {

void detail::PkeyFree::operator()(evp_pkey_st* key) const {
  EVP_PKEY_free(key);
}

void detail::MdCtxFree::operator()(evp_md_ctx_st* ctx) const {
  EVP_MD_CTX_free(ctx);
}

namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, detail::PkeyFree>;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, detail::MdCtxFree>;

struct BnFree {
  void operator()(BIGNUM* bn) const { BN_free(bn); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

struct EcdsaSigFree {
  void operator()(ECDSA_SIG* sig) const { ECDSA_SIG_free(sig); }
};
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, EcdsaSigFree>;

constexpr size_t kEd25519PublicSize = 32;
constexpr size_t kP256PublicSize = 65;
constexpr size_t kP256CoordinateSize = 32;
constexpr size_t kSignatureSize = 64;

// The oldest queued OpenSSL error as text, and clears the queue so a stale error cannot be
// blamed on a later, unrelated call.
std::string takeOpensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error queued";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

[[noreturn]] void throwOpenssl(std::string_view what) {
  throw std::runtime_error(std::string(what) + ": " + takeOpensslError());
}

// Never prompt: OpenSSL's default PEM callback reads a passphrase from the terminal, which a
// daemon must not do. Encrypted keys therefore fail to load.
int refusePassphrase(char*, int, int, void*) {
  return -1;
}

BioPtr memoryBio(std::string_view text) {
  if (text.size() > INT_MAX) return nullptr;
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Which supported algorithm an OpenSSL key is, if any.
std::optional<KeyAlgorithm> algorithmOf(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return KeyAlgorithm::kEd25519;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64];
    size_t length = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof(group), &length) == 1) {
      std::string_view name(group, length);
      if (name == "prime256v1" || name == "P-256") return KeyAlgorithm::kEcdsaP256;
    }
    ERR_clear_error();
  }
  return std::nullopt;
}

// The raw public key (see SigningKey::rawPublicKey). P-256 is rebuilt from the affine
// coordinates rather than read as an encoded point, because OpenSSL keeps whatever point
// format (compressed or not) the key was decoded from.
std::optional<std::string> rawPublicOf(const EVP_PKEY* key, KeyAlgorithm algorithm) {
  if (algorithm == KeyAlgorithm::kEd25519) {
    std::string raw(kEd25519PublicSize, '\0');
    size_t length = raw.size();
    if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &length) !=
            1 ||
        length != kEd25519PublicSize) {
      ERR_clear_error();
      return std::nullopt;
    }
    return raw;
  }
  BIGNUM* x = nullptr;
  BIGNUM* y = nullptr;
  bool ok = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) == 1 &&
            EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) == 1;
  BnPtr xOwned(x), yOwned(y);
  if (!ok) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string raw(kP256PublicSize, '\0');
  raw[0] = 0x04;
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(x, out + 1, kP256CoordinateSize) != kP256CoordinateSize ||
      BN_bn2binpad(y, out + 1 + kP256CoordinateSize, kP256CoordinateSize) != kP256CoordinateSize) {
    ERR_clear_error();
    return std::nullopt;
  }
  return raw;
}

// ECDSA signatures come out of OpenSSL as DER SEQUENCE{r, s}; the wire form is r || s.
std::optional<std::string> derToRawEcdsa(const unsigned char* der, size_t length) {
  const unsigned char* cursor = der;
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(length)));
  if (!sig) return std::nullopt;
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::string raw(kSignatureSize, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(r, out, kP256CoordinateSize) != kP256CoordinateSize ||
      BN_bn2binpad(s, out + kP256CoordinateSize, kP256CoordinateSize) != kP256CoordinateSize) {
    return std::nullopt;
  }
  return raw;
}

std::optional<std::string> rawEcdsaToDer(std::string_view raw) {
  if (raw.size() != kSignatureSize) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  BnPtr r(BN_bin2bn(bytes, kP256CoordinateSize, nullptr));
  BnPtr s(BN_bin2bn(bytes + kP256CoordinateSize, kP256CoordinateSize, nullptr));
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) return std::nullopt;
  r.release();  // now owned by sig
  s.release();
  unsigned char* der = nullptr;
  int length = i2d_ECDSA_SIG(sig.get(), &der);
  if (length <= 0) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(length));
  OPENSSL_free(der);
  return out;
}

// The digest name EVP_DigestSign/Verify needs: none for pure Ed25519, SHA-256 for ECDSA.
const char* digestFor(KeyAlgorithm algorithm) {
  return algorithm == KeyAlgorithm::kEd25519 ? nullptr : "SHA256";
}

bool looksLikePem(std::string_view text) {
  return text.find("-----BEGIN ") != std::string_view::npos;
}

}  // namespace

std::string_view algorithmName(KeyAlgorithm algorithm) {
  return algorithm == KeyAlgorithm::kEd25519 ? "ed25519" : "p256";
}

std::optional<KeyAlgorithm> algorithmFromName(std::string_view name) {
  if (name == "ed25519") return KeyAlgorithm::kEd25519;
  if (name == "p256") return KeyAlgorithm::kEcdsaP256;
  return std::nullopt;
}

std::string keyIdFor(KeyAlgorithm algorithm, std::string_view rawPublicKey) {
  return std::string(algorithmName(algorithm)) + ":" +
         hexEncode(sha256(rawPublicKey)).substr(0, 16);
}

// ---------------------------------------------------------------------------------------------
// SigningKey

SigningKey::SigningKey(PkeyPtr key, KeyAlgorithm algorithm)
    : key_(std::move(key)), algorithm_(algorithm) {
  keyId_ = keyIdFor(algorithm_, rawPublicKey());
  signTemplate_.reset(EVP_MD_CTX_new());
  if (!signTemplate_) throwOpenssl("EVP_MD_CTX_new");
  if (EVP_DigestSignInit_ex(signTemplate_.get(), nullptr, digestFor(algorithm_), nullptr, nullptr,
                            key_.get(), nullptr) != 1) {
    throwOpenssl("EVP_DigestSignInit_ex");
  }
}

SigningKey::~SigningKey() = default;

SigningKey SigningKey::generate(KeyAlgorithm algorithm) {
  PkeyPtr key(algorithm == KeyAlgorithm::kEd25519
                  ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                  : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) throwOpenssl("generating a signing key");
  return SigningKey(std::move(key), algorithm);
}

SigningKey SigningKey::fromPem(std::string_view pkcs8Pem) {
  BioPtr bio = memoryBio(pkcs8Pem);
  if (!bio) throw std::runtime_error("signing key PEM: too large or out of memory");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, refusePassphrase, nullptr));
  if (!key) {
    throw std::runtime_error(
        "signing key PEM: not an unencrypted PKCS#8 private key (-----BEGIN PRIVATE KEY-----): " +
        takeOpensslError());
  }
  auto algorithm = algorithmOf(key.get());
  if (!algorithm) {
    throw std::runtime_error("signing key PEM: unsupported key type (need Ed25519 or EC P-256)");
  }
  return SigningKey(std::move(key), *algorithm);
}

std::string SigningKey::privatePem() const {
  // Secure-heap BIO: its buffer is cleansed when freed, so only the returned copy remains.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) throwOpenssl("allocating a PEM buffer");
  if (PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    throwOpenssl("encoding the signing key as PKCS#8 PEM");
  }
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  if (length <= 0 || data == nullptr) throwOpenssl("reading the PEM buffer");
  return std::string(data, static_cast<size_t>(length));
}

std::string SigningKey::rawPublicKey() const {
  auto raw = rawPublicOf(key_.get(), algorithm_);
  if (!raw) throw std::runtime_error("extracting the public key from a signing key failed");
  return *raw;
}

PublicKey SigningKey::publicKey() const {
  auto key = PublicKey::fromRaw(algorithm_, rawPublicKey());
  if (!key) throw std::runtime_error("deriving the public key from a signing key failed");
  return *key;
}

std::string SigningKey::sign(std::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) throwOpenssl("EVP_MD_CTX_new");
  if (EVP_MD_CTX_copy_ex(ctx.get(), signTemplate_.get()) != 1) throwOpenssl("EVP_MD_CTX_copy_ex");
  const auto* in = reinterpret_cast<const unsigned char*>(message.data());
  // The largest signature this key makes (64 for Ed25519, a DER ECDSA signature for P-256):
  // known without asking EVP_DigestSign for it first.
  size_t length = static_cast<size_t>(EVP_PKEY_get_size(key_.get()));
  std::string signature(length, '\0');
  auto* out = reinterpret_cast<unsigned char*>(signature.data());
  if (EVP_DigestSign(ctx.get(), out, &length, in, message.size()) != 1) {
    throwOpenssl("EVP_DigestSign");
  }
  signature.resize(length);
  if (algorithm_ == KeyAlgorithm::kEd25519) {
    if (signature.size() != kSignatureSize) throw std::runtime_error("Ed25519 signature size");
    return signature;
  }
  auto raw = derToRawEcdsa(out, length);
  if (!raw) throw std::runtime_error("converting an ECDSA signature from DER failed");
  return *raw;
}

// ---------------------------------------------------------------------------------------------
// PublicKey

PublicKey::PublicKey(std::shared_ptr<evp_pkey_st> key, KeyAlgorithm algorithm, std::string raw)
    : key_(std::move(key)), algorithm_(algorithm), raw_(std::move(raw)) {}

std::optional<PublicKey> PublicKey::fromRaw(KeyAlgorithm algorithm, std::string_view raw) {
  PkeyPtr key;
  if (algorithm == KeyAlgorithm::kEd25519) {
    if (raw.size() != kEd25519PublicSize) return std::nullopt;
    key.reset(EVP_PKEY_new_raw_public_key_ex(nullptr, "ED25519", nullptr,
                                             reinterpret_cast<const unsigned char*>(raw.data()),
                                             raw.size()));
  } else {
    // Only the uncompressed form, so each key has one raw spelling (and one key id).
    if (raw.size() != kP256PublicSize || raw[0] != 0x04) return std::nullopt;
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    std::string point(raw);
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
        OSSL_PARAM_construct_end()};
    EVP_PKEY* created = nullptr;
    if (ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
        EVP_PKEY_fromdata(ctx.get(), &created, EVP_PKEY_PUBLIC_KEY, params) == 1) {
      key.reset(created);
    }
    // fromdata decodes the point; the explicit check also rejects points off the curve on
    // providers that decode lazily.
    if (key) {
      PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
      if (!check || EVP_PKEY_public_check(check.get()) != 1) key.reset();
    }
  }
  if (!key) {
    ERR_clear_error();
    return std::nullopt;
  }
  return PublicKey(std::shared_ptr<evp_pkey_st>(key.release(), detail::PkeyFree()), algorithm,
                   std::string(raw));
}

std::optional<PublicKey> PublicKey::fromPem(std::string_view spkiPem) {
  BioPtr bio = memoryBio(spkiPem);
  if (!bio) return std::nullopt;
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, refusePassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    return std::nullopt;
  }
  auto algorithm = algorithmOf(key.get());
  if (!algorithm) return std::nullopt;
  auto raw = rawPublicOf(key.get(), *algorithm);
  if (!raw) return std::nullopt;
  if (*algorithm == KeyAlgorithm::kEcdsaP256) {
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) {
      ERR_clear_error();
      return std::nullopt;
    }
  }
  return PublicKey(std::shared_ptr<evp_pkey_st>(key.release(), detail::PkeyFree()), *algorithm,
                   std::move(*raw));
}

std::string PublicKey::spkiPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) throwOpenssl("allocating a PEM buffer");
  if (PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) {
    throwOpenssl("encoding a public key as SubjectPublicKeyInfo PEM");
  }
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  if (length <= 0 || data == nullptr) throwOpenssl("reading the PEM buffer");
  return std::string(data, static_cast<size_t>(length));
}

std::string PublicKey::keyId() const {
  return keyIdFor(algorithm_, raw_);
}

bool PublicKey::verify(std::string_view message, std::string_view signature) const {
  if (signature.size() != kSignatureSize) return false;
  std::string der;
  std::string_view wire = signature;
  if (algorithm_ == KeyAlgorithm::kEcdsaP256) {
    auto converted = rawEcdsaToDer(signature);
    if (!converted) {
      ERR_clear_error();
      return false;
    }
    der = std::move(*converted);
    wire = der;
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool valid =
      ctx &&
      EVP_DigestVerifyInit_ex(ctx.get(), nullptr, digestFor(algorithm_), nullptr, nullptr,
                              key_.get(), nullptr) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()), wire.size(),
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  ERR_clear_error();
  return valid;
}

// ---------------------------------------------------------------------------------------------
// Keysets

namespace {

// One keyset entry: `keyid` -> `text` (base64url raw key or SPKI PEM), with an optional
// algorithm hint. Returns the key or sets *error.
std::optional<PublicKey> keysetEntry(const std::string& keyid, const std::string& text,
                                     std::optional<KeyAlgorithm> hint, std::string* error) {
  auto fail = [&](std::string reason) -> std::optional<PublicKey> {
    if (error) *error = "keyset entry " + quotedForMessage(keyid) + ": " + reason;
    return std::nullopt;
  };
  if (keyid.empty()) return fail("empty keyid");
  if (looksLikePem(text)) {
    auto key = PublicKey::fromPem(text);
    if (!key) return fail("not an Ed25519 or P-256 \"BEGIN PUBLIC KEY\" PEM");
    if (hint && *hint != key->algorithm()) return fail("algorithm does not match the PEM key");
    return key;
  }
  std::optional<KeyAlgorithm> fromPrefix;
  if (keyid.starts_with("ed25519:")) fromPrefix = KeyAlgorithm::kEd25519;
  if (keyid.starts_with("p256:")) fromPrefix = KeyAlgorithm::kEcdsaP256;
  if (hint && fromPrefix && *hint != *fromPrefix) {
    return fail("algorithm does not match the keyid prefix");
  }
  std::optional<KeyAlgorithm> algorithm = fromPrefix ? fromPrefix : hint;
  if (!algorithm) {
    return fail(
        "cannot tell the algorithm: use an \"ed25519:\"/\"p256:\" keyid, an "
        "\"algorithm\" member, or a PEM key");
  }
  auto raw = base64UrlDecode(text);
  if (!raw) return fail("public key is neither base64url nor PEM");
  auto key = PublicKey::fromRaw(*algorithm, *raw);
  if (!key)
    return fail("not a valid raw " + std::string(algorithmName(*algorithm)) + " public key");
  if (fromPrefix && key->keyId() != keyid) {
    return fail("keyid does not match the key (expected " + key->keyId() + ")");
  }
  return key;
}

}  // namespace

std::optional<Keyset> parseKeyset(std::string_view json, std::string* error) {
  auto fail = [&](std::string reason) -> std::optional<Keyset> {
    if (error) *error = std::move(reason);
    return std::nullopt;
  };
  std::string parseError;
  auto document = parseStrictJson(json, &parseError);
  if (!document) return fail("keyset is not valid JSON: " + parseError);
  if (!document->is_object()) return fail("keyset must be a JSON object");

  Keyset keys;
  auto add = [&](const std::string& keyid, const std::string& text,
                 std::optional<KeyAlgorithm> hint) -> bool {
    auto key = keysetEntry(keyid, text, hint, error);
    if (!key) return false;
    if (!keys.emplace(keyid, *key).second) {
      if (error) *error = "keyset lists keyid " + quotedForMessage(keyid) + " twice";
      return false;
    }
    return true;
  };

  if (document->contains("keys")) {
    const auto& list = (*document)["keys"];
    if (!list.is_array()) return fail("keyset \"keys\" must be an array");
    if (document->size() != 1) return fail("keyset with \"keys\" must have no other members");
    for (const auto& entry : list) {
      if (!entry.is_object()) return fail("keyset \"keys\" entries must be objects");
      for (const auto& [name, value] : entry.items()) {
        if (name != "keyid" && name != "publicKey" && name != "algorithm") {
          return fail("keyset entry has unknown member " + quotedForMessage(name));
        }
        if (!value.is_string())
          return fail("keyset entry member " + quotedForMessage(name) + " must be a string");
      }
      if (!entry.contains("keyid") || !entry.contains("publicKey")) {
        return fail("keyset entry needs \"keyid\" and \"publicKey\"");
      }
      std::optional<KeyAlgorithm> hint;
      if (entry.contains("algorithm")) {
        hint = algorithmFromName(entry["algorithm"].get<std::string>());
        if (!hint) return fail("keyset entry \"algorithm\" must be \"ed25519\" or \"p256\"");
      }
      if (!add(entry["keyid"].get<std::string>(), entry["publicKey"].get<std::string>(), hint)) {
        return std::nullopt;
      }
    }
  } else {
    std::optional<KeyAlgorithm> hint;
    auto algorithmMember = document->find("algorithm");
    if (algorithmMember != document->end() && algorithmMember->is_string()) {
      hint = algorithmFromName(algorithmMember->get<std::string>());
    }
    for (const auto& [keyid, value] : document->items()) {
      if (hint && keyid == "algorithm") continue;
      if (!value.is_string()) {
        return fail("keyset entry " + quotedForMessage(keyid) +
                    " must be a string (base64url raw key or PEM)");
      }
      if (!add(keyid, value.get<std::string>(), hint)) return std::nullopt;
    }
  }
  if (keys.empty()) return fail("keyset holds no keys");
  return keys;
}

std::string serializeKeyset(const std::vector<PublicKey>& keys) {
  nlohmann::json document = nlohmann::json::object();
  for (const auto& key : keys) document[key.keyId()] = base64UrlEncode(key.rawPublicKey());
  return document.dump();
}

}  // namespace cellos::core
