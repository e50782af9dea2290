// libFuzzer harness for the cell-document parser: arbitrary bytes, JSON or YAML, must never crash,
// hang or throw, and the result must keep parseCellDocument's contract.

#include "core/spec.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  cellos::core::ParseResult result = cellos::core::parseCellDocument(bytes);
  // Exactly one of: a document with no violations, or violations and no document.
  if (result.document.has_value() == !result.violations.empty()) __builtin_trap();
  if (result.document) {
    if (cellos::core::specDigest(result).size() != 64) __builtin_trap();
  } else if (!cellos::core::specDigest(result).empty()) {
    __builtin_trap();
  }
  for (const cellos::core::Violation& violation : result.violations) {
    if (violation.path.empty() || violation.message.empty()) __builtin_trap();
  }
  return 0;
}
