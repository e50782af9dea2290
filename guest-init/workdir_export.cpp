#include "guest-init/workdir_export.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace cellos::guest {

namespace {

constexpr size_t kMaxProblems = 8;

class Walk {
 public:
  Walk(const ExportLimits& limits, const FrameSink& sink) : limits_(limits), sink_(sink) {}

  // Sends the entries of the directory open at `dirFd`, whose path is `prefix` ("" for the root).
  void directory(int dirFd, const std::string& prefix) {
    std::vector<std::string> names;
    if (!listNames(dirFd, prefix, names)) return;
    for (const std::string& name : names) {
      if (stopped_) return;
      std::string path = prefix.empty() ? name : prefix + "/" + name;
      struct stat st;
      if (::fstatat(dirFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        leftOut(path, std::strerror(errno));
        continue;
      }
      if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) continue;  // not copied, by design
      if (!vmchannel::isGuestRelativePath(path)) {
        leftOut(path.substr(0, 200), "path too long or too deep");
        continue;
      }
      if (result_.entries >= limits_.maxEntries) {
        stop("more than " + std::to_string(limits_.maxEntries) + " entries");
        return;
      }
      ++result_.entries;
      if (S_ISDIR(st.st_mode)) {
        subdirectory(dirFd, name, path);
      } else {
        file(dirFd, name, path);
      }
    }
  }

  ExportResult take() { return std::move(result_); }

 private:
  bool listNames(int dirFd, const std::string& prefix, std::vector<std::string>& names) {
    // fdopendir takes the fd it is given: hand it a duplicate so the caller's stays open.
    int copy = ::fcntl(dirFd, F_DUPFD_CLOEXEC, 0);
    DIR* dir = copy < 0 ? nullptr : ::fdopendir(copy);
    if (dir == nullptr) {
      if (copy >= 0) ::close(copy);
      leftOut(prefix.empty() ? "." : prefix, std::strerror(errno));
      return false;
    }
    while (dirent* entry = ::readdir(dir)) {
      std::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    return true;
  }

  void subdirectory(int parentFd, const std::string& name, const std::string& path) {
    if (!emit(vmchannel::encodeFrame(vmchannel::FrameType::kDirectory, path))) return;
    int fd = ::openat(parentFd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      leftOut(path, std::strerror(errno));
      return;
    }
    directory(fd, path);
    ::close(fd);
  }

  void file(int parentFd, const std::string& name, const std::string& path) {
    // O_NONBLOCK: should the entry have become a fifo since fstatat, open must not wait on it.
    int fd = ::openat(parentFd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      leftOut(path, fd < 0 ? std::strerror(errno) : "no longer a regular file");
      if (fd >= 0) ::close(fd);
      return;
    }
    std::string buffer;
    uint64_t offset = 0;
    bool sentOne = false;
    while (!stopped_) {
      uint64_t budget = limits_.maxBytes - result_.bytes;
      size_t want = static_cast<size_t>(std::min<uint64_t>(limits_.chunkBytes, budget));
      if (want == 0) {
        // The budget is spent: the copy ends here unless this file is at its end.
        char probe;
        ssize_t n = ::pread(fd, &probe, 1, static_cast<off_t>(offset));
        if (n > 0) stop("more than " + std::to_string(limits_.maxBytes) + " bytes");
        if (n == 0 && !sentOne) emit(vmchannel::fileFrame(path, 0, {}));
        break;
      }
      buffer.resize(want);
      ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        leftOut(path, std::strerror(errno));
        break;
      }
      if (n == 0) {
        if (!sentOne) emit(vmchannel::fileFrame(path, 0, {}));
        break;
      }
      std::string_view data(buffer.data(), static_cast<size_t>(n));
      if (!emit(vmchannel::fileFrame(path, offset, data))) break;
      sentOne = true;
      offset += static_cast<uint64_t>(n);
      result_.bytes += static_cast<uint64_t>(n);
    }
    ::close(fd);
  }

  bool emit(const std::string& frame) {
    if (stopped_) return false;
    if (!sink_(frame)) {
      result_.sinkFailed = true;
      stopped_ = true;
      return false;
    }
    return true;
  }

  void leftOut(const std::string& path, const std::string& why) {
    result_.truncated = true;
    if (result_.problems.size() < kMaxProblems) result_.problems.push_back(path + ": " + why);
  }

  void stop(const std::string& why) {
    result_.truncated = true;
    stopped_ = true;
    if (result_.problems.size() < kMaxProblems) result_.problems.push_back("stopped: " + why);
  }

  const ExportLimits& limits_;
  const FrameSink& sink_;
  ExportResult result_;
  bool stopped_ = false;
};

}  // namespace

ExportResult exportWorkingDirectory(int rootFd, const ExportLimits& limits, const FrameSink& sink) {
  Walk walk(limits, sink);
  walk.directory(rootFd, "");
  return walk.take();
}

}  // namespace cellos::guest
