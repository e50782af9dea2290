#include "vmm-agent/launcher.h"

#include "ipc/vmm.capnp.h"
#include "privsep/daemon.h"
#include "privsep/seccomp.h"
#include "vmm-agent/linux_cell.h"
#include "vmm-agent/seccomp_profile.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
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

bool validCellId(const std::string& id) {
  static const std::regex pattern("[a-z0-9][a-z0-9._-]{0,62}");
  return std::regex_match(id, pattern) && id != "." && id != "..";
}

void handleLaunch(int sock, const LauncherConfig& config, ipc::CellRequest::Reader request) {
  CellLaunch launch;
  launch.cellId = request.getCellId();
  KJ_REQUIRE(validCellId(launch.cellId), "invalid cell id", launch.cellId);
  for (auto arg : request.getArgv()) launch.argv.emplace_back(arg.cStr());
  for (auto kv : request.getEnv())
    launch.env.emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
  launch.workingDirectory = request.getWorkingDirectory();
  if (request.getPidsMax() != 0) launch.pidsMax = request.getPidsMax();
  if (request.getMemoryMaxBytes() != 0) launch.memoryMaxBytes = request.getMemoryMaxBytes();
  launch.cellDir = config.runDir + "/cells/" + launch.cellId;
  if (mkdir(launch.cellDir.c_str(), 0700) < 0) {
    KJ_FAIL_SYSCALL("mkdir", errno, launch.cellDir, "(is a cell with this id already running?)");
  }
  LaunchedCell cell;
  try {
    cell = launchCell(launch);
  } catch (...) {
    rmdir(launch.cellDir.c_str());
    throw;
  }
  std::vector<int> fds = {cell.pidFd,    cell.netnsFd, cell.stdoutFd,
                          cell.stderrFd, cell.startFd, cell.statusFd};
  capnp::MallocMessageBuilder reply;
  reply.initRoot<ipc::LauncherReply>().setLaunched(cell.initPid);
  sendReply(sock, reply, fds);
  for (int fd : fds) close(fd);  // the agent holds them now
}

void handleDestroy(int sock, const LauncherConfig& config, ipc::DestroyRequest::Reader request) {
  std::string cellId = request.getCellId();
  KJ_REQUIRE(validCellId(cellId), "invalid cell id", cellId);
  std::vector<std::string> residue = destroyCell(cellId, request.getInitPid());
  std::string cellDir = config.runDir + "/cells/" + cellId;
  if (rmdir(cellDir.c_str()) < 0 && errno != ENOENT) {
    residue.push_back(cellDir + ": " + strerror(errno));
  }
  capnp::MallocMessageBuilder reply;
  auto list = reply.initRoot<ipc::LauncherReply>().initDestroyed(residue.size());
  for (size_t i = 0; i < residue.size(); ++i) list.set(i, residue[i]);
  sendReply(sock, reply, {});
}

[[noreturn]] void runLauncher(int sock, const LauncherConfig& config) {
  // If the agent dies, so do we (and, through PDEATHSIG in each cell's init, so do the cells).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "vmm-launcher");
  privsep::closeStrayFds({sock});
  signal(SIGPIPE, SIG_IGN);
  privsep::installSeccomp(kLauncherProfile);
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
          handleLaunch(sock, config, request.getLaunch());
          break;
        case ipc::LauncherRequest::DESTROY:
          handleDestroy(sock, config, request.getDestroy());
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
