#pragma once
// The cgroup of one cell: where its processes are counted, limited and found again for
// teardown. The cgroup, not the pid namespace, is the ground truth for "which processes belong
// to this cell": it outlives a crashed launcher and a dead cell init, and it is what destroy and
// the residue check consult.
//
// Layout (cellId is already validated: [a-z0-9][a-z0-9._-]{0,62}, so it is a safe path element):
//   cgroup v1: /sys/fs/cgroup/<controller>/cellos/<cellId> for pids, memory, cpu and cpuacct
//              (one leaf when cpu and cpuacct are mounted together, as "cpu,cpuacct");
//   cgroup v2: /sys/fs/cgroup/cellos/<cellId>, with +pids +memory +cpu enabled in the
//              cgroup.subtree_control of /sys/fs/cgroup and of /sys/fs/cgroup/cellos.
// The version is detected (cgroup.controllers at /sys/fs/cgroup means the unified hierarchy is
// mounted there), so the same launcher runs on both.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cellos::vmm {

// The all-cells memory budget as an operator writes it: bytes ("17179869184"), a percentage of
// the host's memory ("80%": of `hostMemoryBytes`), or "0"/"" for none. Throws
// std::invalid_argument naming the text otherwise (0%, over 100%, not a number).
uint64_t parseMemoryBudget(const std::string& text, uint64_t hostMemoryBytes);

// The budget of all cells together, on the shared "cellos" parents: memory (v1
// memory.limit_in_bytes, v2 memory.max) and tasks (pids.max). 0: left as it is.
struct CellsBudget {
  uint64_t memoryBytes = 0;
  uint64_t pids = 0;
};

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
  // Creates the shared "cellos" parents if missing and checks that each is writable here (the
  // VM launcher's start: under systemd the unit's view of /sys/fs/cgroup is read-only except
  // the subtrees it binds). Throws one message naming every parent that is not, and the fix,
  // so a host where no cell could start fails at start instead of at the first cell. Then sets
  // `budget` on them.
  static void prepareParents(const CellsBudget& budget = {});

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
  // CFS bandwidth: at most `quotaMicros` of cpu time per `periodMicros` (v1 cpu.cfs_period_us
  // and cpu.cfs_quota_us; v2 cpu.max).
  void setCpuMax(uint64_t quotaMicros, uint64_t periodMicros);
  // Cpu time the cell's processes have used so far, in µs (v1 cpuacct.usage; v2 cpu.stat
  // usage_usec). Throws when the leaf is gone.
  uint64_t cpuUsageMicros() const;
  // How many processes the kernel's OOM killer killed in the cell because of its memory limit
  // (v1 memory.oom_control oom_kill, Linux 4.13+; v2 memory.events oom_kill). 0 when unknown.
  uint64_t oomKillCount() const;
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
  // The leaf of each controller (all the same on v2); `leaves_` lists each directory once.
  struct ControllerLeaves {
    std::string pids, memory, cpu, cpuacct;
  };
  CellCgroup(std::string cellId, ControllerLeaves byController);

  std::string cellId_;
  ControllerLeaves byController_;
  std::vector<std::string> leaves_;
};

// The leaf directories of cell `cellId` (see the layout above), whether or not they exist.
std::vector<std::string> cellCgroupPaths(const std::string& cellId);

}  // namespace cellos::vmm
