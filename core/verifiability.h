#pragma once
// CloudEvents Verifiability (DSSE) signatures and the per-key event chain, exactly as
// design/events.md specifies: CORE_DIGEST / EXT_DIGEST, the verification material, the DSSE v1
// envelope carried base64-encoded in the `dssematerial` extension attribute, and the `sequence` /
// `cellosprev` attributes that chain one signer's events.

#include "core/signing.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// DSSE payloadType of CloudEvents verification material.
inline constexpr std::string_view kDssePayloadType =
    "https://cloudevents.io/verifiability/dsse/v0.1";

// The extension attributes our signer covers, in signing order.
inline const std::vector<std::string> kSignedExtensions = {"sequence", "cellosprev"};

// CORE_DIGEST of a structured-mode JSON event: 32 raw bytes,
//   SHA256(SHA256(id) || SHA256(source) || SHA256(specversion) || SHA256(type) ||
//          SHA256(datacontenttype) || SHA256(dataschema) || SHA256(subject) ||
//          SHA256(time) || SHA256(data bytes)),
// where an absent attribute contributes SHA256(""); `time` is normalised to UTC at second
// precision ("YYYY-MM-DDTHH:MM:SSZ", fraction truncated, offsets applied, a value without an
// offset taken as UTC, as the extension's Timestamp rule says); `data` is hashed as its RFC 8785
// canonical text, except that a JSON string under a non-JSON datacontenttype (text/plain...) is
// the payload itself and hashed as its UTF-8 bytes (JSON event format, 3.1); `data_base64` is
// hashed as its decoded bytes. Only id, source, specversion, type and the payload matter to
// CloudEvents 1.0's required set; every other attribute may be absent. Throws std::invalid_argument
// if `event` is not an object, an attribute is present with a non-string value, `time` is not RFC
// 3339 (leap second :60 and years outside 0000..9999 after normalisation are refused),
// `data_base64` is not strict base64, both `data` and `data_base64` are present, or `data` cannot
// be canonicalised (see canonicalJson).
std::string coreDigest(const nlohmann::json& event);

// EXT_DIGEST: SHA256 of the concatenated SHA256 of each named extension attribute's value, in
// the given order; an absent attribute contributes SHA256(""). A string value is hashed as its
// bytes, a boolean as "true"/"false" and an integer as its decimal text (the CloudEvents
// canonical string forms). Throws std::invalid_argument for any other value type or a non-object
// event.
std::string extDigest(const nlohmann::json& event, const std::vector<std::string>& signedExtAttrs);

// DSSE v1 pre-authentication encoding:
//   "DSSEv1" SP len(payloadType) SP payloadType SP len(payload) SP payload
// with lengths as ASCII decimal byte counts.
std::string pae(std::string_view payloadType, std::string_view payload);

// Why `names` cannot be a signedextattrs list (duplicate, empty, a core attribute, data,
// data_base64 or dssematerial), or nullopt if it can.
std::optional<std::string> checkSignedExtAttrs(const std::vector<std::string>& names);

// Signs `event` in place: sets event["dssematerial"] = base64(envelope JSON), envelope =
// {"payload": base64(material JSON), "payloadType": kDssePayloadType,
//  "signatures": [{"keyid": key.keyId(), "sig": base64(signature over PAE)}]},
// material = {"core": base64(coreDigest), "ext": base64(extDigest), "signedextattrs": [...]};
// both JSON texts in RFC 8785 canonical form. Every attribute named in signedExtAttrs must
// already be set (our signer sets sequence and cellosprev first). Throws std::invalid_argument
// for an unsignable event or attribute list (see coreDigest, checkSignedExtAttrs), and
// std::runtime_error if signing fails.
void signEvent(nlohmann::json& event, const SigningKey& key,
               const std::vector<std::string>& signedExtAttrs = kSignedExtensions);

// What a successful verification established.
struct VerifiedMaterial {
  std::string keyId;                        // the keyset entry whose signature verified
  std::vector<std::string> signedExtAttrs;  // extension attributes the signature covers
};

// Checks `event`'s dssematerial against `keys`. Returns nullopt when valid, otherwise a short
// reason. Discards, as events.md requires: a missing or non-string dssematerial, bad base64,
// bad UTF-8 or JSON (duplicate member names included) in the envelope or material, an envelope
// or signature entry with missing or mistyped members, a wrong payloadType, no
// signatures, no keyid in `keys` ("unknown keyid ..."), no signature valid under its key
// ("bad signature"), a `core` or `ext` digest that is not 32 bytes, `ext` without
// `signedextattrs` or the reverse, duplicate names / a core attribute / dssematerial in
// signedextattrs, an event whose attributes cannot be digested ("invalid event: ..."), and a
// core or ext digest mismatch. Members of the envelope, a signature entry or the material that
// the extension does not define are ignored (it says they MUST be). Malformed input never throws;
// only resource exhaustion or an OpenSSL failure can.
std::optional<std::string> verifyEventSignature(const nlohmann::json& event, const Keyset& keys);

// As above; on success also reports, through `verified` (if not null), which key signed and
// which extension attributes the signature covers, so a caller can insist on its own.
std::optional<std::string> verifyEventSignature(const nlohmann::json& event, const Keyset& keys,
                                                VerifiedMaterial* verified);

// `sequence` attribute text: decimal, zero-padded to 20 digits (every uint64_t fits).
std::string formatSequence(uint64_t n);

// Inverse of formatSequence: exactly 20 ASCII digits within uint64_t, else nullopt.
std::optional<uint64_t> parseSequence(std::string_view text);

// `cellosprev` of the event after one whose dssematerial is `dssematerialValue`:
// base64(SHA-256 of the dssematerial string's bytes, as they appear in the JSON).
std::string chainLink(std::string_view dssematerialValue);

// `cellosprev` of the first event of a chain (sequence 0): base64 of 32 zero bytes.
std::string genesisLink();

}  // namespace cellos::core
