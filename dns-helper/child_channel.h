#pragma once
// The messages on a per-cell DNS child's channel (a SOCK_SEQPACKET pair with its spawner; one
// serialized Cap'n Proto message per datagram, no segment table, see ipc/dns.capnp), read here
// and nowhere else so that both directions can be fuzzed alone (tests/fuzz/fuzz_dns_channel).
//
// The child is the least trusted process in the system (it parses every packet the cell sends),
// so the spawner reads the child's messages as hostile: a datagram that is not a whole message
// within kChildMessageOptions' limits is refused with its reason, and nothing of it is acted on.
// The spawner is trusted by the child; its messages are still read within limits.

#include "ipc/dns.capnp.h"

#include <capnp/message.h>
#include <kj/array.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cellos::dns {

// The largest datagram either side sends (a child's batch of records, the spawner's config).
inline constexpr size_t kMaxChannelMessage = 64 * 1024;
// The most audit records a child puts in one datagram (< 64 KiB even at 253-byte names); a
// longer batch is refused, so a message of empty records cannot make the spawner copy
// thousands of them.
inline constexpr size_t kMaxChannelRecords = 64;

// Limits for a child's message: at most the datagram's words, and no deeper than
// message > learn > addresses > list > data.
capnp::ReaderOptions childMessageOptions();

// What one child message asks of its spawner, read out whole: every record copied (as a
// message of its own) and every list walked, so a message that breaks the reader's limits
// anywhere is refused before the spawner acts on any part of it.
struct ChildMessage {
  enum class Kind { kReady, kFailed, kRecords, kLearn, kUnknown } kind = Kind::kUnknown;
  uint32_t readyPid = 0;                        // kReady: the child's pid
  std::string failure;                          // kFailed: why its setup failed
  std::vector<kj::Array<capnp::word>> records;  // kRecords: DnsQueryRecord messages, in order
  uint64_t droppedBefore = 0;                   // kRecords: the records' droppedBefore, summed
  uint64_t learnToken = 0;                      // kLearn
  kj::Array<capnp::word> learnAddresses;        // kLearn: a DnsLearnedAddresses message
};

// Reads the datagram `bytes` (as received: any length, any alignment). nullopt when it is not a
// message a child may send, with the reason in `why`.
std::optional<ChildMessage> readChildMessage(kj::ArrayPtr<const kj::byte> bytes, std::string* why);

// The spawner's answer to a learn request: the token and whether the addresses were added.
struct LearnResult {
  uint64_t token = 0;
  bool learned = false;
};
std::vector<kj::byte> learnResultMessage(const LearnResult& result);
// nullopt for anything that is not one whole DnsSpawnerMessage.
std::optional<LearnResult> readLearnResult(kj::ArrayPtr<const kj::byte> bytes);

}  // namespace cellos::dns
