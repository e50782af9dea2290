#include "broker/jsonl_log.h"

#include "core/verifiability.h"
#include "eventlog/format.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace cellos::broker {

namespace {

// Enough to hold the longest line the signer returns (a 256 KiB event plus its signature).
constexpr size_t kTailWindow = 2 << 20;

std::string readTail(int fd, uint64_t size, const std::string& what) {
  size_t length = static_cast<size_t>(std::min<uint64_t>(size, kTailWindow));
  std::string tail(length, '\0');
  size_t off = 0;
  while (off < length) {
    ssize_t n;
    KJ_SYSCALL(n = pread(fd, tail.data() + off, length - off, size - length + off), what);
    if (n == 0) break;
    off += n;
  }
  tail.resize(off);
  return tail;
}

// The last complete line of `tail` (which ends in '\n') as an event, if it parses as one.
std::optional<JsonlLog::LastEvent> lastEventIn(const std::string& tail, const std::string& what) {
  if (tail.empty() || tail.back() != '\n') return std::nullopt;
  size_t start = tail.rfind('\n', tail.size() - 2);
  start = start == std::string::npos ? 0 : start + 1;
  auto event = nlohmann::json::parse(tail.begin() + start, tail.end() - 1, nullptr, false);
  if (event.is_discarded() || !event.is_object() || !event.contains("sequence") ||
      !event["sequence"].is_string() || !event.contains("dssematerial") ||
      !event["dssematerial"].is_string()) {
    spdlog::warn("{}: the last line is not a signed event; gaps after it cannot be declared", what);
    return std::nullopt;
  }
  auto sequence = core::parseSequence(event["sequence"].get<std::string>());
  if (!sequence) return std::nullopt;
  return JsonlLog::LastEvent{*sequence, event["dssematerial"].get<std::string>()};
}

}  // namespace

JsonlLog::JsonlLog(const std::string& path, uint64_t maxBytes, uid_t ownerUid, gid_t ownerGid)
    : path_(path), maxBytes_(maxBytes) {
  auto slash = path.rfind('/');
  directory_ = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  name_ = slash == std::string::npos ? path : path.substr(slash + 1);
  KJ_REQUIRE(!name_.empty(), "event log path names a directory", path);
  if (mkdir(directory_.c_str(), 0750) == 0 && geteuid() == 0) {
    KJ_SYSCALL(chown(directory_.c_str(), ownerUid, ownerGid), directory_);
  }
  KJ_SYSCALL(dirFd_ = open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), directory_);
  KJ_SYSCALL(fd_ = openat(dirFd_, name_.c_str(),
                          O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640),
             path);
  struct stat st {};
  KJ_SYSCALL(fstat(fd_, &st), path);
  KJ_REQUIRE(S_ISREG(st.st_mode), "event log must be a regular file", path);
  if (geteuid() == 0) {
    KJ_SYSCALL(fchown(fd_, ownerUid, ownerGid), path);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  // The checkpoints beside the log: opened now, like the log, since seccomp allows no open of
  // an existing file later.
  std::string checkpointName = name_ + ".checkpoints";
  KJ_SYSCALL(checkpointFd_ = openat(dirFd_, checkpointName.c_str(),
                                    O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640),
             checkpointPath());
  if (geteuid() == 0) {
    KJ_SYSCALL(fchown(checkpointFd_, ownerUid, ownerGid), checkpointPath());
  }

  if (size_ > 0) {
    std::string tail = readTail(fd_, size_, path);
    if (tail.back() != '\n') {
      // A write cut short (the broker died mid-line): that event is not in the log. Keep its
      // bytes for the dead-letter directory and cut the file back to its last whole line, so
      // the next line does not glue onto it.
      size_t cut = tail.rfind('\n');
      KJ_REQUIRE(cut != std::string::npos || tail.size() == size_,
                 "the log's last line is longer than the tail window", path);
      partialTail_ = tail.substr(cut == std::string::npos ? 0 : cut + 1);
      tail.resize(cut == std::string::npos ? 0 : cut + 1);
      size_ -= partialTail_->size();
      KJ_SYSCALL(ftruncate(fd_, static_cast<off_t>(size_)), path);
      KJ_SYSCALL(fsync(fd_), path);
      spdlog::warn("{}: removed an unterminated last line ({} bytes) left by a crash", path,
                   partialTail_->size());
    }
    last_ = lastEventIn(tail, path);
  }
  if (size_ == 0) {
    // Freshly rotated (or new): the chain stands where the newest rotated file ends.
    std::string newest;
    if (DIR* dir = fdopendir(dup(dirFd_))) {
      rewinddir(dir);
      while (dirent* entry = readdir(dir)) {
        std::string candidate = entry->d_name;
        if (eventlog::rotatedLogSequence(candidate, name_) && candidate > newest)
          newest = candidate;
      }
      closedir(dir);
    }
    if (!newest.empty()) {
      int fd;
      KJ_SYSCALL(fd = openat(dirFd_, newest.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC), newest);
      KJ_DEFER(close(fd));
      struct stat rotatedStat {};
      KJ_SYSCALL(fstat(fd, &rotatedStat), newest);
      if (rotatedStat.st_size > 0) {
        last_ = lastEventIn(readTail(fd, rotatedStat.st_size, newest), directory_ + "/" + newest);
      }
    }
  }
}

JsonlLog::~JsonlLog() {
  if (fd_ >= 0) close(fd_);
  if (checkpointFd_ >= 0) close(checkpointFd_);
  if (dirFd_ >= 0) close(dirFd_);
}

void JsonlLog::appendCheckpoint(const std::string& note) {
  // One write of a few hundred bytes with O_APPEND: the note lands whole or not at all.
  ssize_t n;
  KJ_SYSCALL(n = write(checkpointFd_, note.data(), note.size()), checkpointPath());
  KJ_REQUIRE(static_cast<size_t>(n) == note.size(), "short write", checkpointPath());
  KJ_SYSCALL(fsync(checkpointFd_), checkpointPath());
}

void JsonlLog::checkRotationPossible() const {
  if (maxBytes_ == 0) return;
  KJ_REQUIRE(faccessat(dirFd_, ".", W_OK | X_OK, AT_EACCESS) == 0,
             "event log rotation needs a directory the broker's user can write: give it the "
             "directory or pass --events-max-bytes 0",
             directory_, strerror(errno));
}

std::optional<std::string> JsonlLog::takePartialTail() {
  auto out = std::move(partialTail_);
  partialTail_.reset();
  return out;
}

void JsonlLog::rotate() {
  if (!last_) {
    spdlog::warn("{}: not rotating: its last line is not a signed event", path_);
    return;
  }
  std::string rotated = eventlog::rotatedLogName(name_, last_->sequence);
  KJ_SYSCALL(renameat(dirFd_, name_.c_str(), dirFd_, rotated.c_str()), path_, rotated);
  int fd = openat(dirFd_, name_.c_str(), kCreateOnlyFlags, 0640);
  if (fd < 0) {
    int error = errno;
    // Put the old name back, so the log stays where readers look for it.
    renameat(dirFd_, rotated.c_str(), dirFd_, name_.c_str());
    KJ_FAIL_SYSCALL("openat", error, path_);
  }
  // The rename and the new name are durable before any event goes into the new file.
  KJ_SYSCALL(fsync(dirFd_), directory_);
  close(fd_);
  fd_ = fd;
  size_ = 0;
  rotated_.push_back(rotated);
  spdlog::info("rotated {} to {}", path_, rotated);
}

void JsonlLog::append(const std::vector<std::string>& lines, uint64_t lastSequence,
                      const std::string& lastDssematerial) {
  std::string buffer;
  for (const auto& line : lines) {
    buffer += line;
    buffer.push_back('\n');
  }
  if (maxBytes_ > 0 && size_ > 0 && size_ + buffer.size() > maxBytes_) rotate();
  auto rollBack = [&](const char* call, int error) {
    // A partial batch must not stay: the next batch would continue a broken line.
    if (ftruncate(fd_, static_cast<off_t>(size_)) == 0) fsync(fd_);
    KJ_FAIL_SYSCALL(call, error, path_);
  };
  size_t off = 0;
  while (off < buffer.size()) {
    ssize_t n = write(fd_, buffer.data() + off, buffer.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      rollBack("write", errno);
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd_) < 0) rollBack("fsync", errno);
  size_ += buffer.size();
  last_ = LastEvent{lastSequence, lastDssematerial};
}

}  // namespace cellos::broker
