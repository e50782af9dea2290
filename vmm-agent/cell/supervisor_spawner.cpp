#include "vmm-agent/cell/supervisor_spawner.h"

#include "privsep/daemon.h"
#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/spawn_protocol.h"
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

#include <cstring>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr uint64_t kSupervisorNamespaces =
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;

// Every fd that came with `msg` (SCM_RIGHTS), owned.
std::vector<Fd> receivedFds(msghdr& msg) {
  std::vector<Fd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  return fds;
}

// Reaps every supervisor that has exited. Only between requests: while a request is being
// answered its supervisor must stay our unreaped child, so its pid cannot be recycled.
void reapSupervisors() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

[[noreturn]] void runSpawner(int sock, int launcherPidfd, const char* processName,
                             const SupervisorFactory& factory) {
  // Dies with the launcher; the pidfd covers a launcher that died before the prctl.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pollfd launcher{launcherPidfd, POLLIN, 0};
  if (poll(&launcher, 1, 0) != 0) _exit(0);
  close(launcherPidfd);
  prctl(PR_SET_NAME, processName);
  privsep::closeStrayFds({sock});
  signal(SIGPIPE, SIG_IGN);
  // SIGCHLD is read through a signalfd, so a supervisor is reaped only when the loop says so.
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &child, nullptr) < 0) _exit(kCellAbortedExitCode);
  int childEvents = signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
  if (childEvents < 0) _exit(kCellAbortedExitCode);
  for (;;) {
    pollfd waits[] = {{sock, POLLIN, 0}, {childEvents, POLLIN, 0}};
    if (poll(waits, 2, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(kCellAbortedExitCode);
    }
    if (waits[1].revents != 0) {
      signalfd_siginfo info;
      while (read(childEvents, &info, sizeof info) > 0) {
      }
      reapSupervisors();
    }
    if (waits[0].revents == 0) continue;
    char buffer[128];
    iovec iov{buffer, sizeof buffer};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(sock, &msg, MSG_TRUNC | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);  // the launcher closed its end
    // At most one fd comes with a request: the backend's plan (a sealed memfd).
    std::vector<Fd> attached = receivedFds(msg);
    std::string reply;
    LaunchedCell cell;
    std::vector<int> fds;
    try {
      // MSG_TRUNC: n is the request's whole length, even beyond the buffer.
      if (static_cast<size_t>(n) > sizeof buffer) throw std::runtime_error("request too long");
      if ((msg.msg_flags & MSG_CTRUNC) != 0 || attached.size() > 1) {
        throw std::runtime_error("request with more than one fd");
      }
      std::string why;
      std::optional<std::string> cellId =
          parseSpawnRequest(std::string_view(buffer, static_cast<size_t>(n)), &why);
      if (!cellId) throw std::runtime_error(why);
      cell = factory(*cellId, attached.empty() ? -1 : attached[0].get());
      fds = {cell.pidFd.get(),           cell.netnsFd.get(), cell.stdoutFd.get(),
             cell.stderrFd.get(),        cell.startFd.get(), cell.statusFd.get(),
             cell.workingDirectory.get()};
      if (cell.secrets.get() >= 0) fds.push_back(cell.secrets.get());
      reply = spawnedReply(cell.initPid);
    } catch (const std::exception& e) {
      reply = refusedReply(e.what());
      fds.clear();
    }
    if (sendWithFds(sock, reply.data(), reply.size(), fds) < 0) _exit(0);
    // `cell` closes our copies: the launcher holds them now.
  }
}

}  // namespace

LaunchedCell cloneSupervisor(const std::string& cellId,
                             const std::function<void(InitChannels)>& run,
                             const std::function<void(pid_t, LaunchedCell&)>& openFds) {
  InitPipes pipes = InitPipes::make();
  int newPidfd = -1;
  pid_t pid = cloneCellInit(kSupervisorNamespaces, &newPidfd);
  if (pid == 0) {
    run(pipes.childChannels());
    _exit(kCellAbortedExitCode);
  }
  Fd pidfd(newPidfd);
  pipes.closeChildEnds();
  try {
    CellCgroup::open(cellId).addProcess(pid);
    sendCgroupJoined(pipes.control.get(), cellId);
    awaitReady(pipes.control.get(), pid, cellId);
    LaunchedCell cell;
    cell.initPid = pid;
    std::string netnsPath = "/proc/" + std::to_string(pid) + "/ns/net";
    cell.netnsFd = Fd(open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (cell.netnsFd.get() < 0) throwErrno("open(" + netnsPath + ", O_RDONLY)");
    openFds(pid, cell);
    pipes.handOver(std::move(pidfd), cell);
    return cell;
  } catch (...) {
    killAndReap(pid, pidfd.get());
    throw;
  }
}

pid_t startSupervisorSpawner(const char* processName, SupervisorFactory factory, Fd& launcherEnd) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    throwErrno(std::string("socketpair(") + processName + ")");
  }
  Fd ours(pair[0]), theirs(pair[1]);
  Fd self(pidfdOpen(getpid()));
  if (self.get() < 0) throwErrno("pidfd_open(launcher)");
  pid_t pid = fork();
  if (pid < 0) throwErrno(std::string("fork(") + processName + ")");
  if (pid == 0) {
    ours.reset();
    try {
      runSpawner(theirs.get(), self.get(), processName, factory);
    } catch (...) {
    }
    _exit(kCellAbortedExitCode);
  }
  launcherEnd = std::move(ours);
  return pid;
}

LaunchedCell requestSupervisor(int spawnerFd, const std::string& cellId, int planFd) {
  if (spawnerFd < 0) throw std::runtime_error("this VM launcher runs no such spawner");
  std::string request = spawnRequest(cellId);
  std::vector<int> planFds;
  if (planFd >= 0) planFds.push_back(planFd);
  if (sendWithFds(spawnerFd, request.data(), request.size(), planFds) < 0) {
    throwErrno("send(supervisor spawner)");
  }
  char buffer[4096];
  iovec iov{buffer, sizeof buffer};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kSpawnedCellMaxFdCount)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(spawnerFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recvmsg(supervisor spawner)");
  if (n == 0) throw std::runtime_error("the supervisor spawner is gone");
  std::vector<Fd> fds = receivedFds(msg);
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    throw std::runtime_error("the supervisor spawner sent a truncated reply");
  }
  pid_t pid = parseSpawnReply(std::string_view(buffer, static_cast<size_t>(n)), fds.size());
  LaunchedCell cell;
  cell.initPid = pid;
  cell.adoptAgentFds(fds);
  cell.workingDirectory = std::move(fds[6]);
  if (fds.size() == kSpawnedCellMaxFdCount) cell.secrets = std::move(fds[7]);
  return cell;
}

LaunchedCell launchThroughSpawner(int spawnerFd, const std::string& cellId, CellCgroup& cgroup,
                                  int planFd) {
  LaunchedCell cell;
  try {
    cell = requestSupervisor(spawnerFd, cellId, planFd);
    int registryPidfd = fcntl(cell.pidFd.get(), F_DUPFD_CLOEXEC, 3);
    if (registryPidfd < 0) throwErrno("fcntl(pidfd, F_DUPFD_CLOEXEC)");
    registerLaunchedCell(cellId, cell.initPid, registryPidfd);
  } catch (...) {
    if (cell.pidFd.get() >= 0) pidfdSendSignal(cell.pidFd.get(), SIGKILL);
    removeCellCgroup(cgroup);
    throw;
  }
  return cell;
}

}  // namespace cellos::vmm
