// The host-wide claims of cells and the reaping a VM launcher does when it starts
// (vmm-agent/launcher/cell_records.h, reaper.h), for real: launchers are forked processes holding claims,
// cells are real cgroups with a process in them. Needs root.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "vmm-agent/backends/linux/linux_cell.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/launcher/reaper.h"
#include "vmm-agent/launcher/slot_lease.h"

namespace cellos::vmm {
namespace {

std::string tempDir(const char* what) {
  std::string tmpl = std::string("/tmp/cellos-") + what + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::system_error(errno, std::generic_category(), "mkdtemp");
  return tmpl;
}

// A launcher that made `record`'s claim (and record) and holds it until killed.
struct Holder {
  pid_t pid = -1;
  explicit Holder(const std::string& claimsDir, const CellRecord& record) {
    int ready[2];
    if (pipe(ready) < 0) throw std::system_error(errno, std::generic_category(), "pipe");
    pid = fork();
    if (pid == 0) {
      close(ready[0]);
      char ok = 0;
      try {
        static CellRecordFile held = CellRecordFile::create(claimsDir, record);
        ok = 1;
      } catch (...) {
      }
      if (write(ready[1], &ok, 1) != 1) _exit(1);
      for (;;) pause();
    }
    close(ready[1]);
    char ok = 0;
    if (read(ready[0], &ok, 1) != 1 || ok != 1) ADD_FAILURE() << "the holder could not claim";
    close(ready[0]);
  }
  void kill() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~Holder() { kill(); }
};

// A cell's cgroup with one sleeping process in it: what a killed launcher's cell leaves.
struct CellWithAProcess {
  std::string id;
  pid_t sleeper = -1;
  explicit CellWithAProcess(std::string cellId) : id(std::move(cellId)) {
    CellCgroup cgroup = CellCgroup::create(id);
    sleeper = fork();
    if (sleeper == 0) {
      for (;;) pause();
    }
    cgroup.addProcess(sleeper);
  }
  bool alive() {
    std::vector<pid_t> in = CellCgroup::open(id).processes();
    return std::find(in.begin(), in.end(), sleeper) != in.end();
  }
  ~CellWithAProcess() {
    destroyCell(id, 0);
    waitpid(sleeper, nullptr, 0);
  }
};

class CellClaims : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (cgroups, the launcher's privileges)";
    poolDir_ = tempDir("pool");
    claimsDir_ = cellClaimsDirectory(poolDir_);
    std::filesystem::create_directory(claimsDir_);
    ourState_ = tempDir("state");
    otherState_ = tempDir("state");
    runDir_ = tempDir("run");
  }
  void TearDown() override {
    for (const auto& dir : {poolDir_, ourState_, otherState_, runDir_}) {
      if (!dir.empty()) std::filesystem::remove_all(dir);
    }
  }
  CellRecord record(const std::string& cellId, const std::string& stateDir) {
    CellRecord r;
    r.cellId = cellId;
    r.cellDir = runDir_ + "/cells/" + cellId;
    r.stateDir = stateDir;
    return r;
  }
  void reap() { reapOrphanedCells(ourState_, poolDir_, runDir_, -1); }
  std::string id(const char* name) { return std::string(name) + "-" + std::to_string(getpid()); }

  std::string poolDir_, claimsDir_, ourState_, otherState_, runDir_;
};

TEST_F(CellClaims, AClaimIsTakenOnlyFromADeadLauncher) {
  std::string cell = id("claimed");
  CellRecord r = record(cell, otherState_);
  r.uplinkInterface = "cellos9";
  Holder holder(claimsDir_, r);
  EXPECT_TRUE(std::filesystem::exists(cellRecordPath(claimsDir_, cell)));
  EXPECT_TRUE(std::filesystem::exists(cellRecordPath(otherState_, cell)));
  EXPECT_FALSE(holdCellClaim(claimsDir_, cell).has_value()) << "a live launcher's claim was taken";
  EXPECT_TRUE(claimOrphanedRecords(claimsDir_).empty());
  EXPECT_FALSE(removeOrphanedFile(cellRecordPath(otherState_, cell)));
  EXPECT_THROW(CellRecordFile::create(claimsDir_, record(cell, ourState_)), std::system_error)
      << "one cell id per host";
  holder.kill();
  std::optional<HeldClaim> held = holdCellClaim(claimsDir_, cell);
  ASSERT_TRUE(held.has_value());
  ASSERT_TRUE(held->record.has_value());
  EXPECT_EQ(held->record->uplinkInterface, "cellos9");
  EXPECT_EQ(held->record->stateDir, otherState_);
  EXPECT_FALSE(holdCellClaim(claimsDir_, cell).has_value()) << "held twice";
  held->release();
  EXPECT_FALSE(std::filesystem::exists(cellRecordPath(claimsDir_, cell)));
  std::optional<HeldClaim> fresh = holdCellClaim(claimsDir_, cell);
  ASSERT_TRUE(fresh.has_value()) << "an unclaimed id is claimed anew";
  EXPECT_FALSE(fresh->record.has_value());
  fresh->release();
}

TEST_F(CellClaims, AKilledLaunchersCellIsReapedWhateverItsStateDirectory) {
  std::string cell = id("orphan");
  CellWithAProcess left(cell);
  {
    Holder launcher(claimsDir_, record(cell, otherState_));
    reap();
    EXPECT_TRUE(left.alive()) << "a live launcher's cell was reaped";
  }  // killed
  reap();
  EXPECT_FALSE(left.alive());
  EXPECT_EQ(CellCgroup::open(cell).processes().size(), 0u);
  for (const auto& leaf : cellCgroupPaths(cell))
    EXPECT_FALSE(std::filesystem::exists(leaf)) << leaf;
  EXPECT_FALSE(std::filesystem::exists(cellRecordPath(claimsDir_, cell)));
  EXPECT_FALSE(std::filesystem::exists(cellRecordPath(otherState_, cell)))
      << "its launcher's record goes with the claim";
}

TEST_F(CellClaims, AStaleRecordOfOursNeverReapsALiveCellWithTheSameIdElsewhere) {
  std::string cell = id("reused");
  // Our earlier launcher's record of a cell with this id, orphaned; its claim was reaped since
  // (by another launcher's start).
  { Holder earlier(claimsDir_, record(cell, ourState_)); }
  ASSERT_EQ(unlink(cellRecordPath(claimsDir_, cell).c_str()), 0);
  // Another launcher now runs a cell with the same id.
  CellWithAProcess running(cell);
  Holder live(claimsDir_, record(cell, otherState_));
  reap();
  EXPECT_TRUE(running.alive()) << "a stale record of ours reaped another launcher's live cell";
  EXPECT_FALSE(std::filesystem::exists(cellRecordPath(ourState_, cell))) << "the stale record goes";
  EXPECT_TRUE(std::filesystem::exists(cellRecordPath(claimsDir_, cell)));
  EXPECT_TRUE(std::filesystem::exists(cellRecordPath(otherState_, cell)));
}

TEST_F(CellClaims, LeasesOfKilledLaunchersAreRemovedAndLiveOnesKept) {
  // A killed launcher's leases: files nobody holds any more.
  for (const char* stale : {"addr-10.99.0.0-16.3", "uid-1879048192-65536-1024.7"}) {
    std::ofstream(poolDir_ + "/" + stale);
  }
  std::ofstream(poolDir_ + "/notes.txt") << "not a lease: never removed\n";
  // A live launcher's lease.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t live = fork();
  ASSERT_GE(live, 0);
  if (live == 0) {
    close(ready[0]);
    static SlotLease lease = SlotLease::acquire(poolDir_, "addr-10.99.0.0-16", 1);
    if (write(ready[1], "x", 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(ready[1]);
  char byte;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  reap();
  EXPECT_FALSE(std::filesystem::exists(poolDir_ + "/addr-10.99.0.0-16.3"));
  EXPECT_FALSE(std::filesystem::exists(poolDir_ + "/uid-1879048192-65536-1024.7"));
  EXPECT_TRUE(std::filesystem::exists(poolDir_ + "/addr-10.99.0.0-16.0")) << "a live lease went";
  EXPECT_TRUE(std::filesystem::exists(poolDir_ + "/notes.txt"));
  EXPECT_FALSE(SlotLease::tryAcquire(poolDir_, "addr-10.99.0.0-16", 0).has_value())
      << "the live launcher lost its slot";
  kill(live, SIGKILL);
  waitpid(live, nullptr, 0);
}

}  // namespace
}  // namespace cellos::vmm
