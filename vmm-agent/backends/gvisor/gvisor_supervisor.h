#pragma once
// The gVisor supervisor: pid 1 of a gvisor cell's pid, mount, network, uts and ipc namespaces,
// cloned by the spawner (gvisor_spawner.h) and following the pid-1 skeleton (cell/cell_init.h).
// It builds a root of its own (the host's top-level entries runsc needs, plus the cell's working
// directory and secrets tmpfs), mounts the /proc of its pid namespace (runsc reads /proc/<pid>
// of the pids it starts), brings up lo, waits for the start byte, runs `runsc run` with the
// workload's pipes, passes SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 on with `runsc kill --all`,
// and reports the workload's wait status. Runs with the spawner's privileges (root, no seccomp
// filter of ours); the sandbox is gVisor's.

#include "vmm-agent/backends/gvisor/gvisor_bundle.h"
#include "vmm-agent/backends/gvisor/gvisor_spawner.h"
#include "vmm-agent/cell/cell_init.h"

#include <nlohmann/json.hpp>
#include <string>

namespace cellos::vmm {

// What the spawner reads from the cell's bundle before it clones the supervisor (so a bundle
// that cannot be read is refused before any process exists).
struct SupervisorPlan {
  GvisorConfig config;
  std::string cellId;
  GvisorPaths paths;
  nlohmann::json oci;            // bundle/config.json as the launcher wrote it
  std::string workingDirectory;  // process.cwd
  std::string secretDelivery;    // kGvisorSecretsAnnotation: "", "file" or "env"
  uid_t workloadId = 0;          // process.user.uid (the cell's host id)
};
// Throws std::runtime_error when the bundle is missing or not what writeGvisorBundle writes.
SupervisorPlan loadSupervisorPlan(const GvisorConfig& config, const std::string& runDir,
                                  const std::string& cellId);

// The supervisor's whole life, in the cloned child. Never returns.
[[noreturn]] void runSupervisor(const SupervisorPlan& plan, InitChannels fds) noexcept;

}  // namespace cellos::vmm
