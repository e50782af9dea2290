#pragma once
// The signer's chain: assigns `sequence` and `cellosprev` to each event, signs it, and persists
// the head before any signature leaves the process, so a crash can lose unsent signatures but
// never reuse a sequence number or fork the chain.

#include "core/signing.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace cellos::signer {

struct ChainHead {
  uint64_t nextSequence = 0;
  std::string prevLink;  // cellosprev for the next event
};

class EventChain {
 public:
  // Loads the head from `<stateDir>/chain-head.json` (created at sequence 0 when absent).
  // `key` must outlive the chain; when it is another key than the head was last written
  // under, the chain continues under it (rotation) and the head records from which sequence.
  EventChain(std::string stateDir, const core::SigningKey& key);

  // Signs `events` in order; each must be a JSON object without the signer's attributes.
  // Returns the signed events as compact JSON. The head is fsynced before returning. Throws on
  // an event that is not a JSON object or that already carries a signer attribute; then no
  // event of the batch is signed.
  std::vector<std::string> signBatch(const std::vector<std::string>& unsignedEvents);

  const ChainHead& head() const { return head_; }

  // Records (durably) that the key this chain signs with has just been replaced; the chain
  // continues from the same head.
  void keyRotated();

 private:
  void persist();

  std::string path_;
  const core::SigningKey& key_;
  ChainHead head_;
  nlohmann::json keys_ = nlohmann::json::array();
};

}  // namespace cellos::signer
