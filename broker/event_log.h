#pragma once
// The broker's side of the event pipeline: events are signed by cellos-event-signer in
// batches and appended, in sequence order, to the JSONL log with an fsync per batch. An event
// resolves its promise only once it is durable.

#include "ipc/signer.capnp.h"

#include <kj/async.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace cellos::broker {

class EventLog {
 public:
  // `fd` is the log, opened for append by whoever started the broker (it stays open; the
  // broker never needs the path). The signer is the only source of signatures.
  EventLog(ipc::EventSigner::Client signer, int fd, std::string path);

  // Queues `event` (unsigned) for signing and writing. Resolves once it is on disk. Events
  // appended in one turn of the event loop travel in one signing batch.
  kj::Promise<void> append(nlohmann::json event);

  const std::string& path() const { return path_; }
  uint64_t written() const { return written_; }

 private:
  struct Pending {
    std::string json;
    kj::Own<kj::PromiseFulfiller<void>> done;
  };
  void scheduleFlush();
  kj::Promise<void> flushBatch();
  void writeLines(capnp::List<capnp::Data>::Reader signedEvents);

  ipc::EventSigner::Client signer_;
  int fd_;
  std::string path_;
  std::vector<Pending> pending_;
  bool flushing_ = false;
  uint64_t written_ = 0;
  kj::Promise<void> flushTask_ = kj::READY_NOW;
};

}  // namespace cellos::broker
