#include "core/encoding.h"

#include <array>
#include <cstdint>

namespace cellos::core {
namespace {

constexpr std::string_view kStandardAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kUrlAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr int8_t kInvalid = -1;

// Reverse lookup table for one alphabet: byte -> 6-bit value, or kInvalid.
constexpr std::array<int8_t, 256> reverseTable(std::string_view alphabet) {
  std::array<int8_t, 256> table{};
  for (auto& entry : table) entry = kInvalid;
  for (size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}

constexpr auto kStandardReverse = reverseTable(kStandardAlphabet);
constexpr auto kUrlReverse = reverseTable(kUrlAlphabet);

std::string encodeWith(std::string_view bytes, std::string_view alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t group = (static_cast<uint8_t>(bytes[i]) << 16) |
                     (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out += alphabet[(group >> 18) & 0x3f];
    out += alphabet[(group >> 12) & 0x3f];
    out += alphabet[(group >> 6) & 0x3f];
    out += alphabet[group & 0x3f];
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t group = static_cast<uint8_t>(bytes[i]) << 16;
    out += alphabet[(group >> 18) & 0x3f];
    out += alphabet[(group >> 12) & 0x3f];
    if (pad) out += "==";
  } else if (rest == 2) {
    uint32_t group =
        (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += alphabet[(group >> 18) & 0x3f];
    out += alphabet[(group >> 12) & 0x3f];
    out += alphabet[(group >> 6) & 0x3f];
    if (pad) out += '=';
  }
  return out;
}

// Decodes unpadded text (padding already stripped by the caller). A remainder of one character
// cannot encode a byte; the bits beyond the last whole byte must be zero (RFC 4648 section 3.5
// lets a decoder reject them, and we do, so the encoding is canonical).
std::optional<std::string> decodeUnpadded(std::string_view text,
                                          const std::array<int8_t, 256>& reverse) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t accumulator = 0;
  int bits = 0;
  for (char c : text) {
    int8_t value = reverse[static_cast<unsigned char>(c)];
    if (value == kInvalid) return std::nullopt;
    accumulator = (accumulator << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((accumulator >> bits) & 0xff);
    }
  }
  if (bits > 0 && (accumulator & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// Splits off correct padding: the padded length must be a multiple of 4 and the padding must be
// exactly what the unpadded remainder needs (one '=' after 3 characters, two after 2).
std::optional<std::string_view> stripPadding(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  std::string_view body = text.substr(0, text.size() - padding);
  size_t remainder = body.size() % 4;
  if ((padding == 0 && remainder != 0) || (padding == 1 && remainder != 3) ||
      (padding == 2 && remainder != 2)) {
    return std::nullopt;
  }
  return body;
}

}  // namespace

std::string base64Encode(std::string_view bytes) {
  return encodeWith(bytes, kStandardAlphabet, true);
}

std::optional<std::string> base64Decode(std::string_view text) {
  auto body = stripPadding(text);
  if (!body) return std::nullopt;
  return decodeUnpadded(*body, kStandardReverse);
}

std::string base64UrlEncode(std::string_view bytes) {
  return encodeWith(bytes, kUrlAlphabet, false);
}

std::optional<std::string> base64UrlDecode(std::string_view text) {
  if (text.find('=') != std::string_view::npos) {
    auto body = stripPadding(text);
    if (!body) return std::nullopt;
    return decodeUnpadded(*body, kUrlReverse);
  }
  return decodeUnpadded(text, kUrlReverse);
}

std::string hexEncode(std::string_view bytes) {
  constexpr std::string_view kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    auto byte = static_cast<uint8_t>(c);
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0x0f];
  }
  return out;
}

}  // namespace cellos::core
