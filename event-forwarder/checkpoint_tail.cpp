#include "event-forwarder/checkpoint_tail.h"

#include "core/checkpoint.h"
#include "event-forwarder/log_tail.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <kj/debug.h>

namespace cellos::forwarder {

CheckpointTail::CheckpointTail(int dirFd, std::string name, uint64_t offset)
    : dirFd_(dirFd), name_(std::move(name)), offset_(offset) {}

CheckpointTail::~CheckpointTail() {
  if (fd_ >= 0) close(fd_);
}

bool CheckpointTail::open() {
  int fd = openat(dirFd_, name_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;  // not there (yet): the broker creates it
    KJ_FAIL_SYSCALL("openat", errno, name_);
  }
  struct stat st {};
  KJ_SYSCALL(fstat(fd, &st), name_);
  if (static_cast<uint64_t>(st.st_size) < offset_) {
    // Append-only by contract: a shorter file was replaced or cut. Publishing it again from the
    // start loses nothing (the stream de-duplicates a note it holds by its digest), and a cut
    // is exactly what a copy elsewhere is for.
    spdlog::warn(
        "{} is shorter ({} bytes) than the cursor's offset {}: publishing it from the "
        "start",
        name_, st.st_size, offset_);
    offset_ = 0;
  }
  KJ_SYSCALL(lseek(fd, static_cast<off_t>(offset_), SEEK_SET), name_);
  fd_ = fd;
  buffer_.clear();
  return true;
}

std::optional<CheckpointTail::Note> CheckpointTail::next() {
  if (fd_ < 0 && !open()) return std::nullopt;
  for (;;) {
    size_t consumed = 0;
    auto notes = core::completeSignedNotes(buffer_, &consumed);
    if (!notes.empty()) {
      Note note{std::string(notes.front()), offset_ + notes.front().size()};
      buffer_.erase(0, notes.front().size());
      offset_ = note.endOffset;
      return note;
    }
    if (buffer_.size() > kMaxPendingBytes) {
      spdlog::error("{}: {} bytes at offset {} are not a signed note; skipping them", name_,
                    buffer_.size(), offset_);
      offset_ += buffer_.size();
      buffer_.clear();
    }
    char chunk[16384];
    ssize_t n;
    KJ_SYSCALL(n = read(fd_, chunk, sizeof(chunk)), name_);
    if (n == 0) {
      if (!nameNowNamesAnotherFile(dirFd_, name_, fd_)) return std::nullopt;
      // A new file under the name (the old one was removed): it is read from its start.
      spdlog::warn("{} was replaced: publishing the new file from its start", name_);
      close(fd_);
      fd_ = -1;
      offset_ = 0;
      if (!open()) return std::nullopt;
      continue;
    }
    buffer_.append(chunk, n);
  }
}

}  // namespace cellos::forwarder
