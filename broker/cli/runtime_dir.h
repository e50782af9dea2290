#pragma once
// The private runtime directory of one `cellos run` (/run/cellos-run.XXXXXX), and how the next
// run finds the directories of runs that were killed (SIGKILL leaves no chance to clean up).
//
// A run holds an exclusive flock(2) on its directory for as long as it lives; the fd is
// close-on-exec, so no daemon inherits it, and the kernel drops the lock when the CLI dies,
// however it dies. A directory whose lock can be taken is therefore a dead run's. Making a
// directory and reaping dead ones are serialized by a flock on /run itself, so a reaper never
// sees a new directory in the instant between mkdtemp and its lock.

#include <string>

namespace cellos::cli {

// An flock(2) held through an fd of our own; released (the fd closed) when destroyed.
class HeldLock {
 public:
  HeldLock() = default;
  explicit HeldLock(int fd) : fd_(fd) {}
  HeldLock(HeldLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  HeldLock& operator=(HeldLock&& other) noexcept;
  HeldLock(const HeldLock&) = delete;
  HeldLock& operator=(const HeldLock&) = delete;
  ~HeldLock() { reset(); }
  void reset();

 private:
  int fd_ = -1;
};

// Takes the host-wide lock on making runtime directories, then removes every
// /run/cellos-run.* whose run is gone (after detaching any mount under it), saying so on stderr.
// Keep the returned lock until the new directory is held (holdRuntimeDirectory).
HeldLock reapDeadRuntimeDirectories();

// Marks `dir` as a live run's for as long as the returned lock is held. Throws std::system_error.
HeldLock holdRuntimeDirectory(const std::string& dir);

}  // namespace cellos::cli
