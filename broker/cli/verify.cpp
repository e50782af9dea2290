#include "broker/cli/commands.h"
#include "broker/cli/keys.h"
#include "core/checkpoint.h"
#include "core/encoding.h"
#include "core/log_verifier.h"
#include "core/merkle.h"
#include "core/verifiability.h"
#include "eventlog/format.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace cellos::cli {

namespace {

// What a dead-letter directory holds (see eventlog/format.h for its files).
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

// The sequence a checkpoint tree starts at: the origin's last "/<digits>" (the signer's
// convention); 0 when it has none.
uint64_t treeStartOf(const std::string& origin) {
  auto slash = origin.rfind('/');
  if (slash == std::string::npos) return 0;
  auto sequence = origin.substr(slash + 1);
  if (sequence.empty() || sequence.size() > 19 ||
      !std::all_of(sequence.begin(), sequence.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return 0;
  }
  return std::stoull(sequence);
}

// The log line of the event with `sequence`, from the files given.
std::optional<std::string> lineWithSequence(const std::vector<std::string>& files,
                                            uint64_t sequence) {
  const std::string wanted = "\"sequence\":\"" + core::formatSequence(sequence) + "\"";
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    for (std::string line; std::getline(in, line);) {
      if (line.find(wanted) == std::string::npos) continue;
      auto event = nlohmann::json::parse(line, nullptr, false);
      if (event.is_object() && event.value("sequence", "") == core::formatSequence(sequence)) {
        return line;
      }
    }
  }
  return std::nullopt;
}

// A signed note as it appears in the checkpoint file.
std::string noteText(const core::SignedNote& note) {
  std::string out = note.text + "\n";
  for (const auto& signature : note.signatures) {
    out += "\xE2\x80\x94 " + signature.keyName + " " +
           core::base64Encode(signature.keyId + signature.signature) + "\n";
  }
  return out;
}

// Checks the verified log against the checkpoint file; prints what it proved, or the failure.
// With `prove`, prints the inclusion proof of that event under the latest checkpoint covering
// it. Returns the exit status.
int checkCheckpoints(const VerifyOptions& options, const core::Keyset& keys, core::LogLeaves log) {
  std::ifstream in(options.checkpointPath, std::ios::binary);
  if (!in) {
    std::cerr << "cellos verify: cannot read " << options.checkpointPath << ": "
              << std::strerror(errno) << "\n";
    return kExitUsage;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string error;
  auto notes = core::parseSignedNotes(text.str(), &error);
  if (!notes) {
    std::cout << options.checkpointPath << ": " << error << "\nFAILED\n";
    return 1;
  }
  std::vector<core::Checkpoint> checkpoints;
  for (size_t i = 0; i < notes->size(); ++i) {
    auto checkpoint = core::verifyCheckpoint((*notes)[i], keys, &error);
    if (!checkpoint) {
      std::cout << options.checkpointPath << ": checkpoint " << i + 1 << ": " << error
                << "\nFAILED\n";
      return 1;
    }
    if (!checkpoints.empty() && checkpoint->origin != checkpoints.front().origin) {
      std::cout << options.checkpointPath << ": checkpoint " << i + 1 << " is of another log ("
                << checkpoint->origin << ", not " << checkpoints.front().origin << ")\nFAILED\n";
      return 1;
    }
    checkpoints.push_back(std::move(*checkpoint));
  }
  if (checkpoints.empty()) {
    std::cout << options.checkpointPath << ": no checkpoints\nFAILED\n";
    return 1;
  }
  // The tree starts at the origin's sequence: earlier events of the files are not its leaves.
  const uint64_t start = treeStartOf(checkpoints.front().origin);
  if (!log.sequences.empty() && log.sequences.front() > start) {
    std::cout << "the log files start at sequence " << log.sequences.front()
              << ", the checkpoint tree at " << start << ": give every file from sequence " << start
              << "\nFAILED\n";
    return 1;
  }
  size_t skip = 0;
  while (skip < log.sequences.size() && log.sequences[skip] < start) ++skip;
  log.leafHashes.erase(log.leafHashes.begin(), log.leafHashes.begin() + skip);
  log.sequences.erase(log.sequences.begin(), log.sequences.begin() + skip);

  if (auto failure = core::checkLogAgainstCheckpoints(log, checkpoints)) {
    std::cout << options.checkpointPath << ": " << *failure << "\nFAILED\n";
    return 1;
  }
  const auto& latest = checkpoints.back();
  std::cout << "  " << checkpoints.size() << " checkpoints verified (" << latest.origin
            << ", signed by " << latest.keyId << "), each consistent with the one before; the "
            << "latest commits to " << latest.size << " events, root "
            << core::base64Encode(latest.root);
  if (log.leafHashes.size() > latest.size) {
    std::cout << "; " << log.leafHashes.size() - latest.size
              << " later events are not covered by a checkpoint yet";
  }
  std::cout << "\n";

  if (options.proveSequence) {
    auto at = std::find(log.sequences.begin(), log.sequences.end(), *options.proveSequence);
    if (at == log.sequences.end()) {
      std::cout << "no event with sequence " << *options.proveSequence << " in the tree\n";
      return 1;
    }
    uint64_t index = static_cast<uint64_t>(at - log.sequences.begin());
    const core::Checkpoint* covering = nullptr;
    size_t noteIndex = 0;
    for (size_t i = 0; i < checkpoints.size(); ++i) {
      if (checkpoints[i].size > index) {
        covering = &checkpoints[i];
        noteIndex = i;
      }
    }
    if (!covering) {
      std::cout << "event " << *options.proveSequence << " is not under a checkpoint yet\n";
      return 1;
    }
    auto proof = core::merkleInclusionProof(log.leafHashes, index, covering->size);
    KJ_ASSERT(core::verifyMerkleInclusion(index, covering->size, log.leafHashes[index], proof,
                                          covering->root));
    nlohmann::json out = {
        {"sequence", *options.proveSequence},
        {"leafIndex", index},
        {"treeSize", covering->size},
        {"leafHash", core::base64Encode(log.leafHashes[index])},
        {"inclusionProof", nlohmann::json::array()},
        {"checkpoint", noteText((*notes)[noteIndex])},
        {"event", lineWithSequence(options.files, *options.proveSequence).value_or("")}};
    for (const auto& hash : proof) out["inclusionProof"].push_back(core::base64Encode(hash));
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int verifyCommand(const VerifyOptions& given) {
  // `cellos verify events.jsonl.* events.jsonl` also names the checkpoint file beside the log
  // (and the dead-letter and run directories): the checkpoints are checked as --checkpoint,
  // directories are not log files.
  VerifyOptions options = given;
  options.files.clear();
  for (const auto& file : given.files) {
    if (std::filesystem::is_directory(file)) continue;
    if (file.ends_with(".checkpoints")) {
      if (options.checkpointPath.empty()) options.checkpointPath = file;
      continue;
    }
    options.files.push_back(file);
  }
  if (options.files.empty()) {
    std::cerr << "cellos verify: no log file among the paths given\n";
    return kExitUsage;
  }
  auto keys = readVerificationKeys(options.keysetPath, options.stateDir, "verify");
  if (!keys) return kExitUsage;
  core::LogVerifier verifier(*keys, !options.noChain);
  core::LogLeaves leaves;
  if (!options.checkpointPath.empty()) {
    if (options.noChain) {
      std::cerr << "cellos verify: --checkpoint needs the chain (drop --no-chain)\n";
      return kExitUsage;
    }
    verifier.collectLeaves(&leaves);
  }

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
        std::string candidate = eventlog::defaultDeadLetterPath(baseLogPath(file));
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
  if (!options.checkpointPath.empty()) {
    if (int status = checkCheckpoints(options, *keys, std::move(leaves)); status != 0) {
      return status;
    }
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
