#include "core/hostname.h"

namespace cellos::core {
namespace {

char lowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool isLabelChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

// Messages end up in admission events and on a terminal; the text came from a document that may
// be hostile, so anything that is not printable ASCII (and the quote and backslash that delimit
// the echo) is shown as \xNN rather than passed through.
std::string escapeForMessage(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && c != '"' && c != '\\') {
      out.push_back(c);
    } else {
      out += "\\x";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0x0f]);
    }
  }
  return out;
}

std::string quoted(std::string_view text) {
  return "\"" + escapeForMessage(text) + "\"";
}

// Checks one label of an already lower-cased name; returns an error message or an empty string.
std::string checkLabel(std::string_view label, std::string_view wholeName) {
  if (label.empty()) return "hostname " + quoted(wholeName) + " has an empty label";
  if (label.size() > kMaxHostnameLabelLength) {
    return "label " + quoted(label) + " is longer than " + std::to_string(kMaxHostnameLabelLength) +
           " characters";
  }
  for (char c : label) {
    if (!isLabelChar(c)) {
      return "label " + quoted(label) + " has invalid character '" +
             escapeForMessage(std::string_view(&c, 1)) + "'";
    }
  }
  if (label.front() == '-' || label.back() == '-') {
    return "label " + quoted(label) + " must not start or end with '-'";
  }
  return {};
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lowerAscii(a[i]) != lowerAscii(b[i])) return false;
  }
  return true;
}

std::string_view withoutTrailingDot(std::string_view text) {
  if (!text.empty() && text.back() == '.') text.remove_suffix(1);
  return text;
}

}  // namespace

std::optional<std::string> normaliseHostname(std::string_view text, bool allowWildcard,
                                             std::string* error) {
  auto fail = [error](std::string message) -> std::optional<std::string> {
    if (error != nullptr) *error = std::move(message);
    return std::nullopt;
  };

  if (text.empty()) return fail("hostname must not be empty");
  // "example.com." is the fully-qualified spelling of "example.com"; only one dot, so that
  // "example.com.." still fails below as an empty label.
  std::string_view body = withoutTrailingDot(text);
  if (body.empty()) return fail("hostname \".\" has no labels");
  if (body.size() > kMaxHostnameLength) {
    return fail("hostname is " + std::to_string(body.size()) + " characters, more than " +
                std::to_string(kMaxHostnameLength));
  }

  std::string out;
  out.reserve(body.size());
  for (char c : body) out.push_back(lowerAscii(c));

  std::string_view rest = out;
  if (out.find('*') != std::string::npos) {
    if (!allowWildcard) return fail("wildcards are not allowed here");
    if (out == "*") return fail("wildcard \"*\" alone is not allowed");
    if (!out.starts_with("*.") || out.find('*', 1) != std::string::npos) {
      return fail("wildcard must be a single leading \"*.\"");
    }
    rest.remove_prefix(2);
    // "*." lost its suffix to the trailing-dot rule above; there is nothing to match under.
    if (rest.empty()) return fail("wildcard \"*\" alone is not allowed");
  }

  while (true) {
    std::size_t dot = rest.find('.');
    std::string_view label = rest.substr(0, dot);
    if (std::string message = checkLabel(label, out); !message.empty()) return fail(message);
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  return out;
}

bool hostnameMatches(std::string_view pattern, std::string_view name) {
  pattern = withoutTrailingDot(pattern);
  name = withoutTrailingDot(name);
  if (pattern.empty() || name.empty()) return false;
  if (!pattern.starts_with("*.")) return equalsIgnoreCase(pattern, name);

  std::string_view suffix = pattern.substr(1);  // ".example.com", dot included
  if (suffix.size() < 2) return false;          // "*." alone covers nothing
  // At least one whole label before the suffix: "example.com" and ".example.com" never match.
  if (name.size() <= suffix.size()) return false;
  std::string_view prefix = name.substr(0, name.size() - suffix.size());
  if (prefix.back() == '.') return false;
  return equalsIgnoreCase(name.substr(prefix.size()), suffix);
}

bool anyHostnameMatches(const std::vector<std::string>& patterns, std::string_view name) {
  for (const std::string& pattern : patterns) {
    if (hostnameMatches(pattern, name)) return true;
  }
  return false;
}

}  // namespace cellos::core
