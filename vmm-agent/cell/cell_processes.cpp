#include "vmm-agent/cell/cell_processes.h"

#include "vmm-agent/cell/cell_mounts.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/sys_util.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

namespace cellos::vmm {
namespace {

// Cells this process launched and has not destroyed yet, by id, with a pidfd of each pid 1 of
// our own. destroyCell signals and reaps through the pidfd, never through the bare pid, so a
// pid 1 the caller already reaped (whose pid may now be another process) is never touched.
struct LaunchedInit {
  pid_t pid;
  int pidfd;
};
std::mutex registryMutex;
std::map<std::string, LaunchedInit>& registry() {
  static std::map<std::string, LaunchedInit> cells;
  return cells;
}

}  // namespace

CellCgroup createLimitedCgroup(const CellLaunch& launch, std::optional<uint64_t> pidsMax) {
  CellCgroup cgroup = CellCgroup::create(launch.cellId);
  try {
    if (pidsMax) cgroup.setPidsMax(*pidsMax);
    if (launch.memoryMaxBytes) cgroup.setMemoryMax(*launch.memoryMaxBytes);
    if (launch.cpuMax) cgroup.setCpuMax(launch.cpuMax->quotaMicros, launch.cpuMax->periodMicros);
  } catch (...) {
    cgroup.remove();
    throw;
  }
  return cgroup;
}

void removeCellCgroup(CellCgroup& cgroup) noexcept {
  try {
    cgroup.killAll();
    for (int attempt = 0; attempt < 100 && !cgroup.remove(); ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (...) {
  }
}

void registerLaunchedCell(const std::string& cellId, pid_t pid, int pidfd) {
  std::lock_guard<std::mutex> lock(registryMutex);
  if (!registry().emplace(cellId, LaunchedInit{pid, pidfd}).second) {
    close(pidfd);
    throw std::runtime_error("cell " + cellId + " is still live; destroy it first");
  }
}

void requireUnregistered(const std::string& cellId) {
  std::lock_guard<std::mutex> lock(registryMutex);
  if (registry().count(cellId)) {
    throw std::runtime_error("cell " + cellId + " is still live; destroy it first");
  }
}

std::vector<std::string> destroyCell(const std::string& cellId, pid_t initPid) {
  std::vector<std::string> residue;
  try {
    std::optional<LaunchedInit> ours;
    {
      std::lock_guard<std::mutex> lock(registryMutex);
      // The registry, not `initPid`, decides: its pidfd pins exactly the init we launched under
      // this id, even if the caller passes a stale pid (or 0, as a restarted agent does).
      auto it = registry().find(cellId);
      if (it != registry().end()) {
        ours = it->second;
        registry().erase(it);
      }
    }
    if (ours) {
      // SIGKILL to the init collapses the pid namespace: the kernel kills every process in it
      // and the init becomes a zombie only once they are all gone. ESRCH: already dead.
      pidfdSendSignal(ours->pidfd, SIGKILL);
      pollfd exited{ours->pidfd, POLLIN, 0};
      int ready;
      do {
        ready = poll(&exited, 1, 5000);
      } while (ready < 0 && errno == EINTR);
      siginfo_t info{};
      // ECHILD: the caller reaped it already (through its own pidfd or waitpid).
      if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(ours->pidfd), &info,
                 WEXITED | WNOHANG) == 0 &&
          info.si_pid == 0) {
        // Stuck (uninterruptible sleep): keep it registered so a later destroy can reap it.
        residue.push_back("cell init " + std::to_string(ours->pid) + " did not exit after SIGKILL");
        std::lock_guard<std::mutex> lock(registryMutex);
        registry().emplace(cellId, *ours);
      } else {
        close(ours->pidfd);
      }
    }
    // Everything else in the cell's cgroup: the init of a cell launched by an earlier launcher
    // process, or anything that got into the cgroup from outside the pid namespace.
    CellCgroup cgroup = CellCgroup::open(cellId);
    cgroup.killAll();
    // rmdir can briefly see EBUSY while the last killed processes finish exiting.
    for (int attempt = 0; attempt < 100 && !cgroup.remove(); ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception& e) {
    residue.push_back(std::string("destroy of cell ") + cellId + " failed: " + e.what());
  }
  for (std::string& item : residueOf(cellId, "", false)) residue.push_back(std::move(item));
  return residue;
}

std::vector<std::string> residueOf(const std::string& cellId, const std::string& cellDir,
                                   bool expectDirGone) {
  std::vector<std::string> residue;
  try {
    CellCgroup cgroup = CellCgroup::open(cellId);
    for (pid_t pid : cgroup.processes()) {
      residue.push_back("process " + std::to_string(pid) + " in the cgroup of cell " + cellId);
    }
    for (const std::string& leaf : cgroup.leaves()) {
      if (access(leaf.c_str(), F_OK) == 0) residue.push_back("cgroup " + leaf);
    }
    if (!cellDir.empty()) {
      std::string dir = cellDir;
      if (char* resolved = realpath(cellDir.c_str(), nullptr)) {
        dir = resolved;
        free(resolved);
      }
      for (const std::string& mountPoint : mountPointsUnder(dir)) {
        residue.push_back("mount on " + mountPoint);
      }
      struct stat st {};
      if (expectDirGone && lstat(cellDir.c_str(), &st) == 0) {
        residue.push_back("directory " + cellDir);
      }
    }
  } catch (const std::exception& e) {
    residue.push_back(std::string("residue check of cell ") + cellId + " failed: " + e.what());
  }
  return residue;
}

}  // namespace cellos::vmm
