#include "dns-helper/child_channel.h"

#include <capnp/serialize.h>
#include <kj/debug.h>

#include <cstring>

namespace cellos::dns {

namespace {

// A copy of `bytes` in aligned words (a datagram's buffer need not be), or an empty array when
// its length is not a whole number of words.
kj::Array<capnp::word> wordsOf(kj::ArrayPtr<const kj::byte> bytes) {
  if (bytes.size() == 0 || bytes.size() % sizeof(capnp::word) != 0) return nullptr;
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  memcpy(words.begin(), bytes.begin(), bytes.size());
  return words;
}

template <typename Reader>
kj::Array<capnp::word> copyOf(Reader reader) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(reader);
  return capnp::messageToFlatArray(copy);
}

// Reads every part of `root` the spawner acts on; throws kj::Exception where it breaks the
// reader's limits.
ChildMessage decodeChildMessage(ipc::DnsChildMessage::Reader root) {
  ChildMessage out;
  switch (root.which()) {
    case ipc::DnsChildMessage::READY:
      out.kind = ChildMessage::Kind::kReady;
      out.readyPid = root.getReady();
      break;
    case ipc::DnsChildMessage::FAILED:
      out.kind = ChildMessage::Kind::kFailed;
      out.failure = root.getFailed();
      break;
    case ipc::DnsChildMessage::QUERY:
      out.kind = ChildMessage::Kind::kRecords;
      out.droppedBefore = root.getQuery().getDroppedBefore();
      out.records.push_back(copyOf(root.getQuery()));
      break;
    case ipc::DnsChildMessage::BATCH:
      out.kind = ChildMessage::Kind::kRecords;
      KJ_REQUIRE(root.getBatch().size() <= kMaxChannelRecords,
                 "more records than a child sends at once", root.getBatch().size());
      for (auto record : root.getBatch()) {
        out.droppedBefore += record.getDroppedBefore();
        out.records.push_back(copyOf(record));
      }
      break;
    case ipc::DnsChildMessage::LEARN:
      out.kind = ChildMessage::Kind::kLearn;
      out.learnToken = root.getLearn().getToken();
      out.learnAddresses = copyOf(root.getLearn().getAddresses());
      break;
    default:
      out.kind = ChildMessage::Kind::kUnknown;  // a newer child's; ignored
      break;
  }
  return out;
}

}  // namespace

capnp::ReaderOptions childMessageOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxChannelMessage / sizeof(capnp::word);
  options.nestingLimit = 8;
  return options;
}

std::optional<ChildMessage> readChildMessage(kj::ArrayPtr<const kj::byte> bytes, std::string* why) {
  if (bytes.size() > kMaxChannelMessage) {
    *why = "message too long";
    return std::nullopt;
  }
  kj::Array<capnp::word> words = wordsOf(bytes);
  if (words.size() == 0) {
    *why = "not a whole number of words";
    return std::nullopt;
  }
  try {
    capnp::FlatArrayMessageReader reader(words, childMessageOptions());
    return decodeChildMessage(reader.getRoot<ipc::DnsChildMessage>());
  } catch (const kj::Exception& e) {
    *why = e.getDescription().cStr();
    return std::nullopt;
  }
}

std::vector<kj::byte> learnResultMessage(const LearnResult& result) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<ipc::DnsSpawnerMessage>();
  if (result.learned) {
    root.setLearned(result.token);
  } else {
    root.setLearnFailed(result.token);
  }
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::vector<kj::byte>(bytes.begin(), bytes.end());
}

std::optional<LearnResult> readLearnResult(kj::ArrayPtr<const kj::byte> bytes) {
  if (bytes.size() > kMaxChannelMessage) return std::nullopt;
  kj::Array<capnp::word> words = wordsOf(bytes);
  if (words.size() == 0) return std::nullopt;
  try {
    capnp::FlatArrayMessageReader reader(words, childMessageOptions());
    auto root = reader.getRoot<ipc::DnsSpawnerMessage>();
    switch (root.which()) {
      case ipc::DnsSpawnerMessage::LEARNED:
        return LearnResult{root.getLearned(), true};
      case ipc::DnsSpawnerMessage::LEARN_FAILED:
        return LearnResult{root.getLearnFailed(), false};
      default:
        return std::nullopt;
    }
  } catch (const kj::Exception&) {
    return std::nullopt;
  }
}

}  // namespace cellos::dns
