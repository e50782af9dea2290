#include "broker/run_journal.h"

#include "broker/jsonl_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <kj/debug.h>

namespace cellos::broker {

namespace {

constexpr std::string_view kSuffix = ".json";

bool validRunId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '-')) return false;
  }
  return true;
}

}  // namespace

RunJournal::RunJournal(const std::string& dir, uid_t ownerUid, gid_t ownerGid) : dir_(dir) {
  if (mkdir(dir.c_str(), 0700) == 0) {
    if (geteuid() == 0) {
      KJ_SYSCALL(chown(dir.c_str(), ownerUid, ownerGid), dir);
    }
  } else if (errno != EEXIST) {
    KJ_FAIL_SYSCALL("mkdir", errno, dir);
  }
  KJ_SYSCALL(dirFd_ = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), dir);

  // Read what a previous broker left, now, while reading files is still allowed.
  DIR* listing = fdopendir(dup(dirFd_));
  KJ_REQUIRE(listing != nullptr, "cannot list the run journal", dir);
  KJ_DEFER(closedir(listing));
  while (dirent* item = readdir(listing)) {
    std::string name = item->d_name;
    if (name.size() <= kSuffix.size() || !name.ends_with(kSuffix)) continue;
    JournalEntry entry;
    entry.runId = name.substr(0, name.size() - kSuffix.size());
    if (!validRunId(entry.runId)) continue;
    std::ifstream in(dir_ + "/" + name);
    std::stringstream text;
    text << in.rdbuf();
    auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (json.is_object()) {
      entry.cellId = json.value("cellId", "");
      if (json.contains("correlationId") && json["correlationId"].is_string()) {
        entry.correlationId = json["correlationId"].get<std::string>();
      }
      entry.admittedMicros = json.value("admittedMicros", uint64_t{0});
    }
    leftovers_.push_back(std::move(entry));
  }
}

RunJournal::~RunJournal() {
  if (dirFd_ >= 0) close(dirFd_);
}

void RunJournal::admitted(const JournalEntry& entry) {
  KJ_REQUIRE(validRunId(entry.runId), "bad run id", entry.runId);
  nlohmann::json json = {{"runId", entry.runId},
                         {"cellId", entry.cellId},
                         {"admittedMicros", entry.admittedMicros}};
  if (entry.correlationId) json["correlationId"] = *entry.correlationId;
  std::string text = json.dump() + "\n";
  std::string name = entry.runId + std::string(kSuffix);
  int fd;
  KJ_SYSCALL(fd = openat(dirFd_, name.c_str(), kCreateOnlyFlags, 0600), dir_, name);
  KJ_DEFER(close(fd));
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n;
    KJ_SYSCALL(n = write(fd, text.data() + off, text.size() - off), dir_, name);
    off += n;
  }
  KJ_SYSCALL(fsync(fd), dir_, name);
  KJ_SYSCALL(fsync(dirFd_), dir_);
}

void RunJournal::finished(const std::string& runId) {
  if (!validRunId(runId)) return;
  std::string name = runId + std::string(kSuffix);
  if (unlinkat(dirFd_, name.c_str(), 0) < 0 && errno != ENOENT) {
    KJ_FAIL_SYSCALL("unlinkat", errno, dir_, name);
  }
}

}  // namespace cellos::broker
