#pragma once
// Event signing keys: Ed25519 (default) and ECDSA P-256 (for keys held in an HSM/KMS), key ids,
// and keysets that tell a verifier which public keys to trust. See design/events.md.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct evp_pkey_st;    // OpenSSL's EVP_PKEY, kept out of this header.
struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX.

namespace cellos::core {

enum class KeyAlgorithm { kEd25519, kEcdsaP256 };

// "ed25519" or "p256": the key id prefix and the keyset "algorithm" value.
std::string_view algorithmName(KeyAlgorithm algorithm);

// Inverse of algorithmName; nullopt for any other text.
std::optional<KeyAlgorithm> algorithmFromName(std::string_view name);

// algorithmName + ":" + the first 16 lower-case hex characters of SHA-256(rawPublicKey).
std::string keyIdFor(KeyAlgorithm algorithm, std::string_view rawPublicKey);

namespace detail {
// Frees an EVP_PKEY.
struct PkeyFree {
  void operator()(evp_pkey_st* key) const;
};
// Frees an EVP_MD_CTX.
struct MdCtxFree {
  void operator()(evp_md_ctx_st* ctx) const;
};
}  // namespace detail

class PublicKey;

// A private signing key. Move-only: the one owner of the OpenSSL key object. The private
// material is never formatted or logged; privatePem() is the only way out, for persisting it.
class SigningKey {
 public:
  // A fresh key from OpenSSL's default random generator. Throws std::runtime_error on failure.
  static SigningKey generate(KeyAlgorithm algorithm = KeyAlgorithm::kEd25519);

  // Loads an unencrypted PKCS#8 ("BEGIN PRIVATE KEY") Ed25519 or EC P-256 private key. Throws
  // std::runtime_error saying what is wrong (unparseable, encrypted, other algorithm or curve).
  static SigningKey fromPem(std::string_view pkcs8Pem);

  SigningKey(SigningKey&&) noexcept = default;
  SigningKey& operator=(SigningKey&&) noexcept = default;
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;
  ~SigningKey();

  // PKCS#8 PEM of the private key. The caller holds secret material and must wipe it
  // (e.g. OPENSSL_cleanse) when done.
  std::string privatePem() const;

  KeyAlgorithm algorithm() const { return algorithm_; }

  // Ed25519: the 32-byte public key; P-256: the 65-byte uncompressed point 0x04 || X || Y.
  std::string rawPublicKey() const;

  // keyIdFor(algorithm(), rawPublicKey()); computed once.
  const std::string& keyId() const { return keyId_; }

  // The matching public key.
  PublicKey publicKey() const;

  // Signs `message`. Ed25519 (pure, RFC 8032): 64 bytes. P-256: ECDSA over SHA-256 as raw
  // r || s, each big-endian and zero-padded to 32 bytes (64 bytes; not DER). Throws
  // std::runtime_error if OpenSSL fails. Safe to call from several threads at once.
  std::string sign(std::string_view message) const;

 private:
  SigningKey(std::unique_ptr<evp_pkey_st, detail::PkeyFree> key, KeyAlgorithm algorithm);

  std::unique_ptr<evp_pkey_st, detail::PkeyFree> key_;
  KeyAlgorithm algorithm_;
  std::string keyId_;
  // A signing context initialised once with this key; each signature works on a copy. OpenSSL
  // 3's EVP_DigestSignInit fetches the algorithm from its provider every time, which costs
  // more than an Ed25519 signature itself (bench/signer).
  std::unique_ptr<evp_md_ctx_st, detail::MdCtxFree> signTemplate_;
};

// A public verification key. Copyable; copies share one immutable OpenSSL key object.
class PublicKey {
 public:
  // From the raw form rawPublicKey() returns (32 bytes / 65-byte uncompressed point on P-256).
  // nullopt on a wrong length, a compressed or invalid point.
  static std::optional<PublicKey> fromRaw(KeyAlgorithm algorithm, std::string_view raw);

  // From a "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo) PEM holding an Ed25519 or P-256 key;
  // nullopt for anything else.
  static std::optional<PublicKey> fromPem(std::string_view spkiPem);

  KeyAlgorithm algorithm() const { return algorithm_; }

  // Same form as SigningKey::rawPublicKey().
  std::string rawPublicKey() const { return raw_; }

  // keyIdFor(algorithm(), rawPublicKey()).
  std::string keyId() const;

  // "-----BEGIN PUBLIC KEY-----" SubjectPublicKeyInfo PEM (RFC 8410 / RFC 5480), what
  // `openssl pkeyutl -verify -pubin` and fromPem read.
  std::string spkiPem() const;

  // True only if `signature` is a valid signature of `message` under this key, in the form
  // SigningKey::sign produces (P-256: raw r || s, 64 bytes; DER is rejected).
  bool verify(std::string_view message, std::string_view signature) const;

 private:
  PublicKey(std::shared_ptr<evp_pkey_st> key, KeyAlgorithm algorithm, std::string raw);

  std::shared_ptr<evp_pkey_st> key_;
  KeyAlgorithm algorithm_;
  std::string raw_;
};

// Trusted public keys by key id.
using Keyset = std::map<std::string, PublicKey>;

// Parses a keyset file. Two forms are accepted:
//   {"<keyid>": "<key>", ...}
//   {"keys": [{"keyid": "<keyid>", "publicKey": "<key>", "algorithm": "ed25519"|"p256"}, ...]}
// where <key> is either base64url of the raw public key or a "-----BEGIN PUBLIC KEY-----" PEM.
// A raw key's algorithm comes from the "algorithm" member or, failing that, from the keyid prefix
// ("ed25519:" / "p256:"), and a prefixed keyid must then equal keyIdFor(the key) so a
// copy-paste slip fails here instead of as "bad signature" later. A PEM key carries its own
// algorithm (an "algorithm" member must agree) and may be listed under any keyid. In the plain
// form a top-level "algorithm" member is an algorithm hint for unprefixed raw entries.
// Returns nullopt with a one-line reason in *error (if not null) on malformed JSON, duplicate
// keyids, an unusable key, or an empty keyset.
std::optional<Keyset> parseKeyset(std::string_view json, std::string* error);

// {"<keyid>": "<base64url raw public key>", ...} as compact JSON, members sorted; parseKeyset
// reads it back.
std::string serializeKeyset(const std::vector<PublicKey>& keys);

}  // namespace cellos::core
