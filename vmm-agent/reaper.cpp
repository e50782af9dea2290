#include "vmm-agent/reaper.h"

#include "vmm-agent/gvisor_cell.h"

#include "core/cell_id.h"

#include "vmm-agent/cell_records.h"
#include "vmm-agent/linux_cell.h"
#include "vmm-agent/network_scope.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cellos::vmm {

namespace {

// The uplink end lives in the namespace the record names, if that namespace still exists and is
// the one the record was made in (a /proc/<pid>/ns/net path may name another by now). Gone
// means the veth went with it.
void reapUplinkEnd(const CellRecord& record, int homeNetnsFd) {
  if (record.uplinkInterface.empty()) return;
  std::string path = record.uplinkNetnsPath.empty() ? "/proc/self/ns/net" : record.uplinkNetnsPath;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  bool same = fstat(fd, &st) == 0 &&
              (record.uplinkNetnsIno == 0 ||
               (st.st_dev == record.uplinkNetnsDev && st.st_ino == record.uplinkNetnsIno));
  if (same) {
    for (const auto& r :
         removeCellNetwork(UplinkNamespace{fd, homeNetnsFd}, -1, record.uplinkInterface)) {
      spdlog::error("leftover cell {}: {}", record.cellId, r);
    }
  }
  close(fd);
}

void reapCell(const std::string& cellId, const std::string& cellDir) {
  for (const auto& residue : destroyCell(cellId, 0)) {
    spdlog::error("leftover cell {}: {}", cellId, residue);
  }
  for (const auto& residue : removeGvisorLeftovers(cellId, cellDir)) {
    spdlog::error("leftover cell {}: {}", cellId, residue);
  }
  if (!cellDir.empty() && rmdir(cellDir.c_str()) < 0 && errno != ENOENT) {
    spdlog::error("leftover cell {}: cannot remove {}: {}", cellId, cellDir, strerror(errno));
  }
}

}  // namespace

void reapOrphanedCells(const std::string& stateDir, const std::string& runDir, int homeNetnsFd) {
  for (OrphanedRecord& orphan : claimOrphanedRecords(stateDir)) {
    const CellRecord& record = orphan.record;
    if (!core::isValidCellId(record.cellId)) {
      spdlog::error("ignoring record {}: not a cell id", orphan.path);
      close(orphan.lockFd);
      continue;
    }
    spdlog::warn("reaping leftover cell {}", record.cellId);
    reapUplinkEnd(record, homeNetnsFd);
    std::string cellDir =
        record.cellDir.empty() ? runDir + "/cells/" + record.cellId : record.cellDir;
    reapCell(record.cellId, cellDir);
    unlink(orphan.path.c_str());
    close(orphan.lockFd);
  }
  // Directories without any record (left by a version that kept none).
  std::string cellsDir = runDir + "/cells";
  DIR* dir = opendir(cellsDir.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  for (const std::string& name : names) {
    if (!core::isValidCellId(name) || access(cellRecordPath(stateDir, name).c_str(), F_OK) == 0)
      continue;
    spdlog::warn("reaping leftover cell {} (no record)", name);
    reapCell(name, cellsDir + "/" + name);
  }
}

}  // namespace cellos::vmm
