#include "guest-init/relay.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "guest-init/cgroup.h"
#include "guest-init/sys.h"

namespace cellos::guest {

namespace {

constexpr uint64_t kDrainAfterExitMs = 500;
constexpr uint64_t kKillAfterTermMs = 2000;

// Reads what is there from a workload pipe and forwards it; closes the pipe at EOF.
void forward(FrameWriter& writer, int& fd, vmchannel::FrameType type) {
  static char buffer[vmchannel::kMaxOutputChunk];
  ssize_t n = ::read(fd, buffer, sizeof(buffer));
  if (n < 0 && errno == EINTR) return;
  if (n <= 0) {
    ::close(fd);
    fd = -1;
    return;
  }
  writer.sendOutput(type, std::string_view(buffer, static_cast<size_t>(n)));
}

// Frames from the host while the workload runs: only signals mean anything now.
void handleHostFrames(FrameWriter& writer, vmchannel::FrameReader& reader, pid_t group) {
  while (auto frame = reader.next()) {
    auto& [type, payload] = *frame;
    if (type == vmchannel::FrameType::kSignal && payload.size() == 1 &&
        static_cast<uint8_t>(payload[0]) >= 1 && static_cast<uint8_t>(payload[0]) <= 64) {
      ::kill(-group, static_cast<uint8_t>(payload[0]));
    } else {
      writer.log("ignored a host frame of type " + std::to_string(static_cast<int>(type)) +
                 " while the workload runs");
    }
  }
}

}  // namespace

RelayResult relayWorkload(FrameWriter& writer, int portFd, vmchannel::FrameReader& reader,
                          Workload& workload, int signalFd, uint64_t timeoutMs) {
  RelayResult result;
  const uint64_t start = monotonicMs();
  uint64_t termAt = timeoutMs > 0 ? start + timeoutMs : 0;
  uint64_t killAt = 0;
  uint64_t drainUntil = 0;
  handleHostFrames(writer, reader, workload.pid);

  for (;;) {
    uint64_t now = monotonicMs();
    if (!result.exited && termAt != 0 && now >= termAt) {
      writer.log("timeout of " + std::to_string(timeoutMs) + " ms: SIGTERM to the workload");
      ::kill(-workload.pid, SIGTERM);
      termAt = 0;
      killAt = now + kKillAfterTermMs;
    }
    if (!result.exited && killAt != 0 && now >= killAt) {
      ::kill(-workload.pid, SIGKILL);
      killAt = 0;
    }
    if (result.exited && ((workload.stdoutFd < 0 && workload.stderrFd < 0) || now >= drainUntil)) {
      break;
    }
    if (writer.failed()) {
      result.hostGone = true;
      break;
    }

    uint64_t wake = UINT64_MAX;
    for (uint64_t at : {termAt, killAt, result.exited ? drainUntil : 0}) {
      if (at != 0) wake = std::min(wake, at);
    }
    int pollMs = wake == UINT64_MAX ? -1 : static_cast<int>(wake > now ? wake - now : 0);
    pollfd fds[4] = {
        {.fd = portFd, .events = POLLIN, .revents = 0},
        {.fd = workload.stdoutFd, .events = POLLIN, .revents = 0},
        {.fd = workload.stderrFd, .events = POLLIN, .revents = 0},
        {.fd = signalFd, .events = POLLIN, .revents = 0},
    };
    int ready = ::poll(fds, 4, pollMs);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throwErrno("poll");

    if (fds[0].revents & POLLIN) {
      char buffer[4096];
      ssize_t n = ::read(portFd, buffer, sizeof(buffer));
      if (n > 0) {
        reader.feed(buffer, static_cast<size_t>(n));
        handleHostFrames(writer, reader, workload.pid);
        if (reader.failed()) {
          result.hostGone = true;
          break;
        }
      } else if (n == 0 || errno != EINTR) {
        result.hostGone = true;
        break;
      }
    } else if (fds[0].revents & (POLLHUP | POLLERR)) {
      // virtio_console reports POLLHUP while the host end of the port is closed.
      result.hostGone = true;
      break;
    }
    // Output before exit status, so the last bytes are not cut by the drain deadline.
    if (fds[1].revents) forward(writer, workload.stdoutFd, vmchannel::FrameType::kStdout);
    if (fds[2].revents) forward(writer, workload.stderrFd, vmchannel::FrameType::kStderr);
    if (fds[3].revents & POLLIN) {
      signalfd_siginfo info;
      while (::read(signalFd, &info, sizeof(info)) == sizeof(info)) {
      }
      int status = 0;
      if (!result.exited && reapChildren(workload.pid, &status)) {
        result.exited = true;
        result.waitStatus = workloadWaitStatus(workload.statusFd, status);
        drainUntil = monotonicMs() + kDrainAfterExitMs;
      }
    }
  }
  for (int* fd : {&workload.stdoutFd, &workload.stderrFd, &workload.statusFd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  return result;
}

}  // namespace cellos::guest
