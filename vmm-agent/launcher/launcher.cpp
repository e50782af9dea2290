#include "vmm-agent/launcher/launcher.h"

#include "vmm-agent/launcher/backend_table.h"
#include "vmm-agent/launcher/launcher_request.h"

#include "core/host_destination.h"
#include "core/nft_rules.h"
#include "ipc/vmm.capnp.h"
#include "privsep/daemon.h"
#include "privsep/seccomp.h"
#include "vmm-agent/cell/cell_backend.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/sys_util.h"
#include "vmm-agent/launcher/artifact_open.h"
#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/launcher/network_scope.h"
#include "vmm-agent/launcher/slot_lease.h"
#include "vmm-agent/seccomp_profile.h"

#include <arpa/inet.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <regex>

#include <kj/debug.h>

namespace cellos::vmm {

namespace {

// Sends a reply, attaching `fds` (SCM_RIGHTS) to the first byte so the agent's
// capnp::readMessage() receives them with the message.
void sendReply(int sock, capnp::MessageBuilder& message, const std::vector<int>& fds) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  size_t offset = 0;
  bool first = true;
  while (offset < bytes.size()) {
    ssize_t n;
    KJ_SYSCALL(n = sendWithFds(sock, bytes.begin() + offset, bytes.size() - offset,
                               first ? fds : std::vector<int>{}),
               "launcher reply");
    offset += n;
    first = false;
  }
}

uint64_t elapsedMicros(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               since)
      .count();
}

// A cell this launcher built and has not destroyed yet. The leases and the record are held for
// exactly as long as the cell exists; the netns fd lets teardown and counters reach the cell's
// namespace after its init is gone.
struct LiveCell {
  CellBackend* backend;
  std::string cellDir;
  std::string uplinkInterface;
  Fd netns;
  core::NftPlan plan;
  SlotLease addressLease;
  SlotLease idLease;
  CellRecordFile record;
  // The cell's working directory (O_PATH), opened when the cell was built and held until
  // destroy: the export phase reads artifacts through it after the cell's init, and with it the
  // cell's mount namespace, are gone.
  std::string workingDirectory;
  Fd workdir;
  // The cell's secrets tmpfs (O_PATH), when the cell was built for secrets; -1 otherwise.
  Fd secrets;
  uint32_t workloadId = 0;  // host id of the workload: owner of the secret files
  // A destroy of this cell ran and left residue: the record is kept so that the next destroy,
  // the next launch of the same id or the next launcher's start tries again.
  bool destroyTried = false;
};

struct Launcher {
  const LauncherConfig& config;
  UplinkNamespace uplink;
  BackendTable& backends;
  std::map<std::string, LiveCell> cells;
  // What no cell may reach (core/host_destination.h), as of the last refresh.
  std::vector<core::IpRange> hostDestinations;
};

// Lists the host's addresses again (the launcher's own namespace and the uplink namespace, every
// interface, lo included) and, when they changed, rewrites the host-destination sets of every
// live cell. Run before every launch and every DNS-learned update, and whenever netlink reports
// an address change in either namespace (runLauncher).
void refreshHostDestinations(Launcher& launcher) {
  std::vector<std::string> addresses =
      namespaceAddresses(launcher.uplink, launcher.config.homeNetnsFd);
  if (launcher.config.uplinkNetnsFd != launcher.config.homeNetnsFd) {
    for (std::string& a : namespaceAddresses(launcher.uplink, launcher.config.uplinkNetnsFd)) {
      addresses.push_back(std::move(a));
    }
  }
  std::vector<core::IpRange> fresh =
      core::hostDestinationRanges(addresses, launcher.config.addresses->describe());
  if (fresh == launcher.hostDestinations) return;
  launcher.hostDestinations = std::move(fresh);
  for (auto& [cellId, cell] : launcher.cells) {
    cell.plan.hostDestinations = launcher.hostDestinations;
    try {
      addCellElements(launcher.uplink, cell.netns.get(),
                      core::nftHostDestinationElements(cell.plan));
    } catch (const std::exception& e) {
      spdlog::error("cell {}: updating its host destinations: {}", cellId, e.what());
    }
  }
}

void releaseFinishedCell(Launcher& launcher, const std::string& cellId);

void handleLaunch(int sock, Launcher& launcher, ipc::CellRequest::Reader request) {
  const LauncherConfig& config = launcher.config;
  auto started = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, uint64_t>> timings;

  LaunchRequest decoded = decodeLaunchRequest(request, config.dnsUid);
  CellLaunch& launch = decoded.launch;
  releaseFinishedCell(launcher, launch.cellId);
  CellBackend& backend = launcher.backends.get(decoded.backend);
  launch.imageRoot = registeredImageRoot(config.imagesDir, decoded.image);
  // The rules are checked before anything exists: a bad one refuses the cell, it does not
  // leave it half-scoped.
  refreshHostDestinations(launcher);
  core::NftPlan plan = std::move(decoded.plan);
  plan.hostDestinations = launcher.hostDestinations;
  core::nftRules(plan);

  // Host-wide slots: an address pair and an id range no other live cell on this host holds.
  SlotLease idLease =
      SlotLease::acquire(config.poolDir, config.ids->describe(), config.ids->slotCount());
  SlotLease addressLease = SlotLease::acquire(config.poolDir, config.addresses->leaseName(),
                                              config.addresses->slotCount());
  launch.ids = CellIdRange{config.ids->rangeBase(idLease.slot()), config.ids->rangeSize()};
  core::CellAddressPair addresses = config.addresses->slot(addressLease.slot());
  std::string uplinkInterface = "cellos" + std::to_string(addressLease.slot());
  timings.emplace_back("leases", elapsedMicros(started));

  launch.cellDir = config.runDir + "/cells/" + launch.cellId;
  if (mkdir(launch.cellDir.c_str(), 0700) < 0) {
    KJ_FAIL_SYSCALL("mkdir", errno, launch.cellDir, "(is a cell with this id already running?)");
  }
  // Recorded before anything that would need reaping exists.
  struct stat uplinkId {};
  KJ_SYSCALL(fstat(config.uplinkNetnsFd, &uplinkId));
  CellRecord record;
  record.cellId = launch.cellId;
  record.cellDir = launch.cellDir;
  record.stateDir = config.stateDir;
  record.uplinkInterface = uplinkInterface;
  record.uplinkNetnsPath = config.uplinkNetnsPath;
  record.uplinkNetnsDev = uplinkId.st_dev;
  record.uplinkNetnsIno = uplinkId.st_ino;
  record.addressPool = config.addresses->leaseName();
  record.addressSlot = addressLease.slot();
  record.idBase = launch.ids.hostBase;
  record.idSize = launch.ids.size;
  record.cellAddress = core::formatIpv4(addresses.cell);
  // The host-wide claim (beside the leases) lets any later launcher reap the cell if this one is
  // killed; it also refuses an id a live cell of another launcher on this host is using.
  CellRecordFile recordFile = [&]() {
    try {
      return CellRecordFile::create(cellClaimsDirectory(config.poolDir), record);
    } catch (...) {
      rmdir(launch.cellDir.c_str());
      throw;
    }
  }();

  LaunchedCell cell;
  bool launched = false;
  Fd netns;
  try {
    auto step = std::chrono::steady_clock::now();
    try {
      cell = backend.launch(launch);
    } catch (...) {
      backend.destroy(launch.cellId, 0);
      backend.removeLeftovers(launch.cellId, launch.cellDir);
      throw;
    }
    launched = true;
    timings.emplace_back("cell", elapsedMicros(step));
    netns = Fd(fcntl(cell.netnsFd.get(), F_DUPFD_CLOEXEC, 3));
    KJ_REQUIRE(netns.get() >= 0, "fcntl(netns, F_DUPFD_CLOEXEC)", strerror(errno));
    KJ_REQUIRE(cell.workingDirectory.get() >= 0, "the backend opened no working directory");
    KJ_REQUIRE(launch.secretDelivery.empty() || cell.secrets.get() >= 0,
               "the backend opened no secrets directory");

    if (!cell.guestInterface.empty()) {
      plan.guest = core::NftGuest{cell.guestInterface, cell.guestAddress, cell.dnsBindAddress};
    }
    step = std::chrono::steady_clock::now();
    createCellLink(launcher.uplink, netns.get(), uplinkInterface, addresses);
    timings.emplace_back("link", elapsedMicros(step));
    step = std::chrono::steady_clock::now();
    applyCellRuleset(launcher.uplink, netns.get(), plan);
    timings.emplace_back("nftables", elapsedMicros(step));
  } catch (...) {
    for (const auto& r : removeCellNetwork(launcher.uplink, netns.get(), uplinkInterface)) {
      spdlog::error("cell {}: undoing a failed launch: {}", launch.cellId, r);
    }
    if (launched) {
      cell = LaunchedCell();  // every fd of the cell closed before its processes are killed
      for (const auto& r : backend.destroy(launch.cellId, cell.initPid)) {
        spdlog::error("cell {}: undoing a failed launch: {}", launch.cellId, r);
      }
      for (const auto& r : backend.removeLeftovers(launch.cellId, launch.cellDir)) {
        spdlog::error("cell {}: undoing a failed launch: {}", launch.cellId, r);
      }
    }
    rmdir(launch.cellDir.c_str());
    recordFile.remove();
    throw;
  }

  capnp::MallocMessageBuilder reply;
  auto out = reply.initRoot<ipc::LauncherReply>().initLaunchedCell();
  out.setInitPid(cell.initPid);
  auto network = out.initNetwork();
  network.setUplinkInterface(uplinkInterface);
  network.setUplinkAddress(core::formatIpv4(addresses.uplink));
  network.setCellAddress(core::formatIpv4(addresses.cell));
  network.setNftApplied(true);
  network.setNftRuleCount(static_cast<uint32_t>(core::nftRules(plan).size()));
  network.setDnsBindAddress(cell.dnsBindAddress);
  auto hostList = network.initHostDestinations(plan.hostDestinations.size());
  for (size_t i = 0; i < plan.hostDestinations.size(); ++i) {
    hostList.set(i, core::formatIpRange(plan.hostDestinations[i]));
  }
  auto facts = out.initGuestBoot(cell.guestBoot.size());
  for (size_t i = 0; i < cell.guestBoot.size(); ++i) {
    facts[i].setName(cell.guestBoot[i].first);
    facts[i].setValue(cell.guestBoot[i].second);
  }
  timings.emplace_back("total", elapsedMicros(started));
  auto timingList = out.initTimings(timings.size());
  for (size_t i = 0; i < timings.size(); ++i) {
    timingList[i].setName(timings[i].first);
    timingList[i].setMicros(timings[i].second);
  }
  launcher.cells.emplace(
      launch.cellId,
      LiveCell{&backend, launch.cellDir, uplinkInterface, std::move(netns), std::move(plan),
               std::move(addressLease), std::move(idLease), std::move(recordFile),
               launch.workingDirectory, std::move(cell.workingDirectory), std::move(cell.secrets),
               launch.ids.hostBase});
  std::vector<Fd> agentFds = cell.releaseAgentFds();
  std::vector<int> fds;
  for (const Fd& fd : agentFds) fds.push_back(fd.get());
  sendReply(sock, reply, fds);
  // `agentFds` closes our copies: the agent holds them now.
}

// Tears the cell down as far as it goes: its network, every backend's teardown that may apply,
// its directory; then checks its veth and table are gone. Returns what is left (empty: clean).
// Only a clean cell gives up its record and slots; otherwise the next destroy, the next launch
// of the same id or the next launcher's start tries again.
std::vector<std::string> tearDownCell(Launcher& launcher, const std::string& cellId,
                                      pid_t initPid) {
  std::vector<std::string> residue;
  auto live = launcher.cells.find(cellId);
  if (live != launcher.cells.end()) {
    live->second.workdir = Fd();  // the working directory's tmpfs goes with the cell
    live->second.secrets = Fd();
    residue =
        removeCellNetwork(launcher.uplink, live->second.netns.get(), live->second.uplinkInterface);
  }
  std::string cellDir = launcher.config.runDir + "/cells/" + cellId;
  // A live cell's own backend; for one this launcher does not know (it did not build it, or
  // gave up its record), every backend's teardown, each safe on another backend's cell.
  std::vector<CellBackend*> backends = live != launcher.cells.end()
                                           ? std::vector<CellBackend*>{live->second.backend}
                                           : launcher.backends.all();
  for (CellBackend* backend : backends) {
    for (std::string& r : backend->destroy(cellId, initPid)) {
      residue.push_back(std::move(r));
    }
  }
  for (CellBackend* backend : backends) {
    for (std::string& r : backend->removeLeftovers(cellId, cellDir)) {
      residue.push_back(std::move(r));
    }
  }
  if (rmdir(cellDir.c_str()) < 0 && errno != ENOENT) {
    residue.push_back(cellDir + ": " + strerror(errno));
  }
  if (live != launcher.cells.end()) {
    LiveCell& cell = live->second;
    try {
      if (interfaceExists(launcher.uplink, launcher.uplink.uplinkFd, cell.uplinkInterface)) {
        residue.push_back("veth " + cell.uplinkInterface + " still exists");
      }
      if (cellTableExists(launcher.uplink, cell.netns.get())) {
        residue.push_back("nftables table inet cellos still exists in the cell's namespace");
      }
    } catch (const std::exception& e) {
      residue.push_back(std::string("network residue check failed: ") + e.what());
    }
    if (residue.empty()) {
      cell.record.remove();
      launcher.cells.erase(live);
    } else {
      cell.destroyTried = true;
    }
  }
  return residue;
}

void handleDestroy(int sock, Launcher& launcher, const DestroyCommand& request) {
  std::vector<std::string> residue = tearDownCell(launcher, request.cellId, request.initPid);
  capnp::MallocMessageBuilder reply;
  auto list = reply.initRoot<ipc::LauncherReply>().initDestroyed(residue.size());
  for (size_t i = 0; i < residue.size(); ++i) list.set(i, residue[i]);
  sendReply(sock, reply, {});
}

// A launch of an id this launcher still holds a record of: refused while that cell runs; when
// only its teardown was left unfinished, the teardown is tried again first and, once clean, the
// id is free (a record must not outlive the cell's own resources).
void releaseFinishedCell(Launcher& launcher, const std::string& cellId) {
  auto held = launcher.cells.find(cellId);
  if (held == launcher.cells.end()) return;
  if (!held->second.destroyTried) {
    throw std::runtime_error("cell " + cellId +
                             " is already running on this host (a cell id names one cell at a "
                             "time)");
  }
  std::vector<std::string> residue = tearDownCell(launcher, cellId, 0);
  if (!residue.empty()) {
    std::string list;
    for (const auto& r : residue) list += (list.empty() ? "" : "; ") + r;
    throw std::runtime_error("cell " + cellId +
                             ": the teardown of its previous run is not "
                             "complete (" +
                             list + ")");
  }
  spdlog::info("cell {}: the teardown of its previous run completed now; the id is free", cellId);
}

void handleInspect(int sock, Launcher& launcher, const std::string& cellId) {
  capnp::MallocMessageBuilder reply;
  auto report = reply.initRoot<ipc::LauncherReply>().initInspected();
  CellCgroup cgroup = CellCgroup::open(cellId);
  auto live = launcher.cells.find(cellId);
  uint64_t oomKills = cgroup.oomKillCount();
  if (live != launcher.cells.end()) {
    oomKills += live->second.backend->oomKillsInside(live->second.cellDir);
  }
  report.setOomKillCount(oomKills);
  report.setOomKilled(oomKills > 0);
  try {
    report.setCpuUsageMicros(cgroup.cpuUsageMicros());
  } catch (const std::exception& e) {
    spdlog::warn("cell {}: cpu usage: {}", cellId, e.what());
  }
  if (live != launcher.cells.end()) {
    std::vector<core::NftCounter> counters =
        readCellCounters(launcher.uplink, live->second.netns.get());
    std::map<std::string, std::string> matchOf;
    for (const auto& rule : core::nftRules(live->second.plan)) matchOf[rule.id] = rule.match;
    auto flows = report.initFlows(counters.size());
    for (size_t i = 0; i < counters.size(); ++i) {
      flows[i].setRuleId(counters[i].id);
      flows[i].setRule(matchOf[counters[i].id]);
      flows[i].setVerdict(counters[i].verdict);
      flows[i].setPackets(counters[i].packets);
      flows[i].setBytes(counters[i].bytes);
    }
  }
  sendReply(sock, reply, {});
}

// Opens one export artifact of a live cell (artifact_open.h) and sends its fd, or the reason
// it was refused.
void handleOpenArtifact(int sock, Launcher& launcher, const ArtifactCommand& request) {
  const std::string& cellId = request.cellId;
  auto live = launcher.cells.find(cellId);
  KJ_REQUIRE(live != launcher.cells.end() && live->second.workdir.get() >= 0,
             "no live cell with this id", cellId);
  OpenedArtifact opened = openArtifact(live->second.workdir.get(), live->second.workingDirectory,
                                       request.path, request.maxBytes);
  Fd file(opened.fd);
  capnp::MallocMessageBuilder reply;
  auto out = reply.initRoot<ipc::LauncherReply>().initArtifact();
  out.setBytes(opened.bytes);
  out.setRefused(opened.refused);
  if (file.get() >= 0) {
    sendReply(sock, reply, {file.get()});
  } else {
    spdlog::info("cell {}: artifact {} refused: {}", cellId, request.path, opened.refused);
    sendReply(sock, reply, {});
  }
}

// Writes a cell's secrets into its /run/secrets tmpfs (secret_files.h) before its workload runs.
void handleDeliverSecrets(int sock, Launcher& launcher, const SecretsCommand& request) {
  const std::string& cellId = request.cellId;
  auto live = launcher.cells.find(cellId);
  KJ_REQUIRE(live != launcher.cells.end(), "no live cell with this id", cellId);
  KJ_REQUIRE(live->second.secrets.get() >= 0, "the cell was not built for secrets", cellId);
  std::vector<std::string> names = writeSecretFiles(live->second.secrets.get(), request.secrets,
                                                    live->second.workloadId, request.asEnvironment);
  capnp::MallocMessageBuilder reply;
  auto list = reply.initRoot<ipc::LauncherReply>().initSecretsDelivered(names.size());
  for (size_t i = 0; i < names.size(); ++i) list.set(i, names[i]);
  sendReply(sock, reply, {});
}

// Overwrites every segment of a request that held secret values (the reader's buffer is
// otherwise freed as it is).
void wipeRequest(capnp::MessageReader& reader) {
  for (uint id = 0;; ++id) {
    auto segment = reader.getSegment(id);
    if (segment == nullptr) break;
    explicit_bzero(const_cast<capnp::word*>(segment.begin()), segment.size() * sizeof(capnp::word));
  }
}

// DNS-learned egress: the cell's resolver saw these addresses for a name its `host` rule
// covers; they go into that rule's sets in the cell's namespace before the answer is released.
void handleAllowEgress(int sock, Launcher& launcher, const EgressCommand& request) {
  const std::string& cellId = request.cellId;
  auto live = launcher.cells.find(cellId);
  KJ_REQUIRE(live != launcher.cells.end(), "no live cell", cellId);
  // The DNS child refuses such answers already (host_destination); this is the launcher's own
  // check, against the host's addresses as they are now, for a child that did not.
  refreshHostDestinations(launcher);
  for (const auto* list : {&request.ipv4, &request.ipv6}) {
    for (const auto& a : *list) {
      if (core::isHostDestination(a, launcher.hostDestinations,
                                  live->second.plan.allowedHostDestinations)) {
        char text[INET6_ADDRSTRLEN] = {};
        inet_ntop(a.size() == 4 ? AF_INET : AF_INET6, a.data(), text, sizeof text);
        throw std::runtime_error(std::string("learned address ") + text +
                                 " is a host destination: not added");
      }
    }
  }
  std::string commands = core::nftLearnedElements(
      live->second.plan, request.ruleIndex, request.ipv4, request.ipv6, request.timeoutSeconds);
  if (!commands.empty()) addCellElements(launcher.uplink, live->second.netns.get(), commands);
  capnp::MallocMessageBuilder reply;
  reply.initRoot<ipc::LauncherReply>().setEgressAllowed();
  sendReply(sock, reply, {});
}

[[noreturn]] void runLauncher(int sock, const LauncherConfig& config) {
  // If the agent dies, so do we (and, through PDEATHSIG in each cell's init, so do the cells).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "vmm-launcher");
  privsep::closeStrayFds({sock, config.uplinkNetnsFd, config.homeNetnsFd});
  signal(SIGPIPE, SIG_IGN);
  // Every backend is made before the profile below: one that needs what the profile refuses
  // starts its helper now (the gVisor spawner: runsc needs ptrace and a Go runtime's system
  // calls; docs/security.md, "The gVisor spawner").
  BackendTable backends(config.gvisor, config.microvm, config.microvmUnavailable, config.runDir);
  Launcher launcher{
      config, UplinkNamespace{config.uplinkNetnsFd, config.homeNetnsFd}, backends, {}, {}};
  // The host's addresses can change while cells run (an interface comes up, a lease renews):
  // the launcher hears of every change in both namespaces and rewrites the live cells' host
  // sets at once, instead of waiting for its next request.
  std::vector<pollfd> waits = {{sock, POLLIN, 0}};
  for (int netns : {config.homeNetnsFd, config.uplinkNetnsFd}) {
    waits.push_back({watchAddressChanges(launcher.uplink, netns), POLLIN, 0});
  }
  privsep::installSeccomp(kLauncherProfile);
  capnp::ReaderOptions options = launcherRequestOptions();
  for (;;) {
    for (auto& wait : waits) wait.revents = 0;
    if (poll(waits.data(), waits.size(), -1) < 0) {
      KJ_REQUIRE(errno == EINTR, "poll(launcher socket, address watches)", strerror(errno));
      continue;
    }
    bool changed = false;
    for (size_t i = 1; i < waits.size(); ++i) {
      if (waits[i].revents != 0 && drainAddressChanges(waits[i].fd)) changed = true;
    }
    if (changed && !launcher.cells.empty()) {
      try {
        refreshHostDestinations(launcher);
      } catch (const std::exception& e) {
        spdlog::error("listing the host's addresses after a change: {}", e.what());
      }
    }
    if (waits[0].revents == 0) continue;
    kj::Maybe<kj::Own<capnp::StreamFdMessageReader>> reader;
    try {
      reader = kj::heap<capnp::StreamFdMessageReader>(sock, options);
    } catch (const kj::Exception&) {
      _exit(0);  // the agent closed its end
    }
    auto request = KJ_ASSERT_NONNULL(reader)->getRoot<ipc::LauncherRequest>();
    try {
      switch (request.which()) {
        case ipc::LauncherRequest::LAUNCH:
          handleLaunch(sock, launcher, request.getLaunch());
          break;
        case ipc::LauncherRequest::DESTROY:
          handleDestroy(sock, launcher, decodeDestroyRequest(request.getDestroy()));
          break;
        case ipc::LauncherRequest::INSPECT:
          handleInspect(sock, launcher, requestCellId(request.getInspect()));
          break;
        case ipc::LauncherRequest::OPEN_ARTIFACT:
          handleOpenArtifact(sock, launcher, decodeArtifactRequest(request.getOpenArtifact()));
          break;
        case ipc::LauncherRequest::DELIVER_SECRETS:
          try {
            handleDeliverSecrets(sock, launcher, decodeSecretDelivery(request.getDeliverSecrets()));
          } catch (...) {
            wipeRequest(*KJ_ASSERT_NONNULL(reader));
            throw;
          }
          wipeRequest(*KJ_ASSERT_NONNULL(reader));
          break;
        case ipc::LauncherRequest::ALLOW_EGRESS:
          handleAllowEgress(sock, launcher, decodeAllowEgressRequest(request.getAllowEgress()));
          break;
        default:
          // Answered like any refusal, so the agent is not left waiting for a reply.
          throw std::runtime_error("unknown launcher request");
      }
    } catch (const std::exception& e) {
      capnp::MallocMessageBuilder reply;
      reply.initRoot<ipc::LauncherReply>().setFailed(e.what());
      sendReply(sock, reply, {});
    } catch (const kj::Exception& e) {
      capnp::MallocMessageBuilder reply;
      reply.initRoot<ipc::LauncherReply>().setFailed(e.getDescription().cStr());
      sendReply(sock, reply, {});
    }
  }
}

}  // namespace

std::string registeredImageRoot(const std::string& imagesDir, const std::string& name) {
  if (name.empty() || name == "host") return "";
  static const std::regex pattern("[A-Za-z0-9][A-Za-z0-9._-]{0,62}");
  if (!std::regex_match(name, pattern)) {
    throw std::runtime_error("image \"" + name +
                             "\" is not a registered image name ([A-Za-z0-9][A-Za-z0-9._-]{0,62})");
  }
  if (imagesDir.empty()) {
    throw std::runtime_error("image \"" + name +
                             "\" is not registered: this VM launcher has no --images-dir");
  }
  std::string path = imagesDir + "/" + name;
  struct stat st {};
  if (stat(path.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
    throw std::runtime_error("image \"" + name + "\" is not registered (no directory " + path +
                             ")");
  }
  // Whoever can write the image can change what every cell that uses it runs.
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
    throw std::runtime_error("image " + path +
                             " must be owned by root and writable by nobody else");
  }
  return path;
}

pid_t startLauncher(const LauncherConfig& config, int& agentEnd) {
  int pair[2];
  KJ_SYSCALL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair));
  pid_t pid;
  KJ_SYSCALL(pid = fork());
  if (pid == 0) {
    close(pair[0]);
    try {
      runLauncher(pair[1], config);
    } catch (...) {
      _exit(125);
    }
  }
  close(pair[1]);
  agentEnd = pair[0];
  return pid;
}

}  // namespace cellos::vmm
