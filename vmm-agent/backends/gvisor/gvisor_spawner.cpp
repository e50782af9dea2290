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

// The supervisor of `cellId`: the generic clone (supervisor_spawner.h) with the bundle's plan,
// the working directory on the host (<cellDir>/work, bound into the sandbox and into the
// supervisor's root) and the secrets tmpfs only in the supervisor's root.
LaunchedCell spawnSupervisor(const GvisorConfig& config, const std::string& runDir,
                             const std::string& cellId) {
  SupervisorPlan plan = loadSupervisorPlan(config, runDir, cellId);
  return cloneSupervisor(
      cellId, [&](InitChannels channels) { runSupervisor(plan, channels); },
      [&](pid_t pid, LaunchedCell& cell) {
        cell.workingDirectory =
            Fd(open(plan.paths.work.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (cell.workingDirectory.get() < 0) throwErrno("open(" + plan.paths.work + ", O_PATH)");
        if (!plan.secretDelivery.empty()) cell.secrets = openInsideRoot(pid, kGvisorSecretsSource);
      });
}

}  // namespace

pid_t startGvisorSpawner(const GvisorConfig& config, const std::string& runDir, Fd& launcherEnd) {
  return startSupervisorSpawner(
      "vmm-gvisor",
      [config, runDir](const std::string& cellId, int planFd) {
        // A gvisor cell's plan is its bundle, on disk.
        if (planFd >= 0) throw std::runtime_error("a gvisor cell has no plan fd");
        return spawnSupervisor(config, runDir, cellId);
      },
      launcherEnd);
}

LaunchedCell spawnGvisorCell(int spawnerFd, const std::string& cellId) {
  return requestSupervisor(spawnerFd, cellId);
}

}  // namespace cellos::vmm
