#pragma once
// The broker's client API (broker.sock): submit a document, list, follow, wait for and cancel
// runs. Runs beyond the concurrency limit wait in a queue; two runs of the same cell id never
// overlap (the id names the cell's cgroup and directories).

#include "broker/cell_run.h"
#include "broker/run_journal.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace cellos::broker {

// One submitted run, shared by the registry, the Run capabilities and the executing task.
struct RunRecord {
  enum class State { kQueued, kRunning, kFinished };

  std::unique_ptr<CellRun> run;
  uid_t owner = 0;
  uint64_t submittedMicros = 0;
  State state = State::kQueued;
  std::optional<RunOutcome> outcome;  // set when finished
  kj::ForkedPromise<RunOutcome> done = nullptr;
  kj::Own<kj::PromiseFulfiller<RunOutcome>> finish;
};

class BrokerState : private kj::TaskSet::ErrorHandler {
 public:
  // At most `maxConcurrent` cells run at once (at least 1). With a journal, every run is
  // recorded there from admission until its destroyed event is durable.
  BrokerState(BrokerContext& context, size_t maxConcurrent = 4, RunJournal* journal = nullptr);
  ~BrokerState() noexcept(false) { *alive_ = false; }

  // False once this state is gone. Cap'n Proto decides when a client's Run capability is
  // released: one whose call was in flight when its client died can be released by the event
  // loop's own destructor, after this state (on serve()'s stack) has gone. Such a capability
  // holds this flag and touches nothing when it is false.
  std::shared_ptr<const bool> aliveFlag() const { return alive_; }

  BrokerContext& context;
  kj::TaskSet tasks;

  // Registers a new run and starts it as soon as a slot (and its cell id) is free.
  void admit(std::shared_ptr<RunRecord> record);
  // Cancels a run: a queued one finishes at once as cancelled, a running one is stopped and
  // then torn down as usual. Idempotent. False when the run had already finished.
  bool cancel(const std::shared_ptr<RunRecord>& record);
  // A run by id when `uid` may see it (its owner, or root).
  std::shared_ptr<RunRecord> find(const std::string& runId, uid_t uid) const;
  // The runs `uid` may see, newest first.
  std::vector<std::shared_ptr<RunRecord>> visibleTo(uid_t uid) const;

  // Finished runs kept for `cellos ps` / `cellos logs`, oldest dropped first.
  static constexpr size_t kKeptFinishedRuns = 1000;

 private:
  void taskFailed(kj::Exception&& exception) override;
  void schedule();
  void start(std::shared_ptr<RunRecord> record);
  void finished(const std::shared_ptr<RunRecord>& record, RunOutcome outcome);

  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  size_t maxConcurrent_;
  RunJournal* journal_;
  size_t running_ = 0;
  std::deque<std::shared_ptr<RunRecord>> queue_;
  std::map<std::string, std::shared_ptr<RunRecord>> runs_;  // by run id
  std::deque<std::string> finishedOrder_;
  std::set<std::string> activeCells_;
};

class BrokerServer final : public ipc::Broker::Server {
 public:
  BrokerServer(BrokerState& state, ipc::PeerCredentials peer) : state_(state), peer_(peer) {}
  kj::Promise<void> submit(SubmitContext context) override;
  kj::Promise<void> list(ListContext context) override;
  kj::Promise<void> open(OpenContext context) override;
  kj::Promise<void> eventLog(EventLogContext context) override;

 private:
  BrokerState& state_;
  ipc::PeerCredentials peer_;
};

// Closes the event streams of runs a previous broker left unfinished (see RunJournal): each
// gets lifecycle.destroyed with outcome failed and terminalState forced, then leaves the
// journal. Resolves when every such event is durable.
kj::Promise<void> closeInterruptedRuns(RunJournal& journal, EventLog& events,
                                       const std::string& hostId);

}  // namespace cellos::broker
