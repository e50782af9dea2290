#include "event-signer/signer_server.h"

#include <spdlog/spdlog.h>

#include <kj/debug.h>

namespace cellos::signer {

kj::Promise<void> SignerServer::sign(SignContext context) {
  KJ_REQUIRE(maySign_, "this peer may read the keyset but not sign");
  auto events = context.getParams().getEvents();
  KJ_REQUIRE(events.size() <= kMaxBatch, "batch too large", events.size());
  std::vector<std::string> input;
  input.reserve(events.size());
  for (auto event : events) {
    KJ_REQUIRE(event.size() <= kMaxEventBytes, "event too large", event.size());
    input.emplace_back(reinterpret_cast<const char*>(event.begin()), event.size());
  }
  std::vector<std::string> output;
  try {
    output = chain_.signBatch(input);
  } catch (const std::exception& e) {
    KJ_FAIL_REQUIRE("cannot sign batch", e.what());
  }
  auto list = context.getResults().initSigned(output.size());
  for (size_t i = 0; i < output.size(); ++i) {
    list.set(
        i, kj::arrayPtr(reinterpret_cast<const capnp::byte*>(output[i].data()), output[i].size()));
  }
  spdlog::debug("signed {} events, next sequence {}", output.size(), chain_.head().nextSequence);
  return kj::READY_NOW;
}

kj::Promise<void> SignerServer::keyset(KeysetContext context) {
  std::string json = keys_.keysetJson();
  context.getResults().setJson(json);
  return kj::READY_NOW;
}

kj::Promise<void> SignerServer::head(HeadContext context) {
  auto results = context.getResults();
  results.setNextSequence(chain_.head().nextSequence);
  results.setPrevLink(chain_.head().prevLink);
  results.setKeyId(keys_.current().keyId());
  return kj::READY_NOW;
}

kj::Promise<void> SignerServer::rotate(RotateContext context) {
  KJ_REQUIRE(mayRotate_, "only root may rotate the signing key");
  std::string name = context.getParams().getAlgorithm();
  auto algorithm = core::algorithmFromName(name.empty() ? "ed25519" : name);
  KJ_REQUIRE(algorithm != std::nullopt, "algorithm must be ed25519 or p256", name);
  std::string previous = keys_.current().keyId();
  try {
    keys_.rotate(*algorithm);
  } catch (const std::exception& e) {
    KJ_FAIL_REQUIRE("cannot rotate", e.what());
  }
  chain_.keyRotated();
  spdlog::info("rotated the signing key: {} -> {}, chain continues at sequence {}", previous,
               keys_.current().keyId(), chain_.head().nextSequence);
  context.getResults().setKeyId(keys_.current().keyId());
  context.getResults().setKeyset(keys_.keysetJson());
  return kj::READY_NOW;
}

kj::Promise<void> SignerServer::written(WrittenContext context) {
  KJ_REQUIRE(maySign_, "only the broker reports written events");
  auto params = context.getParams();
  KJ_REQUIRE(params.getThroughSequence() < chain_.head().nextSequence,
             "written: sequence not signed yet", params.getThroughSequence());
  std::string checkpoint;
  try {
    checkpoint =
        chain_.written(params.getThroughSequence(), params.getLostAfter(), params.getFinal());
  } catch (const std::exception& e) {
    KJ_FAIL_REQUIRE("cannot record written events", e.what());
  }
  if (!checkpoint.empty()) {
    spdlog::debug("checkpoint at tree size {}", chain_.tree().size());
  }
  context.getResults().setCheckpoint(checkpoint);
  return kj::READY_NOW;
}

}  // namespace cellos::signer
