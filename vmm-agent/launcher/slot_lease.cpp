#include "vmm-agent/launcher/slot_lease.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <vector>

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

namespace {

// The names leases have: <pool>.<slot>, the pools being core::AddressPool::leaseName()
// ("addr-10.213.0.0-16") and core::UidRangePool::describe() ("uid-1879048192-65536-1024"). Only
// these are ever removed, whatever else an operator keeps in the directory.
bool isLeaseName(const std::string& name) {
  if (name.rfind("addr-", 0) != 0 && name.rfind("uid-", 0) != 0) return false;
  size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot + 1 == name.size()) return false;
  for (size_t i = dot + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  for (char c : name) {
    if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && c != '.' && c != '-') return false;
  }
  return true;
}

}  // namespace

void removeStaleLeases(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* listing = opendir(dir.c_str())) {
    while (dirent* entry = readdir(listing)) {
      if (isLeaseName(entry->d_name)) names.emplace_back(entry->d_name);
    }
    closedir(listing);
  }
  for (const std::string& name : names) {
    std::string path = dir + "/" + name;
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat held {
    }, named{};
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
        lstat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
      unlink(path.c_str());  // while locked, as release() does
    }
    close(fd);
  }
}

}  // namespace cellos::vmm
