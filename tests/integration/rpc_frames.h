#pragma once
// Raw Cap'n Proto RPC frames for tests that talk to a listener below the RPC layer: what a
// client sends first, and whether what came back answers it.

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>

#include <cstring>
#include <optional>
#include <string>

#include <kj/array.h>

namespace cellos::testing {

// A well-formed Cap'n Proto RPC message asking for the bootstrap capability (question 0), as
// the two-party stream framing sends it.
inline std::string bootstrapMessageBytes() {
  capnp::MallocMessageBuilder message;
  message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(0);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Whether `data` starts with a whole frame that is the Return for question 0 (nullopt: the frame
// is not complete yet).
inline std::optional<bool> answersBootstrap(const std::string& data) {
  size_t available = data.size() / sizeof(capnp::word);
  if (available == 0) return std::nullopt;
  auto words = kj::heapArray<capnp::word>(available);
  memcpy(words.begin(), data.data(), available * sizeof(capnp::word));
  size_t expected = capnp::expectedSizeInWordsFromPrefix(words);
  if (expected > available) return std::nullopt;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr().slice(0, expected));
    auto root = reader.getRoot<capnp::rpc::Message>();
    return root.isReturn() && root.getReturn().getAnswerId() == 0 && root.getReturn().isResults();
  } catch (const kj::Exception&) {
    return false;
  }
}

// The reason of the rpc Abort that `data` starts with, when its first whole frame is one (a
// listener refusing a connection for a limit says why in one); "" when the first frame is
// anything else; nullopt while the frame is not complete.
inline std::optional<std::string> abortReason(const std::string& data) {
  size_t available = data.size() / sizeof(capnp::word);
  if (available == 0) return std::nullopt;
  auto words = kj::heapArray<capnp::word>(available);
  memcpy(words.begin(), data.data(), available * sizeof(capnp::word));
  size_t expected = capnp::expectedSizeInWordsFromPrefix(words);
  if (expected > available) return std::nullopt;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr().slice(0, expected));
    auto root = reader.getRoot<capnp::rpc::Message>();
    return root.isAbort() ? std::string(root.getAbort().getReason().cStr()) : std::string();
  } catch (const kj::Exception&) {
    return std::string();
  }
}

}  // namespace cellos::testing
