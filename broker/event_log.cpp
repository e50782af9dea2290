#include "broker/event_log.h"

#include "core/clock.h"
#include "core/log_verifier.h"
#include "core/uuid.h"
#include "core/verifiability.h"

#include <spdlog/spdlog.h>

#include <kj/debug.h>

namespace cellos::broker {

namespace {
constexpr size_t kMaxBatch = 512;

std::string describe(const kj::Exception& e) {
  return e.getDescription().cStr();
}
}  // namespace

void redactData(nlohmann::json& event, const std::vector<std::string>& fields) {
  auto data = event.find("data");
  if (data == event.end() || !data->is_object()) return;
  for (const auto& field : fields) {
    auto it = data->find(field);
    if (it != data->end()) *it = EventLog::kRedacted;
  }
}

EventLog::EventLog(ipc::EventSigner::Client signer, JsonlLog& log,
                   eventlog::DeadLetterDirectory& deadLetters, EventLogOptions options)
    : signer_(kj::mv(signer)), log_(log), deadLetters_(deadLetters), options_(std::move(options)) {}

EventLog::~EventLog() noexcept(false) {
  flushTask_ = kj::READY_NOW;  // no continuation runs while we empty the queues
  if (inFlight_) {
    deadLetterUnsigned(*inFlight_,
                       "the broker stopped while this event's signature was being requested; "
                       "if the signer signed it, the log declares the gap at its next start",
                       nullptr);
  }
  Batch rest;
  for (auto& p : pending_) rest.push_back(kj::mv(p));
  pending_.clear();
  deadLetterUnsigned(rest, "the broker stopped before this event was signed", nullptr);
}

kj::Promise<void> EventLog::resume() {
  return signer_.headRequest().send().then(
      [this](capnp::Response<ipc::EventSigner::HeadResults> head) -> kj::Promise<void> {
        std::optional<JsonlLog::LastEvent> last = log_.lastEvent();
        // Events after the log's last line may sit in the dead letters (the log could not
        // take them); the chain stands after the newest of those.
        if (const auto& dead = deadLetters_.lastSigned();
            dead && (!last || dead->sequence > last->sequence)) {
          last = JsonlLog::LastEvent{dead->sequence, dead->dssematerial};
        }
        if (!last) return kj::READY_NOW;  // a new log may start anywhere in the chain
        uint64_t next = head.getNextSequence();
        std::string prevLink = head.getPrevLink();
        KJ_REQUIRE(next > last->sequence,
                   "the event signer's chain is behind this log: its state was lost or belongs "
                   "to another log; appending would fork the chain (use a new log file)",
                   log_.path(), last->sequence, next);
        if (next == last->sequence + 1) {
          KJ_REQUIRE(prevLink == core::chainLink(last->dssematerial),
                     "the event signer's chain does not continue this log (another chain at the "
                     "same sequence); use a new log file",
                     log_.path(), last->sequence);
        }
        // The checkpoint tree resumes where the log does: what a predecessor wrote but did not
        // report enters it, what was signed after the log's last event never will.
        lastDurable_ = last->sequence;
        auto reported = reportWritten(/*lostAfter=*/true, /*final=*/false);
        if (next == last->sequence + 1) return reported;
        std::string reason = "events " + std::to_string(last->sequence + 1) + ".." +
                             std::to_string(next - 1) +
                             " were signed but never written to this log (the broker stopped "
                             "between signing and writing)";
        spdlog::warn("{}: {}; declaring the gap", log_.path(), reason);
        auto resumed = core::makeLogResumedEvent(options_.hostId, core::newUuidV7(),
                                                 core::formatRfc3339Micros(core::unixMicrosNow()),
                                                 last->sequence, last->dssematerial, reason);
        return reported.then(
            [this, resumed = kj::mv(resumed)]() mutable { return append(kj::mv(resumed)); });
      });
}

kj::Promise<void> EventLog::finish() {
  return reportWritten(/*lostAfter=*/false, /*final=*/true);
}

kj::Promise<void> EventLog::reportWritten(bool lostAfter, bool final) {
  if (!lastDurable_ || (!final && !lostAfter && lastReported_ == lastDurable_)) {
    return kj::READY_NOW;
  }
  auto request = signer_.writtenRequest();
  request.setThroughSequence(*lastDurable_);
  request.setLostAfter(lostAfter);
  request.setFinal(final);
  lastReported_ = lastDurable_;
  return request.send().then(
      [this](capnp::Response<ipc::EventSigner::WrittenResults> response) {
        std::string note = response.getCheckpoint();
        if (note.empty()) return;
        try {
          log_.appendCheckpoint(note);
        } catch (const kj::Exception& e) {
          // The log itself is intact; the next checkpoint covers these events too.
          spdlog::error("could not append a checkpoint: {}", describe(e));
        }
      },
      [](kj::Exception&& e) {
        spdlog::error("the signer did not take the written report: {}", describe(e));
      });
}

kj::Promise<void> EventLog::append(nlohmann::json event) {
  redactData(event, options_.redactFields);
  auto paf = kj::newPromiseAndFulfiller<void>();
  pending_.push_back({event.dump(), kj::mv(paf.fulfiller)});
  scheduleFlush();
  return kj::mv(paf.promise);
}

void EventLog::scheduleFlush() {
  if (flushing_) return;  // the running flush picks the new events up when it finishes
  flushing_ = true;
  // evalLater: let the current turn queue its other events so they share one batch.
  flushTask_ = kj::evalLater([this]() { return flushBatch(); }).eagerlyEvaluate(nullptr);
}

kj::Promise<void> EventLog::flushBatch() {
  if (pending_.empty()) {
    flushing_ = false;
    return kj::READY_NOW;
  }
  size_t count = std::min(pending_.size(), kMaxBatch);
  auto batch = std::make_shared<Batch>();
  for (size_t i = 0; i < count; ++i) batch->push_back(kj::mv(pending_[i]));
  pending_.erase(pending_.begin(), pending_.begin() + count);
  inFlight_ = batch;

  auto request = signer_.signRequest();
  auto list = request.initEvents(batch->size());
  for (size_t i = 0; i < batch->size(); ++i) {
    const std::string& json = (*batch)[i].json;
    list.set(i, kj::arrayPtr(reinterpret_cast<const capnp::byte*>(json.data()), json.size()));
  }
  return request.send()
      .then(
          [this, batch](capnp::Response<ipc::EventSigner::SignResults> response) {
            inFlight_.reset();
            deliver(*batch, response.getSigned());
          },
          [this, batch](kj::Exception&& e) {
            inFlight_.reset();
            spdlog::error("signing {} events failed: {}", batch->size(), describe(e));
            deadLetterUnsigned(*batch, "signing failed: " + describe(e), &e);
          })
      .then([this]() -> kj::Promise<void> {
        if (!held_.empty()) return kj::NEVER_DONE;  // test hook: nothing more is signed
        // Durable now: the signer may add the batch to its tree (and answer a checkpoint).
        return reportWritten(/*lostAfter=*/false, /*final=*/false).then([this]() {
          return flushBatch();
        });
      });
}

void EventLog::deliver(Batch& batch, capnp::List<capnp::Data>::Reader signedEvents) {
  if (signedEvents.size() != batch.size()) {
    auto e = KJ_EXCEPTION(FAILED, "the signer returned a different number of events",
                          signedEvents.size(), batch.size());
    deadLetterUnsigned(batch, describe(e), &e);
    return;
  }
  if (++signedBatches_ == options_.holdSignedBatch) {
    spdlog::warn("test hook: holding {} signed events before writing them", batch.size());
    for (auto& p : batch) held_.push_back(kj::mv(p));
    return;
  }
  std::vector<std::string> lines;
  lines.reserve(batch.size());
  for (auto event : signedEvents) {
    lines.emplace_back(reinterpret_cast<const char*>(event.begin()), event.size());
  }
  std::string failure;
  try {
    auto last = nlohmann::json::parse(lines.back());
    auto sequence = core::parseSequence(last.at("sequence").get<std::string>());
    KJ_REQUIRE(sequence != std::nullopt, "the signer returned a bad sequence");
    log_.append(lines, *sequence, last.at("dssematerial").get<std::string>());
    written_ += lines.size();
    lastDurable_ = *sequence;
    for (auto& p : batch) p.done->fulfill();
    return;
  } catch (const kj::Exception& e) {
    failure = describe(e);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  // The log could not take the batch (and holds none of it): each signed event goes to the
  // dead-letter directory, where `cellos verify` finds it to fill the sequence gap.
  spdlog::error("writing {} signed events to {} failed: {}", lines.size(), log_.path(), failure);
  for (size_t i = 0; i < batch.size(); ++i) {
    try {
      auto event = nlohmann::json::parse(lines[i]);
      auto sequence = core::parseSequence(event.value("sequence", ""));
      deadLetters_.writeEvent(event, "jsonl", "the event log could not take it: " + failure);
      // `cellos verify` puts a dead letter back in its place, so it is in the tree too.
      if (sequence) lastDurable_ = *sequence;
      batch[i].done->fulfill();
    } catch (const kj::Exception& e) {
      spdlog::critical("event lost: neither the log nor the dead-letter directory took it: {}",
                       describe(e));
      batch[i].done->reject(kj::cp(e));
    }
  }
}

void EventLog::deadLetterUnsigned(Batch& batch, const std::string& reason,
                                  const kj::Exception* error) {
  for (auto& p : batch) {
    try {
      deadLetters_.writeEvent(nlohmann::json::parse(p.json), "signer", reason);
    } catch (const kj::Exception& e) {
      spdlog::critical(
          "event lost: it was not signed and the dead-letter directory did not take "
          "it: {}",
          describe(e));
    } catch (const std::exception& e) {
      spdlog::critical("event lost: {}", e.what());
    }
    // Not signed means not part of the record: whoever waits on it learns that it failed.
    if (error != nullptr) {
      p.done->reject(kj::cp(*error));
    } else {
      p.done->reject(KJ_EXCEPTION(DISCONNECTED, "the broker stopped before the event was signed"));
    }
  }
}

}  // namespace cellos::broker
