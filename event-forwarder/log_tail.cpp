#include "event-forwarder/log_tail.h"

#include "eventlog/format.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <kj/debug.h>

namespace cellos::forwarder {

LogTail::LogTail(int dirFd, std::string name, std::optional<uint64_t> afterSequence)
    : dirFd_(dirFd), name_(std::move(name)) {
  // Rotated files holding events past the cursor: their name is their last sequence.
  if (DIR* dir = fdopendir(dup(dirFd_))) {
    rewinddir(dir);
    while (dirent* entry = readdir(dir)) {
      std::string candidate = entry->d_name;
      auto last = eventlog::rotatedLogSequence(candidate, name_);
      if (!last) continue;
      if (!afterSequence || *last > *afterSequence) pendingRotated_.push_back(candidate);
    }
    closedir(dir);
  }
  std::sort(pendingRotated_.begin(), pendingRotated_.end());
}

LogTail::~LogTail() {
  if (fd_ >= 0) close(fd_);
}

bool LogTail::openFile(const std::string& file) {
  int fd = openat(dirFd_, file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;  // not there (yet): the broker creates it
    KJ_FAIL_SYSCALL("openat", errno, file);
  }
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
  file_ = file;
  buffer_.clear();
  return true;
}

bool nameNowNamesAnotherFile(int dirFd, const std::string& name, int fd) {
  struct stat open {
  }, named{};
  if (fstat(fd, &open) < 0) return false;
  if (fstatat(dirFd, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) < 0) return false;
  return open.st_ino != named.st_ino || open.st_dev != named.st_dev;
}

bool LogTail::currentWasRotated() const {
  return nameNowNamesAnotherFile(dirFd_, name_, fd_);
}

std::optional<std::string> LogTail::next() {
  for (;;) {
    if (fd_ < 0) {
      if (!pendingRotated_.empty()) {
        std::string file = pendingRotated_.front();
        pendingRotated_.erase(pendingRotated_.begin());
        if (!openFile(file)) continue;  // pruned meanwhile
      } else if (!openFile(name_)) {
        return std::nullopt;
      }
    }
    auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    char chunk[65536];
    ssize_t n;
    KJ_SYSCALL(n = read(fd_, chunk, sizeof(chunk)), file_);
    if (n > 0) {
      buffer_.append(chunk, n);
      continue;
    }
    // End of this file. A rotated file is finished; the current one may still grow, unless it
    // has just been renamed away (then the rest of it is read, and the new one comes next).
    if (file_ != name_) {
      close(fd_);
      fd_ = -1;
      continue;
    }
    if (!currentWasRotated()) return std::nullopt;
    KJ_SYSCALL(n = read(fd_, chunk, sizeof(chunk)), file_);  // written just before the rename
    if (n > 0) {
      buffer_.append(chunk, n);
      continue;
    }
    close(fd_);
    fd_ = -1;
  }
}

}  // namespace cellos::forwarder
