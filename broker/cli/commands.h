#pragma once
// The `cellos` subcommands. Each returns the process exit status.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cellos::cli {

// Exit statuses of `run` besides the cell's own (same convention as `docker run`).
inline constexpr int kExitUsage = 2;           // invalid document or usage error
inline constexpr int kExitRunnerFailed = 125;  // the runner itself failed

struct RunOptions {
  std::string file;
  std::string eventsPath;
  std::string backend;
  std::string policyPath;  // host policy the broker enforces at admission; empty: none
  std::string stateDir = "/var/lib/cellos";
  std::string logLevel = "warn";
  std::string uplinkNetns;          // the VM launcher's --uplink-netns; empty: the host's namespace
  std::vector<std::string> redact;  // the broker's --redact fields
  uint64_t eventsMaxBytes = 0;      // the broker's --events-max-bytes (0: never rotate)
  std::string natsUrl;              // non-empty: publish the log to NATS after the run
  unsigned natsTimeout = 30;        // seconds the publishing may wait for the server
};
int runCommand(const RunOptions& options);

int validateCommand(const std::vector<std::string>& files);

struct VerifyOptions {
  std::vector<std::string> files;
  std::string keysetPath;  // default <stateDir>/signer/keyset.json
  std::string stateDir = "/var/lib/cellos";
  std::string deadLetterDir;  // default: <log>.dead-letter beside each log file, if present
  bool noChain = false;
  std::string checkpointPath;             // signed checkpoints the log must match (empty: none)
  std::optional<uint64_t> proveSequence;  // print the inclusion proof of this event
};
int verifyCommand(const VerifyOptions& options);

// Host-service mode: the broker runs as a daemon; these talk to its socket.
struct ServiceOptions {
  std::string socket = "/run/cellos/broker.sock";
};
// Submits a document; prints the run id (detached), or with `wait` streams the output and
// returns the cell's exit status like `run`.
int submitCommand(const ServiceOptions& options, const std::string& file, bool wait);
// Lists the caller's runs (every run for root).
int psCommand(const ServiceOptions& options);
// Prints the run's signed events from the broker's event log, one JSON line each.
int logsCommand(const ServiceOptions& options, const std::string& runId);
// Cancels a queued or running run.
int cancelCommand(const ServiceOptions& options, const std::string& runId);

// Reads a document file (at most 1 MiB + 1 byte, so the parser can refuse an oversized one
// with its own message). Throws with the path and reason.
std::string readDocumentFile(const std::string& path);

}  // namespace cellos::cli
