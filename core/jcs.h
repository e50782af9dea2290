#pragma once
// RFC 8785 JSON Canonicalization Scheme (JCS): the byte form of JSON that event digests cover, so
// a consumer that parses and re-serialises an event (other key order, whitespace, escapes,
// number spelling) still computes the same digest.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

// Most arrays/objects nested inside one another that canonicalJson and parseStrictJson accept;
// deeper input is refused rather than exhausting the stack (event data is flat; anything this
// deep is hostile). The two functions count the same way, so whatever one accepts the other does.
inline constexpr size_t kMaxJsonDepth = 256;

// Canonical RFC 8785 serialisation of `value`:
// - object members sorted by the UTF-16 code units of their names (RFC 8785 section 3.2.3);
// - strings escaped minimally: '"', '\\', and U+0000..U+001F only, using \b \t \n \f \r where
//   they exist and \u00xx (lower-case hex) otherwise; everything else is literal UTF-8;
// - floating-point numbers in ECMAScript Number.prototype.toString form (shortest round trip,
//   exponent form "1e+21" / "1e-7" exactly where ECMAScript uses it, -0 as "0");
// - integers (JSON numbers nlohmann parsed as integers) as plain exact decimal. Within the I-JSON
//   range |n| <= 2^53 this is what RFC 8785 prescribes; beyond it RFC 8785 would round through a
//   double, and we keep the exact digits instead so the digest covers the value as written.
// Throws std::invalid_argument on NaN or infinity, invalid UTF-8 in a string or member name, or
// more than kMaxJsonDepth nested arrays/objects.
std::string canonicalJson(const nlohmann::json& value);

// canonicalJson of a value that will sit inside `enclosingContainers` arrays/objects of a larger
// document (event data sits in the event object: 1), so that the whole document stays within
// kMaxJsonDepth and a verifier's parseStrictJson can read back everything that was signed.
std::string canonicalJsonNested(const nlohmann::json& value, size_t enclosingContainers);

// One double in ECMAScript Number.prototype.toString form (the RFC 8785 number rule).
// Throws std::invalid_argument on NaN or infinity.
std::string canonicalNumber(double value);

// Parses untrusted JSON text more strictly than nlohmann::json::parse: besides malformed JSON
// (including invalid UTF-8, lone surrogate escapes and numbers that overflow a double) it rejects
// duplicate member names, which parsers disagree about (nlohmann keeps the last, others the
// first), so a signed value cannot read differently to the verifier and to a consumer; and
// more than kMaxJsonDepth nested arrays/objects. On failure returns nullopt and, if `error` is not
// null, sets it to a one-line reason.
std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string* error);

// `text` as an ASCII-only JSON string literal (non-ASCII and control characters escaped, invalid
// UTF-8 replaced), cut to about 64 characters: for naming untrusted values in error messages that
// may reach a terminal.
std::string quotedForMessage(std::string_view text);

}  // namespace cellos::core
