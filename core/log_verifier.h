#pragma once
// Streaming verification of a JSONL event log (`cellos verify`): every line one signed event,
// possibly spread over several rotated files read in order. The caller does the file I/O and
// feeds lines; this class holds only the chain state, so it can be fuzzed.
//
// Besides signatures and the chain, it knows the three ways a legitimate log differs from one
// unbroken run of lines, so none of them has to be waved through as "probably a crash":
//   - key rotation: the chain continues (sequence + 1, cellosprev links) under a new key; a key
//     the chain has moved away from never signs again;
//   - dead-lettered events: an event the broker could not write to the log sits in the
//     dead-letter directory; the caller hands those in (addDeadLetter) and they fill their
//     place in the chain, verified like any line;
//   - declared gaps: events signed but lost before they were written (a broker killed between
//     signing and writing) are declared by a signed `log.v1.resumed` event right after the gap,
//     naming the last event the log does hold. An undeclared gap is a failure.

#include "core/checkpoint.h"
#include "core/signing.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::core {

// The broker's declaration that events were lost between the log's last line and itself.
inline constexpr std::string_view kLogResumedEventType = "dev.cellos.events.log.v1.resumed";

// An unsigned `log.v1.resumed` event (source urn:cellos:host:<hostId>, subject
// urn:cellos:log:<hostId>) saying that the log's last event is `lastWrittenSequence` with
// dssematerial `lastWrittenDssematerial`; the signer's place in the chain says what follows.
// `id` and `time` come from the caller (the broker's clock and RNG).
nlohmann::json makeLogResumedEvent(const std::string& hostId, const std::string& id,
                                   const std::string& time, uint64_t lastWrittenSequence,
                                   std::string_view lastWrittenDssematerial,
                                   const std::string& reason);

// The first bad line: which file, which 1-based line number, and why.
struct VerifyFailure {
  std::string file;
  size_t line;
  std::string reason;
};

// Where the chain moved from one key to the next.
struct KeyChange {
  std::string file;
  size_t line;
  std::string fromKeyId, toKeyId;
};

// Events that are not in the log, and why that is legitimate.
struct DeclaredGap {
  std::string file;  // the declaring line
  size_t line;
  uint64_t firstMissing, lastMissing;
};

// Verifies events line by line and stops at the first failure.
class LogVerifier {
 public:
  // `keys`: the trusted keyset. `checkChain`: also require sequence contiguity and cellosprev
  // linkage across lines (turn off only to check signatures of an excerpt, or of events from
  // other producers).
  LogVerifier(Keyset keys, bool checkChain);

  // Offers a dead-lettered event (one line of JSON) for the chain position `sequence`: when the
  // log jumps over that sequence, the event is verified in its place, reported as `file` line 1.
  // Unused offers are ignored (the event may also be in the log).
  void addDeadLetter(uint64_t sequence, std::string file, std::string line);

  // Checks one line (without its trailing newline). A line must be a JSON object (strictly
  // parsed: duplicate member names rejected) with what CloudEvents 1.0 and the Verifiability
  // extension require, non-empty strings specversion == "1.0", id, source, type and
  // dssematerial, and a valid signature from `keys` (verifyEventSignature). Without checkChain
  // that is all: time, subject, data and any extension may be absent, and unsigned extensions
  // are ignored. With checkChain the line must also carry time, sequence (20 digits, see
  // parseSequence) and cellosprev, the signature must cover sequence and cellosprev, and each
  // event's sequence is the previous one + 1 and its cellosprev is
  // chainLink(previous dssematerial); a different key than the previous event's is a rotation
  // (allowed, recorded) unless that key already signed earlier and was rotated away. A jump in
  // sequence is filled from the dead letters, or else must land on a `log.v1.resumed` event
  // whose data names the previous event (lastWrittenSequence, lastWrittenLink); anything else
  // fails ("sequence N does not follow M ..."). The first event may have any sequence (older
  // files may be rotated away), but if its sequence is 0 its cellosprev must be genesisLink(). An
  // empty line fails ("empty line").
  // Returns false on failure (failure() then says where and why); once failed, every later call
  // returns false and changes nothing.
  bool feedLine(std::string_view file, size_t lineNumber, std::string_view line);

  // Ends one file. `lineNumber` is the number of the file's last line and `lastLineHadNewline`
  // whether it ended in '\n'. A final line without a newline is a write cut short: pass false and
  // this fails with "truncated last line (no newline)" at that line (the caller need not, and
  // preferably does not, feed that partial line first). Returns false if verification has failed.
  bool finishFile(std::string_view file, size_t lineNumber, bool lastLineHadNewline);

  // From now on, appends each verified event's checkpoint leaf hash and sequence to `leaves`
  // (which must outlive this), in chain order, dead-lettered events in their place.
  void collectLeaves(LogLeaves* leaves) { leaves_ = leaves; }

  // The first failure, if any.
  const std::optional<VerifyFailure>& failure() const { return failure_; }

  // Lines that passed every check (dead-lettered events included).
  uint64_t eventsVerified() const { return eventsVerified_; }
  // Of those, how many came from the dead letters.
  uint64_t deadLettersVerified() const { return deadLettersVerified_; }

  // Sequence numbers of the first and last verified events; nullopt before the first.
  std::optional<uint64_t> firstSequence() const { return firstSequence_; }
  std::optional<uint64_t> lastSequence() const { return lastSequence_; }

  const std::vector<KeyChange>& keyChanges() const { return keyChanges_; }
  const std::vector<DeclaredGap>& declaredGaps() const { return declaredGaps_; }

 private:
  bool fail(std::string_view file, size_t line, std::string reason);
  // Everything but the dead-letter filling: one event in its place.
  bool checkEvent(std::string_view file, size_t lineNumber, std::string_view line);

  struct DeadLetter {
    std::string file, line;
  };

  Keyset keys_;
  bool checkChain_;
  std::optional<VerifyFailure> failure_;
  uint64_t eventsVerified_ = 0;
  uint64_t deadLettersVerified_ = 0;
  std::optional<uint64_t> firstSequence_;
  std::optional<uint64_t> lastSequence_;
  std::string previousDssematerial_;
  std::string previousKeyId_;
  std::set<std::string> retiredKeyIds_;
  std::map<uint64_t, DeadLetter> deadLetters_;
  std::vector<KeyChange> keyChanges_;
  std::vector<DeclaredGap> declaredGaps_;
  LogLeaves* leaves_ = nullptr;
};

}  // namespace cellos::core
