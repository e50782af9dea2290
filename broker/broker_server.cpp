#include "broker/broker_server.h"

#include "core/cloudevent.h"
#include "core/host_policy.h"
#include "core/spec.h"
#include "core/uuid.h"

#include <spdlog/spdlog.h>

#include <kj/debug.h>

namespace cellos::broker {

void BrokerState::taskFailed(kj::Exception&& exception) {
  spdlog::error("run task failed: {}", exception.getDescription().cStr());
}

namespace {

// A run, shared by the Run capability and the task that executes it.
struct RunRecord {
  std::unique_ptr<CellRun> run;
  kj::ForkedPromise<RunOutcome> outcome = nullptr;
};

class RunServer final : public ipc::Run::Server {
 public:
  explicit RunServer(std::shared_ptr<RunRecord> record) : record_(std::move(record)) {}

  // The client went away (closed the connection or dropped the capability): nobody can see
  // the output any more, so stop the workload; teardown still runs to completion.
  ~RunServer() noexcept(false) {
    if (!finished_) record_->run->cancel();
  }

  kj::Promise<void> info(InfoContext context) override {
    context.getResults().setRunId(record_->run->runId());
    context.getResults().setCellId(record_->run->cellId());
    return kj::READY_NOW;
  }

  kj::Promise<void> wait(WaitContext context) override {
    return record_->outcome.addBranch().then([this, context](RunOutcome outcome) mutable {
      finished_ = true;
      auto result = context.getResults().initResult();
      result.setOutcome(outcome.succeeded ? "succeeded" : "failed");
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
    record_->run->cancel();
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<RunRecord> record_;
  bool finished_ = false;
};

}  // namespace

kj::Promise<void> BrokerServer::submit(SubmitContext context) {
  auto params = context.getParams();
  auto bytes = params.getDocument();
  std::string_view text(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  core::ParseResult parsed = core::parseCellDocument(text);
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
  std::string digest = core::specDigest(parsed);
  // What the document left open runs under the host's caps, not unbounded.
  core::applyHostPolicyDefaults(state_.context.policy, *parsed.document);
  auto record = std::make_shared<RunRecord>();
  record->run = std::make_unique<CellRun>(state_.context, std::move(*parsed.document), digest,
                                          params.getOutput());
  spdlog::info("uid {} submitted cell {} (run {})", peer_.uid, record->run->cellId(),
               record->run->runId());
  record->outcome = record->run->execute().fork();
  // The task owns the run until it has finished, whether or not anybody still waits on it.
  state_.tasks.add(record->outcome.addBranch().ignoreResult().attach(kj::heap(record)));
  context.getResults().setRun(kj::heap<RunServer>(record));
  return kj::READY_NOW;
}

}  // namespace cellos::broker
