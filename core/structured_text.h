#pragma once
// Reading the JSON or YAML that users and operators write (cell documents, host policies) into
// one tree, strictly and the same way for both formats: duplicate and non-string keys are
// violations, YAML scalars are typed as JSON would type the same text, anchors, aliases, merge
// keys, tags and second documents are refused, nesting is bounded, and the raw bytes are
// screened (UTF-8, control characters) before any parser sees them. yaml-cpp is driven through
// its event interface only: its node API expands aliases and can be made to allocate without
// bound by a few hundred bytes (found by fuzzing).

#include "core/violation.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cellos::core {

// Objects keep their members in document order (spec.run.env is applied in the order written,
// and unknown-field reports follow the text).
using StructuredTree = nlohmann::ordered_json;

// The source spelling of every non-integer number, by path: a number that overflows 64 bits
// arrives as a double, and a message should echo "18446744073709551616", not "1.8446744e+19".
using NumberTexts = std::unordered_map<std::string, std::string>;

struct StructuredTextOptions {
  size_t maxDepth = 64;
  std::string_view documentName = "document";        // "a file holds one <name>, found a second"
  std::string_view emptyMessage = "document is empty";
};

// `fatal` is set when no tree could be built (then `tree` is null); `violations` lists duplicate
// and non-string keys found on the way (the tree keeps the first of duplicated members).
struct StructuredText {
  StructuredTree tree;
  std::optional<std::string> fatal;
  std::vector<Violation> violations;
  NumberTexts numberTexts;
};

// Reads JSON (when the first significant character is '{') or YAML. Never throws for any input
// (only std::bad_alloc).
StructuredText readStructuredText(std::string_view bytes, const StructuredTextOptions& options);

// Path and message helpers shared by the readers built on top.
// "spec" + "id" -> "spec.id"; a key that is not an identifier is bracketed: env["MY-VAR"].
std::string memberPath(const std::string& parent, std::string_view key);
std::string indexPath(const std::string& parent, size_t index);
// "null" | "boolean" | "number" | "string" | "array" | "object".
std::string typeName(const StructuredTree& value);
// Line and column (1-based, columns in bytes) of a byte offset.
std::string lineColumn(std::string_view bytes, size_t offset);
// Offset of the first byte that is not valid UTF-8 (RFC 3629), or npos.
size_t firstInvalidUtf8(std::string_view text);

}  // namespace cellos::core
