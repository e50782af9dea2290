// The gVisor spawner's failure paths, for real: a spawner forked by this test (as the launcher
// forks it), asked for supervisors that cannot be made. Each failure comes back as the reason,
// leaves no supervisor behind (killed through its pidfd and reaped, never left as a zombie or in
// the cell's cgroup), and the spawner goes on serving the next request. No runsc is needed: every
// failure here happens before the start byte, and runsc runs only after it.

#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "vmm-agent/backends/gvisor/gvisor_bundle.h"
#include "vmm-agent/backends/gvisor/gvisor_spawner.h"
#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/sys_util.h"

namespace cellos::vmm {
namespace {

class GvisorSpawnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: namespaces, mounts, cgroups";
    char dir[] = "/tmp/cellos-spawner-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    runDir_ = dir;
    std::filesystem::create_directories(runDir_ + "/cells");
    // A runsc that is never run: every request here fails before the start byte.
    spawner_ = startGvisorSpawner(GvisorConfig{"/nonexistent/runsc", "ptrace"}, runDir_, end_);
    ASSERT_GT(spawner_, 0);
  }

  void TearDown() override {
    if (spawner_ > 0) {
      end_.reset();  // the spawner exits when its launcher's end closes
      int status = -1;
      EXPECT_EQ(waitpid(spawner_, &status, 0), spawner_);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    }
    for (const std::string& id : ids_) {
      EXPECT_EQ(destroyCell(id, -1), std::vector<std::string>{}) << id;
    }
    if (!runDir_.empty()) std::filesystem::remove_all(runDir_);
  }

  // A cell whose bundle is written as the launcher writes it; its cgroup only if asked.
  CellLaunch cell(const std::string& id, bool withCgroup) {
    CellLaunch launch;
    launch.cellId = id;
    launch.argv = {"/bin/true"};
    launch.cellDir = runDir_ + "/cells/" + id;
    launch.ids = CellIdRange{0x62000000u, 65536};
    EXPECT_EQ(mkdir(launch.cellDir.c_str(), 0700), 0);
    writeGvisorBundle(launch);
    ids_.push_back(id);
    if (withCgroup) CellCgroup::create(id);
    return launch;
  }

  // What the spawner answered: the reason of its refusal, or nullopt when it made a cell.
  std::optional<std::string> refusal(const std::string& cellId) {
    try {
      LaunchedCell made = spawnGvisorCell(end_.get(), cellId);
      return std::nullopt;
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  }

  // The spawner's children, zombies included: a supervisor it forgot to reap shows here.
  std::vector<std::string> spawnerChildren() const {
    std::string path =
        "/proc/" + std::to_string(spawner_) + "/task/" + std::to_string(spawner_) + "/children";
    std::ifstream in(path);
    std::vector<std::string> children;
    for (std::string pid; in >> pid;) children.push_back(pid);
    return children;
  }

  bool spawnerAlive() const { return kill(spawner_, 0) == 0; }

  std::string runDir_;
  Fd end_;
  pid_t spawner_ = -1;
  std::vector<std::string> ids_;
};

TEST_F(GvisorSpawnerTest, ACellWithoutACgroupIsRefusedAndItsSupervisorKilledAndReaped) {
  // The supervisor exists (cloned) when the cgroup join fails: it must be killed through its
  // pidfd and reaped before the reply, not left waiting for a 'G' that never comes.
  cell("nocg", false);
  std::optional<std::string> why = refusal("nocg");
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("cgroup"), std::string::npos) << *why;
  EXPECT_EQ(spawnerChildren(), std::vector<std::string>{});
  EXPECT_TRUE(spawnerAlive());
}

TEST_F(GvisorSpawnerTest, ASupervisorThatCannotBuildItsRootReportsWhyAndLeavesNothing) {
  CellLaunch launch = cell("badroot", true);
  // The supervisor mounts its root's tmpfs at supervisor-root; a file there makes that fail
  // inside the supervisor, after it joined the cgroup.
  std::string root = gvisorPaths(launch.cellDir).supervisorRoot;
  std::ofstream(root) << "not a directory\n";
  std::optional<std::string> why = refusal("badroot");
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("mount(tmpfs, " + root + ")"), std::string::npos) << *why;
  EXPECT_NE(why->find("Not a directory"), std::string::npos) << *why;
  EXPECT_EQ(CellCgroup::open("badroot").processes(), std::vector<pid_t>{});
  EXPECT_EQ(spawnerChildren(), std::vector<std::string>{});
  EXPECT_TRUE(spawnerAlive());
}

TEST_F(GvisorSpawnerTest, AfterEachFailureTheSpawnerServesTheNextRequest) {
  cell("first", false);
  ASSERT_TRUE(refusal("first").has_value());
  // No bundle at all: refused before any process exists.
  std::optional<std::string> why = refusal("nobundle");
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("has no bundle"), std::string::npos) << *why;
  CellLaunch launch = cell("third", true);
  std::ofstream(gvisorPaths(launch.cellDir).supervisorRoot) << "x";
  why = refusal("third");
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("Not a directory"), std::string::npos) << *why;
  EXPECT_EQ(spawnerChildren(), std::vector<std::string>{});
  EXPECT_TRUE(spawnerAlive());
}

TEST_F(GvisorSpawnerTest, MalformedRequestsAreAnsweredWithAnErrorAndNothingElse) {
  for (std::string request :
       {std::string("spawn ../x"), std::string("spawn"), std::string("spawn ok\n"),
        std::string("kill all"), std::string(4096, 'a'), std::string("spawn \0x", 8)}) {
    ASSERT_EQ(send(end_.get(), request.data(), request.size(), 0),
              static_cast<ssize_t>(request.size()));
    char reply[512];
    msghdr msg{};
    iovec iov{reply, sizeof reply};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(end_.get(), &msg, 0);
    ASSERT_GT(n, 6);
    EXPECT_EQ(std::string(reply, 6), "error ") << std::string(reply, static_cast<size_t>(n));
    EXPECT_EQ(msg.msg_controllen, 0u) << "fds attached to an error";
  }
  EXPECT_EQ(spawnerChildren(), std::vector<std::string>{});
  EXPECT_TRUE(spawnerAlive());
}

// On cgroup v1 runsc makes <controller>/cellos in controllers cellos does not manage (cpuset),
// and under the VM launcher's unit those hierarchies are read-only, where rmdir answers EROFS
// whether or not the name exists. A cell's leftovers are only leaves named for it that exist:
// a cell that never had one is not charged with residue; one that has one and cannot remove
// it is. Run in a mount namespace of the test's own where cpuset is remounted read-only.
TEST(GvisorLeftovers, OnlyAnExistingLeafOfTheCellIsItsResidue) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: mounts, cgroups";
  if (CellCgroup::isV2()) GTEST_SKIP() << "cgroup v1 only: the scan of other controllers";
  const std::string parent = "/sys/fs/cgroup/cpuset/cellos";
  if (!std::filesystem::is_directory("/sys/fs/cgroup/cpuset")) {
    GTEST_SKIP() << "cgroup v1 only: no cpuset hierarchy";
  }
  bool madeParent = mkdir(parent.c_str(), 0755) == 0;
  const std::string leaf = parent + "/leftover-probe-had";
  ASSERT_EQ(mkdir(leaf.c_str(), 0755), 0) << strerror(errno);
  pid_t child = fork();
  if (child == 0) {
    int code = 0;
    if (unshare(CLONE_NEWNS) < 0 ||
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0 ||
        mount(nullptr, "/sys/fs/cgroup/cpuset", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY,
              nullptr) < 0) {
      _exit(10);
    }
    // Never had a leaf anywhere: nothing to charge.
    if (!removeGvisorLeftovers("leftover-probe-none", "").empty()) code |= 1;
    // Has one in cpuset that the read-only view cannot remove: that is residue, named.
    auto residue = removeGvisorLeftovers("leftover-probe-had", "");
    if (residue.size() != 1 || residue[0].find(leaf) == std::string::npos ||
        residue[0].find("Read-only file system") == std::string::npos) {
      code |= 2;
    }
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  // Outside the read-only view the same call removes the leaf and reports nothing.
  EXPECT_TRUE(removeGvisorLeftovers("leftover-probe-had", "").empty());
  EXPECT_FALSE(std::filesystem::exists(leaf));
  if (madeParent) rmdir(parent.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: charged a cell with no leaf; 2: missed an existing one; "
                                       "10: could not make the read-only view";
}

}  // namespace
}  // namespace cellos::vmm
