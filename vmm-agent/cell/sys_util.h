#pragma once
// What the VM launcher's raw system-call code shares (cell backends, cgroups, records, the
// pid-1 skeleton): a failed call as an exception naming it, the one fd type that closes itself,
// pidfd calls, and close-on-exec pipes.
//
// The error dialect. This code throws std::system_error (the errno and the call that failed),
// not kj::Exception, on purpose: much of it runs inside a cell's pid 1, before any event loop
// exists, where the errno must cross the init's report channel to the launcher as a number
// (cell_init.h, reportFailure) and be rebuilt there as the same std::system_error. The launcher
// translates at one boundary: its request loop answers any std::exception or kj::Exception
// with the reply's `failed` text (launcher.cpp, runLauncher).

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace cellos::vmm {

// Throws std::system_error for errno, naming the call (and its arguments) that failed.
[[noreturn]] inline void throwErrno(const std::string& call) {
  throw std::system_error(errno, std::generic_category(), call);
}

// An owned file descriptor, closed when it goes out of scope unless released, so every early
// throw closes what was opened.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// glibc 2.36's <sys/pidfd.h> lacks extern "C", so its declarations do not link from C++; the raw
// system calls are used instead. Both return -1 with errno on failure.
inline int pidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}
inline int pidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

struct Pipe {
  Fd read, write;
};

// Every pipe starts close-on-exec: an fd is inherited only where it is deliberately dup2'd.
inline Pipe makePipe(const char* purpose) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) throwErrno(std::string("pipe2(") + purpose + ", O_CLOEXEC)");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

// One sendmsg(2) of `size` bytes with `fds` attached (SCM_RIGHTS) when there are any, and
// MSG_NOSIGNAL: what sendmsg returns (bytes sent, or -1 with errno).
inline ssize_t sendWithFds(int sock, const void* data, size_t size, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

}  // namespace cellos::vmm
