#pragma once
// The linux backend's cell runtime: one cell is a process tree in its own pid, mount, network,
// UTS and IPC namespaces, inside its own cgroup, on a read-only view of the host's /usr and /etc
// (or of a registered directory image) with fresh tmpfs scratch space, and no fd, tty or
// environment variable of the launcher. Its workload runs in a user namespace of its own as
// root there and an unprivileged host id outside, with no capabilities, no_new_privs, rlimits
// and its own seccomp filter (workload_filter.h).
//
// The caller is the single-threaded, root launcher half of cellos-vmm-agent. launchCell() forks
// the cell's init (pid 1 of the new pid namespace, following the skeleton of cell/cell_init.h),
// which builds the cell's filesystem and waits; the workload runs only after the caller writes
// the start byte, so the caller can wire the network namespace (veth, nftables:
// launcher/network_scope.h; the DNS proxy) first.

#include "vmm-agent/cell/cell_backend.h"
#include "vmm-agent/cell/cell_processes.h"

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace cellos::vmm {

// Creates the cell's cgroup, forks its init into new namespaces, moves it into the cgroup, waits
// until the init has built the cell's root and is waiting for the start byte, and returns the
// cell (cell_backend.h). Throws std::invalid_argument for a bad CellLaunch, std::system_error
// (the failed call and its arguments, from the launcher or from inside the cell) or
// std::runtime_error otherwise; on failure nothing is left behind (the child is killed and
// reaped, the cgroup removed, every fd closed). An id this process launched and has not
// destroyed yet is refused. Destroy with destroyCell() (cell_processes.h).
LaunchedCell launchCell(const CellLaunch& launch);

// The linux backend behind the seam: launchCell, destroyCell, and nothing left on the host
// besides (the cell's root lived in its mount namespace).
std::unique_ptr<CellBackend> makeLinuxBackend();

}  // namespace cellos::vmm
