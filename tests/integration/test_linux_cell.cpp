// The linux cell runtime for real: namespaces, the cell's root, cgroup limits, teardown. Every
// case needs root; each runs one or two short cells (well under a second each).

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "privsep/credentials.h"
#include "privsep/seccomp.h"
#include "vmm-agent/backends/linux/linux_cell.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/workload_filter.h"
#include "vmm-agent/seccomp_profile.h"

namespace cellos::vmm {
namespace {

using namespace std::chrono_literals;

// What a cell produced: both pipes read to EOF and the 4-byte status (nullopt: EOF without it).
struct CellOutcome {
  std::string out;
  std::string err;
  std::optional<int> waitStatus;
  bool timedOut = false;
};

// Reads stdoutFd, stderrFd and statusFd until all three are at EOF or `timeout` passes.
CellOutcome collect(const LaunchedCell& cell, std::chrono::milliseconds timeout = 5000ms) {
  CellOutcome outcome;
  std::string status;
  struct Stream {
    int fd;
    std::string* sink;
    bool open = true;
  } streams[] = {{cell.stdoutFd.get(), &outcome.out},
                 {cell.stderrFd.get(), &outcome.err},
                 {cell.statusFd.get(), &status}};
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Stream*> which;
    for (Stream& s : streams) {
      if (s.open) {
        fds.push_back(pollfd{s.fd, POLLIN, 0});
        which.push_back(&s);
      }
    }
    if (fds.empty()) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      outcome.timedOut = true;
      break;
    }
    int ready = poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw std::system_error(errno, std::generic_category(), "poll");
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        which[i]->sink->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        which[i]->open = false;
      }
    }
  }
  if (status.size() == sizeof(int)) {
    int raw;
    memcpy(&raw, status.data(), sizeof raw);
    outcome.waitStatus = raw;
  }
  return outcome;
}

std::string readFileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> result;
  std::stringstream stream(text);
  for (std::string line; std::getline(stream, line);) result.push_back(line);
  return result;
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const std::string& item : items) text += item + "\n";
  return text;
}

class LinuxCellTest : public ::testing::Test {
 protected:
  struct TestCell {
    std::string id;
    std::string dir;
    CellIdRange ids;
    LaunchedCell cell{};
    bool launched = false;
    bool initReaped = false;
  };

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    // Writing the start byte to a cell that already died must be an error value, not a crash.
    signal(SIGPIPE, SIG_IGN);
  }

  void TearDown() override {
    for (TestCell& c : cells_) {
      if (c.launched) {
        EXPECT_EQ(joined(destroyCell(c.id, c.cell.initPid)), "");
      } else {
        destroyCell(c.id, -1);
      }
      EXPECT_EQ(joined(residueOf(c.id, c.dir, false)), "") << "cell " << c.id;
      EXPECT_EQ(rmdir(c.dir.c_str()), 0) << c.dir << ": " << strerror(errno);
      EXPECT_EQ(joined(residueOf(c.id, c.dir, true)), "") << "cell " << c.id;
    }
  }

  // A fresh id and empty cellDir; the cell is not launched yet.
  TestCell& newCell() {
    static int counter = 0;
    TestCell& c = cells_.emplace_back();
    c.id = "t" + std::to_string(getpid()) + "-" + std::to_string(counter);
    // A range of its own per cell, far from the agent's default pool (0x70000000...).
    c.ids = CellIdRange{0x60000000u + static_cast<uint32_t>(counter % 4096) * 65536u, 65536};
    ++counter;
    char dir[] = "/tmp/cellos-cell-XXXXXX";
    if (!mkdtemp(dir)) throw std::system_error(errno, std::generic_category(), "mkdtemp");
    c.dir = dir;
    return c;
  }

  CellLaunch shellLaunch(const TestCell& c, const std::string& script) {
    CellLaunch launch;
    launch.cellId = c.id;
    launch.ids = c.ids;
    launch.argv = {"/bin/sh", "-c", script};
    launch.env = {{"PATH", "/usr/bin:/bin:/usr/sbin:/sbin"}};
    launch.cellDir = c.dir;
    return launch;
  }

  TestCell& launchShell(const std::string& script) {
    TestCell& c = newCell();
    launchInto(c, shellLaunch(c, script));
    return c;
  }

  void launchInto(TestCell& c, const CellLaunch& launch) {
    c.cell = launchCell(launch);
    c.launched = true;
  }

  // Writes the start byte, reads everything, reaps the init. Returns the outcome and, through
  // initStatus, the init's own wait status.
  CellOutcome startAndCollect(TestCell& c, int* initStatus = nullptr) {
    char go = 1;
    EXPECT_EQ(write(c.cell.startFd.get(), &go, 1), 1);
    c.cell.startFd.reset();
    return collectAndReap(c, initStatus);
  }

  CellOutcome collectAndReap(TestCell& c, int* initStatus) {
    CellOutcome outcome = collect(c.cell);
    EXPECT_FALSE(outcome.timedOut) << "out: " << outcome.out << "\nerr: " << outcome.err;
    int status = -1;
    EXPECT_EQ(waitpid(c.cell.initPid, &status, 0), c.cell.initPid);
    c.initReaped = true;
    if (initStatus) *initStatus = status;
    return outcome;
  }

  CellOutcome runShell(const std::string& script) {
    TestCell& c = launchShell(script);
    int initStatus = -1;
    CellOutcome outcome = startAndCollect(c, &initStatus);
    EXPECT_TRUE(WIFEXITED(initStatus) && WEXITSTATUS(initStatus) == 0) << initStatus;
    return outcome;
  }

  std::deque<TestCell> cells_;  // deque: references stay valid as cells are added
};

void expectExited(const CellOutcome& outcome, int code) {
  ASSERT_TRUE(outcome.waitStatus.has_value()) << "err: " << outcome.err;
  EXPECT_TRUE(WIFEXITED(*outcome.waitStatus)) << *outcome.waitStatus;
  EXPECT_EQ(WEXITSTATUS(*outcome.waitStatus), code) << "err: " << outcome.err;
}

TEST_F(LinuxCellTest, HostnameIsTheCellId) {
  TestCell& c = launchShell("uname -n");
  CellOutcome outcome = startAndCollect(c);
  EXPECT_EQ(outcome.out, c.id + "\n");
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, ProcListsOnlyTheCellsProcesses) {
  // The glob runs in the shell itself: no extra process. Host pids would show up here.
  CellOutcome outcome = runShell("echo $$; for d in /proc/[0-9]*; do echo ${d#/proc/}; done");
  EXPECT_EQ(outcome.out, "2\n1\n2\n");
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, NetworkHasOnlyLoopbackAndItIsUp) {
  CellOutcome outcome = runShell("cat /proc/net/dev");
  std::vector<std::string> interfaces;
  for (const std::string& line : lines(outcome.out)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;  // the two header lines
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    interfaces.push_back(name);
  }
  EXPECT_EQ(interfaces, std::vector<std::string>{"lo"}) << outcome.out;
  expectExited(outcome, 0);

  if (access("/usr/sbin/ip", X_OK) == 0 || access("/usr/bin/ip", X_OK) == 0) {
    CellOutcome link = runShell("ip -o link show");
    ASSERT_EQ(lines(link.out).size(), 1u) << link.out;
    EXPECT_NE(link.out.find("lo: <LOOPBACK,UP"), std::string::npos) << link.out;
  }
}

TEST_F(LinuxCellTest, EnvironmentIsExactlyTheGivenOne) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "cat /proc/$$/environ");
  launch.env = {{"PATH", "/usr/bin:/bin"}, {"CELL_VAR", "a b=c"}, {"EMPTY", ""}};
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  EXPECT_EQ(outcome.out, std::string("PATH=/usr/bin:/bin\0CELL_VAR=a b=c\0EMPTY=\0", 41));
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, WorkloadHasOnlyFds012) {
  // A launcher fd without O_CLOEXEC must not reach the workload either.
  int decoy = open("/etc/hostname", O_RDONLY);
  ASSERT_GE(decoy, 0);
  // /proc/$$/fd is the shell's table, read by a separate ls; /proc/self/fd by the exec'd ls
  // shows its own directory fd (3) too.
  CellOutcome outcome =
      runShell("ls /proc/$$/fd; readlink /proc/$$/fd/0; echo --; exec ls /proc/self/fd");
  close(decoy);
  EXPECT_EQ(outcome.out, "0\n1\n2\n/dev/null\n--\n0\n1\n2\n3\n") << outcome.err;
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, FilesystemIsReadOnlyExceptScratchSpace) {
  CellOutcome outcome = runShell(
      "touch /x 2>/dev/null && echo root-writable; "
      "touch /usr/x 2>/dev/null && echo usr-writable; "
      "touch /etc/x 2>/dev/null && echo etc-writable; "
      "mkdir /dev/x 2>/dev/null && echo dev-writable; "
      "echo data > /workspace/f && cat /workspace/f; pwd; "
      "touch /tmp/t /dev/shm/t && echo scratch-writable; "
      "ls /home 2>/dev/null || echo no-home; "
      "cat /root/.bashrc 2>/dev/null || echo no-root; "
      "echo --; ls /dev; echo --; ls /");
  std::vector<std::string> out = lines(outcome.out);
  ASSERT_GE(out.size(), 6u) << outcome.out << outcome.err;
  EXPECT_EQ(out[0], "data");
  EXPECT_EQ(out[1], "/workspace");
  EXPECT_EQ(out[2], "scratch-writable");
  EXPECT_EQ(out[3], "no-home");
  EXPECT_EQ(out[4], "no-root");
  EXPECT_EQ(out[5], "--");
  auto sep = std::find(out.begin() + 6, out.end(), "--");
  std::vector<std::string> dev(out.begin() + 6, sep);
  EXPECT_EQ(dev, (std::vector<std::string>{"full", "null", "random", "shm", "urandom", "zero"}));
  ASSERT_NE(sep, out.end());
  std::vector<std::string> root(sep + 1, out.end());
  for (const char* expected : {"dev", "etc", "proc", "tmp", "usr", "workspace", "bin", "lib"}) {
    EXPECT_NE(std::find(root.begin(), root.end(), expected), root.end()) << expected;
  }
  for (const char* absent : {"home", "root", "var", "run", "sys", "work", "mnt"}) {
    EXPECT_EQ(std::find(root.begin(), root.end(), absent), root.end()) << absent;
  }
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, WorkloadHasNoCapabilitiesAndNoNewPrivs) {
  CellOutcome outcome = runShell("grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status");
  EXPECT_EQ(outcome.out, "CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\n");
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, ExitCodeIsReported) {
  CellOutcome outcome = runShell("echo out; echo err >&2; exit 3");
  EXPECT_EQ(outcome.out, "out\n");
  EXPECT_EQ(outcome.err, "err\n");
  expectExited(outcome, 3);
}

TEST_F(LinuxCellTest, DeathBySignalIsReported) {
  CellOutcome outcome = runShell("kill -9 $$");
  ASSERT_TRUE(outcome.waitStatus.has_value());
  EXPECT_TRUE(WIFSIGNALED(*outcome.waitStatus));
  EXPECT_EQ(WTERMSIG(*outcome.waitStatus), 9);
}

TEST_F(LinuxCellTest, ExecOfMissingBinaryGives127AndAMessage) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "");
  launch.argv = {"/bin/nosuch"};
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  EXPECT_EQ(outcome.err, "cellos: exec /bin/nosuch: No such file or directory\n");
  expectExited(outcome, 127);
}

TEST_F(LinuxCellTest, ExecOfNonExecutableGives126) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "");
  launch.argv = {"/etc/passwd"};
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  EXPECT_EQ(outcome.err, "cellos: exec /etc/passwd: Permission denied\n");
  expectExited(outcome, 126);
}

TEST_F(LinuxCellTest, ClosingStartFdAbortsWithoutRunningArgv) {
  TestCell& c = launchShell("echo ran");
  c.cell.startFd.reset();
  int initStatus = -1;
  CellOutcome outcome = collectAndReap(c, &initStatus);
  EXPECT_EQ(outcome.out, "");
  EXPECT_FALSE(outcome.waitStatus.has_value());
  EXPECT_TRUE(WIFEXITED(initStatus));
  EXPECT_EQ(WEXITSTATUS(initStatus), kCellAbortedExitCode);
}

TEST_F(LinuxCellTest, AnotherCellsInitHoldsNoCopyOfOurStartFd) {
  // B is cloned while A's startFd is open in the launcher; if B's init kept its copy, closing
  // A's startFd would not abort A.
  TestCell& a = launchShell("echo ran");
  TestCell& b = launchShell("echo b");
  a.cell.startFd.reset();
  int initStatus = -1;
  CellOutcome outcome = collectAndReap(a, &initStatus);
  EXPECT_EQ(outcome.out, "");
  EXPECT_EQ(WEXITSTATUS(initStatus), kCellAbortedExitCode);
  CellOutcome other = startAndCollect(b);
  EXPECT_EQ(other.out, "b\n");
}

TEST_F(LinuxCellTest, NothingIsMountedOnTheHostSide) {
  TestCell& c = launchShell("true");
  for (const std::string& item : residueOf(c.id, c.dir, false)) {
    EXPECT_EQ(item.find("mount"), std::string::npos) << item;
  }
  // The cell's root tmpfs is invisible here: the host directory is still empty.
  std::vector<std::string> entries = lines(readFileText("/proc/self/mountinfo"));
  for (const std::string& line : entries) EXPECT_EQ(line.find(c.dir), std::string::npos) << line;
  EXPECT_EQ(rmdir(c.dir.c_str()), 0) << "host cellDir not empty or busy: " << strerror(errno);
  EXPECT_EQ(mkdir(c.dir.c_str(), 0700), 0);
  startAndCollect(c);
}

TEST_F(LinuxCellTest, DestroyKillsBackgroundProcessesAndLeavesNoResidue) {
  TestCell& c = launchShell("sleep 1000 & echo started; exec sleep 1000");
  char go = 1;
  ASSERT_EQ(write(c.cell.startFd.get(), &go, 1), 1);
  // Wait for "started" so the background sleep exists.
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{c.cell.stdoutFd.get(), POLLIN, 0};
    poll(&p, 1, 100);
    char buf[256];
    ssize_t n = read(c.cell.stdoutFd.get(), buf, sizeof buf);
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(out, "started\n");
  std::vector<pid_t> hostPids;
  for (int i = 0; i < 100 && hostPids.size() < 3; ++i) {
    hostPids = CellCgroup::open(c.id).processes();
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(hostPids.size(), 3u) << "init, the exec'd sleep and the background sleep";

  EXPECT_EQ(joined(destroyCell(c.id, c.cell.initPid)), "");
  c.initReaped = true;
  for (pid_t pid : hostPids) {
    EXPECT_EQ(kill(pid, 0), -1) << "pid " << pid << " survived";
    EXPECT_EQ(errno, ESRCH);
  }
  EXPECT_EQ(joined(residueOf(c.id, c.dir, false)), "");
  // Killed, so no 4-byte status: EOF on every pipe.
  CellOutcome rest = collect(c.cell);
  EXPECT_FALSE(rest.waitStatus.has_value());
  EXPECT_FALSE(rest.timedOut);
  // Idempotent.
  EXPECT_EQ(joined(destroyCell(c.id, c.cell.initPid)), "");
}

TEST_F(LinuxCellTest, PidsMaxStopsAForkLoop) {
  TestCell& c = newCell();
  CellLaunch launch =
      shellLaunch(c, "for i in $(seq 50); do sleep 5 & done; echo all-forked; wait");
  launch.pidsMax = 10;
  launchInto(c, launch);
  std::string leaf = cellCgroupPaths(c.id).front();
  EXPECT_EQ(readFileText(leaf + "/pids.max"), "10\n");
  auto started = std::chrono::steady_clock::now();
  CellOutcome outcome = startAndCollect(c);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 4s);
  EXPECT_EQ(outcome.out.find("all-forked"), std::string::npos) << outcome.out;
  EXPECT_NE(outcome.err.find("fork"), std::string::npos) << outcome.err;
  ASSERT_TRUE(outcome.waitStatus.has_value());
  EXPECT_NE(*outcome.waitStatus, 0);
  std::string events = readFileText(leaf + "/pids.events");
  EXPECT_NE(events, "max 0\n") << events;
}

TEST_F(LinuxCellTest, MemoryMaxIsWrittenToTheCgroup) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "true");
  launch.memoryMaxBytes = 64ull << 20;
  launchInto(c, launch);
  std::string file = CellCgroup::isV2() ? cellCgroupPaths(c.id).front() + "/memory.max"
                                        : cellCgroupPaths(c.id)[1] + "/memory.limit_in_bytes";
  EXPECT_EQ(readFileText(file), std::to_string(64ull << 20) + "\n");
  expectExited(startAndCollect(c), 0);
}

TEST_F(LinuxCellTest, FailedSetupThrowsTheCallAndLeavesNothing) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "true");
  launch.workingDirectory = "/usr/nope";  // /usr is read-only inside the cell
  try {
    launchCell(launch);
    FAIL() << "launchCell succeeded";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EROFS);
    EXPECT_NE(std::string(e.what()).find("mkdir(/usr/nope, 0755)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(joined(residueOf(c.id, c.dir, false)), "");
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1) << "a child was left unreaped";
  EXPECT_EQ(errno, ECHILD);

  launch.workingDirectory = "/workspace";
  launch.cellDir = c.dir + "/missing";
  EXPECT_THROW(launchCell(launch), std::system_error);
  EXPECT_EQ(joined(residueOf(c.id, c.dir, false)), "");

  launch.cellDir = c.dir;
  launch.argv = {"bin/sh"};
  EXPECT_THROW(launchCell(launch), std::invalid_argument);
}

TEST_F(LinuxCellTest, ALiveCellIdIsRefused) {
  TestCell& c = launchShell("true");
  EXPECT_THROW(launchCell(shellLaunch(c, "true")), std::runtime_error);
  expectExited(startAndCollect(c), 0);
}

TEST_F(LinuxCellTest, KilledLauncherTakesItsCellsWithIt) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "true");
  int report[2];
  ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
  pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    close(report[0]);
    pid_t init = -1;
    try {
      init = launchCell(launch).initPid;
    } catch (...) {
    }
    ssize_t ignored = write(report[1], &init, sizeof init);
    (void)ignored;
    pause();
    _exit(0);
  }
  close(report[1]);
  pid_t init = -1;
  ASSERT_EQ(read(report[0], &init, sizeof init), static_cast<ssize_t>(sizeof init));
  close(report[0]);
  ASSERT_GT(init, 0);
  kill(launcher, SIGKILL);
  waitpid(launcher, nullptr, 0);
  // The init is not our child: watch the cell's cgroup drain instead.
  std::vector<pid_t> left;
  for (int i = 0; i < 300; ++i) {
    left = CellCgroup::open(c.id).processes();
    if (left.empty()) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(left.empty()) << "the cell outlived its launcher";
  // The launcher could not clean up its cgroup; a later destroy (e.g. a restarted launcher's)
  // does, by id alone.
  EXPECT_EQ(joined(destroyCell(c.id, init)), "");
}

TEST_F(LinuxCellTest, DestroyByIdAloneStillReapsTheInitThisProcessLaunched) {
  // A stale or unknown pid (0 is what an agent reaping leftovers passes) is never signalled;
  // the cell is found through the launcher's own pidfd and the cgroup.
  TestCell& c = launchShell("exec sleep 1000");
  char go = 1;
  ASSERT_EQ(write(c.cell.startFd.get(), &go, 1), 1);
  EXPECT_EQ(joined(destroyCell(c.id, 0)), "");
  c.initReaped = true;
  EXPECT_EQ(waitpid(c.cell.initPid, nullptr, WNOHANG), -1) << "init left as a zombie";
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(LinuxCellTest, LaunchWorksWhenSeccompHidesClone3) {
  // A launcher's seccomp profile may answer clone3 with ENOSYS (its flags sit behind a pointer
  // a filter cannot inspect); launchCell must fall back to clone + pidfd_open. The filter goes
  // into a forked copy of this process so the rest of the suite is unaffected.
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "echo ok");
  pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
    if (!filter || seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) < 0 ||
        seccomp_load(filter) < 0) {
      _exit(10);
    }
    try {
      LaunchedCell cell = launchCell(launch);
      char go = 1;
      if (write(cell.startFd.get(), &go, 1) != 1) _exit(11);
      cell.startFd.reset();
      CellOutcome outcome = collect(cell);
      if (outcome.out != "ok\n" || !outcome.waitStatus || *outcome.waitStatus != 0) _exit(12);
      if (!destroyCell(c.id, cell.initPid).empty()) _exit(13);
    } catch (...) {
      _exit(14);
    }
    _exit(0);
  }
  int status = -1;
  ASSERT_EQ(waitpid(launcher, &status, 0), launcher);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// A python3 program that makes each call in `calls` ("name nr") with zeroed arguments and prints
// "name=<errno>" (0 when it succeeded). The numbers come from this build's <sys/syscall.h>.
std::string syscallProbe(const std::vector<std::pair<std::string, long>>& calls) {
  std::string table;
  for (const auto& [name, nr] : calls) table += "(\"" + name + "\"," + std::to_string(nr) + "),";
  return "import ctypes\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "for name, nr in [" +
         table +
         "]:\n"
         "    ctypes.set_errno(0)\n"
         "    r = libc.syscall(nr, 0, 0, 0, 0, 0, 0)\n"
         "    print(name + '=' + str(0 if r >= 0 else ctypes.get_errno()))\n";
}

TEST_F(LinuxCellTest, WorkloadIsRootOnlyInItsOwnUserNamespace) {
  TestCell& c = launchShell(
      "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; "
      "cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable; "
      "echo x > /workspace/f && stat -c %u:%g /workspace/f; exec sleep 1000");
  char go = 1;
  ASSERT_EQ(write(c.cell.startFd.get(), &go, 1), 1);
  // From the host, the workload's processes run as the cell's base id, never as root.
  // Wait until the shell has exec'd sleep: then the cell is exactly init and sleep.
  std::vector<pid_t> pids;
  auto settled = [&]() {
    pids = CellCgroup::open(c.id).processes();
    if (pids.size() != 2) return false;
    for (pid_t pid : pids) {
      if (readFileText("/proc/" + std::to_string(pid) + "/comm") == "sleep\n") return true;
    }
    return false;
  };
  for (int i = 0; i < 300 && !settled(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(pids.size(), 2u) << "init and sleep";
  std::set<std::string> uids;
  for (pid_t pid : pids) {
    for (const std::string& line :
         lines(readFileText("/proc/" + std::to_string(pid) + "/status"))) {
      if (line.rfind("Uid:", 0) == 0) uids.insert(line);
    }
  }
  std::string base = std::to_string(c.ids.hostBase);
  EXPECT_TRUE(uids.count("Uid:\t0\t0\t0\t0")) << "the init stays host root";
  EXPECT_TRUE(uids.count("Uid:\t" + base + "\t" + base + "\t" + base + "\t" + base))
      << "the workload is the cell's host id";
  EXPECT_EQ(joined(destroyCell(c.id, c.cell.initPid)), "");
  c.initReaped = true;
  CellOutcome outcome = collect(c.cell);
  std::string map = "         0 " + base + "      65536\n";
  EXPECT_EQ(outcome.out, "0\n0\n" + map + map + "shadow-unreadable\n0:0\n") << outcome.err;
}

TEST_F(LinuxCellTest, WorkloadFilterAnswersEpermToNamespaceMountAndKernelCalls) {
  std::vector<std::pair<std::string, long>> denied;
  for (const WorkloadDenial& d : workloadDenials())
    denied.emplace_back(std::string(d.name), d.number);
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "");
  std::string probe = syscallProbe(denied) +
                      "import os\n"
                      "print('getpid=' + str(0 if os.getpid() > 0 else 1))\n";
  // clone(CLONE_NEWUSER|SIGCHLD) through libc's syscall(): EPERM from the filter's flag check.
  probe +=
      "ctypes.set_errno(0)\n"
      "r = libc.syscall(" +
      std::to_string(SYS_clone) +
      ", 0x10000000 | 17, 0, 0, 0, 0)\n"
      "print('clone(CLONE_NEWUSER)=' + str(ctypes.get_errno() if r < 0 else 'ran'))\n"
      "pid = os.fork()\n"
      "if pid == 0: os._exit(7)\n"
      "print('fork=' + str(os.waitpid(pid, 0)[1] >> 8))\n";
  launch.argv = {"/usr/bin/python3", "-c", probe};
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  expectExited(outcome, 0);
  std::vector<std::string> out = lines(outcome.out);
  ASSERT_EQ(out.size(), denied.size() + 3) << outcome.out << outcome.err;
  for (size_t i = 0; i < denied.size(); ++i) {
    int expected = workloadDenials()[i].error;
    EXPECT_EQ(out[i], denied[i].first + "=" + std::to_string(expected));
  }
  EXPECT_EQ(out[denied.size()], "getpid=0");
  EXPECT_EQ(out[denied.size() + 1], "clone(CLONE_NEWUSER)=" + std::to_string(EPERM));
  EXPECT_EQ(out[denied.size() + 2], "fork=7") << "an ordinary fork still works";
}

TEST_F(LinuxCellTest, WorkloadFilterRefusesSocketFamiliesACellHasNoUseFor) {
  // Each family by number (this build's <sys/socket.h>); what the kernel itself would say for a
  // family it was built without. NETLINK_ROUTE stays, for glibc's interface queries.
  const char* probe = R"(import errno, socket
def sock(name, family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
def pair(name, family):
    try:
        for s in socket.socketpair(family, socket.SOCK_STREAM):
            s.close()
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
sock("vsock", 40, socket.SOCK_STREAM)
sock("packet", 17, socket.SOCK_RAW)
sock("key", 15, socket.SOCK_RAW, 2)
sock("alg", 38, socket.SOCK_SEQPACKET)
sock("bluetooth", 31, socket.SOCK_STREAM)
sock("xdp", 44, socket.SOCK_RAW)
sock("netlink-uevent", 16, socket.SOCK_DGRAM, 15)
sock("netlink-audit", 16, socket.SOCK_RAW, 9)
sock("unix", socket.AF_UNIX, socket.SOCK_STREAM)
sock("inet", socket.AF_INET, socket.SOCK_DGRAM)
sock("inet6", socket.AF_INET6, socket.SOCK_STREAM)
sock("netlink-route", 16, socket.SOCK_RAW, 0)
pair("socketpair-unix", socket.AF_UNIX)
pair("socketpair-vsock", 40)
print("interfaces=" + ",".join(sorted(name for _, name in socket.if_nameindex())))
)";
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "");
  launch.argv = {"/usr/bin/python3", "-c", probe};
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  expectExited(outcome, 0);
  EXPECT_EQ(outcome.out,
            "vsock=EAFNOSUPPORT\npacket=EAFNOSUPPORT\nkey=EAFNOSUPPORT\nalg=EAFNOSUPPORT\n"
            "bluetooth=EAFNOSUPPORT\nxdp=EAFNOSUPPORT\nnetlink-uevent=EPROTONOSUPPORT\n"
            "netlink-audit=EPROTONOSUPPORT\nunix=ok\ninet=ok\ninet6=ok\nnetlink-route=ok\n"
            "socketpair-unix=ok\nsocketpair-vsock=EAFNOSUPPORT\ninterfaces=lo\n")
      << outcome.err;
}

TEST_F(LinuxCellTest, TheCellSeesItsCgroupAsTheRootOfItsOwnCgroupNamespace) {
  TestCell& c = launchShell("cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup");
  // From the host: the init is in /cellos/<id> (the control: the cell's cgroup is real).
  std::string hostView = readFileText("/proc/" + std::to_string(c.cell.initPid) + "/cgroup");
  EXPECT_NE(hostView.find("/cellos/" + c.id), std::string::npos) << hostView;
  CellOutcome outcome = startAndCollect(c);
  expectExited(outcome, 0);
  // Inside: every hierarchy (v1: each controller, those the launcher does not manage too; v2:
  // the one) is at its namespace's root; nothing names the host's tree.
  std::vector<std::string> seen = lines(outcome.out);
  ASSERT_GE(seen.size(), 3u) << outcome.out << outcome.err;
  for (const std::string& line : seen) {
    if (line == "---") continue;
    EXPECT_EQ(line.substr(line.rfind(':')), ":/") << outcome.out;
  }
  EXPECT_EQ(outcome.out.find("cellos"), std::string::npos) << outcome.out;
  EXPECT_EQ(outcome.out.find(".slice"), std::string::npos) << outcome.out;
}

TEST_F(LinuxCellTest, TheCellsInitShowsNoArgumentOrEnvironmentOfItsLauncher) {
  // The init is a clone of this process: without the overwrite, /proc/1/cmdline would be this
  // test binary's command line and /proc/1/environ ctest's environment (CELLOS_BUILD_DIR=...).
  std::string ownCmdline = readFileText("/proc/self/cmdline");
  ASSERT_NE(readFileText("/proc/self/environ"), "")
      << "the control: the launcher has an environment";
  TestCell& c = launchShell(
      "cat /proc/1/cmdline; echo; cat /proc/1/comm; grep ^Name: /proc/1/status; "
      "cat /proc/1/environ >/dev/null 2>&1 || echo environ-refused; "
      "readlink /proc/1/exe >/dev/null 2>&1 || echo exe-refused");
  // From the host (root may read all of it), before the workload runs.
  std::string init = "/proc/" + std::to_string(c.cell.initPid);
  std::string cmdline = readFileText(init + "/cmdline");
  EXPECT_EQ(cmdline, std::string("cellos-init\0", 12));
  std::string environ = readFileText(init + "/environ");
  EXPECT_EQ(environ.find_first_not_of('\0'), std::string::npos)
      << "the launcher's environment is still in the init: " << environ;
  EXPECT_EQ(readFileText(init + "/comm"), "cellos-init\n");
  CellOutcome outcome = startAndCollect(c);
  expectExited(outcome, 0);
  EXPECT_EQ(outcome.out, std::string("cellos-init") + '\0' +
                             "\ncellos-init\nName:\tcellos-init\nenviron-refused\nexe-refused\n")
      << outcome.err;
  EXPECT_EQ(outcome.out.find(ownCmdline.substr(0, ownCmdline.find('\0'))), std::string::npos);
}

TEST_F(LinuxCellTest, SensitiveProcFilesAreMaskedOrReadOnly) {
  CellOutcome outcome = runShell(
      "for f in kcore keys timer_list sched_debug; do "
      "  [ -e /proc/$f ] && echo $f=$(cat /proc/$f 2>/dev/null | wc -c); done; "
      "[ -d /proc/acpi ] && echo acpi=$(ls /proc/acpi | wc -l); "
      "echo c > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; "
      "echo x > /proc/sys/kernel/core_pattern 2>/dev/null && echo sys-writable; echo done");
  for (const std::string& line : lines(outcome.out)) {
    if (line == "done") continue;
    EXPECT_EQ(line.substr(line.find('=')), "=0") << line;
  }
  EXPECT_NE(outcome.out.find("keys=0"), std::string::npos) << outcome.out;
  EXPECT_EQ(outcome.out.find("writable"), std::string::npos) << outcome.out;
  expectExited(outcome, 0);
}

TEST_F(LinuxCellTest, ResolvConfNamesTheDnsHelperWithoutTouchingTheHost) {
  std::string hostBefore = readFileText("/etc/resolv.conf");
  CellOutcome outcome =
      runShell("cat /etc/resolv.conf; echo x > /etc/resolv.conf 2>/dev/null || echo ro");
  EXPECT_EQ(outcome.out, "nameserver 127.0.0.1\nro\n");
  EXPECT_EQ(readFileText("/etc/resolv.conf"), hostBefore);
}

TEST_F(LinuxCellTest, RlimitsBoundCoreDumpsAndOpenFiles) {
  CellOutcome outcome = runShell("ulimit -c; ulimit -Hc; ulimit -n; ulimit -Hn");
  EXPECT_EQ(outcome.out, "0\n0\n1024\n4096\n");
}

TEST_F(LinuxCellTest, ImageRootReplacesTheHostView) {
  if (access("/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs busybox-static (scripts/setup)";
  char dir[] = "/tmp/cellos-image-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string image = dir;
  ASSERT_EQ(mkdir((image + "/bin").c_str(), 0755), 0);
  ASSERT_EQ(system(("cp /bin/busybox " + image + "/bin/busybox").c_str()), 0);
  ASSERT_EQ(symlink("busybox", (image + "/bin/sh").c_str()), 0);
  ASSERT_EQ(mkdir((image + "/proc").c_str(), 0755), 0);  // replaced by the cell's own
  std::ofstream(image + "/marker") << "from the image\n";
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c,
                                  "/bin/busybox cat /marker; /bin/busybox ls /; "
                                  "/bin/busybox cat /etc/resolv.conf; "
                                  "/bin/busybox touch /marker 2>/dev/null || echo ro");
  launch.imageRoot = image;
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  EXPECT_EQ(
      outcome.out,
      "from the image\nbin\ndev\netc\nmarker\nproc\ntmp\nworkspace\nnameserver 127.0.0.1\nro\n")
      << outcome.err;
  expectExited(outcome, 0);
  std::filesystem::remove_all(image);
}

TEST_F(LinuxCellTest, SigtermToTheInitReachesEveryProcessOfTheCell) {
  TestCell& c = launchShell("sleep 1000 & echo started; wait; echo after-wait");
  char go = 1;
  ASSERT_EQ(write(c.cell.startFd.get(), &go, 1), 1);
  std::vector<pid_t> pids;
  for (int i = 0; i < 300 && pids.size() < 3; ++i) {
    pids = CellCgroup::open(c.id).processes();
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(pids.size(), 3u);
  ASSERT_EQ(syscall(SYS_pidfd_send_signal, c.cell.pidFd.get(), SIGTERM, nullptr, 0), 0);
  CellOutcome outcome = collect(c.cell, 5000ms);
  ASSERT_TRUE(outcome.waitStatus.has_value()) << "the init reports the workload's end";
  EXPECT_TRUE(WIFSIGNALED(*outcome.waitStatus));
  EXPECT_EQ(WTERMSIG(*outcome.waitStatus), SIGTERM);
  EXPECT_EQ(outcome.out, "started\n") << "the shell itself got SIGTERM, not only its child";
}

TEST_F(LinuxCellTest, MemoryHogIsOomKilledAndCounted) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "exec dd if=/dev/zero of=/dev/null bs=64M count=1");
  launch.memoryMaxBytes = 32ull << 20;
  launchInto(c, launch);
  CellOutcome outcome = startAndCollect(c);
  ASSERT_TRUE(outcome.waitStatus.has_value()) << outcome.err;
  EXPECT_TRUE(WIFSIGNALED(*outcome.waitStatus) && WTERMSIG(*outcome.waitStatus) == SIGKILL)
      << *outcome.waitStatus << " " << outcome.err;
  EXPECT_GE(CellCgroup::open(c.id).oomKillCount(), 1u);
}

TEST_F(LinuxCellTest, CpuMaxIsWrittenAndUsageIsCounted) {
  TestCell& c = newCell();
  CellLaunch launch = shellLaunch(c, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done");
  launch.cpuMax = CellCpuMax{20000, 100000};
  launchInto(c, launch);
  CellCgroup cgroup = CellCgroup::open(c.id);
  if (CellCgroup::isV2()) {
    EXPECT_EQ(readFileText(cellCgroupPaths(c.id).front() + "/cpu.max"), "20000 100000\n");
  } else {
    std::string cpu = cellCgroupPaths(c.id)[2];
    EXPECT_EQ(readFileText(cpu + "/cpu.cfs_quota_us"), "20000\n");
    EXPECT_EQ(readFileText(cpu + "/cpu.cfs_period_us"), "100000\n");
  }
  expectExited(startAndCollect(c), 0);
  EXPECT_GT(cgroup.cpuUsageMicros(), 1000u) << "the loop's cpu time is charged to the cell";
}

TEST(LauncherProfile, AnswersEpermToDangerousCallsSoWorkloadsSeeEperm) {
  // Every call the launcher's profile answers with an errno is also in the workload filter's
  // list (so the two documented lists agree), and under the launcher's profile alone it returns
  // EPERM instead of killing: a stack of filters takes its strictest answer, so a kill here would
  // hide the workload filter's EPERM.
  std::vector<std::pair<std::string, long>> calls;
  for (const privsep::ErrnoRule& rule : kLauncherProfile.deny) {
    EXPECT_EQ(rule.error, EPERM) << rule.syscall;
    long number = -1;
    for (const WorkloadDenial& d : workloadDenials()) {
      if (d.name == rule.syscall) number = d.number;
    }
    if (number < 0) {
      ADD_FAILURE() << rule.syscall << " is denied to the launcher but not in the workload filter";
      continue;
    }
    calls.emplace_back(std::string(rule.syscall), number);
  }
  ASSERT_GE(calls.size(), 20u);
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(report[0]);
    privsep::setNoNewPrivs();
    privsep::installSeccomp(kLauncherProfile);
    for (const auto& [name, number] : calls) {
      long rc = syscall(number, 0, 0, 0, 0, 0, 0);
      int result = rc < 0 ? errno : 0;
      if (write(report[1], &result, sizeof result) != sizeof result) _exit(2);
    }
    _exit(0);
  }
  close(report[1]);
  for (const auto& [name, number] : calls) {
    int result = -1;
    ASSERT_EQ(read(report[0], &result, sizeof result), static_cast<ssize_t>(sizeof result))
        << name << " killed the process";
    EXPECT_EQ(result, EPERM) << name;
  }
  close(report[0]);
  int status = -1;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The VM launcher's start checks the cells' cgroup parents: on a host (or in a unit's view)
// where one is read-only, it refuses to start, naming the subtree and the fix, instead of
// starting and failing every cell. The read-only view is the test's own mount namespace.
TEST(CgroupParents, AReadOnlySubtreeFailsTheLaunchersStartNamingIt) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: mounts, cgroups";
  ASSERT_NO_THROW(CellCgroup::prepareParents());
  std::string hierarchy = CellCgroup::isV2() ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
  std::string parent = hierarchy + "/cellos";
  int pipeFds[2];
  ASSERT_EQ(pipe(pipeFds), 0);
  pid_t child = fork();
  if (child == 0) {
    close(pipeFds[0]);
    std::string message = "no throw";
    if (unshare(CLONE_NEWNS) < 0 ||
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0 ||
        mount(nullptr, hierarchy.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) < 0) {
      message = std::string("cannot make the read-only view: ") + strerror(errno);
    } else {
      try {
        CellCgroup::prepareParents();
      } catch (const std::exception& e) {
        message = e.what();
      }
    }
    ssize_t ignored = write(pipeFds[1], message.data(), message.size());
    (void)ignored;
    _exit(0);
  }
  close(pipeFds[1]);
  std::string message;
  char buffer[4096];
  for (ssize_t n; (n = read(pipeFds[0], buffer, sizeof(buffer))) > 0;) message.append(buffer, n);
  close(pipeFds[0]);
  waitpid(child, nullptr, 0);
  EXPECT_NE(message.find("no cell could start: " + parent +
                         " is not writable: Read-only file "
                         "system"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("ExecStartPre= and BindPaths="), std::string::npos) << message;
}


TEST(CellsBudget, BytesOrAShareOfTheHostsMemory) {
  EXPECT_EQ(parseMemoryBudget("", 1000), 0u);
  EXPECT_EQ(parseMemoryBudget("0", 1000), 0u);
  EXPECT_EQ(parseMemoryBudget("4096", 1000), 4096u);
  EXPECT_EQ(parseMemoryBudget("80%", 1000), 800u);
  EXPECT_EQ(parseMemoryBudget("100%", 24ull << 30), 24ull << 30);
  for (const char* bad : {"0%", "101%", "%", "12k", "-1", "80 %", "1e9"}) {
    EXPECT_THROW(parseMemoryBudget(bad, 1000), std::invalid_argument) << bad;
  }
}

// The all-cells budget lands on the cellos parents (what bounds the sum of concurrent cells,
// whatever each cell's own limit); the test puts back what it found.
TEST(CellsBudget, TheLaunchersStartSetsItOnTheCellosParents) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: cgroups";
  ASSERT_NO_THROW(CellCgroup::prepareParents());
  bool v2 = CellCgroup::isV2();
  std::string memory = v2 ? "/sys/fs/cgroup/cellos/memory.max"
                          : "/sys/fs/cgroup/memory/cellos/memory.limit_in_bytes";
  std::string pids = v2 ? "/sys/fs/cgroup/cellos/pids.max" : "/sys/fs/cgroup/pids/cellos/pids.max";
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::string value;
    in >> value;
    return value;
  };
  std::string oldMemory = read(memory), oldPids = read(pids);
  ASSERT_FALSE(oldMemory.empty() || oldPids.empty());
  CellCgroup::prepareParents({uint64_t{6} << 30, 20000});
  std::string setMemory = read(memory), setPids = read(pids);
  CellCgroup::prepareParents();  // 0: leaves them
  std::string leftMemory = read(memory);
  std::ofstream(memory) << oldMemory;
  std::ofstream(pids) << oldPids;
  EXPECT_EQ(setMemory, std::to_string(uint64_t{6} << 30));
  EXPECT_EQ(setPids, "20000");
  EXPECT_EQ(leftMemory, setMemory);
  EXPECT_EQ(read(pids), oldPids);
}

}  // namespace
}  // namespace cellos::vmm
