#pragma once
// Public keys in the forms a verifier that does not run cellos already reads: PEM
// (SubjectPublicKeyInfo, what `openssl pkeyutl -verify -pubin` takes) and JWK (RFC 7517; RFC 8037
// "OKP" for Ed25519, RFC 7518 "EC" for P-256), each carrying its keyid; and the one reader
// `cellos verify --keys` uses for all of them and for our own keyset files.

#include "core/signing.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

// Every key of `keys` as a PEM block, in keyid order, each preceded by one line
// "keyid: <keyid>" (RFC 7468 allows explanatory text outside the boundaries; openssl skips
// it), so the file says which key is which and parseVerificationKeys reads the keyids back.
std::string keysetAsPem(const Keyset& keys);

// One key as a JWK: Ed25519 {"kty":"OKP","crv":"Ed25519","x"}, P-256 {"kty":"EC",
// "crv":"P-256","x","y"} (coordinates base64url without padding, big-endian, 32 bytes), with
// "kid" = keyid, "alg" ("EdDSA" / "ES256") and "use":"sig".
nlohmann::json jwkOf(const std::string& keyid, const PublicKey& key);

// {"keys": [jwkOf(...), ...]} in keyid order (an RFC 7517 JWK Set).
nlohmann::json jwkSetOf(const Keyset& keys);

// The public key of one JWK. Refuses, with a one-line reason in *error: a JWK with a private
// part ("d"), another kty/crv, a coordinate that is not base64url of exactly 32 bytes, a point
// not on the curve, an "alg" that does not match the key, or a "use" other than "sig". Members
// the RFCs leave to the application are ignored. *keyid gets "kid", or keyIdFor(the key) when
// the JWK has none.
std::optional<PublicKey> publicKeyFromJwk(const nlohmann::json& jwk, std::string* keyid,
                                          std::string* error);

// The trusted keys of a `--keys` file, whatever its form: PEM text (one or more "BEGIN PUBLIC
// KEY" blocks, each under the keyid its "keyid: " line names, else keyIdFor(the key)); a JWK; a
// JWK Set; or a keyset (parseKeyset). nullopt with a one-line reason in *error on anything
// malformed, a duplicated keyid, or no key at all.
std::optional<Keyset> parseVerificationKeys(std::string_view text, std::string* error);

}  // namespace cellos::core
