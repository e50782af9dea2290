#include "vmm-agent/backends/gvisor/gvisor_spawner.h"

#include "vmm-agent/backends/gvisor/gvisor_supervisor.h"
#include "vmm-agent/cell/cell_init.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/supervisor_spawner.h"
#include "vmm-agent/cell/sys_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr uint64_t kSupervisorNamespaces =
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;

// The supervisor of `cellId`, cloned into its new namespaces following the pid-1 skeleton:
// into the cell's cgroup (which the launcher created) while it is our unreaped child, then 'G',
// then its setup report. Returns the cell's fds; on any failure the supervisor is killed through
// its pidfd and reaped before this throws.
LaunchedCell spawnSupervisor(const GvisorConfig& config, const std::string& runDir,
                             const std::string& cellId) {
  SupervisorPlan plan = loadSupervisorPlan(config, runDir, cellId);
  InitPipes pipes = InitPipes::make();
  int newPidfd = -1;
  pid_t pid = cloneCellInit(kSupervisorNamespaces, &newPidfd);
  if (pid == 0) runSupervisor(plan, pipes.childChannels());
  Fd pidfd(newPidfd);
  pipes.closeChildEnds();
  try {
    CellCgroup::open(cellId).addProcess(pid);
    sendCgroupJoined(pipes.control.get(), cellId);
    awaitReady(pipes.control.get(), pid, cellId);
    LaunchedCell cell;
    cell.initPid = pid;
    std::string netnsPath = "/proc/" + std::to_string(pid) + "/ns/net";
    cell.netnsFd = Fd(open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (cell.netnsFd.get() < 0) throwErrno("open(" + netnsPath + ", O_RDONLY)");
    // The working directory lives on the host (<cellDir>/work, bound into the sandbox and into
    // the supervisor's root); the secrets tmpfs only in the supervisor's root.
    cell.workingDirectory =
        Fd(open(plan.paths.work.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (cell.workingDirectory.get() < 0) throwErrno("open(" + plan.paths.work + ", O_PATH)");
    if (!plan.secretDelivery.empty()) cell.secrets = openInsideRoot(pid, kGvisorSecretsSource);
    pipes.handOver(std::move(pidfd), cell);
    return cell;
  } catch (...) {
    killAndReap(pid, pidfd.get());
    throw;
  }
}

}  // namespace

pid_t startGvisorSpawner(const GvisorConfig& config, const std::string& runDir, Fd& launcherEnd) {
  return startSupervisorSpawner(
      "vmm-gvisor",
      [config, runDir](const std::string& cellId) {
        return spawnSupervisor(config, runDir, cellId);
      },
      launcherEnd);
}

LaunchedCell spawnGvisorCell(int spawnerFd, const std::string& cellId) {
  return requestSupervisor(spawnerFd, cellId);
}

}  // namespace cellos::vmm
