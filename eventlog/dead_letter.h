#pragma once
// The dead-letter directory: an event a sink cannot take is written here, one file per event,
// never dropped silently. Shared by the two processes that have sinks: the broker (the log, the
// signer) and the event forwarder (NATS). The directory is opened before seccomp; files are
// created under its fd (openat with kCreateOnlyFlags), written, fsynced, and the directory
// fsynced. File names and content: eventlog/format.h. `cellos verify` puts the signed ones
// back into their place in the chain.

#include <fcntl.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace cellos::eventlog {

// Flags of every file the broker and the forwarder create after seccomp (log files, dead
// letters). Their seccomp profiles allow openat with exactly these flags, so they can create new
// files but never open an existing one.
inline constexpr int kCreateOnlyFlags =
    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;

class DeadLetterDirectory {
 public:
  // Creates `path` when missing (mode 0750, given to the owner when run as root) and opens it.
  // Throws with the path on error: a broker that cannot dead-letter does not start.
  DeadLetterDirectory(const std::string& path, uid_t ownerUid, gid_t ownerGid);
  ~DeadLetterDirectory();
  DeadLetterDirectory(const DeadLetterDirectory&) = delete;
  DeadLetterDirectory& operator=(const DeadLetterDirectory&) = delete;

  // Writes one record as a new file named `name` (which must not exist) and makes it durable.
  // Throws on any failure.
  void write(const std::string& name, const nlohmann::json& record);

  // Records a signed or unsigned event; the name follows from its attributes (eventDeadLetter
  // in eventlog/format.h). Returns the file name. Throws on failure.
  std::string writeEvent(const nlohmann::json& event, const std::string& sink,
                         const std::string& reason);

  // Records the unterminated last line a crash left in the log (see JsonlLog).
  void writePartialLine(const std::string& bytes);

  const std::string& path() const { return path_; }
  uint64_t written() const { return written_; }

  // The signed dead letter with the highest sequence found at start-up, if any: the chain may
  // have moved on past the log's last line into the dead letters.
  struct LastSigned {
    uint64_t sequence;
    std::string dssematerial;
  };
  const std::optional<LastSigned>& lastSigned() const { return lastSigned_; }

 private:
  std::string path_;
  int dirFd_ = -1;
  uint64_t written_ = 0;
  std::optional<LastSigned> lastSigned_;
};

}  // namespace cellos::eventlog
