#pragma once
// The signed event log on disk: one CloudEvent per line, appended with an fsync per batch, and
// rotated by size so that the chain continues across files:
//
//   events.jsonl                          the file being written
//   events.jsonl.00000000000000001234     an earlier file, holding events up to sequence 1234
//
// Everything that needs a path happens in open(), before the broker installs seccomp: the
// directory is opened once and kept, and afterwards files are only created (openat with
// O_CREAT|O_EXCL on that directory fd), renamed within it, appended to and truncated back.
// `cellos verify events.jsonl.* events.jsonl` checks the whole chain (the names sort in order).

#include "eventlog/dead_letter.h"

#include <fcntl.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cellos::broker {

// Flags of every file the broker creates after seccomp (log files, dead letters, journal
// entries, exports): see eventlog/dead_letter.h.
using eventlog::kCreateOnlyFlags;

class JsonlLog {
 public:
  // The last complete event the log holds: where the chain stood when it was written.
  struct LastEvent {
    uint64_t sequence;
    std::string dssematerial;
  };

  // Opens (creating when missing, mode 0640) `path` for appending, and its directory. When run as
  // root, a directory it creates and the file are given to `owner`. `maxBytes` > 0 turns on
  // rotation (then the directory must be writable by the broker's user). Reads where the chain
  // stood: the last line of the file or, when the file is empty, of the newest rotated file. A
  // last line without a newline (a write cut short by a crash) is cut off the file and handed
  // out once by takePartialTail(), for the dead-letter directory. Throws with the path on error.
  JsonlLog(const std::string& path, uint64_t maxBytes, uid_t ownerUid, gid_t ownerGid);
  ~JsonlLog();
  JsonlLog(const JsonlLog&) = delete;
  JsonlLog& operator=(const JsonlLog&) = delete;

  // Checks, as the unprivileged user the broker now is, that rotation can create files in the
  // log's directory. Throws a one-line fix otherwise. No-op without rotation.
  void checkRotationPossible() const;

  const std::optional<LastEvent>& lastEvent() const { return last_; }
  std::optional<std::string> takePartialTail();

  // Appends `lines` (signed events as compact JSON, in sequence order; `lastSequence` and
  // `lastDssematerial` are those of the final one) and fsyncs. Rotates first when the file is
  // not empty and the batch would take it past maxBytes. If the write or fsync fails, the file
  // is cut back to where it was (no partial line stays behind) and this throws: the caller
  // then owns the events (the dead-letter directory).
  void append(const std::vector<std::string>& lines, uint64_t lastSequence,
              const std::string& lastDssematerial);

  // Appends one signed checkpoint (a C2SP signed note from the signer) to the checkpoint file
  // beside the log, "<log>.checkpoints" (append-only, opened with the log), and fsyncs. Throws
  // with the path if the write or fsync fails.
  void appendCheckpoint(const std::string& note);

  const std::string& path() const { return path_; }
  std::string checkpointPath() const { return path_ + ".checkpoints"; }
  uint64_t size() const { return size_; }
  // Names of the files rotated so far by this process (for logs and tests).
  const std::vector<std::string>& rotated() const { return rotated_; }

 private:
  void rotate();

  std::string path_;
  std::string directory_;
  std::string name_;  // base name within the directory
  uint64_t maxBytes_;
  int dirFd_ = -1;
  int fd_ = -1;
  int checkpointFd_ = -1;
  uint64_t size_ = 0;
  std::optional<LastEvent> last_;
  std::optional<std::string> partialTail_;
  std::vector<std::string> rotated_;
};

}  // namespace cellos::broker
