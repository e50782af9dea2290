#include "vmm-agent/cell/cell_init.h"

#include "vmm-agent/cell/cell_backend.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace cellos::vmm {
namespace {

constexpr char kGoByte = 'G';
constexpr char kReadyByte = 'R';
constexpr char kErrorByte = 'E';

// How long the parent waits for pid 1 to build the cell. Setup takes milliseconds; this only
// bounds a wedged mount.
constexpr int kSetupTimeoutMs = 30000;

// The kernel's struct clone_args up to CLONE_ARGS_SIZE_VER0 (64 bytes). Spelled out because
// <linux/sched.h> and glibc's <sched.h> both define the CLONE_* macros.
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t childTid;
  uint64_t parentTid;
  uint64_t exitSignal;
  uint64_t stack;
  uint64_t stackSize;
  uint64_t tls;
};
static_assert(sizeof(CloneArgs) == 64);

// Step 1. PR_SET_PDEATHSIG makes the kernel SIGKILL pid 1 when the parent thread that cloned it
// exits, and the pid namespace collapse then takes the whole cell with it: a killed launcher
// leaves no running cell. The prctl only covers deaths after it, so the parent must also be
// checked once. getppid() cannot tell: our parent lives outside our new pid namespace, so it
// returns 0 before and after a reparenting alike. A pidfd of the parent, opened before clone,
// becomes readable exactly when the parent has exited.
void dieWithParent(int parentPidfd) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throwErrno("prctl(PR_SET_PDEATHSIG, SIGKILL)");
  pollfd parent{parentPidfd, POLLIN, 0};
  int ready = poll(&parent, 1, 0);
  if (ready < 0) throwErrno("poll(parent pidfd)");
  if (ready > 0) _exit(kCellAbortedExitCode);
  close(parentPidfd);
}

// Step 2. pid 1 is a copy of its parent, so it starts with the parent's signal handlers (code
// that must not run here) and mask (a daemon blocks signals it reads through signalfd). Back to
// defaults: the kernel's pid-1 rules then decide what reaches us (SIGKILL/SIGSTOP from the
// host always do; a signal from inside the cell only if we installed a handler). SIGPIPE is
// ignored so a parent that closed the status pipe yields EPIPE, not a dead init.
void resetInitSignals() {
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, nullptr) < 0) throwErrno("sigprocmask(SIG_SETMASK, {})");
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);  // EINVAL for the libc-reserved real-time signals: fine
  }
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGPIPE, &ign, nullptr) < 0) throwErrno("sigaction(SIGPIPE, SIG_IGN)");
}

// Closes every fd except `keep` (all >= 3) and 0-2.
void closeAllFdsExcept(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned int next = 3;
  for (int fd : keep) {
    if (static_cast<unsigned int>(fd) > next && close_range(next, fd - 1, 0) < 0) {
      throwErrno("close_range(" + std::to_string(next) + ", " + std::to_string(fd - 1) + ", 0)");
    }
    next = static_cast<unsigned int>(fd) + 1;
  }
  if (close_range(next, ~0U, 0) < 0)
    throwErrno("close_range(" + std::to_string(next) + ", ~0U, 0)");
}

// Step 3. pid 1 holds every fd its parent had: other cells' start and status pipes (holding a
// copy of another cell's start pipe would keep that cell from ever seeing EOF), pidfds, broker
// sockets, maybe a terminal. Keep only this cell's channels, and put /dev/null on 0-2 so
// nothing pid 1 prints reaches the parent's terminal. Channels that landed on 0-2 (the parent
// had them closed) are moved up first, or the /dev/null dup2 would clobber them.
void keepOnlyCellFds(InitChannels& fds) {
  for (int* fd : {&fds.control, &fds.start, &fds.status, &fds.stdoutWrite, &fds.stderrWrite}) {
    if (*fd >= 0 && *fd <= 2) {
      int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
      if (moved < 0) throwErrno("fcntl(" + std::to_string(*fd) + ", F_DUPFD_CLOEXEC, 3)");
      *fd = moved;
    }
  }
  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) throwErrno("open(/dev/null, O_RDWR)");
  for (int target = 0; target <= 2; ++target) {
    if (devNull != target && dup2(devNull, target) < 0) {
      throwErrno("dup2(/dev/null, " + std::to_string(target) + ")");
    }
  }
  closeAllFdsExcept({fds.control, fds.start, fds.status, fds.stdoutWrite, fds.stderrWrite});
}

// Step 4. Nothing below may run before the parent has written our pid into the cell's cgroup:
// the tmpfs pages we are about to create and every process we fork must be charged to the
// cell. EOF means the parent died or gave up; there is nobody to run for.
void waitForCgroupJoin(int control) {
  char byte = 0;
  ssize_t n;
  do {
    n = recv(control, &byte, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recv(control, 'go')");
  if (n == 0 || byte != kGoByte) _exit(kCellAbortedExitCode);
}

void sendReport(int control, const std::string& packet) {
  // MSG_NOSIGNAL: a parent that gave up must not turn into a SIGPIPE here.
  while (send(control, packet.data(), packet.size(), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

// Step 6, failed: the errno (0 for none) and what failed, in one packet.
void reportFailure(int control, int error, const std::string& what) {
  std::string packet(1, kErrorByte);
  int32_t code = error;
  packet.append(reinterpret_cast<const char*>(&code), sizeof code);
  packet += what.substr(0, 3000);
  sendReport(control, packet);
}

}  // namespace

InitPipes InitPipes::make() {
  InitPipes p;
  p.out = makePipe("stdout");
  p.err = makePipe("stderr");
  p.start = makePipe("start");
  p.status = makePipe("status");
  for (int readEnd : {p.out.read.get(), p.err.read.get()}) {
    if (fcntl(readEnd, F_SETFL, O_NONBLOCK) < 0) throwErrno("fcntl(F_SETFL, O_NONBLOCK)");
  }
  // A socket (not a pipe) so that both sides can write with MSG_NOSIGNAL: a peer that died is
  // an error value, never a SIGPIPE.
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    throwErrno("socketpair(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC)");
  }
  p.control = Fd(pair[0]);
  p.childControl = Fd(pair[1]);
  p.parentPidfd = Fd(pidfdOpen(getpid()));
  if (p.parentPidfd.get() < 0) throwErrno("pidfd_open(" + std::to_string(getpid()) + ", 0)");
  return p;
}

InitChannels InitPipes::childChannels() const {
  return InitChannels{childControl.get(), parentPidfd.get(), start.read.get(),
                      status.write.get(), out.write.get(),   err.write.get()};
}

void InitPipes::closeChildEnds() {
  childControl.reset();
  parentPidfd.reset();
  start.read.reset();
  status.write.reset();
  out.write.reset();
  err.write.reset();
}

void InitPipes::handOver(Fd pidfd, LaunchedCell& cell) {
  cell.pidFd = std::move(pidfd);
  cell.stdoutFd = std::move(out.read);
  cell.stderrFd = std::move(err.read);
  cell.startFd = std::move(start.write);
  cell.statusFd = std::move(status.read);
}

void setUpCellInit(InitChannels& fds, const std::function<void()>& build) noexcept {
  try {
    dieWithParent(fds.parentPidfd);
    resetInitSignals();
    umask(022);
    keepOnlyCellFds(fds);
    waitForCgroupJoin(fds.control);
    build();
    sendReport(fds.control, std::string(1, kReadyByte));
    close(fds.control);
    fds.control = -1;
  } catch (const std::system_error& e) {
    reportFailure(fds.control, e.code().value(), e.what());
    _exit(kCellAbortedExitCode);
  } catch (const std::exception& e) {
    reportFailure(fds.control, 0, e.what());
    _exit(kCellAbortedExitCode);
  } catch (...) {
    _exit(kCellAbortedExitCode);
  }
}

bool waitForStartByte(int start) {
  char byte;
  ssize_t n;
  do {
    n = read(start, &byte, 1);
  } while (n < 0 && errno == EINTR);
  return n == 1;
}

void reportWaitStatusAndExit(int statusFd, int waitStatus) {
  ssize_t n;
  do {
    n = write(statusFd, &waitStatus, sizeof waitStatus);
  } while (n < 0 && errno == EINTR);
  _exit(0);
}

void bringUpLoopback() {
  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) throwErrno("socket(AF_INET, SOCK_DGRAM)");
  ifreq ifr{};
  memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0) throwErrno("ioctl(lo, SIOCGIFFLAGS)");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0) throwErrno("ioctl(lo, SIOCSIFFLAGS, IFF_UP)");
}

pid_t cloneCellInit(uint64_t namespaces, int* pidfd) {
  CloneArgs args{};
  args.flags = namespaces | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uintptr_t>(pidfd);
  args.exitSignal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid >= 0) return static_cast<pid_t>(pid);
  if (errno != ENOSYS) throwErrno("clone3(cell namespaces|CLONE_PIDFD)");
  pid = syscall(SYS_clone, namespaces | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) throwErrno("clone(cell namespaces|SIGCHLD)");
  if (pid == 0) return 0;
  // Our unreaped child: its pid cannot have been recycled yet.
  *pidfd = pidfdOpen(static_cast<pid_t>(pid));
  if (*pidfd < 0) {
    int e = errno;
    kill(static_cast<pid_t>(pid), SIGKILL);
    waitpid(static_cast<pid_t>(pid), nullptr, 0);
    errno = e;
    throwErrno("pidfd_open(" + std::to_string(pid) + ", 0)");
  }
  return static_cast<pid_t>(pid);
}

void sendCgroupJoined(int control, const std::string& cellId) {
  char go = kGoByte;
  if (send(control, &go, 1, MSG_NOSIGNAL) != 1) {
    throwErrno("send(cell " + cellId + " control socket, 'go')");
  }
}

void awaitReady(int control, pid_t pid, const std::string& cellId) {
  pollfd pfd{control, POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, kSetupTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) throwErrno("poll(cell " + cellId + " control socket)");
  if (ready == 0)
    throw std::runtime_error("cell " + cellId + ": init did not finish setup in time");
  char packet[4096];
  ssize_t n;
  do {
    n = recv(control, packet, sizeof packet, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recv(cell " + cellId + " control socket)");
  if (n == 1 && packet[0] == kReadyByte) return;
  if (n >= 5 && packet[0] == kErrorByte) {
    int32_t code;
    memcpy(&code, packet + 1, sizeof code);
    std::string what(packet + 5, static_cast<size_t>(n - 5));
    if (code == 0) throw std::runtime_error("cell " + cellId + " setup: " + what);
    // e.what() of the init's system_error already ends in ": <strerror>"; keep only the call.
    std::string suffix = std::string(": ") + std::generic_category().message(code);
    if (what.size() >= suffix.size() &&
        what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0) {
      what.resize(what.size() - suffix.size());
    }
    throw std::system_error(code, std::generic_category(), "cell " + cellId + " setup: " + what);
  }
  if (n == 0) {
    // EOF without a report: the init died (killed, or out of memory under memory.max).
    int status = 0;
    pid_t reaped;
    do {
      reaped = waitpid(pid, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    if (reaped == pid) {
      throw std::runtime_error("cell " + cellId + ": init " + describeWaitStatus(status) +
                               " during setup");
    }
  }
  throw std::runtime_error("cell " + cellId + ": init ended setup without a valid report");
}

void killAndReap(pid_t pid, int pidfd) noexcept {
  if (pidfd >= 0) pidfdSendSignal(pidfd, SIGKILL);
  if (pid > 0) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

Fd openInsideRoot(pid_t pid, const std::string& path) {
  std::string full = "/proc/" + std::to_string(pid) + "/root" + path;
  Fd fd(open(full.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) throwErrno("open(" + full + ", O_PATH)");
  return fd;
}

}  // namespace cellos::vmm
