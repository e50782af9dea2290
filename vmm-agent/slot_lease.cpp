#include "vmm-agent/slot_lease.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

std::optional<SlotLease> SlotLease::tryAcquire(const std::string& dir, const std::string& pool,
                                               size_t slot) {
  std::string path = dir + "/" + pool + "." + std::to_string(slot);
  for (int attempt = 0; attempt < 8; ++attempt) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open(" + path + ")");
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      int e = errno;
      close(fd);
      if (e == EWOULDBLOCK) return std::nullopt;
      throw std::system_error(e, std::generic_category(), "flock(" + path + ", LOCK_EX)");
    }
    // A releasing holder unlinks the file before it drops the lock; if we locked a file that is
    // no longer at `path`, the lease is not ours: open the current one again.
    struct stat held {
    }, named{};
    if (fstat(fd, &held) == 0 && stat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
      return SlotLease(path, fd, slot);
    }
    close(fd);
  }
  throw std::runtime_error("lease " + path + " keeps changing under us");
}

SlotLease SlotLease::acquire(const std::string& dir, const std::string& pool, size_t count) {
  for (size_t slot = 0; slot < count; ++slot) {
    if (auto lease = tryAcquire(dir, pool, slot)) return std::move(*lease);
  }
  throw std::runtime_error("pool " + pool + " is exhausted: all " + std::to_string(count) +
                           " slots are held by live cells");
}

SlotLease::SlotLease(SlotLease&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), slot_(other.slot_) {
  other.fd_ = -1;
}

SlotLease& SlotLease::operator=(SlotLease&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    slot_ = other.slot_;
    other.fd_ = -1;
  }
  return *this;
}

SlotLease::~SlotLease() {
  release();
}

void SlotLease::release() {
  if (fd_ < 0) return;
  unlink(path_.c_str());  // while still locked: see tryAcquire
  close(fd_);
  fd_ = -1;
}

}  // namespace cellos::vmm
