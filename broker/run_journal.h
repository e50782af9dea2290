#pragma once
// The broker's journal of runs in flight, so a broker that dies mid-run (kill -9, OOM, a bug)
// can close those runs' event streams when it comes back. One small file per run, created at
// admission and removed once lifecycle.destroyed is durable:
//
//   <dir>/<runId>.json   {"runId": ..., "cellId": ..., "correlationId": ..., "admittedMicros": ...}
//
// The cell itself needs no journal: when the broker's connection closes, the VM launcher and
// the DNS helper tear down every cell of that connection (their capabilities were dropped).
// The directory is opened before seccomp; entries are created with openat(kCreateOnlyFlags)
// under its fd and removed with unlinkat, so the broker never opens an existing file.

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace cellos::broker {

struct JournalEntry {
  std::string runId;
  std::string cellId;
  std::optional<std::string> correlationId;
  uint64_t admittedMicros = 0;
};

class RunJournal {
 public:
  // Creates `dir` when missing (mode 0700, given to the owner when run as root), opens it, and
  // reads the entries a previous broker left (leftovers()). Throws with the path on error.
  RunJournal(const std::string& dir, uid_t ownerUid, gid_t ownerGid);
  ~RunJournal();
  RunJournal(const RunJournal&) = delete;
  RunJournal& operator=(const RunJournal&) = delete;

  // Runs that were admitted but never reached lifecycle.destroyed. An unreadable entry is
  // reported with only its run id (from the file name).
  const std::vector<JournalEntry>& leftovers() const { return leftovers_; }

  // Records a run as in flight; durable (file and directory fsynced) when it returns.
  void admitted(const JournalEntry& entry);
  // Forgets a run (its destroyed event is written). Idempotent.
  void finished(const std::string& runId);

 private:
  std::string dir_;
  int dirFd_ = -1;
  std::vector<JournalEntry> leftovers_;
};

}  // namespace cellos::broker
