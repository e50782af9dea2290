#include "core/log_verifier.h"

#include "core/jcs.h"
#include "core/verifiability.h"

#include <algorithm>
#include <array>
#include <utility>

namespace cellos::core {

LogVerifier::LogVerifier(Keyset keys, bool checkChain)
    : keys_(std::move(keys)), checkChain_(checkChain) {}

bool LogVerifier::fail(std::string_view file, size_t line, std::string reason) {
  failure_ = VerifyFailure{std::string(file), line, std::move(reason)};
  return false;
}

bool LogVerifier::feedLine(std::string_view file, size_t lineNumber, std::string_view line) {
  if (failure_) return false;
  if (line.empty()) return fail(file, lineNumber, "empty line");

  std::string parseError;
  auto event = parseStrictJson(line, &parseError);
  if (!event) return fail(file, lineNumber, "invalid JSON: " + parseError);
  if (!event->is_object()) return fail(file, lineNumber, "not a JSON object");

  constexpr std::array<std::string_view, 8> kRequired = {
      "specversion", "id", "source", "type", "time", "sequence", "cellosprev", "dssematerial"};
  for (auto name : kRequired) {
    auto it = event->find(name);
    if (it == event->end()) return fail(file, lineNumber, "missing attribute " + std::string(name));
    if (!it->is_string()) {
      return fail(file, lineNumber, "attribute " + std::string(name) + " is not a string");
    }
  }
  if ((*event)["specversion"] != "1.0") return fail(file, lineNumber, "specversion is not 1.0");
  auto sequence = parseSequence((*event)["sequence"].get_ref<const std::string&>());
  if (!sequence) return fail(file, lineNumber, "sequence is not 20 decimal digits");

  VerifiedMaterial verified;
  if (auto reason = verifyEventSignature(*event, keys_, &verified)) {
    return fail(file, lineNumber, *reason);
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
  if (checkChain_) {
    if (!lastSequence_) {
      if (*sequence == 0 && cellosprev != genesisLink()) {
        return fail(file, lineNumber, "first event (sequence 0) does not link to genesis");
      }
    } else {
      if (*lastSequence_ == UINT64_MAX || *sequence != *lastSequence_ + 1) {
        return fail(file, lineNumber,
                    "sequence " + std::to_string(*sequence) + " does not follow " +
                        std::to_string(*lastSequence_));
      }
      if (verified.keyId != previousKeyId_) {
        return fail(file, lineNumber,
                    "signed by " + quotedForMessage(verified.keyId) +
                        " mid-chain, previous event by " + quotedForMessage(previousKeyId_));
      }
      if (cellosprev != chainLink(previousDssematerial_)) {
        return fail(file, lineNumber, "cellosprev does not match the previous event");
      }
    }
  }

  if (!firstSequence_) firstSequence_ = *sequence;
  lastSequence_ = *sequence;
  previousDssematerial_ = dssematerial;
  previousKeyId_ = verified.keyId;
  ++eventsVerified_;
  return true;
}

bool LogVerifier::finishFile(std::string_view file, size_t lineNumber, bool lastLineHadNewline) {
  if (failure_) return false;
  if (!lastLineHadNewline) return fail(file, lineNumber, "truncated last line (no newline)");
  return true;
}

}  // namespace cellos::core
