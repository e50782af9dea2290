#include "broker/cli/commands.h"
#include "core/spec.h"

#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace cellos::cli {

std::string readDocumentFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::string content(core::kMaxDocumentBytes + 1, '\0');
  in.read(content.data(), content.size());
  content.resize(in.gcount());
  return content;
}

int validateCommand(const std::vector<std::string>& files) {
  bool allValid = true;
  for (const auto& file : files) {
    std::string text;
    try {
      text = readDocumentFile(file);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      allValid = false;
      continue;
    }
    auto result = core::parseCellDocument(text);
    if (result.document) {
      const auto& spec = result.document->spec;
      std::cout << file << ": valid: cell " << spec.id << ", backend "
                << spec.placement.backend.value_or("(host default)") << ", specDigest "
                << core::specDigest(result) << "\n";
    } else {
      allValid = false;
      std::cout << file << ": invalid (" << result.violations.size() << " violation"
                << (result.violations.size() == 1 ? "" : "s") << ")\n";
      for (const auto& v : result.violations) {
        std::cout << "  " << core::formatViolation(v) << "\n";
      }
    }
  }
  return allValid ? 0 : kExitUsage;
}

}  // namespace cellos::cli
