#pragma once
// The gvisor backend: one cell is one gVisor sandbox (`runsc run`), its workload's system calls
// answered by gVisor's Sentry instead of the host kernel.
//
// What it shares with the linux backend (linux_cell.h), so the rest of the agent cannot tell the
// two apart: the same CellLaunch, the same LaunchedCell fds (start byte, raw wait status,
// stdout/stderr pipes, a pidfd to signal, the network namespace), the same cgroup leaves
// (cgroup.h: the limits are written by the same code, v1 or v2), the same veth + nftables scope
// and DNS helper (the cell's network namespace is ours, and runsc runs in it with
// --network=host, so its sockets are ordinary host sockets in that namespace), the same record
// and reaping.
//
// How a cell runs. The launcher prepares the cell directory <cellDir> (gvisorBundle below): a
// read-only root made of bind mounts (the host's /usr and /etc, or a registered image's
// entries), a working directory on the host (<cellDir>/work, bound at the document's
// workingDirectory, owned by the cell's host id) and config.json. The gVisor spawner, a process
// the launcher forks before it installs its seccomp profile (runsc needs ptrace, which that
// profile refuses), clones the cell's *supervisor* into new pid, mount, network, uts and ipc
// namespaces. The supervisor is pid 1 there: it mounts a /proc of its own (runsc reads
// /proc/<pid> of the pids it starts), brings up lo, waits for the start byte, runs `runsc run`
// with the workload's pipes, passes SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 on with `runsc kill
// --all`, and writes the wait status. SIGKILL to the supervisor ends its pid namespace, so the
// sandbox, the gofer and every runsc process die with it: nothing of a cell outlives its
// supervisor, which is also why teardown never runs `runsc delete` from outside (the pids in
// runsc's state are pids of the cell's namespace; from the host they would name other
// processes).

#include "vmm-agent/backends/gvisor/gvisor_bundle.h"
#include "vmm-agent/backends/gvisor/gvisor_spawner.h"
#include "vmm-agent/cell/cell_backend.h"

#include <memory>
#include <string>

namespace cellos::vmm {

// The gvisor backend behind the seam: starts the spawner now (the caller has not installed its
// seccomp profile yet), and launches each cell as bundle + cgroup + supervisor.
std::unique_ptr<CellBackend> makeGvisorBackend(const GvisorConfig& config,
                                               const std::string& runDir);

}  // namespace cellos::vmm
