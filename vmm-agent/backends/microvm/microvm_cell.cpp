#include "vmm-agent/backends/microvm/microvm_cell.h"

#include "core/spec.h"
#include "vmm-agent/backends/microvm/qemu_driver.h"
#include "vmm-agent/backends/microvm/vm_boot_files.h"
#include "vmm-agent/backends/microvm/vm_plan.h"
#include "vmm-agent/backends/microvm/vm_supervisor.h"
#include "vmm-agent/backends/microvm/vmm_process.h"
#include "vmm-agent/cell/cell_init.h"
#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/cell/supervisor_spawner.h"
#include "vmm-agent/cell/sys_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace cellos::vmm {

namespace {

constexpr uint64_t kMiB = 1u << 20;
// A guest below this does not boot the cloud kernel with its modules.
constexpr uint64_t kMinGuestMiB = 96;
constexpr uint64_t kDefaultGuestMiB = core::kDefaultMicrovmMemoryBytes / kMiB;
// The VMM's own memory beyond the guest's RAM (its code, TCG's translation buffer of 64 MiB,
// device state), charged to the cell's host cgroup; the working directory copy on the host
// (at most the guest's RAM) comes on top.
constexpr uint64_t kVmmOverheadMiB = 192;
// Host tasks of a VM cell: the supervisor, the VMM's threads (main, RCU, one per vCPU, I/O
// workers). The document's pidsMax is enforced inside the guest.
constexpr uint64_t kVmHostPidsMax = 256;
// A guest that powers off at once takes ~1-2 s under TCG and well under 1 s with KVM; a KVM
// that hangs (nested PVM hosts) never powers off.
constexpr int kProbeTimeoutMs = 8000;

std::string readTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  return text;
}

std::string identityOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) return path + ":absent";
  return path + ":" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

// Boots the initramfs with "cellos.poweroff" under KVM: true when the guest powered off (QEMU
// exited 0) within the timeout. `why` says what happened otherwise. The probe's VMM is what a
// cell's would be: unprivileged (nobody, with /dev/kvm's group only) and booting the kernel
// and initramfs the boot manifest pins, checked first.
bool kvmBootsAGuest(const MicrovmConfig& config, const std::string& kernel, std::string* why) {
  std::optional<gid_t> kvmGroup = kvmAccessGroup(why);
  if (!kvmGroup) return false;
  Fd kernelFd(open(kernel.c_str(), O_RDONLY | O_CLOEXEC));
  Fd initramfsFd(open(config.initramfs.c_str(), O_RDONLY | O_CLOEXEC));
  if (kernelFd.get() < 0 || initramfsFd.get() < 0) {
    *why = "the kernel or initramfs cannot be opened";
    return false;
  }
  try {
    BootManifest manifest = readBootManifest(bootManifestDir(config));
    if (sha256OfFd(kernelFd.get(), kernel) != manifest.kernel.sha256 ||
        sha256OfFd(initramfsFd.get(), config.initramfs) != manifest.initramfs.sha256) {
      *why = "the kernel or initramfs does not have the digest its boot manifest pins";
      return false;
    }
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
  int console[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, console) < 0) {
    *why = "socketpair";
    return false;
  }
  Fd ours(console[0]), theirs(console[1]);
  VmBoot boot;
  boot.accelerator = "kvm";
  boot.memoryMiB = 128;
  boot.bare = true;
  boot.extraKernelArgs = "cellos.poweroff";
  std::vector<std::string> argv = QemuDriver(config.qemu).commandLine(boot);
  pid_t pid = fork();
  if (pid < 0) {
    *why = "fork";
    return false;
  }
  if (pid == 0) {
    VmmFds fds;
    fds.kernel = kernelFd.get();
    fds.initramfs = initramfsFd.get();
    fds.console = theirs.get();
    execVmm(argv, fds, -1, kProbeUid, kvmGroup);
  }
  theirs.reset();
  // Drain the console so the guest never blocks on it, until QEMU exits or the time is up.
  fcntl(ours.get(), F_SETFL, O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kProbeTimeoutMs);
  int status = 0;
  for (;;) {
    char buffer[4096];
    while (read(ours.get(), buffer, sizeof buffer) > 0) {
    }
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      *why = "a KVM guest did not power off within " + std::to_string(kProbeTimeoutMs) +
             " ms (the kernel hangs under this host's KVM)";
      return false;
    }
    pollfd p{ours.get(), POLLIN, 0};
    poll(&p, 1, 50);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  *why = "QEMU with -accel kvm " + describeWaitStatus(status);
  return false;
}

// The host's TSC rate in kHz: rdtsc against CLOCK_MONOTONIC_RAW over 50 ms. Under TCG the
// guest's rdtsc is the host's, but the guest calibrates it against an emulated PIT, and on a
// loaded host a vCPU thread preempted mid-calibration gets a wrong rate, marks the TSC
// unstable and can hang in early boot (4 boots in 6 did under load here). tsc_early_khz= on
// the command line skips the calibration (guest-init/README.md). 0 where there is no TSC.
uint64_t hostTscKhz() {
#if defined(__x86_64__)
  auto sample = [](uint64_t& tsc) {
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    tsc = __rdtsc();
    return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec);
  };
  uint64_t tsc0 = 0, tsc1 = 0;
  uint64_t ns0 = sample(tsc0);
  usleep(50 * 1000);
  uint64_t ns1 = sample(tsc1);
  return ns1 > ns0 && tsc1 > tsc0 ? (tsc1 - tsc0) * 1000000u / (ns1 - ns0) : 0;
#else
  return 0;
#endif
}

// What the spawner checked before it cloned the cell's supervisor, for the cell's started event:
// <cellDir>/guest-boot, "name=value" lines, written by the spawner (root, before any guest
// byte exists) and read by the launcher once the launch returns.
constexpr const char* kGuestBootNote = "guest-boot";

void writeGuestBootNote(const std::string& cellDir, const VmAccel& accel,
                        const VmBootFiles& files) {
  std::string reason = accel.reason;
  std::replace(reason.begin(), reason.end(), '\n', ' ');
  std::string text = "accelerator=" + accel.accelerator + "\n" +
                     "acceleratorFallback=" + (accel.fallback ? "true" : "false") + "\n" +
                     (accel.fallback ? "fallbackReason=" + reason + "\n" : "") +
                     "kernelSha256=" + files.kernel.sha256 + "\n" +
                     "initramfsSha256=" + files.initramfs.sha256 + "\n" +
                     "rootImageSha256=" + files.rootDisk.sha256 + "\n";
  Fd fd(open((cellDir + "/" + kGuestBootNote).c_str(),
             O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0 || write(fd.get(), text.data(), text.size()) != ssize_t(text.size())) {
    throwErrno("write(" + cellDir + "/" + kGuestBootNote + ")");
  }
}

std::vector<std::pair<std::string, std::string>> readGuestBootNote(const std::string& cellDir) {
  std::vector<std::pair<std::string, std::string>> facts;
  std::ifstream in(cellDir + "/" + kGuestBootNote);
  for (std::string line; std::getline(in, line) && facts.size() < 16;) {
    size_t equals = line.find('=');
    if (equals != std::string::npos)
      facts.emplace_back(line.substr(0, equals), line.substr(equals + 1));
  }
  return facts;
}

class MicrovmBackend final : public CellBackend {
 public:
  MicrovmBackend(const MicrovmConfig& config, const std::string& runDir)
      : accel_(decideVmAccel(config)) {
    if (accel_.fallback) {
      spdlog::info("microvm cells will run under TCG (software emulation, slow): {}",
                   accel_.reason);
    }
    auto driver = std::make_shared<const QemuDriver>(config.qemu);
    // Lives in the spawner (the factory runs there): its images and verified digests outlast
    // one cell.
    auto bootFiles = std::make_shared<BootFilePreparer>(config);
    VmAccel a = accel_;
    std::string bootArgs;
    if (accel_.accelerator == "tcg") {
      if (uint64_t khz = hostTscKhz()) bootArgs = "tsc_early_khz=" + std::to_string(khz);
    }
    pid_t spawner = startSupervisorSpawner(
        "vmm-microvm",
        [bootFiles, a, bootArgs, driver](const std::string& cellId, int planFd) {
          if (planFd < 0) throw std::runtime_error("a microvm cell needs its plan");
          VmSupervisorPlan plan;
          plan.plan = readVmPlan(planFd);
          if (plan.plan.cellId != cellId) throw std::runtime_error("the plan is another cell's");
          plan.driver = driver;
          plan.boot.accelerator = a.accelerator;
          plan.boot.memoryMiB = plan.plan.memoryMiB;
          plan.boot.vcpus = plan.plan.vcpus;
          plan.boot.extraKernelArgs = bootArgs;
          plan.files = bootFiles->prepare(plan.plan.imageRoot, plan.plan.guest.workingDirectory);
          writeGuestBootNote(plan.plan.cellDir, a, plan.files);
          return cloneSupervisor(
              cellId, [&](InitChannels channels) { runVmSupervisor(plan, channels); },
              [&](pid_t pid, LaunchedCell& cell) {
                cell.workingDirectory = openInsideRoot(pid, kVmWorkDirectory);
                if (!plan.plan.guest.secretDelivery.empty()) {
                  cell.secrets = openInsideRoot(pid, kVmSecretsDirectory);
                }
              });
        },
        spawner_);
    spdlog::info("microVM spawner pid {} ({}, accelerator {})", spawner, config.qemu,
                 accel_.accelerator);
  }
  const char* name() const override { return "microvm"; }

  LaunchedCell launch(const CellLaunch& launch) override {
    requireUnregistered(launch.cellId);
    if (accel_.fallback && !warned_) {
      spdlog::warn("microvm cells run under TCG (software emulation, slow): {}", accel_.reason);
      warned_ = true;
    }
    VmPlan plan = planOf(launch);
    // The host's limits around the VMM: the guest's RAM plus the VMM's overhead plus the
    // working directory copy; the document's own limits are the guest's (RAM, vCPUs, pids.max
    // inside it).
    CellLaunch host = launch;
    host.memoryMaxBytes = (2 * plan.memoryMiB + kVmmOverheadMiB) * kMiB;
    CellCgroup cgroup = createLimitedCgroup(host, kVmHostPidsMax);
    Fd planFd;
    try {
      planFd = Fd(vmPlanMemfd(plan));
    } catch (...) {
      removeCellCgroup(cgroup);
      throw;
    }
    LaunchedCell cell = launchThroughSpawner(spawner_.get(), launch.cellId, cgroup, planFd.get());
    cell.dnsBindAddress = kGuestGateway;
    cell.resolvConf = plan.guest.resolvConf;
    cell.guestInterface = kTapName;
    cell.guestAddress = kGuestAddress;
    cell.guestBoot = readGuestBootNote(launch.cellDir);
    // The document's limits are the guest's; the host's cgroup around the VMM is larger by the
    // VMM's own overhead, and the event says by how much.
    cell.guestBoot.emplace_back("guestMemoryMiB", std::to_string(plan.memoryMiB));
    cell.guestBoot.emplace_back("vcpus", std::to_string(plan.vcpus));
    cell.guestBoot.emplace_back("hostMemoryMaxBytes", std::to_string(*host.memoryMaxBytes));
    return cell;
  }
  std::vector<std::string> destroy(const std::string& cellId, pid_t initPid) override {
    return destroyCell(cellId, initPid);
  }
  std::vector<std::string> removeLeftovers(const std::string& cellId,
                                           const std::string& cellDir) override {
    return removeMicrovmLeftovers(cellDir);
  }
  // The supervisor's note of the guest's own count (vm_supervisor.h, kVmGuestExitFile); its
  // phase timings go to the log (bench/cell-start reads them there).
  uint64_t oomKillsInside(const std::string& cellDir) const override {
    std::string line = readTrimmed(cellDir + "/" + kVmGuestExitFile);
    std::map<std::string, uint64_t> values;
    size_t at = 0;
    while (at < line.size() && values.size() < 8) {
      size_t space = std::min(line.find(' ', at), line.size());
      std::string_view word(line.data() + at, space - at);
      size_t equals = word.find('=');
      uint64_t value = 0;
      if (equals == std::string_view::npos) return 0;
      auto [end, ec] = std::from_chars(word.data() + equals + 1, word.data() + word.size(), value);
      if (ec != std::errc() || end != word.data() + word.size()) return 0;
      values[std::string(word.substr(0, equals))] = value;
      at = space + 1;
    }
    if (values.count("runUs")) {
      spdlog::info(
          "microvm cell in {}: phases (µs): vmm start {}, guest up {}, run {}, power off {}",
          cellDir, values["vmmStartUs"], values["guestUpUs"], values["runUs"],
          values["powerOffUs"]);
    }
    return values.count("oomKills") ? values["oomKills"] : 0;
  }

 private:
  VmPlan planOf(const CellLaunch& launch) const {
    VmPlan plan;
    plan.cellId = launch.cellId;
    plan.cellDir = launch.cellDir;
    plan.imageRoot = launch.imageRoot;
    plan.vmmUid = launch.ids.hostBase;
    if (plan.vmmUid == 0) throw std::invalid_argument("a microvm cell needs its host id range");
    plan.memoryMiB = launch.memoryMaxBytes ? *launch.memoryMaxBytes / kMiB : kDefaultGuestMiB;
    if (plan.memoryMiB < kMinGuestMiB) {
      throw std::invalid_argument("a microvm cell needs memoryMaxBytes of at least " +
                                  std::to_string(kMinGuestMiB) +
                                  " MiB (it is the guest's RAM, and the guest kernel needs it)");
    }
    unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    if (launch.cpuMax && launch.cpuMax->periodMicros > 0) {
      uint64_t wanted = (launch.cpuMax->quotaMicros + launch.cpuMax->periodMicros - 1) /
                        launch.cpuMax->periodMicros;
      plan.vcpus = static_cast<uint32_t>(std::clamp<uint64_t>(wanted, 1, cpus));
    }
    vmchannel::GuestConfig& g = plan.guest;
    g.argv = launch.argv;
    for (const auto& [name, value] : launch.env) g.env.push_back(name + "=" + value);
    g.workingDirectory = launch.workingDirectory;
    g.hostname = launch.cellId;
    // The DNS helper answers on the guest link's gateway, inside the cell's namespace.
    if (!launch.resolvConf.empty())
      g.resolvConf = std::string("nameserver ") + kGuestGateway + "\n";
    g.address = kGuestAddress;
    g.prefixLength = kGuestPrefixLength;
    g.gateway = kGuestGateway;
    g.pidsMax = launch.pidsMax.value_or(0);
    // Inside the guest too (guest-init/relay.cpp), from the workload's start: the agent's own
    // clock, which counts the boot, ends it first unless the host is slow to deliver.
    g.timeoutMs = launch.timeoutMs;
    g.nofileMax = launch.nofileMax;
    g.workingDirectoryMaxBytes = plan.memoryMiB * kMiB / 2;
    g.secretDelivery = launch.secretDelivery;
    return plan;
  }

  VmAccel accel_;
  bool warned_ = false;
  Fd spawner_;
};

}  // namespace

VmAccel decideVmAccel(const MicrovmConfig& config) {
  if (config.accel == "tcg") return {"tcg", false, "the operator asked for TCG"};
  if (config.accel != "kvm" && config.accel != "auto") {
    throw std::invalid_argument("--vm-accel " + config.accel + ": not auto, kvm or tcg");
  }
  std::string kernel = bootKernelPath(config);
  // The answer holds for this boot of the host, this VMM binary, kernel and initramfs.
  std::string key = readTrimmed("/proc/sys/kernel/random/boot_id") + " " + identityOf(config.qemu) +
                    " " + identityOf(kernel) + " " + identityOf(config.initramfs);
  std::string cache = config.imagesDir + "/accel-probe";
  std::ifstream in(cache);
  std::string cachedKey, cachedAnswer, cachedReason;
  std::getline(in, cachedKey);
  std::getline(in, cachedAnswer);
  std::getline(in, cachedReason);
  bool works = false;
  std::string why;
  if (cachedKey == key && (cachedAnswer == "kvm" || cachedAnswer == "tcg")) {
    works = cachedAnswer == "kvm";
    why = cachedReason;
  } else {
    works = kvmBootsAGuest(config, kernel, &why);
    std::error_code ec;
    std::filesystem::create_directories(config.imagesDir, ec);
    std::string tmp = cache + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << key << "\n" << (works ? "kvm" : "tcg") << "\n" << why << "\n";
    out.close();
    if (out) std::filesystem::rename(tmp, cache, ec);
  }
  if (works) return {"kvm", false, ""};
  if (config.accel == "kvm") {
    throw std::runtime_error("--vm-accel kvm, but KVM cannot boot a guest here: " + why);
  }
  return {"tcg", true, why};
}

std::string microvmUnavailableReason(const MicrovmConfig& config) {
  if (access(config.qemu.c_str(), X_OK) < 0) {
    return config.qemu + " is not executable (apt-get install qemu-system-x86)";
  }
  std::string kernel = bootKernelPath(config);
  if (access(kernel.c_str(), R_OK) < 0) {
    return "no guest kernel at " + kernel + " (scripts/setup unpacks one)";
  }
  if (config.initramfs.empty() || access(config.initramfs.c_str(), R_OK) < 0) {
    return "no initramfs at \"" + config.initramfs + "\" (--vm-initramfs)";
  }
  std::string manifest = bootManifestDir(config) + "/boot-manifest.json";
  if (access(manifest.c_str(), R_OK) < 0) {
    return "no boot manifest at " + manifest + " (the build's vm-initramfs target writes it)";
  }
  return "";
}

std::unique_ptr<CellBackend> makeMicrovmBackend(const MicrovmConfig& config,
                                                const std::string& runDir) {
  return std::make_unique<MicrovmBackend>(config, runDir);
}

std::vector<std::string> removeMicrovmLeftovers(const std::string& cellDir) {
  std::vector<std::string> residue;
  if (cellDir.empty()) return residue;
  for (const std::string& path :
       {cellDir + "/root", cellDir + "/" + kVmGuestExitFile, cellDir + "/" + kGuestBootNote}) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) residue.push_back(path + ": " + ec.message());
  }
  return residue;
}

}  // namespace cellos::vmm
