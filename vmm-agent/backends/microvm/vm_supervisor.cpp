#include "vmm-agent/backends/microvm/vm_supervisor.h"

#include "vmm-agent/backends/microvm/vmm_process.h"

#include "ipc/vm_channel.h"
#include "vmm-agent/cell/cell_mounts.h"
#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/sys_util.h"
#include "vmm-agent/seccomp_profile.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>

namespace cellos::vmm {

namespace {

using vmchannel::FrameType;

constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
// How much of the guest's console and the VMM's stderr is kept for a failure message.
constexpr size_t kTailBytes = 2048;
// After the guest's exit frame, how long it may take to power off before the VMM is killed.
constexpr int kPowerOffGraceMs = 10000;
// The working directory copy may hold at most this many entries (the guest stops earlier).
constexpr unsigned kWorkInodes = 20000;

int64_t nowMicros() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

int64_t nowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Async-signal-safe enough for a dying supervisor: a line on the workload's stderr.
void say(int errFd, const std::string& what) {
  std::string line = "cellos: microvm cell: " + what + "\n";
  ssize_t ignored = write(errFd, line.data(), line.size());
  (void)ignored;
}

bool writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        poll(&p, 1, -1);
        continue;
      }
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The last kTailBytes of what a stream said (the guest's console, the VMM's stderr).
struct Tail {
  std::string text;
  void add(const char* data, size_t size) {
    text.append(data, size);
    if (text.size() > kTailBytes) text.erase(0, text.size() - kTailBytes);
  }
  // Printable, one line per line, for an error message.
  std::string shown() const {
    std::string out;
    for (char c : text) {
      unsigned char u = static_cast<unsigned char>(c);
      if (c == '\n' || (u >= 0x20 && u < 0x7f)) out.push_back(c);
    }
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
};

// Reads what is there on a non-blocking fd into `tail`; false at EOF or on an error.
bool drainInto(int fd, Tail& tail) {
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
      tail.add(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;
  }
}

void setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throwErrno("fcntl(O_NONBLOCK)");
}

// The supervisor's root: /usr read-only and the usr-merge links (the VMM and its libraries), a
// /dev of harmless devices (+ kvm), /proc of our pid namespace with other users' processes
// invisible (hidepid: while pid 1 is root the VMM, as the cell's uid, sees nothing of it; once
// pid 1 has dropped to the same uid it is visible, and what keeps the VMM from tracing it is
// that it is not dumpable and the vm-supervisor filter), the working directory copy and the
// secrets tmpfs.
// The root's mount point is <cellDir>/root: the tmpfs exists only in our mount namespace, so the
// host sees an empty directory there (removed with the cell).
std::string vmRootOf(const VmSupervisorPlan& p) {
  return p.plan.cellDir + "/root";
}

void buildVmRoot(const VmSupervisorPlan& p) {
  const std::string root = vmRootOf(p);
  makeDirectory(root, 0755);
  doMount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  makeDirectory(root + "/usr", 0755);
  doMount("/usr", root + "/usr", nullptr, MS_BIND | MS_REC, nullptr);
  remountBind(root + "/usr", MS_RDONLY | MS_NOSUID | MS_NODEV);
  for (const char* link : {"bin", "sbin", "lib", "lib64"}) {
    std::string host = std::string("/") + link;
    struct stat st {};
    if (lstat(host.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) copySymlink(host, root + host);
  }
  std::vector<std::string> extra;
  if (p.boot.accelerator == "kvm") extra.push_back("kvm");
  mountDev(root, extra);
  makeDirectory(root + "/proc", 0555);
  makeDirectory(root + kVmWorkDirectory, 0755);
  // Owned by the VMM's uid, which the supervisor itself takes before it reads the guest's bytes.
  std::string workOptions = "mode=0755,size=" + std::to_string(p.plan.memoryMiB) +
                            "m,nr_inodes=" + std::to_string(kWorkInodes) +
                            ",uid=" + std::to_string(p.plan.vmmUid) +
                            ",gid=" + std::to_string(p.plan.vmmUid);
  doMount("tmpfs", root + kVmWorkDirectory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          workOptions.c_str());
  if (!p.plan.guest.secretDelivery.empty()) {
    mountSecretsTmpfs(root + kVmSecretsDirectory, p.plan.vmmUid);
  }
}

// tap0 in this (the cell's) network namespace, with the gateway address, up; IPv4 forwarding
// on, so the guest's packets reach the veth the launcher adds (and its nftables filter them).
Fd createTap() {
  Fd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (tun.get() < 0) throwErrno("open(/dev/net/tun)");
  ifreq ifr{};
  strncpy(ifr.ifr_name, kTapName, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(tun.get(), TUNSETIFF, &ifr) < 0) throwErrno("ioctl(TUNSETIFF, tap0)");
  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) throwErrno("socket(AF_INET, SOCK_DGRAM)");
  auto setAddress = [&](unsigned long request, const char* text, const char* what) {
    ifreq req{};
    strncpy(req.ifr_name, kTapName, IFNAMSIZ - 1);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    if (inet_pton(AF_INET, text, &in.sin_addr) != 1) throw std::runtime_error(text);
    memcpy(&req.ifr_addr, &in, sizeof in);
    if (ioctl(sock.get(), request, &req) < 0) throwErrno(std::string("ioctl(tap0, ") + what + ")");
  };
  setAddress(SIOCSIFADDR, kGuestGateway, "SIOCSIFADDR");
  setAddress(SIOCSIFNETMASK, "255.255.255.252", "SIOCSIFNETMASK");
  ifreq flags{};
  strncpy(flags.ifr_name, kTapName, IFNAMSIZ - 1);
  if (ioctl(sock.get(), SIOCGIFFLAGS, &flags) < 0) throwErrno("ioctl(tap0, SIOCGIFFLAGS)");
  flags.ifr_flags = static_cast<short>(flags.ifr_flags | IFF_UP);
  if (ioctl(sock.get(), SIOCSIFFLAGS, &flags) < 0) throwErrno("ioctl(tap0, SIOCSIFFLAGS, IFF_UP)");
  return tun;
}

void enableForwarding() {
  Fd f(open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
  if (f.get() < 0 || write(f.get(), "1\n", 2) != 2) {
    throwErrno("write(/proc/sys/net/ipv4/ip_forward)");
  }
}

// The VMM, as the cell's uid with no capabilities, every resource at its fixed fd.
pid_t startVmm(const VmSupervisorPlan& p, const VmmFds& vmmFds, int stderrWrite) {
  std::vector<std::string> argv = p.driver->commandLine(p.boot);
  // Under KVM the VMM opens /dev/kvm through its group (the probe checked the node lets it).
  std::optional<gid_t> kvm;
  if (p.boot.accelerator == "kvm") {
    std::string why;
    kvm = kvmAccessGroup(&why);
    if (!kvm) throw std::runtime_error(why);
  }
  pid_t pid = fork();
  if (pid < 0) throwErrno("fork(vmm)");
  if (pid == 0) execVmm(argv, vmmFds, stderrWrite, p.plan.vmmUid, kvm);
  return pid;
}

// Writes the guest's working-directory frames under /work. Every path was checked by
// decodeGuestFrame (relative, no "..", no empty component), and each component is opened with
// O_NOFOLLOW relative to its parent: the VMM's uid (the VMM, should a guest escape into it) can
// also create entries there, so a symlink is never followed; the launcher's artifact opener
// refuses them as it does in a linux cell's working directory. A write the tmpfs refuses (its
// size or inode cap) stops the copy: what is there is what the launcher exports.
class WorkCopy {
 public:
  explicit WorkCopy(const char* root) : root_(open(root, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) {
    if (root_.get() < 0) throwErrno(std::string("open(") + root + ")");
  }
  bool stopped() const { return stopped_; }
  void directory(const std::string& path) {
    if (stopped_) return;
    Fd dir = walk(path);
    if (dir.get() < 0) stop();
  }
  void file(const std::string& path, uint64_t offset, const std::string& data) {
    if (stopped_) return;
    size_t slash = path.rfind('/');
    Fd parent = slash == std::string::npos ? Fd(dup(root_.get())) : walk(path.substr(0, slash));
    if (parent.get() < 0) return stop();
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    Fd f(openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (f.get() < 0) return stop();
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = pwrite(f.get(), data.data() + done, data.size() - done,
                         static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return stop();
      done += static_cast<size_t>(n);
    }
  }

 private:
  void stop() { stopped_ = true; }
  // The directory `path` (relative to the root), made where missing; -1 on failure.
  Fd walk(const std::string& path) {
    Fd at(dup(root_.get()));
    size_t start = 0;
    while (at.get() >= 0 && start <= path.size()) {
      size_t slash = path.find('/', start);
      std::string name =
          path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      if (mkdirat(at.get(), name.c_str(), 0755) < 0 && errno != EEXIST) return Fd();
      at = Fd(openat(at.get(), name.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    return at;
  }
  Fd root_;
  bool stopped_ = false;
};

// The secrets the launcher wrote into /secrets, as (name, value), and the tmpfs unmounted.
std::vector<std::pair<std::string, std::string>> takeSecrets() {
  std::vector<std::string> env = takeSecretEnvironment(kVmSecretsDirectory);
  std::vector<std::pair<std::string, std::string>> secrets;
  secrets.reserve(env.size());
  for (const std::string& var : env) {
    size_t eq = var.find('=');
    secrets.emplace_back(var.substr(0, eq), var.substr(eq + 1));
  }
  wipeStrings(env);
  return secrets;
}

struct Guest {
  Fd kernel, initramfs, disk, tap;  // opened before the host's root goes away
  pid_t vmm = -1;
  Fd channel, console, vmmErr;
  vmchannel::FrameReader reader;
  Tail consoleTail, vmmTail;
};

void sendFrame(Guest& g, FrameType type, std::string_view payload) {
  if (!writeAll(g.channel.get(), vmchannel::encodeFrame(type, payload))) {
    throwErrno("write(guest channel)");
  }
}

std::string bootFailure(Guest& g, const std::string& what) {
  drainInto(g.console.get(), g.consoleTail);
  drainInto(g.vmmErr.get(), g.vmmTail);
  std::string text = what;
  if (!g.vmmTail.shown().empty()) text += "; the VMM said: " + g.vmmTail.shown();
  if (!g.consoleTail.shown().empty())
    text += "; the guest's console ended: " + g.consoleTail.shown();
  return text.size() > 3000 ? text.substr(0, 3000) : text;
}

// Boots the guest and waits for its hello (bounded).
void openBootResources(const VmSupervisorPlan& p, Guest& g) {
  g.kernel = Fd(openVerifiedBootFile(p.files.kernel));
  g.initramfs = Fd(openVerifiedBootFile(p.files.initramfs));
  g.disk = Fd(openVerifiedBootFile(p.files.rootDisk));
  g.tap = createTap();
}

void startGuest(const VmSupervisorPlan& p, Guest& g) {
  enableForwarding();
  int channelPair[2], consolePair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channelPair) < 0 ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, consolePair) < 0) {
    throwErrno("socketpair(guest channel)");
  }
  g.channel = Fd(channelPair[0]);
  Fd guestChannel(channelPair[1]);
  g.console = Fd(consolePair[0]);
  Fd guestConsole(consolePair[1]);
  Pipe err = makePipe("vmm stderr");
  g.vmmErr = std::move(err.read);
  setNonBlocking(g.console.get());
  setNonBlocking(g.vmmErr.get());
  g.vmm = startVmm(p,
                   VmmFds{g.kernel.get(), g.initramfs.get(), g.disk.get(), g.tap.get(),
                          guestChannel.get(), guestConsole.get()},
                   err.write.get());
  // The VMM holds them now; ours would only keep the files open past the VMM.
  g.kernel.reset();
  g.initramfs.reset();
  g.disk.reset();
  g.tap.reset();
}

// From here on this process reads bytes the guest controls (its hello, output, files, exit): it
// gives up root first and becomes the VMM's uid, which it needs to signal the VMM. A change of
// credentials clears the parent-death signal, so it is set again.
void dropToVmmUid(uid_t id) {
  if (setgroups(0, nullptr) < 0 || setresgid(id, id, id) < 0 || setresuid(id, id, id) < 0) {
    throwErrno("setresuid(" + std::to_string(id) + ")");
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) throwErrno("prctl(PR_SET_PDEATHSIG)");
  // The VMM has the same uid now: not dumpable, so it cannot trace or read this process (the
  // uid change makes it so with fs.suid_dumpable 0; this does not depend on that setting).
  if (prctl(PR_SET_DUMPABLE, 0) < 0) throwErrno("prctl(PR_SET_DUMPABLE)");
}

// Waits for the guest's hello (bounded).
void awaitHello(const VmSupervisorPlan& p, Guest& g) {
  int64_t deadline = nowMs() + p.bootTimeoutMs;
  char buffer[65536];
  for (;;) {
    int left = static_cast<int>(deadline - nowMs());
    if (left <= 0) {
      kill(g.vmm, SIGKILL);
      throw std::runtime_error(bootFailure(
          g, "the guest did not come up within " + std::to_string(p.bootTimeoutMs) + " ms"));
    }
    pollfd waits[] = {
        {g.channel.get(), POLLIN, 0}, {g.console.get(), POLLIN, 0}, {g.vmmErr.get(), POLLIN, 0}};
    int ready = poll(waits, 3, std::min(left, 200));
    if (ready < 0 && errno != EINTR) throwErrno("poll(guest boot)");
    if (waits[1].revents) drainInto(g.console.get(), g.consoleTail);
    if (waits[2].revents) drainInto(g.vmmErr.get(), g.vmmTail);
    int status = 0;
    if (waitpid(g.vmm, &status, WNOHANG) == g.vmm) {
      g.vmm = -1;
      throw std::runtime_error(
          bootFailure(g, "the VMM " + describeWaitStatus(status) + " before the guest came up"));
    }
    if (waits[0].revents == 0) continue;
    ssize_t n = read(g.channel.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      kill(g.vmm, SIGKILL);
      throw std::runtime_error(bootFailure(g, "the guest channel closed before the guest's hello"));
    }
    g.reader.feed(buffer, static_cast<size_t>(n));
    while (auto frame = g.reader.next()) {
      std::string why;
      auto decoded = vmchannel::decodeGuestFrame(frame->first, frame->second, &why);
      if (!decoded || (decoded->type != FrameType::kHello && decoded->type != FrameType::kLog)) {
        kill(g.vmm, SIGKILL);
        throw std::runtime_error(bootFailure(g, "the guest broke the protocol before its hello: " +
                                                    (decoded ? "not a hello" : why)));
      }
      if (decoded->type == FrameType::kLog) {
        g.consoleTail.add(decoded->text.data(), decoded->text.size());
        continue;
      }
      return;
    }
    if (g.reader.failed()) {
      kill(g.vmm, SIGKILL);
      throw std::runtime_error(bootFailure(g, "the guest's channel: " + g.reader.error()));
    }
  }
}

[[noreturn]] void failRun(const InitChannels& fds, Guest& g, const std::string& what) {
  if (g.vmm > 0) kill(g.vmm, SIGKILL);
  say(fds.stderrWrite, bootFailure(g, what));
  _exit(kCellAbortedExitCode);
}

}  // namespace

int openVerifiedBootFile(const VerifiedBootFile& file) {
  Fd fd(open(file.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) throwErrno("open(" + file.path + ")");
  struct stat st {};
  if (fstat(fd.get(), &st) < 0) throwErrno("fstat(" + file.path + ")");
  bool same = st.st_dev == file.dev && st.st_ino == file.ino && st.st_size == file.size &&
              st.st_mtim.tv_sec == file.mtime.tv_sec && st.st_mtim.tv_nsec == file.mtime.tv_nsec &&
              st.st_ctim.tv_sec == file.ctime.tv_sec && st.st_ctim.tv_nsec == file.ctime.tv_nsec;
  if (!same) throw std::runtime_error(file.path + " changed since its digest was checked");
  return fd.release();
}

[[noreturn]] void runVmSupervisor(const VmSupervisorPlan& p, InitChannels fds) noexcept {
  sigset_t wanted;
  Guest g;
  Fd cellDir;
  setUpCellInit(fds, [&] {
    if (prctl(PR_SET_NAME, "cellos-vm", 0, 0, 0) < 0) throwErrno("prctl(PR_SET_NAME)");
    cellDir = Fd(open(p.plan.cellDir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    if (cellDir.get() < 0) throwErrno("open(" + p.plan.cellDir + ")");
    makeMountsPrivate();
    buildVmRoot(p);
    if (sethostname(p.plan.cellId.data(), p.plan.cellId.size()) < 0) throwErrno("sethostname");
    bringUpLoopback();
    sigemptyset(&wanted);
    for (int sig : kForwardedSignals) sigaddset(&wanted, sig);
    sigaddset(&wanted, SIGCHLD);
    sigprocmask(SIG_BLOCK, &wanted, nullptr);
    // The boot files are opened before the host's root goes away; the VMM sees only its fds.
    openBootResources(p, g);
    pivotIntoNewRoot(vmRootOf(p));
    doMount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible");
    signal(SIGPIPE, SIG_IGN);
  });

  if (!waitForStartByte(fds.start)) _exit(kCellAbortedExitCode);  // the launcher aborted the cell
  // The cell's phases as this process sees them, for the exit note (bench/cell-start).
  const int64_t startedUs = nowMicros();
  int64_t vmmStartedUs = 0, guestUpUs = 0, exitedUs = 0;
  close(fds.start);
  // The guest boots after the start byte, not before "ready": the launcher and the spawner
  // answer one request at a time, and a boot (seconds under TCG) must not hold either. A guest
  // that does not come up ends the cell with its console on the cell's stderr.
  // The launcher has written the secrets by now: they are read (and their tmpfs unmounted) while
  // this process is still root and before the guest exists; they cross the channel inside the
  // config and leave no file behind on the host. What needs root beyond that is made now too:
  // the working directory copy's fd and the exit note's.
  vmchannel::GuestConfig config = p.plan.guest;
  std::optional<WorkCopy> work;
  Fd note;
  try {
    if (!config.secretDelivery.empty()) config.secrets = takeSecrets();
    work.emplace(kVmWorkDirectory);
    note = Fd(openat(cellDir.get(), kVmGuestExitFile,
                     O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (note.get() < 0) throwErrno(std::string("open(") + kVmGuestExitFile + ")");
    cellDir.reset();
    startGuest(p, g);
    vmmStartedUs = nowMicros();
    dropToVmmUid(p.plan.vmmUid);
    // Before the guest's first byte is read: from here a guest that subverted this process's
    // parsing would hold only what this filter and the cell's uid leave it.
    privsep::installSeccomp(kVmSupervisorProfile);
    awaitHello(p, g);
    guestUpUs = nowMicros();
  } catch (const std::exception& e) {
    for (auto& [name, value] : config.secrets) explicit_bzero(value.data(), value.size());
    failRun(fds, g, e.what());
  }

  try {
    std::string encoded = vmchannel::encodeGuestConfig(config);
    sendFrame(g, FrameType::kConfig, encoded);
    explicit_bzero(encoded.data(), encoded.size());
    for (auto& [name, value] : config.secrets) explicit_bzero(value.data(), value.size());
  } catch (const std::exception& e) {
    failRun(fds, g, std::string("sending the guest its configuration: ") + e.what());
  }

  int signals = signalfd(-1, &wanted, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0) failRun(fds, g, "signalfd");
  bool exited = false, outputOpen = true;
  vmchannel::GuestFrame exit;
  int64_t powerOffDeadline = 0;
  char buffer[65536];
  for (;;) {
    int timeout = -1;
    if (exited) {
      timeout = static_cast<int>(std::max<int64_t>(0, powerOffDeadline - nowMs()));
      if (timeout == 0 && g.vmm > 0) {
        kill(g.vmm, SIGKILL);  // it did not power off in time; SIGCHLD ends the loop
        powerOffDeadline = nowMs() + kPowerOffGraceMs;
        timeout = kPowerOffGraceMs;
      }
    }
    pollfd waits[] = {{exited ? -1 : g.channel.get(), POLLIN, 0},
                      {signals, POLLIN, 0},
                      {g.console.get(), POLLIN, 0},
                      {g.vmmErr.get(), POLLIN, 0}};
    if (poll(waits, 4, timeout) < 0 && errno != EINTR) failRun(fds, g, "poll");
    if (waits[2].revents) drainInto(g.console.get(), g.consoleTail);
    if (waits[3].revents) drainInto(g.vmmErr.get(), g.vmmTail);
    if (waits[1].revents) {
      signalfd_siginfo info;
      while (read(signals, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        if (info.ssi_signo == SIGCHLD) continue;
        // The command's timeout or a kill() through the Cell capability: to the workload.
        if (!exited) {
          char sig = static_cast<char>(info.ssi_signo);
          if (!writeAll(g.channel.get(), vmchannel::encodeFrame(FrameType::kSignal, {&sig, 1}))) {
            kill(g.vmm, SIGKILL);
          }
        }
      }
      int status = 0;
      if (g.vmm > 0 && waitpid(g.vmm, &status, WNOHANG) == g.vmm) {
        g.vmm = -1;
        if (exited) break;
        // The guest is gone without an exit status: the cell died abnormally.
        failRun(fds, g,
                "the VMM " + describeWaitStatus(status) + " before the guest's exit status");
      }
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    if (waits[0].revents == 0) continue;
    ssize_t n = read(g.channel.get(), buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      // EOF: the guest closed its port (or the VMM died; SIGCHLD says which).
      waits[0].fd = -1;
      if (!exited) {
        int status = 0;
        if (g.vmm > 0 && waitpid(g.vmm, &status, 0) == g.vmm) g.vmm = -1;
        failRun(fds, g, "the guest channel closed before the guest's exit status");
      }
      continue;
    }
    g.reader.feed(buffer, static_cast<size_t>(n));
    while (!exited) {
      auto frame = g.reader.next();
      if (!frame) break;
      std::string why;
      auto f = vmchannel::decodeGuestFrame(frame->first, frame->second, &why);
      if (!f) failRun(fds, g, "the guest broke the protocol: " + why);
      switch (f->type) {
        case FrameType::kStdout:
        case FrameType::kStderr:
          if (outputOpen) {
            int to = f->type == FrameType::kStdout ? fds.stdoutWrite : fds.stderrWrite;
            outputOpen = writeAll(to, f->text);
          }
          break;
        case FrameType::kDirectory:
          work->directory(f->text);
          break;
        case FrameType::kFile:
          work->file(f->text, f->offset, f->data);
          break;
        case FrameType::kLog:
          say(fds.stderrWrite, "guest init: " + f->text);
          break;
        case FrameType::kExit:
          exit = *f;
          exited = true;
          exitedUs = nowMicros();
          powerOffDeadline = nowMs() + kPowerOffGraceMs;
          break;
        default:
          failRun(fds, g, "the guest sent a second hello");
      }
    }
    if (g.reader.failed()) failRun(fds, g, "the guest's channel: " + g.reader.error());
    // Nothing comes after the exit frame: closing our end tells the guest init everything
    // arrived (it sees the port hang up), so it powers off now rather than after its wait.
    if (exited && g.channel.get() >= 0) g.channel = Fd();
  }
  if (work->stopped() || exit.workingDirectoryTruncated) {
    say(fds.stderrWrite, "the guest's working directory was copied only in part");
  }
  writeAll(note.get(), "oomKills=" + std::to_string(exit.oomKills) +
                           " vmmStartUs=" + std::to_string(vmmStartedUs - startedUs) +
                           " guestUpUs=" + std::to_string(guestUpUs - vmmStartedUs) +
                           " runUs=" + std::to_string(exitedUs - guestUpUs) +
                           " powerOffUs=" + std::to_string(nowMicros() - exitedUs) + "\n");
  close(fds.stdoutWrite);
  close(fds.stderrWrite);
  reportWaitStatusAndExit(fds.status, exit.waitStatus);
}

}  // namespace cellos::vmm
