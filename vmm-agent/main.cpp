// cellos-vmm-agent: builds, runs and destroys cells for the broker.
//
// Privilege story, top to bottom:
//   1. start as root, close inherited fds; check the pools and open the uplink namespace (fail
//      closed: a configuration mistake is one line, before anything exists);
//   2. reap what killed launchers left (ours or any other on this host): the cells whose claim
//      in <pool-dir>/cells or record in <state-dir> no live launcher holds, and stray
//      <run-dir>/cells directories (idempotent destroy);
//   3. bind vmm.sock (owner root, group = the broker's group, 0660);
//   4. shrink the capability set to the documented one (see kCapabilities) and set
//      no_new_privs; we stay uid 0 because cgroup and namespace files are root's;
//   5. fork the launcher half (which installs its own, wider profile: cells inherit it);
//   6. install the agent's seccomp profile, then serve the broker only.

#include "core/spec.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"
#include "vmm-agent/agent/agent_server.h"
#include "vmm-agent/backends/microvm/microvm_cell.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/launcher/launcher.h"
#include "vmm-agent/launcher/reaper.h"
#include "vmm-agent/seccomp_profile.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <kj/debug.h>
#include <CLI/CLI.hpp>

namespace {

using namespace cellos;

// Exactly what building cells needs, and why:
//   SYS_ADMIN     namespaces, mounts, pivot_root, sethostname
//   NET_ADMIN     the cell's interfaces, veth pair, addresses, route and nftables ruleset
//   SETUID/SETGID the cell's identity: the workload's user namespace id maps
//   SYS_CHROOT    pivot_root into the cell's root
//   KILL          signal cell processes that run under other uids
//   DAC_OVERRIDE  create the cell's directories and cgroups regardless of their parents' modes
//   SETPCAP       empty the workload's bounding set before it execs
const std::vector<std::string> kCapabilities = {
    "SYS_ADMIN", "NET_ADMIN", "SETUID", "SETGID", "SYS_CHROOT", "KILL", "DAC_OVERRIDE", "SETPCAP"};

struct Options {
  privsep::CommonOptions common{.socketPath = "/run/cellos/vmm.sock", .user = "root"};
  std::string runDir = "/run/cellos/vmm";
  std::string stateDir = "/run/cellos/vmm/state";
  std::string poolDir = "/run/cellos/leases";
  std::string imagesDir = "/var/lib/cellos/images";
  std::string brokerUser = "cellos";
  std::string dnsUser = "cellos-dns";
  std::string addressPool = "10.213.0.0/16";
  // The budget of all cells together on the cellos parent cgroups ("" / 0: left as it is).
  std::string cellsMemoryMax;
  uint64_t cellsPidsMax = 0;
  uint64_t uidPoolBase = 0x70000000;
  uint64_t uidRangeSize = 65536;
  uint64_t uidPoolSize = 1024;
  std::string uplinkNetns;
  std::string runsc{core::kRunscPath};
  std::string gvisorPlatform = "ptrace";
  std::string qemu = "/usr/bin/qemu-system-x86_64";
  std::string vmKernelDir = "/var/lib/cellos/vm/kernel";
  std::string vmInitramfs;  // default: defaultInitramfs()
  std::string vmImagesDir = "/var/lib/cellos/vm/images";
  std::string vmAccel = "auto";
};

// The project's initramfs: beside the build tree's binaries (<build>/vm/initramfs.cpio, made by
// the vm-initramfs target), else where the package installs it.
std::string defaultInitramfs() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string exe(self, static_cast<size_t>(n));
    std::string built = exe.substr(0, exe.rfind('/')) + "/../vm/initramfs.cpio";
    if (access(built.c_str(), R_OK) == 0) return built;
  }
  return "/usr/lib/cellos/vm/initramfs.cpio";
}

void mkdirOwned(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) < 0 && errno != EEXIST) {
    KJ_FAIL_SYSCALL("mkdir", errno, path);
  }
  struct stat st {};
  KJ_SYSCALL(lstat(path.c_str(), &st), path);
  KJ_REQUIRE(S_ISDIR(st.st_mode) && st.st_uid == 0, "must be a directory owned by root", path);
  KJ_SYSCALL(chmod(path.c_str(), mode), path);
}

// mkdirOwned for `path` and any missing parents (parents get 0755).
void mkdirOwnedWithParents(const std::string& path, mode_t mode) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string parent = path.substr(0, slash);
    if (mkdir(parent.c_str(), 0755) < 0 && errno != EEXIST) KJ_FAIL_SYSCALL("mkdir", errno, parent);
  }
  mkdirOwned(path, mode);
}

// The launcher's configuration, every piece checked here so a mistake stops start-up with one
// line naming the option.
vmm::LauncherConfig launcherConfig(const Options& options) {
  vmm::LauncherConfig config;
  config.runDir = options.runDir;
  config.stateDir = options.stateDir;
  config.poolDir = options.poolDir;
  config.imagesDir = options.imagesDir;
  std::string error;
  config.addresses = core::AddressPool::parse(options.addressPool, &error);
  KJ_REQUIRE(config.addresses.has_value(), "--address-pool", error);
  config.ids = core::UidRangePool::make(options.uidPoolBase, options.uidRangeSize,
                                        options.uidPoolSize, &error);
  KJ_REQUIRE(config.ids.has_value(), "--uid-pool-base/--uid-range-size/--uid-pool-size", error);
  config.dnsUid = privsep::lookupAccount(options.dnsUser).uid;
  config.uplinkNetnsPath = options.uplinkNetns;
  std::string uplink = options.uplinkNetns.empty() ? "/proc/self/ns/net" : options.uplinkNetns;
  KJ_SYSCALL(config.uplinkNetnsFd = open(uplink.c_str(), O_RDONLY | O_CLOEXEC),
             "--uplink-netns must name a network namespace", uplink);
  KJ_SYSCALL(config.homeNetnsFd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  // The gvisor backend runs when runsc does; without it, gvisor cells are refused by name.
  if (!options.runsc.empty() && access(options.runsc.c_str(), X_OK) == 0) {
    config.gvisor = vmm::GvisorConfig{options.runsc, options.gvisorPlatform};
  } else {
    spdlog::info("{} is not executable: the gvisor backend is off", options.runsc);
  }
  // The microvm backend runs when QEMU, a guest kernel and the initramfs are there.
  vmm::MicrovmConfig vm{options.qemu, options.vmKernelDir,
                        options.vmInitramfs.empty() ? defaultInitramfs() : options.vmInitramfs,
                        options.vmImagesDir, options.vmAccel};
  std::string unavailable = vmm::microvmUnavailableReason(vm);
  if (unavailable.empty()) {
    config.microvm = vm;
  } else {
    config.microvmUnavailable = unavailable;
    spdlog::info("the microvm backend is off: {}", unavailable);
  }
  return config;
}

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  KJ_REQUIRE(geteuid() == 0, "cellos-vmm-agent must start as root to build cells");
  auto broker = privsep::lookupAccount(options.brokerUser);
  vmm::LauncherConfig config = launcherConfig(options);
  struct sysinfo host {};
  KJ_SYSCALL(sysinfo(&host));
  const vmm::CellsBudget budget{
      vmm::parseMemoryBudget(options.cellsMemoryMax, uint64_t{host.totalram} * host.mem_unit),
      options.cellsPidsMax};

  mkdirOwnedWithParents(options.runDir, 0700);
  mkdirOwned(options.runDir + "/cells", 0700);
  mkdirOwnedWithParents(options.stateDir, 0700);
  mkdirOwnedWithParents(options.poolDir, 0700);
  mkdirOwned(vmm::cellClaimsDirectory(options.poolDir), 0700);
  vmm::reapOrphanedCells(options.stateDir, options.poolDir, options.runDir, config.homeNetnsFd);
  vmm::CellCgroup::prepareParents(budget);

  auto listenFd = ipc::listenUnix({options.common.socketPath, 0660, 0, broker.gid});

  std::vector<int> keep;
  for (const auto& name : kCapabilities) keep.push_back(privsep::capabilityFromName(name));
  // The gvisor backend also keeps CHOWN: the launcher hands each gvisor cell's working directory
  // to the cell's host id, and runsc's gofer creates the workload's files as root and hands
  // them to the workload's id the same way. Without it (a unit that bounds it away), no gvisor.
  // The microvm backend keeps it too: its root images keep each file's owner (mke2fs -d copies
  // the staged tree's), so the builder chowns what it staged.
  if (config.gvisor || config.microvm) {
    if (prctl(PR_CAPBSET_READ, CAP_CHOWN) == 1) {
      keep.push_back(CAP_CHOWN);
    } else {
      spdlog::warn("CAP_CHOWN is not in the bounding set: the gvisor and microvm backends are off");
      config.gvisor.reset();
      if (config.microvm) config.microvmUnavailable = "CAP_CHOWN is not in the bounding set";
      config.microvm.reset();
    }
  }
  privsep::limitCapabilities(keep);
  privsep::setNoNewPrivs();

  int launcherFd = -1;
  pid_t launcherPid = vmm::startLauncher(config, launcherFd);
  // The namespaces are the launcher's business alone.
  close(config.uplinkNetnsFd);
  close(config.homeNetnsFd);
  spdlog::info("launcher pid {}", launcherPid);

  // Only the broker and root connect; most of the fd limit is the cells' (namespaces, cgroups,
  // pipes, the launcher's channel).
  ipc::ConnectionLimits limits{.total = ipc::connectionsWithinFdLimit(512)};
  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  auto state = kj::refcounted<vmm::AgentState>(
      io, io.lowLevelProvider->wrapUnixSocketFd(kj::AutoCloseFd(launcherFd),
                                                kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC));
  // However serve() ends (also by an exception), a capability the event loop's destructor
  // releases finds the state closed.
  KJ_DEFER(state->close());
  privsep::installSeccomp(vmm::kAgentProfile);

  // Only the broker (and root, for administration) may connect. We send it one fd per message
  // (a cell's network namespace, an artifact); the limit of 1 is what lets that fd leave (see
  // ipc::LinkOptions). It also lets one arrive: a cell's sealed secret bundle, checked by
  // CellServer::deliverSecrets before it is read.
  ipc::PeerPolicy policy{{broker.uid, 0}, {}};
  auto listener = kj::heap<ipc::RpcListener>(
      io, kj::mv(listenFd), "vmm.sock", policy, ipc::LinkOptions{.maxFdsPerMessage = 1}, limits,
      [&](const ipc::PeerCredentials&) -> capnp::Capability::Client {
        return kj::heap<vmm::VmmAgentServer>(kj::addRef(*state));
      });
  // A broken link to the launcher half (it died) ends the agent too: it cannot build or
  // destroy cells any more, and its successor's reaper cleans up what the launcher left.
  auto launcherLost = state->launcher.onBroken().then([]() {
    spdlog::critical("lost the launcher half; exiting");
    return 1;
  });
  return privsep::serveUntilShutdown(
      io, options.common.readyFd, options.common.socketPath, [&]() { return listener->run(); },
      kj::mv(launcherLost),
      [&](int) {
        // Dropping the listener drops every connection; then every cell still alive is torn
        // down, whoever holds its capability, and the teardowns run to completion (bounded) so
        // no cell outlives the agent; whatever does not finish is reaped by the next start. A
        // capability the RPC system releases later still holds the state (it is
        // reference-counted) and finds it closed.
        listener = nullptr;
        state->shutDown(10 * kj::SECONDS).wait(io.waitScope);
      });
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "cellos-vmm-agent: builds cells (namespaces, root view, cgroups), runs their command, "
      "relays their output and tears them down without residue. Serves only the broker. Keeps "
      "exactly these capabilities: SYS_ADMIN NET_ADMIN SETUID SETGID SYS_CHROOT KILL "
      "DAC_OVERRIDE SETPCAP. With the gvisor or the microvm backend on (runsc, or QEMU with a "
      "guest kernel and the initramfs, is installed and the bounding set has it), also CHOWN."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/vmm-agent.conf");
  app.add_option("--run-dir", options.runDir, "per-cell directories (root only)")
      ->capture_default_str();
  app.add_option("--broker-user", options.brokerUser, "the only user allowed to connect")
      ->capture_default_str();
  app.add_option("--state-dir", options.stateDir,
                 "records of the cells this launcher built; a restart after a crash reaps the "
                 "ones no live launcher holds")
      ->capture_default_str();
  app.add_option("--pool-dir", options.poolDir,
                 "host-wide leases on address and uid slots, and claims on cells (every launcher "
                 "on a host must use the same directory and pools; a start reaps the cells of "
                 "killed launchers found here)")
      ->capture_default_str();
  app.add_option("--images-dir", options.imagesDir,
                 "registered directory images: run.image NAME is <dir>/NAME (root-owned)")
      ->capture_default_str();
  app.add_option("--dns-user", options.dnsUser,
                 "user of the DNS helper's per-cell child: the only sender nftables lets reach "
                 "the document's resolvers")
      ->capture_default_str();
  app.add_option("--address-pool", options.addressPool,
                 "IPv4 range carved into one /30 per cell (uplink end .1, cell end .2)")
      ->capture_default_str();
  app.add_option("--uid-pool-base", options.uidPoolBase,
                 "first host uid/gid of the per-cell ranges (>= 65536)")
      ->capture_default_str();
  app.add_option("--uid-range-size", options.uidRangeSize, "host ids mapped into each cell")
      ->capture_default_str();
  app.add_option("--uid-pool-size", options.uidPoolSize, "number of per-cell id ranges")
      ->capture_default_str();
  app.add_option("--uplink-netns", options.uplinkNetns,
                 "network namespace (a path such as /run/netns/NAME) that holds the uplink ends "
                 "of the cells' veth pairs; default: the agent's own")
      ->capture_default_str();
  app.add_option("--runsc", options.runsc,
                 "runsc binary of the gvisor backend (\"\" turns the backend off)")
      ->capture_default_str();
  app.add_option("--cells-memory-max", options.cellsMemoryMax,
                 "memory all cells together may use (memory.max of the cellos parent cgroup): "
                 "bytes, or N% of the host's memory; empty or 0 leaves the parent as it is "
                 "(the package's vmm-agent.conf sets 80%)");
  app.add_option("--cells-pids-max", options.cellsPidsMax,
                 "tasks all cells together may hold (pids.max of the cellos parent cgroup); 0 "
                 "leaves it as it is")
      ->capture_default_str();
  app.add_option("--gvisor-platform", options.gvisorPlatform,
                 "runsc --platform of gvisor cells (ptrace without /dev/kvm)")
      ->check(CLI::IsMember({"ptrace", "kvm"}))
      ->capture_default_str();
  app.add_option("--qemu", options.qemu,
                 "QEMU binary of the microvm backend (qemu-system-x86_64, machine microvm)")
      ->capture_default_str();
  app.add_option("--vm-kernel-dir", options.vmKernelDir,
                 "guest kernels of the microvm backend: <dir>/current names a release, "
                 "<dir>/<release>/vmlinuz is its kernel (scripts/setup unpacks Debian's cloud "
                 "kernel there)")
      ->capture_default_str();
  app.add_option("--vm-initramfs", options.vmInitramfs,
                 "the project's initramfs (guest init and modules); default: <build>/vm/"
                 "initramfs.cpio beside this binary, else /usr/lib/cellos/vm/initramfs.cpio");
  app.add_option("--vm-images-dir", options.vmImagesDir,
                 "cache of microvm root disk images (built from the host view or a registered "
                 "image, keyed by content) and the accelerator probe's answer")
      ->capture_default_str();
  app.add_option("--vm-accel", options.vmAccel,
                 "accelerator of microvm cells: kvm (refuse to start cells unless KVM boots a "
                 "guest here), tcg (software emulation, slow), or auto (KVM when a probe guest "
                 "boots under it, else TCG with a warning)")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return privsep::runDaemon("cellos-vmm-agent", options.common.logLevel,
                            [&]() { return serve(options); });
}
