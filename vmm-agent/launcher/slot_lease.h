#pragma once
// Host-wide leases on pool slots (a cell's /30 and its uid range), shared by every VM launcher
// on the host: slot <n> of pool <p> is the file <dir>/<p>.<n>, and holding it means holding an
// exclusive flock(2) on it. The lock, not the file, is the lease: the kernel drops it when the
// holder dies, so the slots of a crashed launcher are free again at once (what it built with
// them is reaped from its cell records, cell_records.h), and two launchers (two embedded runs,
// a test beside a service) never hand out the same addresses or ids.

#include <cstddef>
#include <optional>
#include <string>

namespace cellos::vmm {

class SlotLease {
 public:
  // The lowest free slot below `count`. Throws std::runtime_error when every slot is held,
  // std::system_error when `dir` is unusable.
  static SlotLease acquire(const std::string& dir, const std::string& pool, size_t count);
  // Exactly slot `slot`, or nullopt when another holder has it.
  static std::optional<SlotLease> tryAcquire(const std::string& dir, const std::string& pool,
                                             size_t slot);

  SlotLease(SlotLease&& other) noexcept;
  SlotLease& operator=(SlotLease&& other) noexcept;
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease();  // release()

  size_t slot() const { return slot_; }
  // Removes the file and drops the lock. Idempotent.
  void release();

 private:
  SlotLease(std::string path, int fd, size_t slot) : path_(std::move(path)), fd_(fd), slot_(slot) {}
  std::string path_;
  int fd_ = -1;
  size_t slot_ = 0;
};

// Removes every lease file in `dir` that nobody holds: what launchers that were killed left (a
// releasing holder removes its own). Each is locked first and checked to be still the file at
// its name, so an acquirer that opened it meanwhile notices and takes a new one (tryAcquire).
// Only files named like leases (<pool>.<slot>) are considered. Never throws.
void removeStaleLeases(const std::string& dir);

}  // namespace cellos::vmm
