#pragma once
// The signer's chain: assigns `sequence` and `cellosprev` to each event, signs it, and persists
// the head before any signature leaves the process, so a crash can lose unsent signatures but
// never reuse a sequence number or fork the chain.

#include "core/merkle.h"
#include "core/signing.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
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

  // Checkpoints: `originPrefix` + "/" + the tree's first sequence is the checkpoint origin
  // and key name (empty prefix: "cellos/<the chain's first keyid>"); one is due when
  // `interval` has passed since the last and the tree grew. A zero interval turns the tree
  // off (nothing is recorded, written() answers ""). Call before the first signBatch().
  void configureCheckpoints(std::string originPrefix, std::chrono::milliseconds interval);

  // Most signed events the tree waits to hear are written. A broker reports every batch, so
  // this is only reached by a client that never reports: then the tree starts afresh after
  // them (a new origin), rather than the chain head growing without bound.
  static constexpr size_t kMaxUnwritten = 16384;

  // The broker reports every signed event up to `throughSequence` durable (see the written RPC
  // in ipc/signer.capnp). Those events enter the tree, in sequence order; with `lostAfter` the
  // ones signed after it are dropped (never written). The tree is persisted with the head.
  // Returns a signed checkpoint note when one is due (or `final` and the tree grew since the
  // last one), else "". Throws only if persisting fails. No checkpoint while the signing key is
  // not Ed25519 (signed-note type 0x01).
  std::string written(uint64_t throughSequence, bool lostAfter, bool final);

  // The tree over the events reported written, and its origin (for tests and logs).
  const core::MerkleFrontier& tree() const { return tree_; }
  std::string checkpointOrigin() const;

 private:
  void persist();

  std::string path_;
  const core::SigningKey& key_;
  ChainHead head_;
  nlohmann::json keys_ = nlohmann::json::array();
  // RFC 9162 tree over the events the broker has reported durable, from sequence
  // treeFromSequence_; unwritten_: (sequence, leaf hash) signed but not yet reported.
  core::MerkleFrontier tree_;
  uint64_t treeFromSequence_ = 0;
  std::deque<std::pair<uint64_t, std::string>> unwritten_;
  std::string originPrefix_;
  std::chrono::milliseconds checkpointInterval_{5000};
  bool checkpoints_ = true;
  uint64_t lastCheckpointSize_ = 0;
  std::chrono::steady_clock::time_point lastCheckpointAt_{};
};

}  // namespace cellos::signer
