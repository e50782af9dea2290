#pragma once
// The workload's cgroup inside the guest (cgroup v2): one leaf under the root, with the pids and
// memory controllers, so pid 1 can cap the workload's processes and kill every one of them at
// the end (cgroup.kill) however they forked, setsid or daemonised.

#include <cstdint>
#include <string>

namespace cellos::guest {

inline constexpr const char* kCgroupRoot = "/sys/fs/cgroup";

class WorkloadCgroup {
 public:
  // Mounts cgroup2, enables +pids +memory for the root's children, makes the leaf and writes
  // pids.max when `pidsMax` > 0.
  void create(uint64_t pidsMax);
  // "<leaf>/cgroup.procs": the workload writes its own pid there before it execs.
  std::string procsFile() const { return leaf_ + "/cgroup.procs"; }
  // SIGKILL to every process of the leaf, then reaps and waits (up to `waitMs`) until it is
  // empty. Returns false if it is still populated then.
  bool killAll(unsigned waitMs);

 private:
  std::string leaf_ = std::string(kCgroupRoot) + "/workload";
};

// The guest kernel's OOM-kill count (/proc/vmstat oom_kill).
uint64_t readOomKills();

// Reaps every exited child of pid 1 without blocking. Returns the wait status of `pid` if it
// was among them.
bool reapChildren(int pid, int* status);

}  // namespace cellos::guest
