#pragma once
// The broker's side of the event pipeline. An appended event is redacted (the configured
// `data` fields, before the signature covers them), signed by cellos-event-signer in a batch
// with the events of the same turn, and written in sequence order to the JSONL log with an
// fsync per batch. Its promise resolves once the event is durable: in the log, or — when the
// log cannot take it — in the dead-letter directory. Nothing is dropped silently: an event
// that cannot be signed, or that is still waiting when the broker stops, is dead-lettered
// unsigned. NATS JetStream is fed from the log by cellos-event-forwarder (see
// event-forwarder/), so a NATS outage never holds up or loses an event here.

#include "broker/jsonl_log.h"
#include "eventlog/dead_letter.h"
#include "ipc/signer.capnp.h"

#include <kj/async.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cellos::broker {

struct EventLogOptions {
  std::string hostId;
  std::vector<std::string> redactFields;  // top-level members of `data`
  // Test hook (crash tests): the N-th signed batch is held, never written, and a log line says
  // so, so that a test can kill the broker exactly between signing and writing. 0: off.
  uint64_t holdSignedBatch = 0;
};

class EventLog {
 public:
  EventLog(ipc::EventSigner::Client signer, JsonlLog& log,
           eventlog::DeadLetterDirectory& deadLetters, EventLogOptions options);
  // Dead-letters (unsigned) every event not yet durable: the broker is stopping.
  ~EventLog() noexcept(false);

  // Compares the signer's head with the log's last event before anything else is signed. If
  // events were signed after that line but never written (a broker killed between signing and
  // writing), appends a signed `log.v1.resumed` event declaring the gap (`cellos verify` checks
  // it). Rejects when the signer's chain is behind the log (its state was lost or belongs to
  // another log): appending would fork the chain.
  kj::Promise<void> resume();

  // Asks the signer for a last checkpoint over everything durable so far (the broker is
  // stopping) and appends it to the checkpoint file. Never rejects: a failure is logged.
  kj::Promise<void> finish();

  // Queues `event` (unsigned) for redaction, signing and writing. Resolves once it is durable.
  // Events appended in one turn of the event loop travel in one signing batch.
  kj::Promise<void> append(nlohmann::json event);

  const std::string& path() const { return log_.path(); }
  uint64_t written() const { return written_; }

  // The value a redacted field is replaced with.
  static constexpr const char* kRedacted = "[redacted]";

 private:
  struct Pending {
    std::string json;
    kj::Own<kj::PromiseFulfiller<void>> done;
  };
  using Batch = std::vector<Pending>;
  void scheduleFlush();
  kj::Promise<void> flushBatch();
  void deliver(Batch& batch, capnp::List<capnp::Data>::Reader signedEvents);
  void deadLetterUnsigned(Batch& batch, const std::string& reason, const kj::Exception* error);
  // Tells the signer every signed event up to lastDurable_ is durable (ipc/signer.capnp
  // written) and appends the checkpoint it may return. Never rejects.
  kj::Promise<void> reportWritten(bool lostAfter, bool final);

  ipc::EventSigner::Client signer_;
  JsonlLog& log_;
  eventlog::DeadLetterDirectory& deadLetters_;
  EventLogOptions options_;
  std::vector<Pending> pending_;
  std::shared_ptr<Batch> inFlight_;  // sent to the signer, not yet answered
  uint64_t signedBatches_ = 0;
  Batch held_;  // holdSignedBatch
  bool flushing_ = false;
  uint64_t written_ = 0;
  std::optional<uint64_t> lastDurable_;   // last sequence in the log or the dead letters
  std::optional<uint64_t> lastReported_;  // last one the signer was told about
  kj::Promise<void> flushTask_ = kj::READY_NOW;
};

// Replaces each of `fields` present at the top level of event["data"] with EventLog::kRedacted.
void redactData(nlohmann::json& event, const std::vector<std::string>& fields);

}  // namespace cellos::broker
