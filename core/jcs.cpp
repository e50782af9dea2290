#include "core/jcs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace cellos::core {
namespace {

// Decodes UTF-8 into UTF-16 code units (the order RFC 8785 sorts member names by), rejecting
// overlong forms, surrogates and code points above U+10FFFF.
std::u16string utf8ToUtf16(std::string_view text) {
  std::u16string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    auto lead = static_cast<uint8_t>(text[i]);
    uint32_t codePoint;
    size_t length;
    uint32_t minimum;
    if (lead < 0x80) {
      codePoint = lead;
      length = 1;
      minimum = 0;
    } else if ((lead & 0xe0) == 0xc0) {
      codePoint = lead & 0x1f;
      length = 2;
      minimum = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
      codePoint = lead & 0x0f;
      length = 3;
      minimum = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
      codePoint = lead & 0x07;
      length = 4;
      minimum = 0x10000;
    } else {
      throw std::invalid_argument("canonicalJson: invalid UTF-8 in string");
    }
    if (i + length > text.size()) throw std::invalid_argument("canonicalJson: truncated UTF-8");
    for (size_t k = 1; k < length; ++k) {
      auto continuation = static_cast<uint8_t>(text[i + k]);
      if ((continuation & 0xc0) != 0x80) {
        throw std::invalid_argument("canonicalJson: invalid UTF-8 in string");
      }
      codePoint = (codePoint << 6) | (continuation & 0x3f);
    }
    if (codePoint < minimum || codePoint > 0x10ffff ||
        (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
      throw std::invalid_argument("canonicalJson: invalid UTF-8 in string");
    }
    if (codePoint >= 0x10000) {
      codePoint -= 0x10000;
      out += static_cast<char16_t>(0xd800 + (codePoint >> 10));
      out += static_cast<char16_t>(0xdc00 + (codePoint & 0x3ff));
    } else {
      out += static_cast<char16_t>(codePoint);
    }
    i += length;
  }
  return out;
}

// RFC 8785 section 3.2.2.2 (ECMAScript JSON.stringify QuoteJSONString). The caller has already
// validated the UTF-8, so bytes >= 0x80 pass through untouched.
void appendString(std::string& out, std::string_view text) {
  constexpr std::string_view kHex = "0123456789abcdef";
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<uint8_t>(c) < 0x20) {
          out += "\\u00";
          out += kHex[static_cast<uint8_t>(c) >> 4];
          out += kHex[static_cast<uint8_t>(c) & 0x0f];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void appendValue(std::string& out, const nlohmann::json& value, size_t depth);

void appendObject(std::string& out, const nlohmann::json& value, size_t depth) {
  // nlohmann keeps members in UTF-8 byte order, which differs from UTF-16 order for names that
  // mix characters above U+FFFF with U+E000..U+FFFF; re-sort by UTF-16 code units.
  std::vector<std::pair<std::u16string, nlohmann::json::const_iterator>> members;
  members.reserve(value.size());
  for (auto it = value.cbegin(); it != value.cend(); ++it) {
    members.emplace_back(utf8ToUtf16(it.key()), it);
  }
  std::sort(members.begin(), members.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  out += '{';
  bool first = true;
  for (const auto& [sortKey, it] : members) {
    if (!first) out += ',';
    first = false;
    appendString(out, it.key());
    out += ':';
    appendValue(out, it.value(), depth + 1);
  }
  out += '}';
}

// `depth`: arrays/objects enclosing `value`.
void appendValue(std::string& out, const nlohmann::json& value, size_t depth) {
  if (value.is_structured() && depth + 1 > kMaxJsonDepth) {
    throw std::invalid_argument("canonicalJson: nesting too deep");
  }
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      out += "null";
      break;
    case nlohmann::json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      break;
    case nlohmann::json::value_t::number_integer:
      out += std::to_string(value.get<int64_t>());
      break;
    case nlohmann::json::value_t::number_unsigned:
      out += std::to_string(value.get<uint64_t>());
      break;
    case nlohmann::json::value_t::number_float:
      out += canonicalNumber(value.get<double>());
      break;
    case nlohmann::json::value_t::string: {
      const auto& text = value.get_ref<const std::string&>();
      utf8ToUtf16(text);  // validation only
      appendString(out, text);
      break;
    }
    case nlohmann::json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& element : value) {
        if (!first) out += ',';
        first = false;
        appendValue(out, element, depth + 1);
      }
      out += ']';
      break;
    }
    case nlohmann::json::value_t::object:
      appendObject(out, value, depth);
      break;
    case nlohmann::json::value_t::binary:
    case nlohmann::json::value_t::discarded:
      throw std::invalid_argument("canonicalJson: value has no JSON form");
  }
}

}  // namespace

std::string canonicalNumber(double value) {
  if (!std::isfinite(value)) throw std::invalid_argument("canonicalJson: NaN or Infinity");
  if (value == 0) return "0";  // both +0 and -0 (ECMAScript Number::toString step 2)

  // Shortest round-trip digits in scientific form, "d[.ddd]e±x": the same digit string ECMAScript
  // picks (fewest digits k; among equals, the one closest to the value).
  char buffer[64];
  auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  if (result.ec != std::errc()) throw std::invalid_argument("canonicalJson: number formatting");
  std::string_view scientific(buffer, static_cast<size_t>(result.ptr - buffer));

  std::string out;
  if (scientific.front() == '-') {
    out += '-';
    scientific.remove_prefix(1);
  }
  size_t exponentAt = scientific.find('e');
  std::string digits;
  for (char c : scientific.substr(0, exponentAt)) {
    if (c != '.') digits += c;
  }
  int exponent = 0;
  std::string_view exponentText = scientific.substr(exponentAt + 1);
  if (exponentText.front() == '+') exponentText.remove_prefix(1);
  std::from_chars(exponentText.data(), exponentText.data() + exponentText.size(), exponent);

  // ECMAScript names: value = digits × 10^(n−k), k = number of digits.
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n));
    out += '.';
    out += digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += 'e';
    out += (n - 1 >= 0) ? '+' : '-';
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string canonicalJson(const nlohmann::json& value) {
  return canonicalJsonNested(value, 0);
}

std::string canonicalJsonNested(const nlohmann::json& value, size_t enclosingContainers) {
  std::string out;
  appendValue(out, value, enclosingContainers);
  return out;
}

namespace {

// Thrown from the parser callback to stop at the first violation; nlohmann lets it propagate.
struct StrictJsonViolation {
  std::string reason;
};

}  // namespace

std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string* error) {
  std::vector<std::set<std::string>> openObjects;
  size_t depth = 0;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                      nlohmann::json& parsed) -> bool {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        if (++depth > kMaxJsonDepth) throw StrictJsonViolation{"nesting too deep"};
        if (event == Event::object_start) openObjects.emplace_back();
        break;
      case Event::object_end:
      case Event::array_end:
        --depth;
        if (event == Event::object_end) openObjects.pop_back();
        break;
      case Event::key:
        if (!openObjects.back().insert(parsed.get<std::string>()).second) {
          throw StrictJsonViolation{"duplicate member name " +
                                    quotedForMessage(parsed.get_ref<const std::string&>())};
        }
        break;
      case Event::value:
        break;
    }
    return true;
  };
  try {
    nlohmann::json value = nlohmann::json::parse(text.begin(), text.end(), callback, true);
    return value;
  } catch (const StrictJsonViolation& violation) {
    if (error) *error = violation.reason;
  } catch (const nlohmann::json::exception& parseError) {
    if (error) *error = parseError.what();
  }
  return std::nullopt;
}

std::string quotedForMessage(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  std::string shown = nlohmann::json(std::string(text.substr(0, kMaxShown)))
                          .dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  if (text.size() > kMaxShown) shown.insert(shown.size() - 1, "...");
  return shown;
}

}  // namespace cellos::core
