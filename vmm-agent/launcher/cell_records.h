#pragma once
// The VM launcher's record of the cells it built, so a launcher that starts after a crash can
// find and reap what its predecessor left: processes and cgroups (by cell id), the uplink end of
// the veth pair (by name, in the recorded uplink namespace), and the cell's directory.
//
// Each cell has two copies of its record, both locked with an exclusive flock(2) by its launcher
// for as long as the cell exists (the kernel drops the locks when the launcher dies):
//   * its claim, <pool-dir>/cells/<cellId>.json: host-wide, like the slot leases beside it. Every
//     launcher on a host shares the pool directory, whatever its state directory, so a launcher
//     starting after another one was killed finds that one's cells here. The claim also reserves
//     the cell id host-wide (cgroups are named by it): a second one cannot be made while it exists.
//   * its record in the launcher's own state directory (<state-dir>/<cellId>.json).
// A file is created unnamed (O_TMPFILE), locked and written, and only then linked into place
// (failing if the name exists), so a file visible under its name is always either locked by a
// live launcher or an orphan: a reaper can never take a record that is still being written.
//
// The rule every reaper follows: a cell's residue is touched only while holding its claim
// (holdCellClaim), so a cell of a concurrently running launcher is never reaped, even through a
// stale record of an earlier cell with the same id.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cellos::vmm {

struct CellRecord {
  std::string cellId;
  std::string cellDir;
  std::string stateDir;         // the state directory of the launcher that built the cell
  std::string uplinkInterface;  // empty: the cell had no veth
  std::string uplinkNetnsPath;  // where the uplink end lives ("" : the launcher's own)
  uint64_t uplinkNetnsDev = 0;  // identity of that namespace when the record was made, so a
  uint64_t uplinkNetnsIno = 0;  // recycled /proc/<pid>/ns/net path is never mistaken for it
  std::string addressPool;      // the lease of the cell's address slot (slot_lease.h), which
  uint64_t addressSlot = 0;     // also names its uplink end: cellos<slot>
  uint32_t idBase = 0;
  uint32_t idSize = 0;
  std::string cellAddress;
};

// The host-wide claims directory: <poolDir>/cells.
std::string cellClaimsDirectory(const std::string& poolDir);

// A cell's claim and record, held (locked) by this launcher while its cell exists.
class CellRecordFile {
 public:
  // Claims the cell id in `claimsDir`, then writes the record in `record.stateDir` (none when it
  // is empty: the claim alone holds everything a reaper needs). Refuses
  // (std::system_error, EEXIST) a claim that exists: a live cell of another launcher, or a
  // leftover the next launcher start reaps; and likewise a record. Nothing is left when it throws.
  static CellRecordFile create(const std::string& claimsDir, const CellRecord& record);

  CellRecordFile(CellRecordFile&& other) noexcept;
  CellRecordFile& operator=(CellRecordFile&& other) noexcept;
  CellRecordFile(const CellRecordFile&) = delete;
  CellRecordFile& operator=(const CellRecordFile&) = delete;
  // Drops the locks but keeps the files: a cell whose teardown did not finish stays reapable.
  ~CellRecordFile();

  // The cell is gone: removes the record, then the claim (each before its lock goes, so nobody
  // reaps a cell that no longer exists). Idempotent.
  void remove();

 private:
  CellRecordFile() = default;
  std::string claimPath_, recordPath_;
  int claimFd_ = -1, recordFd_ = -1;
};

// A record or claim whose launcher is gone, now locked by the caller.
struct OrphanedRecord {
  CellRecord record;
  std::string path;
  int lockFd = -1;  // the caller closes it after removing the file
};

// Every record (or claim) in `dir` no live launcher holds, each locked by the caller and checked
// to be still the file at its path. Unreadable ones are returned with only cellId (from the file
// name) set, so their cgroups and directory are still reaped. Never throws for a missing
// directory (nothing to reap).
std::vector<OrphanedRecord> claimOrphanedRecords(const std::string& dir);

// The caller's hold on cell id `cellId` while it reaps: the claim taken over from a dead holder
// (`record` set when it could be read), or a new empty one. nullopt when a live launcher holds
// the claim: that cell id belongs to a running cell, which must not be touched.
struct HeldClaim {
  std::string path;
  int lockFd = -1;
  std::optional<CellRecord> record;
  // Removes the claim and drops the lock.
  void release();
};
std::optional<HeldClaim> holdCellClaim(const std::string& claimsDir, const std::string& cellId);

// Removes the record or claim at `path` if no live launcher holds it (true: it is gone).
bool removeOrphanedFile(const std::string& path);

// Path of cell `cellId`'s record (or claim) in `dir`.
std::string cellRecordPath(const std::string& dir, const std::string& cellId);

}  // namespace cellos::vmm
