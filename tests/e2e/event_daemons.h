#pragma once
// The four daemons started one by one with the options an event-pipeline test needs (log
// rotation, dead letters, redaction, a test hook), each killable on its own with SIGKILL and
// restartable on the same state: what `cellos run` does, taken apart. Also a small client that
// submits documents to the broker, and helpers to read and verify the log.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cellos::testing {

class EventDaemons {
 public:
  // `stateDir`: signer state under <stateDir>/signer, the log at <stateDir>/events/events.jsonl.
  explicit EventDaemons(std::string stateDir);
  ~EventDaemons();  // stops everything still running, removes the runtime directory

  // Each start waits for the daemon's readiness byte (bounded) and throws with its log when it
  // does not come. `extra` are added options; `env` the daemon's environment.
  void startSigner(std::vector<std::string> extra = {}, std::vector<std::string> env = {});
  void startHelpers();  // vmm-agent and dns-helper
  void startBroker(std::vector<std::string> extra = {}, std::vector<std::string> env = {});
  // cellos-event-forwarder following the broker's log (its cursor under <stateDir>/forwarder).
  void startForwarder(const std::string& natsUrl, std::vector<std::string> extra = {});
  void startAll(std::vector<std::string> brokerExtra = {}) {
    startSigner();
    startHelpers();
    startBroker(std::move(brokerExtra));
  }

  // The next start of `name` runs with RLIMIT_FSIZE = `bytes` (0: unlimited again), so that its
  // writes past that size fail (EFBIG).
  void setFileSizeLimit(const std::string& name, uint64_t bytes) { fileSizeLimits_[name] = bytes; }

  // SIGTERM and wait (then SIGKILL after 10 s); returns the wait status. No-op if not running.
  int stop(const std::string& name);
  void stopAll();  // every daemon, the forwarder first
  // SIGKILL and reap.
  void kill9(const std::string& name);
  bool running(const std::string& name);
  // The wait status of the daemon's last exit seen by stop(), kill9() or running(); -1 if none.
  int lastStatus(const std::string& name) const;
  pid_t pid(const std::string& name) const;

  // Everything the daemon wrote to stderr so far (across restarts).
  std::string log(const std::string& name) const;
  // Waits (bounded) until the daemon's log contains `needle`.
  bool waitForLog(const std::string& name, const std::string& needle,
                  std::chrono::milliseconds timeout);

  const std::string& stateDir() const { return stateDir_; }
  std::string signerDir() const { return stateDir_ + "/signer"; }
  std::string eventsPath() const { return stateDir_ + "/events/events.jsonl"; }
  std::string deadLetterDir() const { return eventsPath() + ".dead-letter"; }
  std::string socket(const std::string& name) const;
  const std::string& runtimeDir() const { return runtimeDir_; }

 private:
  void launch(const std::string& name, const std::string& binary, std::vector<std::string> args,
              std::vector<std::string> env);

  std::string stateDir_;
  std::string runtimeDir_;
  std::map<std::string, pid_t> pids_;
  std::map<std::string, int> statuses_;
  std::map<std::string, uint64_t> fileSizeLimits_;
};

// What submitting one document gave back.
struct Submission {
  bool delivered = false;  // the call returned (the broker answered)
  std::vector<std::string> violations;
  std::string error;    // the call failed: why
  std::string outcome;  // for a run that was waited on
  int exitCode = -1;
};

// Submits each document on one connection, all at once (so their events share signing
// batches), and waits (bounded) for every answer. With `waitForRuns`, also waits for each
// admitted run to finish.
std::vector<Submission> submitDocuments(const std::string& brokerSocket,
                                        const std::vector<std::string>& documents,
                                        bool waitForRuns = false);

// A document the broker refuses at admission (one admission.v1.rejected event each), naming
// the cell `id` so its event can be told apart.
std::string rejectedDocument(const std::string& id);

// Runs the real `cellos verify` (from the build) and returns exit status and stdout+stderr.
struct VerifyResult {
  int status;
  std::string out;
};
VerifyResult cellosVerify(const std::vector<std::string>& args);

// The log's files in chain order: rotated ones (sorted), then the current one.
std::vector<std::string> logFiles(const std::string& eventsPath);

// Path of a built binary.
std::string binary(const std::string& name);

// Runs a shell command (bounded by `timeout`), returning its exit status and combined output.
VerifyResult runShell(const std::string& command,
                      std::chrono::seconds timeout = std::chrono::seconds(120));

}  // namespace cellos::testing
