#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/cell/sys_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr const char* kSuffix = ".json";

nlohmann::json toJson(const CellRecord& r) {
  return {{"cellId", r.cellId},
          {"cellDir", r.cellDir},
          {"stateDir", r.stateDir},
          {"uplinkInterface", r.uplinkInterface},
          {"uplinkNetnsPath", r.uplinkNetnsPath},
          {"uplinkNetnsDev", r.uplinkNetnsDev},
          {"uplinkNetnsIno", r.uplinkNetnsIno},
          {"addressPool", r.addressPool},
          {"addressSlot", r.addressSlot},
          {"idBase", r.idBase},
          {"idSize", r.idSize},
          {"cellAddress", r.cellAddress}};
}

CellRecord fromJson(const nlohmann::json& j) {
  CellRecord r;
  r.cellId = j.value("cellId", "");
  r.cellDir = j.value("cellDir", "");
  r.stateDir = j.value("stateDir", "");
  r.uplinkInterface = j.value("uplinkInterface", "");
  r.uplinkNetnsPath = j.value("uplinkNetnsPath", "");
  r.uplinkNetnsDev = j.value("uplinkNetnsDev", uint64_t{0});
  r.uplinkNetnsIno = j.value("uplinkNetnsIno", uint64_t{0});
  r.addressPool = j.value("addressPool", "");
  r.addressSlot = j.value("addressSlot", uint64_t{0});
  r.idBase = j.value("idBase", uint32_t{0});
  r.idSize = j.value("idSize", uint32_t{0});
  r.cellAddress = j.value("cellAddress", "");
  return r;
}

std::string readAll(int fd) {
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

bool endsWith(const std::string& name, const std::string& suffix) {
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Creates `path` already locked: an unnamed file (O_TMPFILE) in its directory is locked and
// written, then linked to `path`, which fails if anything is there. Nobody can see, let alone
// lock, the file before it is complete, and a launcher that dies half-way leaves nothing.
// Returns the locked fd; throws std::system_error (EEXIST when `path` exists).
int createLocked(const std::string& path, const std::string& content) {
  std::string dir = path.substr(0, path.rfind('/'));
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throwErrno("open(" + dir + ", O_TMPFILE)");
  auto fail = [&](const std::string& call) {
    int e = errno;
    close(fd);
    errno = e;
    throwErrno(call);
  };
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) fail("flock(" + dir + " O_TMPFILE, LOCK_EX)");
  if (write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    fail("write(" + dir + " O_TMPFILE)");
  }
  // The documented way to name an O_TMPFILE file without CAP_DAC_READ_SEARCH (open(2)).
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) < 0) {
    fail("linkat(O_TMPFILE, " + path + ")");
  }
  return fd;
}

// Removes `path` (while `fd` still holds its lock) and closes `fd`.
void removeLocked(const std::string& path, int& fd) {
  if (fd < 0) return;
  unlink(path.c_str());
  close(fd);
  fd = -1;
}

enum class LockResult { kHeld, kLive, kGone };

// Locks the file at `path` when no live launcher holds it. kHeld: `fd` is the caller's, and
// still the file at `path` (a holder that removed it and a launcher that made a new one under
// the same name in between would otherwise hand us the wrong file). kLive: a launcher holds it.
// kGone: there is nothing at `path`.
LockResult lockIfOrphaned(const std::string& path, int& fd) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return LockResult::kGone;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      close(fd);
      fd = -1;
      return LockResult::kLive;
    }
    struct stat held {
    }, named{};
    if (fstat(fd, &held) == 0 && stat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
      return LockResult::kHeld;
    }
    close(fd);
    fd = -1;
  }
  return LockResult::kLive;  // it keeps changing: someone is using it
}

std::optional<CellRecord> parseRecord(int fd) {
  nlohmann::json json = nlohmann::json::parse(readAll(fd), nullptr, false);
  if (!json.is_object()) return std::nullopt;
  return fromJson(json);
}

}  // namespace

std::string cellClaimsDirectory(const std::string& poolDir) {
  return poolDir + "/cells";
}

std::string cellRecordPath(const std::string& dir, const std::string& cellId) {
  return dir + "/" + cellId + kSuffix;
}

CellRecordFile CellRecordFile::create(const std::string& claimsDir, const CellRecord& record) {
  std::string text = toJson(record).dump() + "\n";
  CellRecordFile file;
  file.claimPath_ = cellRecordPath(claimsDir, record.cellId);
  try {
    file.claimFd_ = createLocked(file.claimPath_, text);
  } catch (const std::system_error& e) {
    if (e.code().value() != EEXIST) throw;
    throw std::system_error(EEXIST, std::generic_category(),
                            "cell " + record.cellId + " is claimed on this host (" +
                                file.claimPath_ +
                                "): a live cell of another VM launcher, or a leftover the next "
                                "launcher start reaps");
  }
  if (!record.stateDir.empty()) {
    file.recordPath_ = cellRecordPath(record.stateDir, record.cellId);
    try {
      file.recordFd_ = createLocked(file.recordPath_, text);
    } catch (...) {
      file.remove();
      throw;
    }
  }
  return file;
}

CellRecordFile::CellRecordFile(CellRecordFile&& other) noexcept
    : claimPath_(std::move(other.claimPath_)),
      recordPath_(std::move(other.recordPath_)),
      claimFd_(other.claimFd_),
      recordFd_(other.recordFd_) {
  other.claimFd_ = other.recordFd_ = -1;
}

CellRecordFile& CellRecordFile::operator=(CellRecordFile&& other) noexcept {
  if (this != &other) {
    for (int fd : {claimFd_, recordFd_}) {
      if (fd >= 0) close(fd);
    }
    claimPath_ = std::move(other.claimPath_);
    recordPath_ = std::move(other.recordPath_);
    claimFd_ = other.claimFd_;
    recordFd_ = other.recordFd_;
    other.claimFd_ = other.recordFd_ = -1;
  }
  return *this;
}

CellRecordFile::~CellRecordFile() {
  for (int fd : {claimFd_, recordFd_}) {
    if (fd >= 0) close(fd);
  }
}

void CellRecordFile::remove() {
  removeLocked(recordPath_, recordFd_);
  removeLocked(claimPath_, claimFd_);
}

std::vector<OrphanedRecord> claimOrphanedRecords(const std::string& dir) {
  std::vector<OrphanedRecord> orphans;
  DIR* listing = opendir(dir.c_str());
  if (listing == nullptr) return orphans;
  std::vector<std::string> names;
  while (dirent* entry = readdir(listing)) {
    std::string name = entry->d_name;
    if (name[0] != '.' && endsWith(name, kSuffix)) names.push_back(name);
  }
  closedir(listing);
  for (const std::string& name : names) {
    OrphanedRecord orphan;
    orphan.path = dir + "/" + name;
    if (lockIfOrphaned(orphan.path, orphan.lockFd) != LockResult::kHeld) continue;
    orphan.record = parseRecord(orphan.lockFd).value_or(CellRecord{});
    // The file name is the cell id the launcher wrote it for; trust it over the content.
    orphan.record.cellId = name.substr(0, name.size() - std::string(kSuffix).size());
    orphans.push_back(std::move(orphan));
  }
  return orphans;
}

void HeldClaim::release() {
  removeLocked(path, lockFd);
}

std::optional<HeldClaim> holdCellClaim(const std::string& claimsDir, const std::string& cellId) {
  HeldClaim claim;
  claim.path = cellRecordPath(claimsDir, cellId);
  for (int attempt = 0; attempt < 8; ++attempt) {
    switch (lockIfOrphaned(claim.path, claim.lockFd)) {
      case LockResult::kLive:
        return std::nullopt;
      case LockResult::kHeld:
        claim.record = parseRecord(claim.lockFd);
        return claim;
      case LockResult::kGone:
        try {
          claim.lockFd = createLocked(claim.path, "{}\n");
          return claim;
        } catch (const std::system_error& e) {
          if (e.code().value() != EEXIST) throw;  // made meanwhile: look at it again
        }
        break;
    }
  }
  return std::nullopt;
}

bool removeOrphanedFile(const std::string& path) {
  int fd = -1;
  switch (lockIfOrphaned(path, fd)) {
    case LockResult::kHeld:
      removeLocked(path, fd);
      return true;
    case LockResult::kGone:
      return true;
    case LockResult::kLive:
      return false;
  }
  return false;
}

}  // namespace cellos::vmm
