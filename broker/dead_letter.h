#pragma once
// The dead-letter directory: an event the sinks cannot take is written here, one file per
// event, never dropped silently. The directory is opened before seccomp; files are created
// under its fd (openat with kCreateOnlyFlags), written, fsynced, and the directory fsynced.
//
// File names and content (JSON, one object):
//   <20-digit sequence>-<event id>.json   a signed event the log could not take
//       {"reason": "...", "sink": "jsonl", "event": {the signed event}}
//   unsigned-<event id>.json              an event that never got a signature
//       {"reason": "...", "sink": "signer", "event": {the unsigned event}}
//   partial-<unix micros>.json            the unterminated last line a crash left in the log
//       {"reason": "...", "sink": "jsonl", "partialLine": "<its bytes, as text>"}
// `cellos verify` puts the signed ones back into their place in the chain.

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace cellos::broker {

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

  // Records a signed or unsigned event; the name follows from its attributes (see above).
  // Returns the file name. Throws on failure.
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

// "<log path>.dead-letter": the default beside a log, found again by `cellos verify`.
std::string defaultDeadLetterPath(const std::string& logPath);

}  // namespace cellos::broker
