#pragma once
// Finding and ending a cell's processes, whichever backend started them: the pidfd of each
// pid 1 this process launched (kept here, so a stale or recycled pid is never signalled), and
// the cell's cgroup (cgroup.h), the ground truth for everything else.

#include "vmm-agent/cell/cell_backend.h"
#include "vmm-agent/cell/cgroup.h"

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace cellos::vmm {

// Records the pid 1 of a cell this process just launched, with a pidfd of its own (taken over:
// the registry closes it). Throws std::runtime_error when a cell of this id is still
// registered (destroy it first).
void registerLaunchedCell(const std::string& cellId, pid_t pid, int pidfd);
// Throws std::runtime_error when a cell of this id is registered (not destroyed yet).
void requireUnregistered(const std::string& cellId);

// Creates the cell's cgroup leaves with the launch's memory and cpu limits and `pidsMax` (the
// backend decides what the host counts: a gVisor cell's runtime holds host tasks beyond the
// workload's). Nothing is left behind when it throws.
CellCgroup createLimitedCgroup(const CellLaunch& launch, std::optional<uint64_t> pidsMax);

// SIGKILLs whatever is in the cgroup and removes its leaves, retrying while the last killed
// processes finish exiting (rmdir briefly sees EBUSY). Never throws; residueOf() reports what
// is left.
void removeCellCgroup(CellCgroup& cgroup) noexcept;

// Kills every process of the cell (SIGKILL to its pid 1 through the registered pidfd, which
// collapses the pid namespace, then to everything in its cgroup), reaps pid 1 if this process
// is its parent and has not reaped it yet, and removes the cgroup leaves. The bare `initPid` is
// never signalled (it may be stale, recycled, or 0 from a launcher reaping leftovers after a
// restart: then the cgroup alone finds the processes). Idempotent; never throws. Returns what
// it could not clean (empty when clean).
std::vector<std::string> destroyCell(const std::string& cellId, pid_t initPid);

// What of the cell still exists: processes in its cgroup, its cgroup directories, mounts on or
// under `cellDir` in the caller's mount namespace, and `cellDir` itself when `expectDirGone`.
// One human-readable line per item; empty means no residue. Never throws.
std::vector<std::string> residueOf(const std::string& cellId, const std::string& cellDir,
                                   bool expectDirGone);

}  // namespace cellos::vmm
