#pragma once
// The VM launcher's record of the cells it built, one file per cell in its state directory
// (<state-dir>/<cellId>.json), so a launcher that starts after a crash can find and reap what its
// predecessor left: processes and cgroups (by cell id), the uplink end of the veth pair (by name,
// in the recorded uplink namespace), and the cell's directory.
//
// A record is "live" while its launcher holds an exclusive flock(2) on it; the kernel drops the
// lock when the launcher dies. Reaping takes only records whose lock it can take, so a second
// launcher sharing the state directory never touches the first one's running cells.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cellos::vmm {

struct CellRecord {
  std::string cellId;
  std::string cellDir;
  std::string uplinkInterface;  // empty: the cell had no veth
  std::string uplinkNetnsPath;  // where the uplink end lives ("" : the launcher's own)
  uint64_t uplinkNetnsDev = 0;  // identity of that namespace when the record was made, so a
  uint64_t uplinkNetnsIno = 0;  // recycled /proc/<pid>/ns/net path is never mistaken for it
  uint32_t idBase = 0;
  uint32_t idSize = 0;
  std::string cellAddress;
};

// A record this launcher holds (locked) while its cell exists.
class CellRecordFile {
 public:
  // Writes the record (refusing one that exists: a leftover must be reaped first) and locks it.
  // Throws std::system_error.
  static CellRecordFile create(const std::string& stateDir, const CellRecord& record);

  CellRecordFile(CellRecordFile&& other) noexcept;
  CellRecordFile& operator=(CellRecordFile&& other) noexcept;
  CellRecordFile(const CellRecordFile&) = delete;
  CellRecordFile& operator=(const CellRecordFile&) = delete;
  // Drops the lock but keeps the file: a cell whose teardown did not finish stays reapable.
  ~CellRecordFile();

  // The cell is gone: removes the file, then drops the lock. Idempotent.
  void remove();

 private:
  CellRecordFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

// A record whose launcher is gone, now locked by the caller.
struct OrphanedRecord {
  CellRecord record;
  std::string path;
  int lockFd = -1;  // the caller closes it after removing the file
};

// Every record in `stateDir` no live launcher holds. Unreadable records are returned with only
// cellId (from the file name) set, so their cgroups and directory are still reaped. Never
// throws for a missing directory (nothing to reap).
std::vector<OrphanedRecord> claimOrphanedRecords(const std::string& stateDir);

// Path of cell `cellId`'s record.
std::string cellRecordPath(const std::string& stateDir, const std::string& cellId);

}  // namespace cellos::vmm
