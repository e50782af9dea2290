#include "vmm-agent/launcher/reaper.h"

#include "core/cell_id.h"

#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/launcher/backend_table.h"
#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/launcher/network_scope.h"
#include "vmm-agent/launcher/slot_lease.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

namespace cellos::vmm {

namespace {

// The uplink end lives in the namespace the record names, if that namespace still exists and is
// the one the record was made in (a /proc/<pid>/ns/net path may name another by now). Gone
// means the veth went with it. Its name is its address slot's, so it is removed only under that
// slot's lease: a live launcher that has taken the slot since named its own cell's veth so.
void reapUplinkEnd(const CellRecord& record, const std::string& poolDir, int homeNetnsFd) {
  if (record.uplinkInterface.empty() || record.addressPool.empty()) return;
  std::optional<SlotLease> lease;
  try {
    lease = SlotLease::tryAcquire(poolDir, record.addressPool, record.addressSlot);
  } catch (const std::exception& e) {
    spdlog::error("leftover cell {}: {}", record.cellId, e.what());
  }
  if (!lease) return;  // a live cell holds the slot, and with it the name
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
  // A record's directory is <run-dir>/cells/<cellId>; anything else is not ours to delete.
  std::string expected = "/cells/" + cellId;
  bool ours = cellDir.size() > expected.size() && cellDir[0] == '/' &&
              cellDir.compare(cellDir.size() - expected.size(), expected.size(), expected) == 0;
  if (!ours && !cellDir.empty())
    spdlog::error("leftover cell {}: not removing {}", cellId, cellDir);
  for (const auto& residue : removeLeftoversOfAnyBackend(cellId, ours ? cellDir : "")) {
    spdlog::error("leftover cell {}: {}", cellId, residue);
  }
  if (ours && rmdir(cellDir.c_str()) < 0 && errno != ENOENT) {
    spdlog::error("leftover cell {}: cannot remove {}: {}", cellId, cellDir, strerror(errno));
  }
}

// Everything a record names, reaped while the caller holds the cell's claim.
void reapRecorded(const CellRecord& record, const std::string& runDir, const std::string& poolDir,
                  int homeNetnsFd) {
  reapUplinkEnd(record, poolDir, homeNetnsFd);
  reapCell(record.cellId,
           record.cellDir.empty() ? runDir + "/cells/" + record.cellId : record.cellDir);
}

// Directories under <runDir>/cells without any record (left by a version that kept none), each
// reaped under its claim.
void reapUnrecordedDirectories(const std::string& stateDir, const std::string& claimsDir,
                               const std::string& runDir) {
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
    std::optional<HeldClaim> claim = holdCellClaim(claimsDir, name);
    if (!claim) continue;  // a live cell of that id elsewhere: not ours to judge
    spdlog::warn("reaping leftover cell {} (no record)", name);
    reapCell(name, cellsDir + "/" + name);
    claim->release();
  }
}

}  // namespace

void reapOrphanedCells(const std::string& stateDir, const std::string& poolDir,
                       const std::string& runDir, int homeNetnsFd) {
  const std::string claimsDir = cellClaimsDirectory(poolDir);
  // Host-wide first: every claim no live launcher holds, whatever its launcher's state
  // directory (another `cellos run`, a service, a test). Its launcher's own record goes too.
  for (OrphanedRecord& orphan : claimOrphanedRecords(claimsDir)) {
    const CellRecord& record = orphan.record;
    if (!core::isValidCellId(record.cellId)) {
      spdlog::error("ignoring claim {}: not a cell id", orphan.path);
      close(orphan.lockFd);
      continue;
    }
    spdlog::warn("reaping leftover cell {} (its launcher is gone)", record.cellId);
    reapRecorded(record, runDir, poolDir, homeNetnsFd);
    if (!record.stateDir.empty() &&
        !removeOrphanedFile(cellRecordPath(record.stateDir, record.cellId))) {
      spdlog::error("leftover cell {}: its record in {} is locked", record.cellId, record.stateDir);
    }
    unlink(orphan.path.c_str());
    close(orphan.lockFd);
  }
  // Records in our state directory (a launcher of a version without claims, or a claim another
  // launcher reaped first): reaped only under the cell's claim. If a live launcher holds that
  // claim, the id belongs to a newer, running cell: only our stale record goes.
  for (OrphanedRecord& orphan : claimOrphanedRecords(stateDir)) {
    const CellRecord& record = orphan.record;
    if (!core::isValidCellId(record.cellId)) {
      spdlog::error("ignoring record {}: not a cell id", orphan.path);
      close(orphan.lockFd);
      continue;
    }
    std::optional<HeldClaim> claim = holdCellClaim(claimsDir, record.cellId);
    if (claim) {
      spdlog::warn("reaping leftover cell {}", record.cellId);
      reapRecorded(record, runDir, poolDir, homeNetnsFd);
    } else {
      spdlog::warn("record {} is stale: cell {} now runs under another launcher", orphan.path,
                   record.cellId);
    }
    unlink(orphan.path.c_str());
    close(orphan.lockFd);
    if (claim) claim->release();
  }
  // Directories without any record (left by a version that kept none).
  reapUnrecordedDirectories(stateDir, claimsDir, runDir);
  // The slot leases killed launchers held: free since they died, but their files stay.
  removeStaleLeases(poolDir);
}

}  // namespace cellos::vmm
