#include "event-signer/event_chain.h"

#include "core/verifiability.h"
#include "event-signer/key_store.h"

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
  auto json = nlohmann::json::parse(readFileNoFollow(path_, 1 << 20));
  head_.nextSequence = json.at("nextSequence").get<uint64_t>();
  head_.prevLink = json.at("prevLink").get<std::string>();
  if (json.contains("keys")) keys_ = json["keys"];
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
  nlohmann::json json = {{"nextSequence", head_.nextSequence},
                         {"prevLink", head_.prevLink},
                         {"keyId", key_.keyId()},
                         {"keys", keys_}};
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
    next.nextSequence += 1;
    next.prevLink = core::chainLink(dssematerial);
  }
  // Persist before returning: a signature that leaves the process is always covered by the
  // durable head, so a restart continues after it.
  ChainHead previous = head_;
  head_ = next;
  try {
    persist();
  } catch (...) {
    head_ = previous;
    throw;
  }
  return out;
}

}  // namespace cellos::signer
