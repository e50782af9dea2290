#include "broker/cli/commands.h"
#include "broker/cli/keys.h"
#include "core/log_verifier.h"
#include "core/verifiability.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace cellos::cli {

namespace {

// What a dead-letter directory holds (see broker/dead_letter.h for its files).
struct DeadLetterSummary {
  std::string directory;
  size_t signedEvents = 0, unsignedEvents = 0, partialLines = 0, unreadable = 0;
};

// The log a file belongs to: "events.jsonl.00000000000000001234" -> "events.jsonl".
std::string baseLogPath(const std::string& file) {
  auto dot = file.rfind('.');
  if (dot != std::string::npos && file.size() - dot - 1 == 20 &&
      std::all_of(file.begin() + dot + 1, file.end(),
                  [](char c) { return c >= '0' && c <= '9'; })) {
    return file.substr(0, dot);
  }
  return file;
}

// Offers every signed dead letter of `directory` to the verifier, so they fill their place in
// the chain, and counts the rest (which the summary names: never silent).
DeadLetterSummary loadDeadLetters(const std::string& directory, core::LogVerifier& verifier) {
  DeadLetterSummary summary{directory};
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry);
  }
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    auto record = nlohmann::json::parse(text.str(), nullptr, false);
    if (record.is_discarded() || !record.is_object()) {
      ++summary.unreadable;
      continue;
    }
    if (record.contains("partialLine")) {
      ++summary.partialLines;
      continue;
    }
    auto event = record.find("event");
    if (event == record.end() || !event->is_object()) {
      ++summary.unreadable;
      continue;
    }
    auto sequence = event->find("sequence");
    if (sequence == event->end() || !sequence->is_string() ||
        !core::parseSequence(sequence->get<std::string>())) {
      ++summary.unsignedEvents;
      continue;
    }
    ++summary.signedEvents;
    verifier.addDeadLetter(*core::parseSequence(sequence->get<std::string>()), path.string(),
                           event->dump());
  }
  return summary;
}

// Feeds one log file. A last line without a newline is not fed: it is reported as truncated.
bool verifyFile(const std::string& file, core::LogVerifier& verifier) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << "cellos verify: cannot open " << file << ": " << std::strerror(errno) << "\n";
    return false;
  }
  std::string line;
  size_t lineNumber = 0;
  bool lastHadNewline = true;
  while (std::getline(in, line)) {
    ++lineNumber;
    if (in.eof()) {  // getline stopped at the end of the file, not at a newline
      lastHadNewline = false;
      break;
    }
    if (!verifier.feedLine(file, lineNumber, line)) return false;
  }
  return verifier.finishFile(file, lineNumber, lastHadNewline);
}

}  // namespace

int verifyCommand(const VerifyOptions& options) {
  auto keys = readVerificationKeys(options.keysetPath, options.stateDir, "verify");
  if (!keys) return kExitUsage;
  core::LogVerifier verifier(*keys, !options.noChain);

  // Dead letters: the directory given, or the one the broker keeps beside each log.
  std::vector<DeadLetterSummary> deadLetters;
  if (!options.noChain) {
    std::set<std::string> directories;
    if (!options.deadLetterDir.empty()) {
      if (!std::filesystem::is_directory(options.deadLetterDir)) {
        std::cerr << "cellos verify: " << options.deadLetterDir << " is not a directory\n";
        return kExitUsage;
      }
      directories.insert(options.deadLetterDir);
    } else {
      for (const auto& file : options.files) {
        std::string candidate = baseLogPath(file) + ".dead-letter";
        if (std::filesystem::is_directory(candidate)) directories.insert(candidate);
      }
    }
    for (const auto& directory : directories) {
      deadLetters.push_back(loadDeadLetters(directory, verifier));
    }
  }

  for (const auto& file : options.files) {
    if (verifyFile(file, verifier)) continue;
    if (auto failure = verifier.failure()) {
      std::cout << failure->file << ":" << failure->line << ": " << failure->reason << "\n";
      std::cout << "FAILED: " << verifier.eventsVerified() << " events verified before line "
                << failure->line << "\n";
    }
    return 1;
  }

  std::cout << "OK: " << verifier.eventsVerified() << " events verified in " << options.files.size()
            << " file" << (options.files.size() == 1 ? "" : "s");
  if (verifier.firstSequence()) {
    std::cout << ", sequence " << *verifier.firstSequence() << ".." << *verifier.lastSequence();
    if (*verifier.firstSequence() != 0 && !options.noChain) {
      std::cout << " (the chain starts before these files; earlier events not checked)";
    }
  }
  std::cout << (options.noChain ? ", signatures only" : ", chain intact") << "\n";
  for (const auto& change : verifier.keyChanges()) {
    std::cout << "  key rotated at " << change.file << ":" << change.line << ": "
              << change.fromKeyId << " -> " << change.toKeyId << "\n";
  }
  for (const auto& gap : verifier.declaredGaps()) {
    std::cout << "  declared gap: events " << gap.firstMissing << ".." << gap.lastMissing
              << " were signed but never written (declared at " << gap.file << ":" << gap.line
              << ")\n";
  }
  if (verifier.deadLettersVerified() > 0) {
    std::cout << "  " << verifier.deadLettersVerified()
              << " events verified in place from the dead-letter directory\n";
  }
  for (const auto& d : deadLetters) {
    if (d.unsignedEvents + d.partialLines + d.unreadable == 0) continue;
    std::cout << "  " << d.directory << " also holds " << d.unsignedEvents
              << " unsigned events (never signed: not part of the chain), " << d.partialLines
              << " partial lines cut off by a crash, " << d.unreadable << " unreadable files\n";
  }
  return 0;
}

}  // namespace cellos::cli
