#include "vmm-agent/backends/gvisor/gvisor_cell.h"

#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/cell/supervisor_spawner.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <optional>

namespace cellos::vmm {

namespace {

// Host pids a gvisor cell may hold beyond its pidsMax: runsc, the Sentry's and the gofer's
// threads, the ptrace platform's traced helper processes. The document's pidsMax itself is
// enforced inside the sandbox (RLIMIT_NPROC, see gvisorOciConfig); this is only the host's
// backstop.
constexpr uint64_t kGvisorHostPidsAllowance = 512;
// pids.max refuses more than PID_MAX_LIMIT (4194304 on 64-bit, kernel/cgroup/pids.c): the
// allowance saturates there, and a pidsMax the broker did not validate cannot wrap around.
constexpr uint64_t kPidsMaxLimit = 4'194'304;

uint64_t gvisorHostPidsMax(uint64_t pidsMax) {
  return pidsMax >= kPidsMaxLimit - kGvisorHostPidsAllowance ? kPidsMaxLimit
                                                             : pidsMax + kGvisorHostPidsAllowance;
}

class GvisorBackend final : public CellBackend {
 public:
  GvisorBackend(const GvisorConfig& config, const std::string& runDir) {
    pid_t spawner = startGvisorSpawner(config, runDir, spawner_);
    spdlog::info("gVisor spawner pid {} (runsc {}, platform {})", spawner, config.runsc,
                 config.platform);
  }
  const char* name() const override { return "gvisor"; }

  // The bundle, the cgroup with the limits, then the supervisor, which the spawner puts into
  // the cgroup before it builds anything (gvisor_supervisor.cpp, runSupervisor).
  LaunchedCell launch(const CellLaunch& launch) override {
    requireUnregistered(launch.cellId);
    writeGvisorBundle(launch);
    std::optional<uint64_t> hostPids;
    if (launch.pidsMax) hostPids = gvisorHostPidsMax(*launch.pidsMax);
    CellCgroup cgroup = createLimitedCgroup(launch, hostPids);
    LaunchedCell cell = launchThroughSpawner(spawner_.get(), launch.cellId, cgroup);
    cell.resolvConf = launch.resolvConf;
    return cell;
  }
  std::vector<std::string> destroy(const std::string& cellId, pid_t initPid) override {
    return destroyCell(cellId, initPid);
  }
  std::vector<std::string> removeLeftovers(const std::string& cellId,
                                           const std::string& cellDir) override {
    return removeGvisorLeftovers(cellId, cellDir);
  }

 private:
  Fd spawner_;
};

}  // namespace

std::unique_ptr<CellBackend> makeGvisorBackend(const GvisorConfig& config,
                                               const std::string& runDir) {
  return std::make_unique<GvisorBackend>(config, runDir);
}

}  // namespace cellos::vmm
