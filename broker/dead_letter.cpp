#include "broker/dead_letter.h"

#include "broker/jsonl_log.h"
#include "core/clock.h"
#include "core/verifiability.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <kj/debug.h>

namespace cellos::broker {

namespace {

// Event ids become file names: keep only what cannot walk out of the directory.
std::string safeName(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, 64)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? "no-id" : out;
}

}  // namespace

std::string defaultDeadLetterPath(const std::string& logPath) {
  return logPath + ".dead-letter";
}

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
      if (name.size() > 21 && name[20] == '-' && core::parseSequence(name.substr(0, 20)) &&
          name > newest) {
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
        lastSigned_ = LastSigned{*core::parseSequence(newest.substr(0, 20)),
                                 record["event"]["dssematerial"].get<std::string>()};
      }
    }
  }
}

DeadLetterDirectory::~DeadLetterDirectory() {
  if (dirFd_ >= 0) close(dirFd_);
}

void DeadLetterDirectory::write(const std::string& name, const nlohmann::json& record) {
  // A cut-off line may end inside a UTF-8 sequence: keep what can be kept, never throw here.
  std::string content =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
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
  std::string id = event.is_object() && event.contains("id") && event["id"].is_string()
                       ? event["id"].get<std::string>()
                       : "";
  std::string name;
  if (event.is_object() && event.contains("sequence") && event["sequence"].is_string()) {
    name = safeName(event["sequence"].get<std::string>()) + "-" + safeName(id) + ".json";
  } else {
    name =
        "unsigned-" + safeName(id.empty() ? std::to_string(core::unixMicrosNow()) : id) + ".json";
  }
  write(name, {{"reason", reason}, {"sink", sink}, {"event", event}});
  spdlog::warn("dead-lettered event {} ({}): {}", id, name, reason);
  return name;
}

void DeadLetterDirectory::writePartialLine(const std::string& bytes) {
  write("partial-" + std::to_string(core::unixMicrosNow()) + ".json",
        {{"reason",
          "an unterminated last line in the event log: a write cut short by a crash; the event "
          "it held is missing from the log (the log declares the gap)"},
         {"sink", "jsonl"},
         {"partialLine", bytes}});
}

}  // namespace cellos::broker
