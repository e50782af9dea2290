#pragma once
// The shape of a cell id (spec.id): 1..63 characters of [a-z0-9._-], starting with [a-z0-9].
// The id becomes a path segment, a cgroup leaf and a netns name, so every process that turns
// one into a name checks it again with this one rule (core/spec.cpp reports the same rule to
// users with a message per fault).

#include <string_view>

namespace cellos::core {

inline constexpr size_t kMaxCellIdLength = 63;

inline bool isValidCellId(std::string_view id) {
  if (id.empty() || id.size() > kMaxCellIdLength) return false;
  auto lowerAlnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lowerAlnum(id.front())) return false;
  for (char c : id) {
    if (!lowerAlnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace cellos::core
