#pragma once
// The gVisor spawner: its own process, forked by the launcher before the launcher installs its
// seccomp profile (runsc needs ptrace and a Go runtime's system calls, which that profile
// refuses), with no seccomp filter of ours: docs/security.md, "The gVisor spawner". It answers
// only its launcher, over a SOCK_SEQPACKET pair, one request at a time, and clones each cell's
// supervisor (gvisor_supervisor.h) following the pid-1 skeleton (cell/cell_init.h).
//
// Protocol (spawn_protocol.h): request "spawn <cellId>"; reply "ok <pid>" with the cell's fds
// attached (SCM_RIGHTS: pidfd, netns, stdout, stderr, start, status, working directory, and the
// secrets directory when the cell gets secrets), or "error <reason>" with none.

#include "vmm-agent/backends/gvisor/gvisor_bundle.h"
#include "vmm-agent/cell/cell_backend.h"

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace cellos::vmm {

struct GvisorConfig {
  std::string runsc = "/usr/bin/runsc";
  std::string platform = "ptrace";  // runsc --platform: ptrace | kvm (Debian's 0.0~20221219)
};

// Forks the spawner. Returns its pid; `launcherEnd` receives the launcher's end (CLOEXEC). The
// spawner exits when that end closes, and dies with the launcher (PDEATHSIG, checked once).
pid_t startGvisorSpawner(const GvisorConfig& config, const std::string& runDir, Fd& launcherEnd);

// Asks the spawner at `spawnerFd` for the supervisor of cell `cellId` (whose bundle exists and
// whose cgroup the caller created) and returns the cell once the supervisor is in the cgroup
// and has built its root, waiting for the start byte. Throws std::runtime_error with the
// spawner's (or the supervisor's own) reason; nothing of the supervisor is left then.
LaunchedCell spawnGvisorCell(int spawnerFd, const std::string& cellId);

}  // namespace cellos::vmm
