// cellos-guest-init: pid 1 of a VM cell's guest. Its own trust level (README.md): it runs in the
// guest, shares the guest kernel with the workload, and is as untrusted as the workload once
// that runs. The host gives it everything it needs in one config frame and believes nothing it
// sends back beyond what vm_channel.h's decoder checks.
//
// The steps, in order (each below is a function whose comment says why it is where it is):
//   1. mount /dev /proc /sys; load the virtio modules;
//   2. power off at once if the command line says cellos.poweroff (the bare-boot measurement);
//   3. open the control port, say hello, read the config;
//   4. mount the root image and build the workload's root; network; cgroup;
//   5. run the workload, relaying its output and the host's signals;
//   6. kill what is left, send the working directory, then the exit frame; power off.
// Any failure from step 3 on becomes an 'L' line and an exit frame with status 125<<8.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "guest-init/cgroup.h"
#include "guest-init/control_port.h"
#include "guest-init/frame_writer.h"
#include "guest-init/mounts.h"
#include "guest-init/network.h"
#include "guest-init/plan.h"
#include "guest-init/relay.h"
#include "guest-init/sys.h"
#include "guest-init/workdir_export.h"
#include "guest-init/workload.h"
#include "ipc/vm_channel.h"

namespace cellos::guest {
namespace {

namespace vc = vmchannel;

constexpr unsigned kDeviceWaitMs = 5000;
// After the exit frame: how long to wait for the host to close its end before powering off.
constexpr unsigned kHangupWaitMs = 2000;

void console(const std::string& line) {
  std::string text = "cellos-guest-init: " + line + "\n";
  writeFully(2, text);
}

// sync first: the guest's tmpfs data is gone anyway, but a write still queued to the port must
// not race the power-off. reboot(2) from pid 1 does not return; should it fail, exiting pid 1
// panics the kernel, and panic=-1 with QEMU's -no-reboot ends the VM all the same.
[[noreturn]] void powerOff() {
  ::sync();
  ::reboot(RB_POWER_OFF);
  console(std::string("reboot(RB_POWER_OFF): ") + strerror(errno));
  _exit(1);
}

// The port appears once virtio_console has probed the virtio-mmio device, shortly after the
// module loads: poll sysfs for it by name.
int openControlPort() {
  const std::string classDir = "/sys/class/virtio-ports";
  uint64_t deadline = monotonicMs() + kDeviceWaitMs;
  for (;;) {
    if (auto port = findVirtioPort(classDir, vc::kVmChannelPortName)) {
      std::string device = "/dev/" + *port;
      if (waitForPath(device, kDeviceWaitMs)) {
        int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) throwErrno("open " + device);
        return fd;
      }
    }
    if (monotonicMs() >= deadline) {
      throw GuestError(std::string("no virtio-serial port named ") + vc::kVmChannelPortName);
    }
    sleepMs(10);
  }
}

// Blocks until the host's first frame, which must be the config.
vc::GuestConfig readConfig(int portFd, vc::FrameReader& reader) {
  for (;;) {
    if (auto frame = reader.next()) {
      if (frame->first != vc::FrameType::kConfig) {
        throw GuestError("the host's first frame is type " +
                         std::to_string(static_cast<int>(frame->first)) + ", not the config");
      }
      std::string why;
      auto config = vc::decodeGuestConfig(frame->second, &why);
      explicit_bzero(frame->second.data(), frame->second.size());
      if (!config) throw GuestError("bad config: " + why);
      return std::move(*config);
    }
    if (reader.failed()) throw GuestError("bad frame from the host: " + reader.error());
    char buffer[65536];
    ssize_t n = ::read(portFd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("read the control port");
    if (n == 0) {
      // No host on the port yet (virtio_console reads 0 then): wait for it to connect.
      pollfd p = {.fd = portFd, .events = POLLIN, .revents = 0};
      ::poll(&p, 1, 100);
      continue;
    }
    reader.feed(buffer, static_cast<size_t>(n));
    explicit_bzero(buffer, static_cast<size_t>(n));
  }
}

void wipeSecrets(vc::GuestConfig& config, std::vector<std::string>& env) {
  for (auto& [name, value] : config.secrets) explicit_bzero(value.data(), value.size());
  for (std::string& entry : env) explicit_bzero(entry.data(), entry.size());
}

// SIGCHLD reaches pid 1 through a signalfd in the relay's poll set; it must be blocked first,
// before any child exists.
int blockChildSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  check(sigprocmask(SIG_BLOCK, &set, nullptr), "sigprocmask SIGCHLD");
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) throwErrno("signalfd SIGCHLD");
  return fd;
}

// Gives the host the time to read the last frames: virtio_console's write returns once the
// data is queued, not once QEMU has passed it on. The host closes its end when it has the exit
// frame, which the guest sees as POLLHUP; a host that does not is waited for kHangupWaitMs.
void waitForHostHangup(int portFd) {
  uint64_t deadline = monotonicMs() + kHangupWaitMs;
  for (;;) {
    uint64_t now = monotonicMs();
    if (now >= deadline) return;
    pollfd p = {.fd = portFd, .events = POLLIN, .revents = 0};
    int ready = ::poll(&p, 1, static_cast<int>(deadline - now));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0 || (p.revents & (POLLHUP | POLLERR))) return;
    char discard[4096];
    if (::read(portFd, discard, sizeof(discard)) <= 0) return;
  }
}

// Steps 4 to 6, once the config is in hand. Ends in a power-off; a failure on the way throws
// (run() reports it as the aborted exit).
[[noreturn]] void runCell(FrameWriter& writer, int portFd, vc::FrameReader& reader,
                          vc::GuestConfig& config) {
  mountRootDisk(kDeviceWaitMs);
  buildWorkloadRoot(config);
  configureNetwork(config, kDeviceWaitMs);
  WorkloadCgroup cgroup;
  cgroup.create(config.pidsMax);
  int signalFd = blockChildSignals();
  uint64_t oomBefore = readOomKills();

  std::vector<std::string> env = workloadEnvironment(config);
  Workload workload = startWorkload(config, env, cgroup.procsFile());
  // The child has its own copy (gone at its execve); pid 1 keeps none.
  wipeSecrets(config, env);

  RelayResult relay = relayWorkload(writer, portFd, reader, workload, signalFd, config.timeoutMs);
  if (!cgroup.killAll(kDeviceWaitMs)) writer.log("the workload cgroup is still populated");
  if (relay.hostGone) {
    console("the host closed the control port; powering off");
    powerOff();
  }
  uint64_t oomKills = readOomKills() - oomBefore;

  bool truncated = false;
  std::string workingDirectory = hostSideWorkingDirectory(config);
  int dirFd = ::open(workingDirectory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0) {
    writer.log("open " + workingDirectory + ": " + strerror(errno));
    truncated = true;
  } else {
    ExportResult exported = exportWorkingDirectory(
        dirFd, ExportLimits{}, [&](std::string_view frame) { return writer.sendEncoded(frame); });
    ::close(dirFd);
    for (const std::string& problem : exported.problems)
      writer.log("working directory: " + problem);
    truncated = exported.truncated;
  }
  writer.sendEncoded(vc::exitFrame(relay.waitStatus, oomKills, truncated));
  waitForHostHangup(portFd);
  powerOff();
}

[[noreturn]] void run() {
  ::umask(0);
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> moduleFailures;
  try {
    mountEarly();
    moduleFailures = loadModules("/lib/modules");
  } catch (const std::exception& e) {
    console(e.what());
    powerOff();
  }
  // Before anything waits on a device: the bare boot stops here, modules loaded.
  try {
    if (cmdlineHasWord(readFile("/proc/cmdline"), kPowerOffWord)) powerOff();
  } catch (const std::exception& e) {
    console(e.what());
    powerOff();
  }

  int portFd = -1;
  try {
    portFd = openControlPort();
  } catch (const std::exception& e) {
    console(e.what());
    for (const std::string& failure : moduleFailures) console(failure);
    powerOff();
  }
  FrameWriter writer(portFd);
  try {
    utsname names;
    check(::uname(&names), "uname");
    writer.send(vc::FrameType::kHello, names.release);
    if (!moduleFailures.empty()) {
      for (const std::string& failure : moduleFailures) writer.log(failure);
      throw GuestError("kernel modules did not load");
    }
    vc::FrameReader reader;
    vc::GuestConfig config = readConfig(portFd, reader);
    runCell(writer, portFd, reader, config);
  } catch (const std::exception& e) {
    console(e.what());
    writer.log(e.what());
    writer.sendEncoded(vc::exitFrame(kAbortedWaitStatus, 0, false));
    waitForHostHangup(portFd);
    powerOff();
  }
}

}  // namespace
}  // namespace cellos::guest

int main() {
  if (::getpid() != 1) {
    fputs("cellos-guest-init: runs only as pid 1 of a VM cell's guest\n", stderr);
    return 2;
  }
  cellos::guest::run();
}
