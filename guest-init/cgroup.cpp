#include "guest-init/cgroup.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "guest-init/plan.h"
#include "guest-init/sys.h"

namespace cellos::guest {

void WorkloadCgroup::create(uint64_t pidsMax) {
  check(::mount("cgroup2", kCgroupRoot, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr),
        std::string("mount cgroup2 at ") + kCgroupRoot);
  writeAttribute(std::string(kCgroupRoot) + "/cgroup.subtree_control", "+pids +memory");
  check(::mkdir(leaf_.c_str(), 0755), "mkdir " + leaf_);
  if (pidsMax > 0) writeAttribute(leaf_ + "/pids.max", std::to_string(pidsMax));
}

bool WorkloadCgroup::killAll(unsigned waitMs) {
  writeAttribute(leaf_ + "/cgroup.kill", "1");
  uint64_t deadline = monotonicMs() + waitMs;
  for (;;) {
    int ignored;
    reapChildren(-1, &ignored);
    if (readFile(leaf_ + "/cgroup.events").find("populated 0") != std::string::npos) return true;
    if (monotonicMs() >= deadline) return false;
    sleepMs(5);
  }
}

uint64_t readOomKills() {
  return parseOomKills(readFile("/proc/vmstat"));
}

bool reapChildren(int pid, int* status) {
  bool found = false;
  for (;;) {
    int st = 0;
    pid_t reaped = ::waitpid(-1, &st, WNOHANG);
    if (reaped <= 0) return found;
    if (reaped == pid) {
      *status = st;
      found = true;
    }
  }
}

}  // namespace cellos::guest
