#include "guest-init/sys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "guest-init/frame_writer.h"

namespace cellos::guest {

void throwErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::string readFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open " + path);
  std::string content;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      errno = saved;
      throwErrno("read " + path);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return content;
}

void writeFile(const std::string& path, std::string_view content, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) throwErrno("create " + path);
  if (!writeFully(fd, content)) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    throwErrno("write " + path);
  }
  check(::fchmod(fd, mode), "chmod " + path);
  check(::close(fd), "close " + path);
}

void writeAttribute(const std::string& path, std::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open " + path);
  ssize_t n = ::write(fd, content.data(), content.size());
  int saved = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(content.size())) {
    errno = n < 0 ? saved : EIO;
    throwErrno("write \"" + std::string(content) + "\" to " + path);
  }
}

uint64_t monotonicMs() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000 + static_cast<uint64_t>(now.tv_nsec) / 1000000;
}

void sleepMs(unsigned ms) {
  timespec pause = {.tv_sec = ms / 1000, .tv_nsec = static_cast<long>(ms % 1000) * 1000000};
  while (::nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

bool waitForPath(const std::string& path, unsigned timeoutMs) {
  uint64_t deadline = monotonicMs() + timeoutMs;
  for (;;) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    if (monotonicMs() >= deadline) return false;
    sleepMs(10);
  }
}

}  // namespace cellos::guest
