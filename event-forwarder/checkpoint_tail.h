#pragma once
// Follows the broker's checkpoint file (<log>.checkpoints: C2SP signed notes appended whole, one
// write each, never rotated) from a byte offset, and returns each note once it has arrived
// whole (core::completeSignedNotes). The offset after the last note handed out is what the
// forwarder's cursor keeps, so a restart neither skips nor repeats a note; a file that is
// replaced or cut shorter than the offset is read again from its start. Works on the log's
// directory fd opened before seccomp (openat O_RDONLY, fstat, lseek, read).

#include <cstdint>
#include <optional>
#include <string>

namespace cellos::forwarder {

class CheckpointTail {
 public:
  struct Note {
    std::string text;    // the note's bytes as written (text, blank line, signature lines)
    uint64_t endOffset;  // the file offset just after it
  };

  // `dirFd`: the log's directory (kept by the caller); `name`: the checkpoint file's name.
  CheckpointTail(int dirFd, std::string name, uint64_t offset);
  ~CheckpointTail();
  CheckpointTail(const CheckpointTail&) = delete;
  CheckpointTail& operator=(const CheckpointTail&) = delete;

  // The next whole note, or nullopt when there is none yet (poll again later).
  std::optional<Note> next();

  // The largest partial note kept while waiting for the rest. Bytes that are not followed by a
  // blank line within this are not a note the broker wrote: they are dropped (logged), so a
  // damaged file cannot make the forwarder hold an unbounded buffer.
  static constexpr size_t kMaxPendingBytes = 64 * 1024;

 private:
  bool open();

  int dirFd_;
  std::string name_;
  int fd_ = -1;
  uint64_t offset_;  // of the first byte of buffer_
  std::string buffer_;
};

}  // namespace cellos::forwarder
