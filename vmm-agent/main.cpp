// cellos-vmm-agent: builds, runs and destroys cells for the broker.
//
// Privilege story, top to bottom:
//   1. start as root, close inherited fds;
//   2. reap what a crashed predecessor left in <run-dir>/cells (idempotent destroy);
//   3. bind vmm.sock (owner root, group = the broker's group, 0660);
//   4. shrink the capability set to the documented one (see kCapabilities) and set
//      no_new_privs; we stay uid 0 because cgroup and namespace files are root's;
//   5. fork the launcher half (which installs its own, wider profile: cells inherit it);
//   6. install the agent's seccomp profile, then serve the broker only.

#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"
#include "vmm-agent/agent_server.h"
#include "vmm-agent/launcher.h"
#include "vmm-agent/linux_cell.h"
#include "vmm-agent/seccomp_profile.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kj/debug.h>
#include <CLI/CLI.hpp>

namespace {

using namespace cellos;

// Exactly what building cells needs, and why:
//   SYS_ADMIN     namespaces, mounts, pivot_root, sethostname
//   NET_ADMIN     bring up the cell's interfaces (and, later, veths and nftables)
//   SETUID/SETGID the cell's identity
//   SYS_CHROOT    pivot_root into the cell's root
//   KILL          signal cell processes that run under other uids
//   DAC_OVERRIDE  create the cell's directories and cgroups regardless of their parents' modes
//   SETPCAP       empty the workload's bounding set before it execs
const std::vector<std::string> kCapabilities = {
    "SYS_ADMIN", "NET_ADMIN", "SETUID", "SETGID", "SYS_CHROOT", "KILL", "DAC_OVERRIDE", "SETPCAP"};

struct Options {
  privsep::CommonOptions common{.socketPath = "/run/cellos/vmm.sock", .user = "root"};
  std::string runDir = "/run/cellos/vmm";
  std::string brokerUser = "cellos";
};

void mkdirOwned(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) < 0 && errno != EEXIST) {
    KJ_FAIL_SYSCALL("mkdir", errno, path);
  }
  struct stat st {};
  KJ_SYSCALL(lstat(path.c_str(), &st), path);
  KJ_REQUIRE(S_ISDIR(st.st_mode) && st.st_uid == 0, "must be a directory owned by root", path);
  KJ_SYSCALL(chmod(path.c_str(), mode), path);
}

// A previous agent that crashed (or was killed) may have left cells behind. Destroying is
// idempotent, so run it for every cell directory found.
void reapLeftovers(const std::string& cellsDir) {
  DIR* dir = opendir(cellsDir.c_str());
  if (dir == nullptr) return;
  KJ_DEFER(closedir(dir));
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    spdlog::warn("reaping leftover cell {}", name);
    for (const auto& residue : vmm::destroyCell(name, 0)) {
      spdlog::error("leftover cell {}: {}", name, residue);
    }
    std::string path = cellsDir + "/" + name;
    if (rmdir(path.c_str()) < 0) spdlog::error("cannot remove {}: {}", path, strerror(errno));
  }
}

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  KJ_REQUIRE(geteuid() == 0, "cellos-vmm-agent must start as root to build cells");
  auto broker = privsep::lookupAccount(options.brokerUser);

  mkdirOwned(options.runDir, 0700);
  mkdirOwned(options.runDir + "/cells", 0700);
  reapLeftovers(options.runDir + "/cells");

  auto listenFd = ipc::listenUnix({options.common.socketPath, 0660, 0, broker.gid});

  std::vector<int> keep;
  for (const auto& name : kCapabilities) keep.push_back(privsep::capabilityFromName(name));
  privsep::limitCapabilities(keep);
  privsep::setNoNewPrivs();

  int launcherFd = -1;
  pid_t launcherPid = vmm::startLauncher({options.runDir}, launcherFd);
  spdlog::info("launcher pid {}", launcherPid);

  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  vmm::AgentState state(
      io, io.lowLevelProvider->wrapUnixSocketFd(kj::AutoCloseFd(launcherFd),
                                                kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC));
  privsep::installSeccomp(vmm::kAgentProfile);

  // Only the broker (and root, for administration) may connect. We send it one fd per cell (the
  // network namespace); the limit of 1 is what lets that fd leave (see ipc::LinkOptions).
  ipc::PeerPolicy policy{{broker.uid, 0}, {}};
  auto listener = kj::heap<ipc::RpcListener>(
      io, kj::mv(listenFd), "vmm.sock", policy, ipc::LinkOptions{.maxFdsPerMessage = 1},
      [&](const ipc::PeerCredentials&) -> capnp::Capability::Client {
        return kj::heap<vmm::VmmAgentServer>(state);
      });
  privsep::signalReady(options.common.readyFd);
  spdlog::info("serving on {}", options.common.socketPath);
  int signal = listener->run()
                   .then([]() { return 0; })
                   .exclusiveJoin(privsep::shutdownRequested(io.unixEventPort))
                   .wait(io.waitScope);
  spdlog::info("shutting down on signal {}", signal);
  // Dropping the listener drops every connection and with it every Cell capability; each
  // cell's destructor queues its teardown. Run those to completion (bounded) so no cell
  // outlives the agent; whatever does not finish is reaped by the next start.
  listener = nullptr;
  state.tasks.onEmpty()
      .exclusiveJoin(io.provider->getTimer().afterDelay(10 * kj::SECONDS).then([]() {
        spdlog::error("cell teardown did not finish within 10 s; leaving it to the next start");
      }))
      .wait(io.waitScope);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "cellos-vmm-agent: builds cells (namespaces, root view, cgroups), runs their command, "
      "relays their output and tears them down without residue. Serves only the broker. Keeps "
      "exactly these capabilities: SYS_ADMIN NET_ADMIN SETUID SETGID SYS_CHROOT KILL "
      "DAC_OVERRIDE SETPCAP."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/vmm-agent.conf");
  app.add_option("--run-dir", options.runDir, "per-cell directories (root only)")
      ->capture_default_str();
  app.add_option("--broker-user", options.brokerUser, "the only user allowed to connect")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    privsep::setupLogging("cellos-vmm-agent", options.common.logLevel);
    return serve(options);
  } catch (const kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
  }
  return 1;
}
