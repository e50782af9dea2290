// libFuzzer: one datagram on a DNS child's channel (dns-helper/child_channel.h), read as the
// spawner reads what its child sends (the child parses every packet the cell sends, so it is
// the least trusted process there is) and as the child reads its spawner's learn results.
// Whatever the bytes, a message is refused with a reason or read out whole: every record copy
// is itself a readable DnsQueryRecord, a learn request's addresses a readable message, and a
// learn result survives its own round trip.

#include "dns-helper/child_channel.h"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

using namespace cellos::dns;

template <typename Root>
void requireReadable(const kj::Array<capnp::word>& words) {
  try {
    capnp::FlatArrayMessageReader reader(words);
    capnp::MallocMessageBuilder copy;
    copy.setRoot(reader.getRoot<Root>());  // walks every pointer of it
  } catch (const kj::Exception&) {
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size);

  std::string why;
  std::optional<ChildMessage> message = readChildMessage(bytes, &why);
  if (!message) {
    if (why.empty()) abort();  // a refusal always says why
  } else {
    if (message->records.size() > kMaxChannelRecords) abort();
    for (const auto& record : message->records)
      requireReadable<cellos::ipc::DnsQueryRecord>(record);
    if (message->kind == ChildMessage::Kind::kLearn) {
      requireReadable<cellos::ipc::DnsLearnedAddresses>(message->learnAddresses);
    }
  }

  std::optional<LearnResult> result = readLearnResult(bytes);
  if (result) {
    std::vector<kj::byte> again = learnResultMessage(*result);
    std::optional<LearnResult> back = readLearnResult(kj::arrayPtr(again.data(), again.size()));
    if (!back || back->token != result->token || back->learned != result->learned) abort();
  }
  return 0;
}
