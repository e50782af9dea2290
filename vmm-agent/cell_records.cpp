#include "vmm-agent/cell_records.h"
#include "vmm-agent/sys_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
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
          {"uplinkInterface", r.uplinkInterface},
          {"uplinkNetnsPath", r.uplinkNetnsPath},
          {"uplinkNetnsDev", r.uplinkNetnsDev},
          {"uplinkNetnsIno", r.uplinkNetnsIno},
          {"idBase", r.idBase},
          {"idSize", r.idSize},
          {"cellAddress", r.cellAddress}};
}

CellRecord fromJson(const nlohmann::json& j) {
  CellRecord r;
  r.cellId = j.value("cellId", "");
  r.cellDir = j.value("cellDir", "");
  r.uplinkInterface = j.value("uplinkInterface", "");
  r.uplinkNetnsPath = j.value("uplinkNetnsPath", "");
  r.uplinkNetnsDev = j.value("uplinkNetnsDev", uint64_t{0});
  r.uplinkNetnsIno = j.value("uplinkNetnsIno", uint64_t{0});
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

}  // namespace

std::string cellRecordPath(const std::string& stateDir, const std::string& cellId) {
  return stateDir + "/" + cellId + kSuffix;
}

CellRecordFile CellRecordFile::create(const std::string& stateDir, const CellRecord& record) {
  std::string path = cellRecordPath(stateDir, record.cellId);
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throwErrno("open(" + path + ", O_CREAT|O_EXCL)");
  CellRecordFile file(path, fd);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) throwErrno("flock(" + path + ", LOCK_EX)");
  std::string text = toJson(record).dump() + "\n";
  if (write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    int e = errno;
    file.remove();
    errno = e;
    throwErrno("write(" + path + ")");
  }
  return file;
}

CellRecordFile::CellRecordFile(CellRecordFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

CellRecordFile& CellRecordFile::operator=(CellRecordFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

CellRecordFile::~CellRecordFile() {
  if (fd_ >= 0) close(fd_);
}

void CellRecordFile::remove() {
  if (fd_ < 0) return;
  unlink(path_.c_str());  // before the lock goes, so nobody reaps a cell that no longer exists
  close(fd_);
  fd_ = -1;
}

std::vector<OrphanedRecord> claimOrphanedRecords(const std::string& stateDir) {
  std::vector<OrphanedRecord> orphans;
  DIR* dir = opendir(stateDir.c_str());
  if (dir == nullptr) return orphans;
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    size_t suffix = std::string(kSuffix).size();
    if (name.size() > suffix && name.compare(name.size() - suffix, suffix, kSuffix) == 0) {
      names.push_back(name);
    }
  }
  closedir(dir);
  for (const std::string& name : names) {
    std::string path = stateDir + "/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;  // removed meanwhile
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      close(fd);  // a live launcher holds it
      continue;
    }
    OrphanedRecord orphan;
    orphan.path = path;
    orphan.lockFd = fd;
    nlohmann::json json = nlohmann::json::parse(readAll(fd), nullptr, false);
    if (json.is_object()) orphan.record = fromJson(json);
    // The file name is the cell id the launcher wrote it for; trust it over the content.
    orphan.record.cellId = name.substr(0, name.size() - std::string(kSuffix).size());
    orphans.push_back(std::move(orphan));
  }
  return orphans;
}

}  // namespace cellos::vmm
