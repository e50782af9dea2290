#include "core/log_verifier.h"

#include "core/jcs.h"
#include "core/verifiability.h"

#include <algorithm>
#include <array>
#include <utility>

namespace cellos::core {

nlohmann::json makeLogResumedEvent(const std::string& hostId, const std::string& id,
                                   const std::string& time, uint64_t lastWrittenSequence,
                                   std::string_view lastWrittenDssematerial,
                                   const std::string& reason) {
  return nlohmann::json{
      {"specversion", "1.0"},
      {"id", id},
      {"source", "urn:cellos:host:" + hostId},
      {"type", std::string(kLogResumedEventType)},
      {"subject", "urn:cellos:log:" + hostId},
      {"time", time},
      {"datacontenttype", "application/json"},
      {"data",
       {{"lastWrittenSequence", formatSequence(lastWrittenSequence)},
        {"lastWrittenLink", chainLink(lastWrittenDssematerial)},
        {"reason", reason}}},
  };
}

LogVerifier::LogVerifier(Keyset keys, bool checkChain)
    : keys_(std::move(keys)), checkChain_(checkChain) {}

bool LogVerifier::fail(std::string_view file, size_t line, std::string reason) {
  failure_ = VerifyFailure{std::string(file), line, std::move(reason)};
  return false;
}

void LogVerifier::addDeadLetter(uint64_t sequence, std::string file, std::string line) {
  deadLetters_.emplace(sequence, DeadLetter{std::move(file), std::move(line)});
}

namespace {

// The string member `name` of `data` (an object), or nullptr.
const std::string* dataString(const nlohmann::json& event, std::string_view name) {
  auto data = event.find("data");
  if (data == event.end() || !data->is_object()) return nullptr;
  auto it = data->find(name);
  if (it == data->end() || !it->is_string()) return nullptr;
  return &it->get_ref<const std::string&>();
}

// The first event's sequence in a line, if the line is a JSON object with one; for deciding
// whether dead letters belong before it. Verification proper happens afterwards.
std::optional<uint64_t> sequenceOf(const nlohmann::json& event) {
  auto it = event.find("sequence");
  if (it == event.end() || !it->is_string()) return std::nullopt;
  return parseSequence(it->get_ref<const std::string&>());
}

}  // namespace

bool LogVerifier::feedLine(std::string_view file, size_t lineNumber, std::string_view line) {
  if (failure_) return false;
  if (checkChain_ && lastSequence_ && !deadLetters_.empty()) {
    std::string parseError;
    auto event = parseStrictJson(line, &parseError);
    auto sequence = event && event->is_object() ? sequenceOf(*event) : std::nullopt;
    // Fill the jump from the dead letters, in chain order, each verified in its place.
    while (sequence && *sequence > *lastSequence_ + 1) {
      auto dead = deadLetters_.find(*lastSequence_ + 1);
      if (dead == deadLetters_.end()) break;
      DeadLetter letter = std::move(dead->second);
      deadLetters_.erase(dead);
      if (!checkEvent(letter.file, 1, letter.line)) return false;
      ++deadLettersVerified_;
    }
  }
  return checkEvent(file, lineNumber, line);
}

bool LogVerifier::checkEvent(std::string_view file, size_t lineNumber, std::string_view line) {
  if (line.empty()) return fail(file, lineNumber, "empty line");

  std::string parseError;
  auto event = parseStrictJson(line, &parseError);
  if (!event) return fail(file, lineNumber, "invalid JSON: " + parseError);
  if (!event->is_object()) return fail(file, lineNumber, "not a JSON object");

  // CloudEvents 1.0 requires id, source, specversion and type (non-empty strings); the
  // Verifiability extension adds dssematerial. Only our own chain needs time, sequence and
  // cellosprev, so an event from another producer is judged by its signature alone.
  constexpr std::array<std::string_view, 5> kRequiredByCloudEvents = {"specversion", "id", "source",
                                                                      "type", "dssematerial"};
  constexpr std::array<std::string_view, 3> kRequiredByChain = {"time", "sequence", "cellosprev"};
  auto requireString = [&](std::string_view name) -> std::optional<std::string> {
    auto it = event->find(name);
    if (it == event->end()) return "missing attribute " + std::string(name);
    if (!it->is_string()) return "attribute " + std::string(name) + " is not a string";
    if (it->get_ref<const std::string&>().empty()) {
      return "attribute " + std::string(name) + " is empty";
    }
    return std::nullopt;
  };
  for (auto name : kRequiredByCloudEvents) {
    if (auto problem = requireString(name)) return fail(file, lineNumber, *problem);
  }
  if ((*event)["specversion"] != "1.0") return fail(file, lineNumber, "specversion is not 1.0");
  if (checkChain_) {
    for (auto name : kRequiredByChain) {
      if (auto problem = requireString(name)) return fail(file, lineNumber, *problem);
    }
  }
  std::optional<uint64_t> sequence;
  if (event->contains("sequence")) {
    const auto& text = (*event)["sequence"];
    sequence = text.is_string() ? parseSequence(text.get_ref<const std::string&>()) : std::nullopt;
    if (!sequence && checkChain_) {
      return fail(file, lineNumber, "sequence is not 20 decimal digits");
    }
  }

  VerifiedMaterial verified;
  if (auto reason = verifyEventSignature(*event, keys_, &verified)) {
    return fail(file, lineNumber, *reason);
  }
  if (!checkChain_) {
    // Signatures only: whatever the producer chose to sign is all there is to check.
    if (sequence && !firstSequence_) firstSequence_ = *sequence;
    if (sequence) lastSequence_ = *sequence;
    ++eventsVerified_;
    return true;
  }
  // The chain is only as good as the signature over its links.
  for (const auto& name : kSignedExtensions) {
    if (std::find(verified.signedExtAttrs.begin(), verified.signedExtAttrs.end(), name) ==
        verified.signedExtAttrs.end()) {
      return fail(file, lineNumber, "signature does not cover " + name);
    }
  }

  const auto& cellosprev = (*event)["cellosprev"].get_ref<const std::string&>();
  const auto& dssematerial = (*event)["dssematerial"].get_ref<const std::string&>();
  const bool resumed = (*event)["type"] == kLogResumedEventType;
  bool keyChanged = false;
  if (checkChain_) {
    if (!lastSequence_) {
      if (*sequence == 0 && cellosprev != genesisLink()) {
        return fail(file, lineNumber, "first event (sequence 0) does not link to genesis");
      }
    } else {
      const uint64_t last = *lastSequence_;
      // A resumed event names the line it continues; that binding must hold whether or not
      // events went missing in between.
      if (resumed) {
        const std::string* writtenSequence = dataString(*event, "lastWrittenSequence");
        const std::string* writtenLink = dataString(*event, "lastWrittenLink");
        if (!writtenSequence || *writtenSequence != formatSequence(last) || !writtenLink ||
            *writtenLink != chainLink(previousDssematerial_)) {
          return fail(file, lineNumber,
                      "log.v1.resumed event does not name the previous line (sequence " +
                          std::to_string(last) + ") as the last one written");
        }
      }
      const bool contiguous = last != UINT64_MAX && *sequence == last + 1;
      const bool declaredGap = !contiguous && resumed && *sequence > last;
      if (!contiguous && !declaredGap) {
        std::string reason =
            "sequence " + std::to_string(*sequence) + " does not follow " + std::to_string(last);
        if (*sequence > last + 1) {
          reason += ": events " + std::to_string(last + 1) + ".." + std::to_string(*sequence - 1) +
                    " are missing (not in this log, not in the dead-letter directory, and no "
                    "signed log.v1.resumed event declares them)";
        } else {
          reason += " (a repeated, reordered or foreign line)";
        }
        return fail(file, lineNumber, reason);
      }
      if (verified.keyId != previousKeyId_) {
        // A rotation continues the chain under a new key; a key the chain has left behind
        // must not come back (it may be the reason for the rotation).
        if (retiredKeyIds_.count(verified.keyId)) {
          return fail(file, lineNumber,
                      "signed by " + quotedForMessage(verified.keyId) +
                          ", a key the chain was rotated away from");
        }
        keyChanged = true;
      }
      if (!declaredGap && cellosprev != chainLink(previousDssematerial_)) {
        if (keyChanged) {
          return fail(file, lineNumber,
                      "signed by " + quotedForMessage(verified.keyId) +
                          " mid-chain, previous event by " + quotedForMessage(previousKeyId_) +
                          ", and cellosprev does not match the previous event");
        }
        return fail(file, lineNumber, "cellosprev does not match the previous event");
      }
      if (declaredGap) {
        declaredGaps_.push_back({std::string(file), lineNumber, last + 1, *sequence - 1});
      }
    }
  }

  if (keyChanged) {
    keyChanges_.push_back({std::string(file), lineNumber, previousKeyId_, verified.keyId});
    retiredKeyIds_.insert(previousKeyId_);
  }
  if (!firstSequence_) firstSequence_ = *sequence;
  lastSequence_ = *sequence;
  previousDssematerial_ = dssematerial;
  previousKeyId_ = verified.keyId;
  ++eventsVerified_;
  if (leaves_) {
    leaves_->leafHashes.push_back(checkpointLeafHash(dssematerial));
    leaves_->sequences.push_back(*sequence);
  }
  return true;
}

bool LogVerifier::finishFile(std::string_view file, size_t lineNumber, bool lastLineHadNewline) {
  if (failure_) return false;
  if (!lastLineHadNewline) return fail(file, lineNumber, "truncated last line (no newline)");
  return true;
}

}  // namespace cellos::core
