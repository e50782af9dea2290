#pragma once
// The cgroup of one cell: where its processes are counted, limited and found again for
// teardown. The cgroup, not the pid namespace, is the ground truth for "which processes belong
// to this cell": it outlives a crashed launcher and a dead cell init, and it is what destroy and
// the residue check consult.
//
// Layout (cellId is already validated: [a-z0-9][a-z0-9._-]{0,62}, so it is a safe path element):
//   cgroup v1: /sys/fs/cgroup/pids/cellos/<cellId> and /sys/fs/cgroup/memory/cellos/<cellId>
//   cgroup v2: /sys/fs/cgroup/cellos/<cellId>, with +pids +memory enabled in the
//              cgroup.subtree_control of /sys/fs/cgroup and of /sys/fs/cgroup/cellos.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cellos::vmm {

class CellCgroup {
 public:
  // Creates the cell's leaf directories (and the shared "cellos" parents if missing). Fails if a
  // leaf already exists: a leftover of an earlier cell with the same id must be destroyed first,
  // never silently shared. Nothing is left behind when it throws.
  static CellCgroup create(const std::string& cellId);
  // Refers to the leaves of a cell that may or may not exist, creating nothing (destroy and
  // residue checks, also after a launcher restart).
  static CellCgroup open(const std::string& cellId);
  // True when the unified hierarchy is mounted at /sys/fs/cgroup (cgroup.controllers exists).
  static bool isV2();

  CellCgroup(CellCgroup&&) noexcept = default;
  CellCgroup& operator=(CellCgroup&&) noexcept = default;
  CellCgroup(const CellCgroup&) = delete;
  CellCgroup& operator=(const CellCgroup&) = delete;

  // Moves process `pid` (a host pid) into every leaf. Must happen before the process runs any
  // workload code, so nothing it forks escapes the limits.
  void addProcess(pid_t pid);
  // pids.max: the most tasks the cell may hold at once (its init included).
  void setPidsMax(uint64_t max);
  // v1 memory.limit_in_bytes (and memory.memsw.limit_in_bytes when swap accounting exists, so
  // swapping cannot get around the limit); v2 memory.max.
  void setMemoryMax(uint64_t bytes);
  // Host pids currently in any leaf (sorted, unique). A missing leaf contributes nothing.
  std::vector<pid_t> processes() const;
  // SIGKILLs every process in the cell's cgroup until none remain or ~2 s have passed (v2 uses
  // cgroup.kill). Each pid is pinned with a pidfd and re-checked for membership before it is
  // signalled, so a recycled pid outside the cell is never hit. Check processes() afterwards.
  void killAll();
  // rmdir every leaf (missing leaves count as removed). Returns false when a leaf is still busy
  // (EBUSY: processes remain); throws std::system_error for any other failure.
  bool remove();

  const std::string& cellId() const { return cellId_; }
  // The leaf directories, whether or not they exist.
  const std::vector<std::string>& leaves() const { return leaves_; }

 private:
  CellCgroup(std::string cellId, std::vector<std::string> leaves);

  std::string cellId_;
  std::vector<std::string> leaves_;
};

// The leaf directories of cell `cellId` (see the layout above), whether or not they exist.
std::vector<std::string> cellCgroupPaths(const std::string& cellId);

}  // namespace cellos::vmm
