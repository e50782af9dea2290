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
      if (stopped_ || walkEnded_) return;
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
        // The walk ends; the files it found are still sent.
        leftOut("stopped", "more than " + std::to_string(limits_.maxEntries) + " entries");
        walkEnded_ = true;
        return;
      }
      ++result_.entries;
      if (S_ISDIR(st.st_mode)) {
        subdirectory(dirFd, name, path);
      } else {
        files_.push_back({static_cast<uint64_t>(st.st_size), path});
      }
    }
  }

  // After the walk: the files it found, smallest first (name order among equals), each opened
  // again from `rootFd` one component at a time without following a symlink. The byte budget is
  // then spent on many small files before any big one: a workload that leaves one huge file
  // (or a sparse one) cannot crowd its other outputs out of the copy.
  void files(int rootFd) {
    std::sort(files_.begin(), files_.end());
    for (const auto& [size, path] : files_) {
      if (stopped_) return;
      size_t slash = path.rfind('/');
      int parent = slash == std::string::npos ? ::fcntl(rootFd, F_DUPFD_CLOEXEC, 0)
                                              : openDirectory(rootFd, path.substr(0, slash));
      if (parent < 0) {
        leftOut(path, std::strerror(errno));
        continue;
      }
      file(parent, slash == std::string::npos ? path : path.substr(slash + 1), path);
      ::close(parent);
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

  // `relative` (a/b/c) under `rootFd`, each component a directory and no symlink.
  static int openDirectory(int rootFd, const std::string& relative) {
    int at = ::fcntl(rootFd, F_DUPFD_CLOEXEC, 0);
    size_t start = 0;
    while (at >= 0 && start <= relative.size()) {
      size_t slash = std::min(relative.find('/', start), relative.size());
      std::string name = relative.substr(start, slash - start);
      int next = ::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int error = errno;
      ::close(at);
      errno = error;
      at = next;
      start = slash + 1;
    }
    return at;
  }

  const ExportLimits& limits_;
  const FrameSink& sink_;
  ExportResult result_;
  std::vector<std::pair<uint64_t, std::string>> files_;  // size, path: sent after the walk
  bool stopped_ = false;                                 // nothing more is sent
  bool walkEnded_ = false;  // the entry budget is spent: no more entries are listed
};

}  // namespace

ExportResult exportWorkingDirectory(int rootFd, const ExportLimits& limits, const FrameSink& sink) {
  Walk walk(limits, sink);
  walk.directory(rootFd, "");
  walk.files(rootFd);
  return walk.take();
}

}  // namespace cellos::guest
