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
  auto json = nlohmann::json::parse(readFileNoFollow(path_, 4096));
  head_.nextSequence = json.at("nextSequence").get<uint64_t>();
  head_.prevLink = json.at("prevLink").get<std::string>();
  // The chain belongs to a key; a head written under another key means the key changed
  // underneath us (rotation is an explicit operation that records the new key).
  KJ_REQUIRE(json.value("keyId", key_.keyId()) == key_.keyId() || json.contains("rotated"),
             "chain head belongs to another key", path_);
}

void EventChain::persist() {
  nlohmann::json json = {
      {"nextSequence", head_.nextSequence}, {"prevLink", head_.prevLink}, {"keyId", key_.keyId()}};
  writeFileDurably(path_, json.dump(), 0600);
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
  for (auto& event : events) {
    event["sequence"] = core::formatSequence(next.nextSequence);
    event["cellosprev"] = next.prevLink;
    core::signEvent(event, key_);
    next.nextSequence += 1;
    next.prevLink = core::chainLink(event["dssematerial"].get<std::string>());
    out.push_back(event.dump());
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
