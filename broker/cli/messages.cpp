#include "broker/cli/messages.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <regex>

#include <kj/exception.h>

namespace cellos::cli {

namespace {

void eraseAll(std::string& text, const std::string& what) {
  for (size_t at; (at = text.find(what)) != std::string::npos;) text.erase(at, what.size());
}

// A KJ_SYSCALL's failure names the call as written, "connect(fd, reinterpret_cast<sockaddr*>
// (&addr), sizeof(addr)): No such file ...": keep the call's name, drop its arguments.
std::string dropCallArguments(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t open = text.find('(', i);
    if (open == std::string::npos) break;
    size_t nameStart = open;
    while (nameStart > i && (std::isalnum(static_cast<unsigned char>(text[nameStart - 1])) ||
                             text[nameStart - 1] == '_')) {
      --nameStart;
    }
    int depth = 0;
    size_t close = open;
    for (; close < text.size(); ++close) {
      if (text[close] == '(') ++depth;
      if (text[close] == ')' && --depth == 0) break;
    }
    bool call = nameStart < open && close < text.size() && text.compare(close + 1, 2, ": ") == 0;
    if (!call) {
      out.append(text, i, open + 1 - i);
      i = open + 1;
      continue;
    }
    out.append(text, i, open - i);  // up to and with the name
    i = close + 1;
  }
  out.append(text, std::min(i, text.size()), std::string::npos);
  return out;
}

// A condition as code (what KJ_REQUIRE prints after "expected "), not words.
bool looksLikeCode(const std::string& text) {
  return text.find_first_of("()!=<>&|[]:") != std::string::npos;
}

}  // namespace

std::string plainMessage(std::string text) {
  // One line: the stack (KJ's "stack: 7f12... 55d3...") and anything after the first line go.
  if (size_t at = text.find("stack: "); at != std::string::npos) text.erase(at);
  if (size_t at = text.find('\n'); at != std::string::npos) text.erase(at);
  eraseAll(text, "remote exception: ");
  eraseAll(text, "std::exception: ");
  // Source locations with KJ's exception type: "launcher.cpp:182: failed: ".
  static const std::regex location(
      R"([A-Za-z0-9_./+-]+\.(c\+\+|cpp|cc|cxx|hpp|h|c):[0-9]+:( (failed|disconnected|overloaded|unimplemented|error|warning|info|exception)( \(remote\))?:)? ?)");
  text = std::regex_replace(text, location, "");
  text = dropCallArguments(text);
  // KJ_REQUIRE's "expected <condition>; <message>": the message is the part meant for people.
  static const std::regex expected(R"((^|: )expected ([^;]*); )");
  std::smatch match;
  std::string out;
  std::string rest = text;
  while (std::regex_search(rest, match, expected)) {
    out += match.prefix().str() + match[1].str();
    if (!looksLikeCode(match[2].str())) out += "expected " + match[2].str() + "; ";
    rest = match.suffix().str();
  }
  text = out + rest;
  // A bare failed check, with no message at all, says nothing a person can use.
  if (text.rfind("expected ", 0) == 0 && looksLikeCode(text.substr(9))) {
    text = "an internal check failed (the daemons' logs have the details)";
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(0, 1);
  return text;
}

std::string plainMessage(const kj::Exception& e) {
  return plainMessage(e.getDescription().cStr());
}

std::string unreachableReason(int error) {
  switch (error) {
    case EACCES:
    case EPERM:
      return "permission denied (is this user in group cellos?)";
    case ENOENT:
      return "no such socket (is cellos-broker running? `systemctl status cellos-broker`)";
    case ECONNREFUSED:
      return "connection refused (is cellos-broker running? `systemctl status cellos-broker`)";
    case ENOTDIR:
      return "a part of the path is not a directory";
    case ENAMETOOLONG:
      return "the path is too long for a Unix socket";
    default: {
      std::string reason = strerror(error);
      if (!reason.empty()) reason[0] = std::tolower(static_cast<unsigned char>(reason[0]));
      return reason;
    }
  }
}

}  // namespace cellos::cli
