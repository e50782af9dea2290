#include "broker/broker_server.h"

#include "core/clock.h"
#include "core/cloudevent.h"
#include "core/host_policy.h"
#include "core/spec.h"
#include "core/uuid.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include <kj/debug.h>

namespace cellos::broker {

BrokerState::BrokerState(BrokerContext& context, size_t maxConcurrent, RunJournal* journal)
    : context(context),
      tasks(*this),
      maxConcurrent_(std::max<size_t>(1, maxConcurrent)),
      journal_(journal) {}

void BrokerState::taskFailed(kj::Exception&& exception) {
  spdlog::error("run task failed: {}", exception.getDescription().cStr());
}

void BrokerState::admit(std::shared_ptr<RunRecord> record) {
  auto paf = kj::newPromiseAndFulfiller<RunOutcome>();
  record->done = paf.promise.fork();
  record->finish = kj::mv(paf.fulfiller);
  if (journal_ != nullptr) {
    // Durable before the run can do anything: a broker that dies from here on is followed by
    // one that closes this run's event stream.
    journal_->admitted({record->run->runId(), record->run->cellId(), record->run->correlationId(),
                        record->submittedMicros});
  }
  runs_[record->run->runId()] = record;
  queue_.push_back(std::move(record));
  schedule();
}

void BrokerState::schedule() {
  for (auto it = queue_.begin(); it != queue_.end() && running_ < maxConcurrent_;) {
    if (activeCells_.count((*it)->run->cellId())) {
      ++it;  // the same cell id is running: keep its place in the queue
      continue;
    }
    auto record = *it;
    it = queue_.erase(it);
    start(std::move(record));
  }
}

void BrokerState::start(std::shared_ptr<RunRecord> record) {
  record->state = RunRecord::State::kRunning;
  activeCells_.insert(record->run->cellId());
  ++running_;
  // The task owns the run until it has finished, whether or not anybody still waits on it.
  tasks.add(record->run->execute().then(
      [this, record](RunOutcome outcome) { finished(record, std::move(outcome)); }));
}

void BrokerState::finished(const std::shared_ptr<RunRecord>& record, RunOutcome outcome) {
  if (record->state == RunRecord::State::kRunning) {
    activeCells_.erase(record->run->cellId());
    --running_;
  }
  record->state = RunRecord::State::kFinished;
  record->outcome = outcome;
  if (journal_ != nullptr) {
    try {
      journal_->finished(record->run->runId());
    } catch (const kj::Exception& e) {
      spdlog::error("run {}: cannot clear its journal entry: {}", record->run->runId(),
                    e.getDescription().cStr());
    }
  }
  record->finish->fulfill(std::move(outcome));
  finishedOrder_.push_back(record->run->runId());
  while (finishedOrder_.size() > kKeptFinishedRuns) {
    runs_.erase(finishedOrder_.front());
    finishedOrder_.pop_front();
  }
  schedule();
}

bool BrokerState::cancel(const std::shared_ptr<RunRecord>& record) {
  switch (record->state) {
    case RunRecord::State::kQueued: {
      auto it = std::find(queue_.begin(), queue_.end(), record);
      if (it != queue_.end()) queue_.erase(it);
      RunOutcome outcome;
      outcome.cancelled = true;
      outcome.failedPhase = "admission";
      outcome.error = "cancelled while queued";
      finished(record, std::move(outcome));
      return true;
    }
    case RunRecord::State::kRunning:
      record->run->cancel();
      return true;
    case RunRecord::State::kFinished:
      return false;
  }
  return false;
}

std::shared_ptr<RunRecord> BrokerState::find(const std::string& runId, uid_t uid) const {
  auto it = runs_.find(runId);
  if (it == runs_.end() || (uid != 0 && it->second->owner != uid)) return nullptr;
  return it->second;
}

std::vector<std::shared_ptr<RunRecord>> BrokerState::visibleTo(uid_t uid) const {
  std::vector<std::shared_ptr<RunRecord>> out;
  for (const auto& [id, record] : runs_) {
    if (uid == 0 || record->owner == uid) out.push_back(record);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->submittedMicros > b->submittedMicros; });
  return out;
}

namespace {

// As `cellos run` and `submit --wait` exit (broker/cli/client.h, runExitStatus): 125 when the
// runner failed, in any phase but export (a failed export is the command's).
int shellStatus(const RunOutcome& outcome) {
  if (!outcome.hasStatus) return 125;
  if (!outcome.cancelled && !outcome.succeeded && outcome.failedPhase != "export") return 125;
  return outcome.signal != 0 ? 128 + outcome.signal : outcome.exitCode;
}

void fillSummary(const RunRecord& record, ipc::RunSummary::Builder summary) {
  summary.setRunId(record.run->runId());
  summary.setCellId(record.run->cellId());
  summary.setOwnerUid(record.owner);
  summary.setSubmittedMicros(record.submittedMicros);
  switch (record.state) {
    case RunRecord::State::kQueued:
      summary.setState("queued");
      break;
    case RunRecord::State::kRunning:
      summary.setState("running");
      break;
    case RunRecord::State::kFinished:
      summary.setState("finished");
      summary.setOutcome(outcomeName(*record.outcome));
      summary.setHasStatus(record.outcome->hasStatus);
      summary.setExitCode(shellStatus(*record.outcome));
      break;
  }
}

// Stands between the VM launcher's output relay and the submitting client. The relay must never
// see a failure (it would stop draining the cell's pipes): a client that went away, or a
// detached run, simply stops receiving output.
class ForwardingSink final : public ipc::OutputSink::Server {
 public:
  explicit ForwardingSink(kj::Maybe<ipc::OutputSink::Client> client) : client_(kj::mv(client)) {}

  kj::Promise<void> write(WriteContext context) override {
    KJ_IF_MAYBE (client, client_) {
      auto params = context.getParams();
      auto request = client->writeRequest();
      request.setStream(params.getStream());
      request.setData(params.getData());
      return request.send().catch_([this](kj::Exception&&) { client_ = nullptr; });
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> done(DoneContext) override {
    KJ_IF_MAYBE (client, client_) {
      return client->doneRequest().send().ignoreResult().catch_([](kj::Exception&&) {});
    }
    return kj::READY_NOW;
  }

 private:
  kj::Maybe<ipc::OutputSink::Client> client_;
};

class RunServer final : public ipc::Run::Server {
 public:
  RunServer(BrokerState& state, std::shared_ptr<RunRecord> record, bool cancelOnRelease)
      : state_(state),
        stateAlive_(state.aliveFlag()),
        record_(std::move(record)),
        cancelOnRelease_(cancelOnRelease) {}

  // The submitting client went away (closed the connection or dropped the capability) without
  // detaching: nobody can see the output any more, so stop the workload; teardown still runs.
  // Not once the broker's state is gone (BrokerState::aliveFlag): the broker is exiting, and
  // its cells go with its connection to the VM launcher.
  ~RunServer() noexcept(false) {
    if (cancelOnRelease_ && *stateAlive_) state_.cancel(record_);
  }

  kj::Promise<void> info(InfoContext context) override {
    context.getResults().setRunId(record_->run->runId());
    context.getResults().setCellId(record_->run->cellId());
    return kj::READY_NOW;
  }

  kj::Promise<void> summary(SummaryContext context) override {
    fillSummary(*record_, context.getResults().initSummary());
    return kj::READY_NOW;
  }

  kj::Promise<void> wait(WaitContext context) override {
    return record_->done.addBranch().then([this, context](RunOutcome outcome) mutable {
      cancelOnRelease_ = false;
      auto result = context.getResults().initResult();
      result.setOutcome(outcomeName(outcome));
      result.setFailedPhase(outcome.failedPhase);
      result.setError(outcome.error);
      result.setHasStatus(outcome.hasStatus);
      auto status = result.initStatus();
      status.setExitCode(outcome.exitCode);
      status.setSignal(outcome.signal);
      status.setTimedOut(outcome.timedOut);
      status.setDurationMicros(outcome.durationMicros);
      status.setStdoutBytes(outcome.stdoutBytes);
      status.setStderrBytes(outcome.stderrBytes);
      status.setOutputTruncated(outcome.outputTruncated);
    });
  }

  kj::Promise<void> cancel(CancelContext context) override {
    context.getResults().setAlreadyFinished(!state_.cancel(record_));
    return kj::READY_NOW;
  }

 private:
  BrokerState& state_;
  std::shared_ptr<const bool> stateAlive_;
  std::shared_ptr<RunRecord> record_;
  bool cancelOnRelease_;
};

}  // namespace

kj::Promise<void> BrokerServer::list(ListContext context) {
  auto runs = state_.visibleTo(peer_.uid);
  auto list = context.getResults().initRuns(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) fillSummary(*runs[i], list[i]);
  return kj::READY_NOW;
}

kj::Promise<void> BrokerServer::open(OpenContext context) {
  std::string runId = context.getParams().getRunId();
  auto record = state_.find(runId, peer_.uid);
  // The same answer for "no such run" and "not yours": ids of other users' runs are not
  // disclosed.
  KJ_REQUIRE(record != nullptr, "no such run (or not yours)", runId);
  context.getResults().setRun(kj::heap<RunServer>(state_, record, /*cancelOnRelease=*/false));
  return kj::READY_NOW;
}

kj::Promise<void> BrokerServer::eventLog(EventLogContext context) {
  context.getResults().setPath(state_.context.events.path());
  return kj::READY_NOW;
}

kj::Promise<void> BrokerServer::submit(SubmitContext context) {
  auto params = context.getParams();
  auto bytes = params.getDocument();
  std::string_view text(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  core::ParseResult parsed = core::parseCellDocument(text);
  if (parsed.document && params.getBackend().size() > 0) {
    // `cellos run --backend`: where a document that names no backend runs (the host policy is
    // then held to that backend, as to the document's own).
    core::ParseResult chosen = core::chooseBackend(parsed, params.getBackend().cStr());
    parsed.document = std::move(chosen.document);
    parsed.violations = std::move(chosen.violations);
  }
  if (parsed.document) {
    // A well-formed document that asks for more than this host grants is refused the same way,
    // with every violation at once, before anything is created.
    std::vector<core::Violation> refused =
        core::checkHostPolicy(state_.context.policy, *parsed.document);
    if (!refused.empty()) {
      parsed.document.reset();
      parsed.violations = std::move(refused);
    }
  }
  if (!parsed.document) {
    auto list = context.getResults().initViolations(parsed.violations.size());
    nlohmann::json violations = nlohmann::json::array();
    for (size_t i = 0; i < parsed.violations.size(); ++i) {
      list.set(i, core::formatViolation(parsed.violations[i]));
      violations.push_back(
          {{"path", parsed.violations[i].path}, {"message", parsed.violations[i].message}});
    }
    spdlog::info("rejected a document from uid {}: {} violations", peer_.uid,
                 parsed.violations.size());
    // The rejected event names the cell when the document has a usable id.
    core::CellEventContext event;
    event.hostId = state_.context.hostId;
    event.runId = core::newUuidV7();
    event.cellId = "unknown";
    if (parsed.canonicalJson.is_object()) {
      auto spec = parsed.canonicalJson.find("spec");
      if (spec != parsed.canonicalJson.end() && spec->is_object()) {
        auto id = spec->find("id");
        if (id != spec->end() && id->is_string() && id->get<std::string>().size() <= 63) {
          event.cellId = id->get<std::string>();
        }
      }
    }
    auto rejected = core::makeCellEvent(event, core::eventType("admission", 1, "rejected"),
                                        {{"violations", violations}});
    return state_.context.events.append(kj::mv(rejected));
  }
  // The digest covers the document as written, before a chosen backend or the host's defaults.
  std::string digest = core::specDigest(parsed);
  // What the document left open runs under the host's caps, not unbounded.
  core::applyHostPolicyDefaults(state_.context.policy, *parsed.document);
  auto record = std::make_shared<RunRecord>();
  // A detached run's submitter is about to disconnect: its output goes nowhere.
  kj::Maybe<ipc::OutputSink::Client> client;
  if (!params.getDetach()) client = params.getOutput();
  record->run = std::make_unique<CellRun>(state_.context, std::move(*parsed.document), digest,
                                          kj::heap<ForwardingSink>(kj::mv(client)));
  record->owner = peer_.uid;
  record->submittedMicros = core::unixMicrosNow();
  spdlog::info("uid {} submitted cell {} (run {})", peer_.uid, record->run->cellId(),
               record->run->runId());
  state_.admit(record);
  context.getResults().setRun(
      kj::heap<RunServer>(state_, std::move(record), /*cancelOnRelease=*/!params.getDetach()));
  return kj::READY_NOW;
}

kj::Promise<void> closeInterruptedRuns(RunJournal& journal, EventLog& events,
                                       const std::string& hostId) {
  kj::Vector<kj::Promise<void>> writes;
  for (const JournalEntry& entry : journal.leftovers()) {
    core::CellEventContext context;
    context.hostId = hostId;
    context.cellId = entry.cellId.empty() ? "unknown" : entry.cellId;
    context.runId = entry.runId;
    context.correlationId = entry.correlationId;
    nlohmann::json data = {
        {"outcome", "failed"},
        {"terminalState", "forced"},
        {"failedPhase", "interrupted"},
        {"error",
         "the broker stopped during this run; the VM launcher and the DNS helper tore the cell "
         "down when the broker's connection closed"},
    };
    spdlog::warn("run {} (cell {}) was interrupted by a broker restart; closing its events",
                 entry.runId, context.cellId);
    std::string runId = entry.runId;
    writes.add(events
                   .append(core::makeCellEvent(
                       context, core::eventType("lifecycle", 1, "destroyed"), kj::mv(data)))
                   .then([&journal, runId]() { journal.finished(runId); }));
  }
  return kj::joinPromises(writes.releaseAsArray());
}

}  // namespace cellos::broker
