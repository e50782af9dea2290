#pragma once
// Text encodings of binary values used by events, keys and logs.

#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

// RFC 4648 section 4: standard alphabet, always padded to a multiple of 4 characters.
std::string base64Encode(std::string_view bytes);

// Strict inverse of base64Encode. Returns nullopt on any character outside the standard
// alphabet (whitespace included), a length that is not a multiple of 4, misplaced or missing
// '=' padding, or non-zero unused bits in the last group (so every byte string has exactly one
// accepted encoding and a signed value cannot be re-encoded into a different, equal-looking one).
std::optional<std::string> base64Decode(std::string_view text);

// RFC 4648 section 5: URL- and filename-safe alphabet ('-', '_'), no padding.
std::string base64UrlEncode(std::string_view bytes);

// Inverse of base64UrlEncode. Accepts the text with or without '=' padding (if padding is present
// it must be exactly right); otherwise as strict as base64Decode.
std::optional<std::string> base64UrlDecode(std::string_view text);

// Lower-case hexadecimal, two characters per byte.
std::string hexEncode(std::string_view bytes);

}  // namespace cellos::core
