#pragma once
// One cell's lifecycle in the fixed phase order of the reference:
//   admission -> network_scope -> secrets -> lifecycle.started -> run -> export -> destroy
//   -> revoke -> lifecycle.destroyed
// A failure in any phase still runs destroy and revoke and still ends with
// lifecycle.destroyed (outcome: failed, failedPhase).

#include "broker/artifact_export.h"
#include "broker/event_log.h"
#include "broker/secret_broker.h"
#include "core/cloudevent.h"
#include "core/host_policy.h"
#include "core/spec.h"
#include "ipc/broker.capnp.h"
#include "ipc/dns.capnp.h"
#include "ipc/vmm.capnp.h"

#include <kj/async-io.h>

#include <map>
#include <optional>
#include <string>

namespace cellos::broker {

// What every run shares: the helpers, the log and the host policy.
struct BrokerContext {
  kj::Timer& timer;
  std::string hostId;
  ipc::VmmAgent::Client vmm;
  ipc::DnsHelper::Client dns;
  EventLog& events;
  const core::HostPolicy& policy;  // what admission grants; read once at start-up
  kj::Duration helperCallTimeout = 30 * kj::SECONDS;
  ArtifactExporter* exporter = nullptr;   // the local export target; null: exports fail
  const SecretBroker* secrets = nullptr;  // where secret values come from; null: none do
  // Testing seam (docs/operations.md, "Fault injection"): every run fails in this phase, after
  // which teardown runs as for any real failure. Empty unless the broker was started with both
  // --enable-test-faults and --test-fault-phase.
  std::string faultPhase;
  // Testing seam (docs/operations.md, "Fault injection"): every run stops for good in this
  // phase, once the phase's call to a helper is on its way, so that a test can kill a daemon
  // with that call in flight. Empty unless --enable-test-faults and --test-hold-phase.
  std::string holdPhase;
};

struct RunOutcome {
  bool succeeded = false;
  // Stopped by a cancel (a client's `cellos cancel`, Ctrl-C or release) before its command had
  // ended, or while it was still queued.
  bool cancelled = false;
  std::string failedPhase;
  std::string error;
  bool hasStatus = false;
  int exitCode = 0;
  int signal = 0;
  bool timedOut = false;
  uint64_t durationMicros = 0;
  uint64_t stdoutBytes = 0, stderrBytes = 0;
  bool outputTruncated = false;
};

// What `cellos ps`, `cellos submit --wait` and lifecycle.destroyed call the outcome:
// "cancelled", else "succeeded" (no phase failed) or "failed".
inline const char* outcomeName(const RunOutcome& outcome) {
  if (outcome.cancelled) return "cancelled";
  return outcome.succeeded ? "succeeded" : "failed";
}

class CellRun {
 public:
  CellRun(BrokerContext& context, core::CellDocument document, std::string specDigest,
          ipc::OutputSink::Client output);

  // Runs every phase; never rejects (failures are part of the outcome).
  kj::Promise<RunOutcome> execute();

  // Stops the workload (cancel): the run then proceeds through teardown.
  void cancel();

  const std::string& runId() const { return events_.runId; }
  const std::string& cellId() const { return document_.spec.id; }
  const std::optional<std::string>& correlationId() const { return events_.correlationId; }

 private:
  kj::Promise<void> emit(const std::string& family, int version, const std::string& verb,
                         nlohmann::json data);
  kj::Promise<void> phase(const char* name, kj::Function<kj::Promise<void>()> body);
  kj::Promise<void> createCell();
  kj::Promise<void> startDns();
  kj::Promise<void> runCommand();
  kj::Promise<void> deliverSecrets();
  kj::Promise<void> exportArtifacts();
  kj::Promise<void> exportArtifact(size_t index);
  kj::Promise<ExportedArtifact> copyArtifact(size_t index);
  kj::Promise<void> exportFailed(size_t index, std::string reason);
  kj::Promise<void> teardown();
  nlohmann::json timingsJson() const;
  void injectFault(const std::string& phaseName);
  // `call`, unless this is the hold phase (BrokerContext::holdPhase): then `call` still goes
  // out, and the run never continues after it.
  template <typename T>
  kj::Promise<T> holdIn(const char* phaseName, kj::Promise<T> call);
  void recordInjectedFault(const std::string& phaseName);

  BrokerContext& context_;
  core::CellDocument document_;
  std::string specDigest_;
  ipc::OutputSink::Client output_;
  core::CellEventContext events_;
  RunOutcome outcome_;
  std::optional<ipc::Cell::Client> cell_;
  std::optional<ipc::NetworkNamespace::Client> netns_;
  std::optional<ipc::DnsProxy::Client> dnsProxy_;
  nlohmann::json guestBoot_ = nlohmann::json::object();  // a VM cell's boot facts
  nlohmann::json network_ =
      nlohmann::json::object();                // what createCell built, for network.v1.scoped
  std::vector<std::string> hostDestinations_;  // the launcher's, for the DNS child (CIDR)
  std::string dnsBindAddress_ = "127.0.0.1";   // the backend's, for the DNS child
  std::vector<std::string> residue_;
  std::vector<std::pair<std::string, uint64_t>> timings_;  // phase -> µs, in order
  std::vector<std::string> materialized_;                  // secret names the cell received
  bool secretsSent_ = false;                 // a bundle went to the VM launcher: revoke at the end
  std::vector<std::string> exportFailures_;  // "<name>: <reason>", for the export phase's error
  bool cancelled_ = false;
  bool forced_ = false;  // the cell died without its init reporting a status
  kj::Promise<void> cancelTask_ = kj::READY_NOW;
};

}  // namespace cellos::broker
