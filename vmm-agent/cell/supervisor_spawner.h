#pragma once
// A supervisor spawner: a process of its own, forked by the launcher before the launcher installs
// its seccomp profile, for a backend whose cells' pid 1 (a *supervisor*) runs a program that
// profile refuses (runsc needs ptrace and a Go runtime; QEMU needs its own system calls and
// KVM's ioctls). It runs with no seccomp filter of ours (docs/security.md, "The gVisor
// spawner" and "The microvm backend"; a microvm supervisor installs the vm-supervisor profile
// itself before it reads a guest byte), answers only its launcher, over a SOCK_SEQPACKET pair, one request at a time, and
// builds each cell through the backend's factory, which clones the supervisor following the
// pid-1 skeleton (cell_init.h).
//
// Protocol (spawn_protocol.h): request "spawn <cellId>"; reply "ok <pid>" with the cell's fds
// attached (SCM_RIGHTS: pidfd, netns, stdout, stderr, start, status, working directory, and the
// secrets directory when the cell gets secrets), or "error <reason>" with none.
//
// The spawner reaps supervisors only between requests: while a request is being answered its
// supervisor stays the spawner's unreaped child, so its pid (written into the cell's cgroup)
// cannot be recycled.

#include "vmm-agent/cell/cell_backend.h"
#include "vmm-agent/cell/cell_init.h"
#include "vmm-agent/cell/cgroup.h"

#include <sys/types.h>

#include <functional>
#include <string>

namespace cellos::vmm {

// Runs in the spawner: builds the cell `cellId`, its supervisor waiting for the start byte, and
// returns its fds. `planFd` is the fd the launcher attached to the request (a sealed memfd with
// the backend's plan of the cell), or -1; it is closed after the call. Throws with the reason
// the launcher sees; nothing of the supervisor may be left then.
using SupervisorFactory = std::function<LaunchedCell(const std::string& cellId, int planFd)>;

// In the spawner (a factory's building block): clones the supervisor of `cellId` into new pid,
// mount, network, uts and ipc namespaces, where it runs `run` (the backend's pid 1, which never
// returns); puts it into the cell's cgroup (which the launcher created) while it is our
// unreaped child, then 'G', then waits for its setup report; opens its network namespace and
// lets `openFds` open the backend's working directory and secrets directory; hands the pipes
// over. On any failure the supervisor is killed through its pidfd and reaped before this throws.
LaunchedCell cloneSupervisor(const std::string& cellId,
                             const std::function<void(InitChannels)>& run,
                             const std::function<void(pid_t, LaunchedCell&)>& openFds);

// Forks the spawner (its process name `processName`, <= 15 bytes). Returns its pid;
// `launcherEnd` receives the launcher's end (CLOEXEC). The spawner exits when that end closes,
// and dies with the launcher (PDEATHSIG, checked once).
pid_t startSupervisorSpawner(const char* processName, SupervisorFactory factory, Fd& launcherEnd);

// Asks the spawner at `spawnerFd` for cell `cellId` (with `planFd` attached when >= 0) and
// returns it once its supervisor is in
// the cgroup and ready. Throws std::runtime_error with the spawner's (or the supervisor's own)
// reason; nothing of the supervisor is left then.
LaunchedCell requestSupervisor(int spawnerFd, const std::string& cellId, int planFd = -1);

// A backend's launch through its spawner, in the launcher: requestSupervisor, then the cell's
// pid 1 registered (cell_processes.h). On any failure the supervisor (if it came) is killed and
// `cgroup`, which the backend created with the cell's limits, removed before this rethrows.
LaunchedCell launchThroughSpawner(int spawnerFd, const std::string& cellId, CellCgroup& cgroup,
                                  int planFd = -1);

}  // namespace cellos::vmm
