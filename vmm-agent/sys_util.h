#pragma once
// What the VM launcher's raw system-call code shares (cell runtimes, cgroups, records): a
// failed call as an exception naming it, an fd that closes itself, and close-on-exec pipes.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

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

struct Pipe {
  Fd read, write;
};

// Every pipe starts close-on-exec: an fd is inherited only where it is deliberately dup2'd.
inline Pipe makePipe(const char* purpose) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) throwErrno(std::string("pipe2(") + purpose + ", O_CLOEXEC)");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

}  // namespace cellos::vmm
