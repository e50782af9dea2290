#pragma once
// Follows the broker's JSONL log the way `tail -F` does, through size-based rotation: reads the
// rotated files it has not finished (in chain order), then the current file, line by line, and
// notices when the current file is renamed away and a new one appears under the name. Only
// whole lines (ending in '\n') are returned: a line being written is read once it is complete.
// Works on a directory fd opened before seccomp (openat O_RDONLY, fstat, newfstatat, read).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cellos::forwarder {

// Whether `name` under `dirFd` now names another file than the open `fd` (renamed away or
// replaced); false when the name is gone or cannot be looked at.
bool nameNowNamesAnotherFile(int dirFd, const std::string& name, int fd);

class LogTail {
 public:
  // `dirFd`: the log's directory (kept by the caller); `name`: the log's file name.
  // Starts with the oldest rotated file whose events may come after `afterSequence` (rotated
  // files are named <name>.<last sequence>).
  LogTail(int dirFd, std::string name, std::optional<uint64_t> afterSequence);
  ~LogTail();
  LogTail(const LogTail&) = delete;
  LogTail& operator=(const LogTail&) = delete;

  // The next whole line, or nullopt when there is none yet (poll again later).
  std::optional<std::string> next();

 private:
  bool openFile(const std::string& file);
  bool currentWasRotated() const;

  int dirFd_;
  std::string name_;
  std::string file_;  // the file being read
  int fd_ = -1;
  std::string buffer_;
  std::vector<std::string> pendingRotated_;
};

}  // namespace cellos::forwarder
