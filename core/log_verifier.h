#pragma once
// Streaming verification of a JSONL event log (`cellos verify`): every line one signed event,
// possibly spread over several rotated files read in order. The caller does the file I/O and
// feeds lines; this class holds only the chain state, so it can be fuzzed.

#include "core/signing.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cellos::core {

// The first bad line: which file, which 1-based line number, and why.
struct VerifyFailure {
  std::string file;
  size_t line;
  std::string reason;
};

// Verifies events line by line and stops at the first failure.
class LogVerifier {
 public:
  // `keys`: the trusted keyset. `checkChain`: also require sequence contiguity and cellosprev
  // linkage across lines (turn off only to check signatures of an excerpt).
  LogVerifier(Keyset keys, bool checkChain);

  // Checks one line (without its trailing newline). A line must be a JSON object (strictly
  // parsed: duplicate member names rejected) with string attributes specversion == "1.0", id,
  // source, type, time, sequence (20 digits, see parseSequence), cellosprev and dssematerial; a
  // valid signature from `keys` (verifyEventSignature) that covers sequence and cellosprev. With
  // checkChain: each event's sequence is the previous one + 1, its cellosprev is
  // chainLink(previous dssematerial), and its key id is the previous event's (one chain per key).
  // The first event may have any sequence (older files may be rotated away), but if its sequence
  // is 0 its cellosprev must be genesisLink(). An empty line fails ("empty line").
  // Returns false on failure (failure() then says where and why); once failed, every later call
  // returns false and changes nothing.
  bool feedLine(std::string_view file, size_t lineNumber, std::string_view line);

  // Ends one file. `lineNumber` is the number of the file's last line and `lastLineHadNewline`
  // whether it ended in '\n'. A final line without a newline is a write cut short: pass false and
  // this fails with "truncated last line (no newline)" at that line (the caller need not, and
  // preferably does not, feed that partial line first). Returns false if verification has failed.
  bool finishFile(std::string_view file, size_t lineNumber, bool lastLineHadNewline);

  // The first failure, if any.
  const std::optional<VerifyFailure>& failure() const { return failure_; }

  // Lines that passed every check.
  uint64_t eventsVerified() const { return eventsVerified_; }

  // Sequence numbers of the first and last verified events; nullopt before the first.
  std::optional<uint64_t> firstSequence() const { return firstSequence_; }
  std::optional<uint64_t> lastSequence() const { return lastSequence_; }

 private:
  bool fail(std::string_view file, size_t line, std::string reason);

  Keyset keys_;
  bool checkChain_;
  std::optional<VerifyFailure> failure_;
  uint64_t eventsVerified_ = 0;
  std::optional<uint64_t> firstSequence_;
  std::optional<uint64_t> lastSequence_;
  std::string previousDssematerial_;
  std::string previousKeyId_;
};

}  // namespace cellos::core
