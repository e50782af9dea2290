#pragma once
// Embedded mode (`cellos run`, as root): the CLI starts the four daemons as its children, each
// under its own user and in its own process group, in a private runtime directory, and stops
// them again when the cell is done — also after Ctrl-C.

#include "broker/cli/runtime_dir.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace cellos::cli {

struct EmbeddedOptions {
  std::string stateDir = "/var/lib/cellos";
  std::string eventsPath;  // default <stateDir>/events/events.jsonl
  std::string binDir;      // where the daemons are; default: beside this executable
  std::string logLevel = "warn";
  std::string policyPath;   // passed to the broker as --policy; empty: no host policy
  std::string uplinkNetns;  // passed to the VM launcher as --uplink-netns; empty: the host's
  std::vector<std::string> brokerArgs;  // further broker options (tests: --max-concurrent=N)
  std::vector<std::string> vmmArgs;     // further VM launcher options (tests: --cells-memory-max)
};

class EmbeddedSystem {
 public:
  explicit EmbeddedSystem(EmbeddedOptions options);
  ~EmbeddedSystem();  // stop() if still running

  // Creates the runtime directory and starts signer, VM launcher, DNS helper, then broker,
  // each only after the previous one reported ready. Throws with the daemon's name (and its
  // exit status, if it died) on failure, after stopping whatever had started.
  void start();

  // Stops the daemons in reverse order (SIGTERM, then SIGKILL after a grace period), reaps
  // them and removes the runtime directory. Idempotent.
  void stop();

  std::string brokerSocket() const { return runtimeDir_ + "/broker.sock"; }
  const std::string& eventsPath() const { return eventsPath_; }
  const std::string& runtimeDir() const { return runtimeDir_; }

  // Starts `name` (e.g. "cellos-broker") again with the arguments it was first started with,
  // after it died or was killed (the others keep running). Throws like start().
  void restart(const std::string& name);

  // Pids of the running daemons, in start order (signer, vmm-agent, dns-helper, broker).
  std::vector<pid_t> pids() const;

  // After stop(): runs cellos-event-forwarder in drain mode on the event log, publishing to
  // NATS JetStream at `natsUrl` every event not yet delivered (its cursor is kept in
  // <stateDir>/forwarder, so what a failed drain left is published by the next one). Returns
  // the forwarder's exit status: 0 all published, 3 server unreachable for `timeoutSeconds`.
  int publishToNats(const std::string& natsUrl, unsigned timeoutSeconds);

 private:
  struct Daemon {
    std::string name;
    pid_t pid = -1;
    std::vector<std::string> args;  // as launched, for restart()
  };
  void launch(const std::string& name, std::vector<std::string> args);

  EmbeddedOptions options_;
  std::string runtimeDir_;
  HeldLock runtimeLock_;  // held while runtimeDir_ exists: a live run's directory is never reaped
  std::string eventsPath_;
  std::vector<Daemon> daemons_;
};

// Directory of the running executable (to find the daemons installed beside it).
std::string selfDirectory();

}  // namespace cellos::cli
