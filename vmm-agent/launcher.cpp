#include "vmm-agent/launcher.h"

#include "core/cell_id.h"

#include "core/nft_rules.h"
#include "ipc/vmm.capnp.h"
#include "privsep/daemon.h"
#include "privsep/seccomp.h"
#include "vmm-agent/cell_records.h"
#include "vmm-agent/cgroup.h"
#include "vmm-agent/linux_cell.h"
#include "vmm-agent/network_scope.h"
#include "vmm-agent/seccomp_profile.h"
#include "vmm-agent/slot_lease.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
    iovec iov{const_cast<kj::byte*>(bytes.begin()) + offset, bytes.size() - offset};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (first && !fds.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    KJ_SYSCALL(n = sendmsg(sock, &msg, MSG_NOSIGNAL), "launcher reply");
    offset += n;
    first = false;
  }
}

uint64_t elapsedMicros(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               since)
      .count();
}

// An fd this launcher owns.
struct OwnedFd {
  int fd = -1;
  OwnedFd() = default;
  explicit OwnedFd(int f) : fd(f) {}
  OwnedFd(OwnedFd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  OwnedFd& operator=(OwnedFd&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) close(fd);
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
};

// A cell this launcher built and has not destroyed yet. The leases and the record are held for
// exactly as long as the cell exists; the netns fd lets teardown and counters reach the cell's
// namespace after its init is gone.
struct LiveCell {
  std::string cellDir;
  std::string uplinkInterface;
  OwnedFd netns;
  core::NftPlan plan;
  SlotLease addressLease;
  SlotLease idLease;
  CellRecordFile record;
};

struct Launcher {
  const LauncherConfig& config;
  UplinkNamespace uplink;
  std::map<std::string, LiveCell> cells;
};

core::NftPlan nftPlanOf(const LauncherConfig& config, ipc::CellRequest::Reader request) {
  core::NftPlan plan;
  plan.dnsUid = config.dnsUid;
  for (auto rule : request.getEgressRules()) {
    core::NftEgress egress;
    if (rule.getHost().size() > 0) egress.host = rule.getHost().cStr();
    if (rule.getCidr().size() > 0) egress.cidr = rule.getCidr().cStr();
    egress.port = rule.getPort();
    egress.protocol = rule.getProtocol();
    plan.egress.push_back(std::move(egress));
  }
  for (auto resolver : request.getResolvers()) {
    plan.resolvers.push_back({resolver.getResolverId(), resolver.getAddress(), resolver.getPort(),
                              resolver.getProtocol()});
  }
  return plan;
}

void handleLaunch(int sock, Launcher& launcher, ipc::CellRequest::Reader request) {
  const LauncherConfig& config = launcher.config;
  auto started = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, uint64_t>> timings;

  CellLaunch launch;
  launch.cellId = request.getCellId();
  KJ_REQUIRE(core::isValidCellId(launch.cellId), "invalid cell id", launch.cellId);
  KJ_REQUIRE(!launcher.cells.count(launch.cellId), "a cell with this id is live", launch.cellId);
  for (auto arg : request.getArgv()) launch.argv.emplace_back(arg.cStr());
  for (auto kv : request.getEnv())
    launch.env.emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
  launch.workingDirectory = request.getWorkingDirectory();
  if (request.getPidsMax() != 0) launch.pidsMax = request.getPidsMax();
  if (request.getMemoryMaxBytes() != 0) launch.memoryMaxBytes = request.getMemoryMaxBytes();
  if (request.getCpuQuotaMicros() != 0) {
    uint64_t period = request.getCpuPeriodMicros() != 0 ? request.getCpuPeriodMicros() : 100000;
    launch.cpuMax = CellCpuMax{request.getCpuQuotaMicros(), period};
  }
  launch.imageRoot = registeredImageRoot(config.imagesDir, request.getImage());
  // The rules are checked before anything exists: a bad one refuses the cell, it does not
  // leave it half-scoped.
  core::NftPlan plan = nftPlanOf(config, request);
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
  CellRecord record{launch.cellId,          launch.cellDir,  uplinkInterface,
                    config.uplinkNetnsPath, uplinkId.st_dev, uplinkId.st_ino,
                    launch.ids.hostBase,    launch.ids.size, core::formatIpv4(addresses.cell)};
  CellRecordFile recordFile = [&]() {
    try {
      return CellRecordFile::create(config.stateDir, record);
    } catch (...) {
      rmdir(launch.cellDir.c_str());
      throw;
    }
  }();

  LaunchedCell cell{};
  bool launched = false;
  OwnedFd netns;
  try {
    auto step = std::chrono::steady_clock::now();
    cell = launchCell(launch);
    launched = true;
    timings.emplace_back("cell", elapsedMicros(step));
    netns = OwnedFd(fcntl(cell.netnsFd, F_DUPFD_CLOEXEC, 3));
    KJ_REQUIRE(netns.fd >= 0, "fcntl(netns, F_DUPFD_CLOEXEC)", strerror(errno));

    step = std::chrono::steady_clock::now();
    createCellLink(launcher.uplink, netns.fd, uplinkInterface, addresses);
    timings.emplace_back("link", elapsedMicros(step));
    step = std::chrono::steady_clock::now();
    applyCellRuleset(launcher.uplink, netns.fd, plan);
    timings.emplace_back("nftables", elapsedMicros(step));
  } catch (...) {
    if (launched) {
      for (int fd :
           {cell.pidFd, cell.netnsFd, cell.stdoutFd, cell.stderrFd, cell.startFd, cell.statusFd}) {
        close(fd);
      }
    }
    for (const auto& r : removeCellNetwork(launcher.uplink, netns.fd, uplinkInterface)) {
      spdlog::error("cell {}: undoing a failed launch: {}", launch.cellId, r);
    }
    if (launched) {
      for (const auto& r : destroyCell(launch.cellId, cell.initPid)) {
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
  timings.emplace_back("total", elapsedMicros(started));
  auto timingList = out.initTimings(timings.size());
  for (size_t i = 0; i < timings.size(); ++i) {
    timingList[i].setName(timings[i].first);
    timingList[i].setMicros(timings[i].second);
  }
  launcher.cells.emplace(
      launch.cellId, LiveCell{launch.cellDir, uplinkInterface, std::move(netns), std::move(plan),
                              std::move(addressLease), std::move(idLease), std::move(recordFile)});
  std::vector<int> fds = {cell.pidFd,    cell.netnsFd, cell.stdoutFd,
                          cell.stderrFd, cell.startFd, cell.statusFd};
  sendReply(sock, reply, fds);
  for (int fd : fds) close(fd);  // the agent holds them now
}

void handleDestroy(int sock, Launcher& launcher, ipc::DestroyRequest::Reader request) {
  std::string cellId = request.getCellId();
  KJ_REQUIRE(core::isValidCellId(cellId), "invalid cell id", cellId);
  std::vector<std::string> residue;
  auto live = launcher.cells.find(cellId);
  if (live != launcher.cells.end()) {
    residue =
        removeCellNetwork(launcher.uplink, live->second.netns.fd, live->second.uplinkInterface);
  }
  for (std::string& r : destroyCell(cellId, request.getInitPid())) residue.push_back(std::move(r));
  std::string cellDir = launcher.config.runDir + "/cells/" + cellId;
  if (rmdir(cellDir.c_str()) < 0 && errno != ENOENT) {
    residue.push_back(cellDir + ": " + strerror(errno));
  }
  if (live != launcher.cells.end()) {
    LiveCell& cell = live->second;
    try {
      if (interfaceExists(launcher.uplink, launcher.uplink.uplinkFd, cell.uplinkInterface)) {
        residue.push_back("veth " + cell.uplinkInterface + " still exists");
      }
      if (cellTableExists(launcher.uplink, cell.netns.fd)) {
        residue.push_back("nftables table inet cellos still exists in the cell's namespace");
      }
    } catch (const std::exception& e) {
      residue.push_back(std::string("network residue check failed: ") + e.what());
    }
    // Only a clean cell gives up its record and slots; otherwise the next destroy (or the next
    // launcher's start) tries again.
    if (residue.empty()) {
      cell.record.remove();
      launcher.cells.erase(live);
    }
  }
  capnp::MallocMessageBuilder reply;
  auto list = reply.initRoot<ipc::LauncherReply>().initDestroyed(residue.size());
  for (size_t i = 0; i < residue.size(); ++i) list.set(i, residue[i]);
  sendReply(sock, reply, {});
}

void handleInspect(int sock, Launcher& launcher, const std::string& cellId) {
  KJ_REQUIRE(core::isValidCellId(cellId), "invalid cell id", cellId);
  capnp::MallocMessageBuilder reply;
  auto report = reply.initRoot<ipc::LauncherReply>().initInspected();
  CellCgroup cgroup = CellCgroup::open(cellId);
  uint64_t oomKills = cgroup.oomKillCount();
  report.setOomKillCount(oomKills);
  report.setOomKilled(oomKills > 0);
  try {
    report.setCpuUsageMicros(cgroup.cpuUsageMicros());
  } catch (const std::exception& e) {
    spdlog::warn("cell {}: cpu usage: {}", cellId, e.what());
  }
  auto live = launcher.cells.find(cellId);
  if (live != launcher.cells.end()) {
    std::vector<core::NftCounter> counters =
        readCellCounters(launcher.uplink, live->second.netns.fd);
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

// DNS-learned egress: the cell's resolver saw these addresses for a name its `host` rule
// covers; they go into that rule's sets in the cell's namespace before the answer is released.
void handleAllowEgress(int sock, Launcher& launcher, ipc::AllowEgressRequest::Reader request) {
  std::string cellId = request.getCellId();
  KJ_REQUIRE(core::isValidCellId(cellId), "invalid cell id", cellId);
  auto live = launcher.cells.find(cellId);
  KJ_REQUIRE(live != launcher.cells.end(), "no live cell", cellId);
  auto addresses = request.getAddresses();
  KJ_REQUIRE(addresses.getIpv4().size() + addresses.getIpv6().size() <= 256,
             "too many addresses in one request");
  std::vector<std::vector<uint8_t>> v4, v6;
  for (auto a : addresses.getIpv4()) v4.emplace_back(a.begin(), a.end());
  for (auto a : addresses.getIpv6()) v6.emplace_back(a.begin(), a.end());
  std::string commands = core::nftLearnedElements(live->second.plan, addresses.getRuleIndex(), v4,
                                                  v6, addresses.getTimeoutSeconds());
  if (!commands.empty()) addCellElements(launcher.uplink, live->second.netns.fd, commands);
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
  privsep::installSeccomp(kLauncherProfile);
  Launcher launcher{config, UplinkNamespace{config.uplinkNetnsFd, config.homeNetnsFd}, {}};
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1 << 20;
  options.nestingLimit = 16;
  for (;;) {
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
          handleDestroy(sock, launcher, request.getDestroy());
          break;
        case ipc::LauncherRequest::INSPECT:
          handleInspect(sock, launcher, request.getInspect());
          break;
        case ipc::LauncherRequest::ALLOW_EGRESS:
          handleAllowEgress(sock, launcher, request.getAllowEgress());
          break;
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
