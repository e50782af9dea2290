#include "eventlog/dead_letter.h"

#include "core/clock.h"
#include "eventlog/format.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <kj/debug.h>

namespace cellos::eventlog {

DeadLetterDirectory::DeadLetterDirectory(const std::string& path, uid_t ownerUid, gid_t ownerGid)
    : path_(path) {
  if (mkdir(path.c_str(), 0750) == 0 && geteuid() == 0) {
    KJ_SYSCALL(chown(path.c_str(), ownerUid, ownerGid), path);
  }
  KJ_SYSCALL(dirFd_ = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), path);
  // "<20 digits>-<id>.json": the newest signed one tells where the chain stood.
  std::string newest;
  if (DIR* dir = fdopendir(dup(dirFd_))) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (signedDeadLetterSequence(name) && name > newest) {
        newest = name;
      }
    }
    closedir(dir);
  }
  if (!newest.empty()) {
    int fd = openat(dirFd_, newest.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      std::string content;
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) content.append(buffer, n);
      close(fd);
      auto record = nlohmann::json::parse(content, nullptr, false);
      if (record.is_object() && record.contains("event") && record["event"].is_object() &&
          record["event"].contains("dssematerial") && record["event"]["dssematerial"].is_string()) {
        lastSigned_ = LastSigned{*signedDeadLetterSequence(newest),
                                 record["event"]["dssematerial"].get<std::string>()};
      }
    }
  }
}

DeadLetterDirectory::~DeadLetterDirectory() {
  if (dirFd_ >= 0) close(dirFd_);
}

void DeadLetterDirectory::write(const std::string& name, const nlohmann::json& record) {
  std::string content = deadLetterText(record);
  int fd;
  KJ_SYSCALL(fd = openat(dirFd_, name.c_str(), kCreateOnlyFlags, 0640), path_, name);
  KJ_DEFER(close(fd));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n;
    KJ_SYSCALL(n = ::write(fd, content.data() + off, content.size() - off), path_, name);
    off += static_cast<size_t>(n);
  }
  KJ_SYSCALL(fsync(fd), path_, name);
  KJ_SYSCALL(fsync(dirFd_), path_);
  ++written_;
}

std::string DeadLetterDirectory::writeEvent(const nlohmann::json& event, const std::string& sink,
                                            const std::string& reason) {
  DeadLetter letter = eventDeadLetter(event, sink, reason, core::unixMicrosNow());
  write(letter.name, letter.record);
  std::string id = event.is_object() && event.contains("id") && event["id"].is_string()
                       ? event["id"].get<std::string>()
                       : "";
  spdlog::warn("dead-lettered event {} ({}): {}", id, letter.name, reason);
  return letter.name;
}

void DeadLetterDirectory::writePartialLine(const std::string& bytes) {
  DeadLetter letter = partialLineDeadLetter(bytes, core::unixMicrosNow());
  write(letter.name, letter.record);
}

}  // namespace cellos::eventlog
