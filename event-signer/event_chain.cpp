#include "event-signer/event_chain.h"

#include "core/checkpoint.h"
#include "core/encoding.h"
#include "core/verifiability.h"
#include "event-signer/key_store.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <stdexcept>

#include <kj/debug.h>

namespace cellos::signer {

EventChain::EventChain(std::string stateDir, const core::SigningKey& key)
    : path_(stateDir + "/chain-head.json"), key_(key) {
  if (access(path_.c_str(), F_OK) != 0) {
    head_ = ChainHead{0, core::genesisLink()};
    persist();
    return;
  }
  auto json = nlohmann::json::parse(readFileNoFollow(path_, 8 << 20));
  head_.nextSequence = json.at("nextSequence").get<uint64_t>();
  head_.prevLink = json.at("prevLink").get<std::string>();
  if (json.contains("keys")) keys_ = json["keys"];
  // The checkpoint tree. A head written before checkpoints existed starts its tree here.
  treeFromSequence_ = head_.nextSequence;
  if (json.contains("tree")) {
    const auto& tree = json["tree"];
    treeFromSequence_ = tree.at("fromSequence").get<uint64_t>();
    std::vector<std::string> subtrees;
    for (const auto& hash : tree.at("subtrees")) {
      subtrees.push_back(core::base64Decode(hash.get<std::string>()).value_or(""));
    }
    auto frontier = core::MerkleFrontier::restore(tree.at("size").get<uint64_t>(), subtrees);
    KJ_REQUIRE(frontier != std::nullopt, "chain head's checkpoint tree is corrupt", path_);
    tree_ = *frontier;
    for (const auto& entry : tree.at("unwritten")) {
      unwritten_.emplace_back(entry.at(0).get<uint64_t>(),
                              core::base64Decode(entry.at(1).get<std::string>()).value_or(""));
    }
  }
  // One chain across keys: a rotation (or an operator who replaced the key file) continues
  // from the head; the new key's first signature covers cellosprev, so the link from the old
  // key's last event to the new key's first is signed by the new key.
  std::string previousKey = json.value("keyId", key_.keyId());
  if (previousKey != key_.keyId()) {
    KJ_LOG(WARNING, "signing key changed; the chain continues", previousKey, key_.keyId(),
           head_.nextSequence);
    persist();
  }
}

void EventChain::persist() {
  // keys: which key signed from which sequence on (an audit trail of rotations).
  if (!keys_.is_array()) keys_ = nlohmann::json::array();
  if (keys_.empty() || keys_.back().value("keyId", "") != key_.keyId()) {
    keys_.push_back({{"keyId", key_.keyId()}, {"fromSequence", head_.nextSequence}});
  }
  nlohmann::json subtrees = nlohmann::json::array();
  for (const auto& hash : tree_.subtrees()) subtrees.push_back(core::base64Encode(hash));
  nlohmann::json unwritten = nlohmann::json::array();
  for (const auto& [sequence, leaf] : unwritten_) {
    unwritten.push_back({sequence, core::base64Encode(leaf)});
  }
  nlohmann::json json = {{"nextSequence", head_.nextSequence},
                         {"prevLink", head_.prevLink},
                         {"keyId", key_.keyId()},
                         {"keys", keys_},
                         {"tree",
                          {{"fromSequence", treeFromSequence_},
                           {"size", tree_.size()},
                           {"subtrees", subtrees},
                           {"unwritten", unwritten}}}};
  writeFileDurably(path_, json.dump(), 0600);
}

void EventChain::keyRotated() {
  persist();
}

std::vector<std::string> EventChain::signBatch(const std::vector<std::string>& unsignedEvents) {
  std::vector<nlohmann::json> events;
  events.reserve(unsignedEvents.size());
  for (const std::string& text : unsignedEvents) {
    auto event = nlohmann::json::parse(text);  // throws on bad JSON
    if (!event.is_object()) throw std::invalid_argument("event is not a JSON object");
    for (const char* reserved : {"sequence", "cellosprev", "dssematerial"}) {
      if (event.contains(reserved)) {
        throw std::invalid_argument(std::string("event already carries ") + reserved);
      }
    }
    events.push_back(std::move(event));
  }
  ChainHead next = head_;
  const size_t unwrittenBefore = unwritten_.size();
  std::vector<std::string> out;
  out.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    auto& event = events[i];
    std::string sequence = core::formatSequence(next.nextSequence);
    event["sequence"] = sequence;
    event["cellosprev"] = next.prevLink;
    core::signEvent(event, key_);
    const std::string& dssematerial = event["dssematerial"].get_ref<const std::string&>();
    // The event as sent, with the three attributes appended: serialising the parsed event
    // again would cost as much as its digests. The members are base64 and digits, and the
    // event has no member of these names (checked above), so the result is valid JSON with
    // the same attributes the signature covers.
    std::string_view text = unsignedEvents[i];
    while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\t' ||
                             text.back() == '\r')) {
      text.remove_suffix(1);
    }
    std::string line(text.substr(0, text.size() - 1));  // without the closing brace
    line += events[i].size() > 3 ? "," : "";
    line += "\"sequence\":\"" + sequence + "\",\"cellosprev\":\"" + next.prevLink +
            "\",\"dssematerial\":\"" + dssematerial + "\"}";
    out.push_back(std::move(line));
    if (checkpoints_) {
      unwritten_.emplace_back(next.nextSequence, core::checkpointLeafHash(dssematerial));
    }
    next.nextSequence += 1;
    next.prevLink = core::chainLink(dssematerial);
  }
  if (!checkpoints_) {
    // Checkpoints off: a tree turned on later starts after these events (a new origin).
    tree_ = core::MerkleFrontier();
    treeFromSequence_ = next.nextSequence;
  } else if (unwritten_.size() > kMaxUnwritten) {
    spdlog::warn(
        "{} signed events were never reported written; the checkpoint tree starts "
        "again at sequence {}",
        unwritten_.size(), next.nextSequence);
    unwritten_.clear();
    tree_ = core::MerkleFrontier();
    treeFromSequence_ = next.nextSequence;
    lastCheckpointSize_ = 0;
  }
  // Persist before returning: a signature that leaves the process is always covered by the
  // durable head, so a restart continues after it.
  ChainHead previous = head_;
  head_ = next;
  try {
    persist();
  } catch (...) {
    head_ = previous;
    unwritten_.resize(unwrittenBefore);
    throw;
  }
  return out;
}

void EventChain::configureCheckpoints(std::string originPrefix,
                                      std::chrono::milliseconds interval) {
  checkpoints_ = interval.count() > 0;
  originPrefix_ = std::move(originPrefix);
  checkpointInterval_ = interval;
  lastCheckpointSize_ = tree_.size();
  lastCheckpointAt_ = std::chrono::steady_clock::now();
}

std::string EventChain::checkpointOrigin() const {
  std::string prefix = originPrefix_;
  if (prefix.empty()) {
    // The chain's first key names it for good: later rotations do not change the origin.
    std::string first = keys_.is_array() && !keys_.empty()
                            ? keys_.front().value("keyId", key_.keyId())
                            : key_.keyId();
    prefix = "cellos/" + first;
  }
  return prefix + "/" + std::to_string(treeFromSequence_);
}

std::string EventChain::written(uint64_t throughSequence, bool lostAfter, bool final) {
  if (!checkpoints_) return "";
  bool changed = false;
  while (!unwritten_.empty() && unwritten_.front().first <= throughSequence) {
    // Only events of this tree, in order: an event from before the tree started is skipped.
    if (unwritten_.front().first >= treeFromSequence_) tree_.append(unwritten_.front().second);
    unwritten_.pop_front();
    changed = true;
  }
  if (lostAfter && !unwritten_.empty()) {
    spdlog::warn(
        "{} signed events after sequence {} were never written; they stay out of the "
        "checkpoint tree",
        unwritten_.size(), throughSequence);
    unwritten_.clear();
    changed = true;
  }
  // Durable before a checkpoint over it leaves the process.
  if (changed) persist();
  auto now = std::chrono::steady_clock::now();
  bool grew = tree_.size() != lastCheckpointSize_;
  if (!grew || (!final && now - lastCheckpointAt_ < checkpointInterval_)) return "";
  if (key_.algorithm() != core::KeyAlgorithm::kEd25519) {
    spdlog::warn("no checkpoint: the signing key {} is not Ed25519", key_.keyId());
    lastCheckpointAt_ = now;
    return "";
  }
  lastCheckpointSize_ = tree_.size();
  lastCheckpointAt_ = now;
  return core::signCheckpoint(checkpointOrigin(), tree_.size(), tree_.root(), key_);
}

}  // namespace cellos::signer
