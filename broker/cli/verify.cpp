#include "broker/cli/commands.h"
#include "core/log_verifier.h"

#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace cellos::cli {

int verifyCommand(const VerifyOptions& options) {
  std::string keysetPath =
      options.keysetPath.empty() ? options.stateDir + "/signer/keyset.json" : options.keysetPath;
  std::ifstream keysetFile(keysetPath);
  if (!keysetFile) {
    std::cerr << "cellos verify: cannot read keyset " << keysetPath << ": " << std::strerror(errno)
              << " (pass --keys FILE)\n";
    return kExitUsage;
  }
  std::stringstream keysetText;
  keysetText << keysetFile.rdbuf();
  std::string error;
  auto keys = core::parseKeyset(keysetText.str(), &error);
  if (!keys) {
    std::cerr << "cellos verify: keyset " << keysetPath << ": " << error << "\n";
    return kExitUsage;
  }
  core::LogVerifier verifier(*keys, !options.noChain);
  for (const auto& file : options.files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::cerr << "cellos verify: cannot open " << file << ": " << std::strerror(errno) << "\n";
      return 1;
    }
    std::string line;
    size_t lineNumber = 0;
    bool lastHadNewline = true;
    while (std::getline(in, line)) {
      ++lineNumber;
      lastHadNewline = !in.eof();
      if (!verifier.feedLine(file, lineNumber, line)) break;
    }
    if (!verifier.failure()) verifier.finishFile(file, lineNumber, lastHadNewline);
    if (auto failure = verifier.failure()) {
      std::cout << failure->file << ":" << failure->line << ": " << failure->reason << "\n";
      std::cout << "FAILED: " << verifier.eventsVerified() << " events verified before line "
                << failure->line << "\n";
      return 1;
    }
  }
  std::cout << "OK: " << verifier.eventsVerified() << " events verified";
  if (verifier.firstSequence()) {
    std::cout << ", sequence " << *verifier.firstSequence() << ".." << *verifier.lastSequence();
    if (*verifier.firstSequence() != 0 && !options.noChain) {
      std::cout << " (the chain starts before these files; earlier events not checked)";
    }
  }
  std::cout << (options.noChain ? ", signatures only" : ", chain intact") << "\n";
  return 0;
}

}  // namespace cellos::cli
