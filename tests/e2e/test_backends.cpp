// End-to-end: the contract every backend keeps, one suite run once per backend (linux, gvisor,
// microvm).
// Each test is a real `cellos run` of a document naming the backend in spec.placement.backend:
// exit codes, the environment and fds a workload gets, limits and clocks, crash reaping, the
// network scope (egress rules, the DNS helper) and residue. Where a backend's answer differs by
// design (a syscall gVisor does not implement; a microvm cell's workload in its own guest kernel,
// behind a TAP device, with its DNS helper on the guest link), the test states each answer.

#include "tests/e2e/cell_e2e.h"
#include "tests/e2e/uplink_host.h"
#include "vmm-agent/cell/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <thread>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

class CellBackends : public CellE2E, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    CellE2E::SetUp();
    if (IsSkipped()) return;
    if (auto why = missingBackend(backend()); !why.empty()) GTEST_SKIP() << why;
  }
  const std::string& backend() const { return GetParam(); }
  // cellDocument() with this suite's backend named in the document.
  std::string doc(const std::string& id, const nlohmann::json& argv,
                  const std::string& runExtra = "", const std::string& specExtra = "",
                  int ttlSeconds = 60) {
    return cellDocument(id, argv, runExtra,
                        "  placement: {backend: " + backend() + "}\n" + specExtra, ttlSeconds);
  }
  nlohmann::json sh(const std::string& script) { return {"/bin/sh", "-c", script}; }
  bool vm() const { return backend() == "microvm"; }
  // Where the cell's DNS helper answers: in the cell (linux, gvisor), or on the guest link's
  // end in the cell's namespace (microvm); the cell's /etc/resolv.conf names it either way.
  std::string dnsAddress() const { return vm() ? "169.254.0.1" : "127.0.0.1"; }
  RunResult verify() { return runCellos({"verify", "--state-dir", stateDir_, events_}); }
};

INSTANTIATE_TEST_SUITE_P(Backends, CellBackends, ::testing::Values("linux", "gvisor", "microvm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// --- exit codes and events -----------------------------------------------------------------------

TEST_P(CellBackends, ExitStatusOfTheCellIsTheExitStatusOfRun) {
  auto result = run("exit3.yaml", doc("exit3", sh("echo hello; echo 'about to fail' >&2; exit 3")));
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_EQ(result.out, "hello\n");
  EXPECT_NE(result.err.find("about to fail"), std::string::npos) << result.err;
  EXPECT_EQ(completed()["exitCode"], 3);
  // Every event that names a backend names this one.
  auto accepted = eventData("admission.v1.accepted");
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0]["backend"], backend());
  auto started = eventData("lifecycle.v1.started");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["backend"], backend());
  auto destroyed = eventData("lifecycle.v1.destroyed");
  ASSERT_EQ(destroyed.size(), 1u);
  EXPECT_EQ(destroyed[0]["residue"]["clean"], true);
  EXPECT_EQ(verify().status, 0);
}

TEST_P(CellBackends, SignalDeathExitsWith128PlusSignal) {
  auto result = run("kill.yaml", doc("killed", sh("kill -9 $$")));
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.err;
  EXPECT_EQ(completed()["signal"], SIGKILL);
}

TEST_P(CellBackends, AMissingProgramFailsWith127AndANonExecutableOneWith126) {
  auto result = run("missing.yaml", doc("missing", {"/nonexistent/program"}));
  EXPECT_EQ(result.status, 127) << result.out << result.err;
  EXPECT_NE(result.err.find("cellos: exec /nonexistent/program: No such file or directory"),
            std::string::npos)
      << result.err;
  // There, but not an executable file (a directory): 126.
  auto notExec = run("noexec.yaml", doc("noexec", {"/usr"}));
  EXPECT_EQ(notExec.status, 126) << notExec.out << notExec.err;
  // And through them to a program that is there.
  auto found = run("found.yaml", doc("found", {"/bin/sh", "-c", "exit 0"}));
  EXPECT_EQ(found.status, 0) << found.err;
}

// --- what the workload gets ----------------------------------------------------------------------

TEST_P(CellBackends, ProcSelfEnvironIsTheDeclaredEnvironmentByteForByte) {
  auto result = run("env.yaml", doc("environ", {"/bin/cat", "/proc/self/environ"},
                                    "    env: {LANG: C.UTF-8, SPACED: \"x y=z\", EMPTY: \"\", "
                                    "A: \"1\"}\n"));
  EXPECT_EQ(result.status, 0) << result.err;
  std::string declared("LANG=C.UTF-8\0SPACED=x y=z\0EMPTY=\0A=1\0", 37);
  if (backend() != "gvisor") {
    EXPECT_EQ(result.out, declared);  // the guest init too passes exactly the declared ones
    return;
  }
  // runsc adds HOME when the environment has none, and hands the variables over in an order of
  // its own (docs/security.md): the same entries, byte for byte, in any order.
  auto entries = [](const std::string& block) {
    std::multiset<std::string> out;
    for (size_t at = 0; at < block.size();) {
      size_t end = block.find('\0', at);
      if (end == std::string::npos) end = block.size();
      out.insert(block.substr(at, end - at));
      at = end + 1;
    }
    return out;
  };
  EXPECT_EQ(entries(result.out), entries(declared + std::string("HOME=/\0", 7)));
  EXPECT_EQ(result.out.back(), '\0');
}

TEST_P(CellBackends, ProcSelfFdListsOnlyZeroOneTwo) {
  // The shell's own table, listed by a child (the shell's fds only). Not ls: runsc 20221219
  // answers the statx of coreutils 9's ls with EINVAL (docs/security.md).
  auto shell = run("fd-sh.yaml", doc("fds", sh("/usr/bin/python3 -c 'import os, sys; "
                                               "print(*sorted(os.listdir(\"/proc/%s/fd\" % "
                                               "sys.argv[1]), key=int), sep=\"\\n\")' $$")));
  EXPECT_EQ(shell.status, 0) << shell.err;
  EXPECT_EQ(shell.out, "0\n1\n2\n");
  auto py = run("fd-py.yaml", doc("fds-py", {"/usr/bin/python3", "-c",
                                             "import os\n"
                                             "listed = os.listdir('/proc/self/fd')\n"
                                             "print(sorted(int(f) for f in listed"
                                             " if os.path.exists('/proc/self/fd/' + f)))"}));
  EXPECT_EQ(py.status, 0) << py.err;
  EXPECT_EQ(py.out, "[0, 1, 2]\n");
}

TEST_P(CellBackends, TheWorkloadIsUnprivilegedOnAReadOnlyRootWithAWritableWorkingDirectory) {
  const char* probe = R"(import os, errno
def tryopen(name, path, flags):
    try:
        os.close(os.open(path, flags, 0o644))
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
tryopen("read-shadow", "/etc/shadow", os.O_RDONLY)
tryopen("write-usr", "/usr/x", os.O_WRONLY | os.O_CREAT)
tryopen("write-etc", "/etc/x", os.O_WRONLY | os.O_CREAT)
tryopen("read-home", "/home", os.O_RDONLY)
tryopen("write-workspace", "/workspace/ok", os.O_WRONLY | os.O_CREAT)
print("cwd=" + os.getcwd())
print("host=" + os.uname().nodename)
print("caps=" + [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
)";
  auto result = run("ro.yaml", doc("readonly", {"/usr/bin/python3", "-c", probe}));
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  // The host's files are refused either way; the linux kernel names the read-only mount first,
  // gVisor's Sentry the missing write permission of the workload's unprivileged id.
  // A microvm cell's root disk holds only what an unprivileged host user could read: the host's
  // shadow file is not there at all.
  std::string refused = backend() == "gvisor" ? "EACCES" : "EROFS";
  std::string shadow = vm() ? "ENOENT" : "EACCES";
  EXPECT_EQ(result.out, "read-shadow=" + shadow + "\nwrite-usr=" + refused +
                            "\nwrite-etc=" + refused +
                            "\nread-home=ENOENT\nwrite-workspace=ok\ncwd=/workspace\n"
                            "host=readonly\ncaps=0000000000000000\n");
}

TEST_P(CellBackends, ACellSeesOnlyItself) {
  auto result = run("self.yaml", doc("self-view", sh("set -- /proc/[0-9]*; echo pids=$#; "
                                                     "echo ifaces=$(tail -n +3 /proc/net/dev | cut "
                                                     "-d: -f1 | tr -d ' ' | sort | tr '\\n' ,)")));
  ASSERT_EQ(result.status, 0) << result.err;
  // Loopback and its end of the veth pair to the uplink (the network scope), nothing else.
  EXPECT_NE(result.out.find("ifaces=eth0,lo,\n"), std::string::npos) << result.out;
  auto at = result.out.find("pids=");
  ASSERT_NE(at, std::string::npos);
  int pids = std::stoi(result.out.substr(at + 5));
  EXPECT_GE(pids, 1);
  EXPECT_LE(pids, 6) << "never the host's hundreds: " << result.out;
}

TEST_P(CellBackends, ARegisteredDirectoryImageIsTheCellsRoot) {
  if (access("/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs busybox-static (scripts/setup)";
  std::string image = stateDir_ + "/images/tiny";
  std::filesystem::create_directories(image + "/bin");
  std::filesystem::copy_file("/bin/busybox", image + "/bin/busybox");
  std::filesystem::create_symlink("busybox", image + "/bin/sh");
  writeFile(image + "/hello", "hello from the tiny image\n");
  nlohmann::json argv = {
      "/bin/sh", "-c",
      "/bin/busybox cat /hello; /bin/busybox ls /usr 2>&1 | /bin/busybox head -c 40"};
  auto result = run("image.yaml", doc("imaged", argv, "    image: tiny\n"));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out.substr(0, result.out.find('\n') + 1), "hello from the tiny image\n");
  EXPECT_NE(result.out.find("No such file"), std::string::npos) << "the host's /usr is not there";
}

// A program the kernel (linux) or the Sentry (gvisor) cannot load fails the run, and a start
// that fails half-way leaves nothing (runsc has made the cell's cgroups by then: TearDown's
// residue check looks at every controller).
TEST_P(CellBackends, AProgramThatCannotBeLoadedFailsAndLeavesNothing) {
  std::string image = stateDir_ + "/images/garbage";
  std::filesystem::create_directories(image);
  writeFile(image + "/bad", "this is not a program\n");
  std::filesystem::permissions(
      image + "/bad", std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                          std::filesystem::perms::others_exec | std::filesystem::perms::group_read |
                          std::filesystem::perms::others_read);
  auto result = run("bad.yaml", doc("unloadable", {"/bad"}, "    image: garbage\n"));
  if (backend() == "gvisor") {
    // runsc's own failure (its exit 128), with its reason on the cell's stderr.
    EXPECT_EQ(result.status, 128) << result.err;
    EXPECT_NE(result.err.find("exec format error"), std::string::npos) << result.err;
  } else {
    EXPECT_EQ(result.status, 126) << result.err;  // ENOEXEC
  }
  EXPECT_EQ(eventData("lifecycle.v1.destroyed").back()["residue"]["clean"], true);
}

// What the workload leaves in its working directory is reachable from the host, at the
// document's path, through the cell's init (the linux cell's init; the gvisor cell's supervisor,
// which binds the working directory into its own root): how the broker's export reads it. A
// microvm cell's working directory is in its guest while the workload runs: no host process
// shows it, and the VM supervisor's copy (/work in its root, where exports are read) is filled
// only once the workload has exited (test_lifecycle's exports).
TEST_P(CellBackends, TheWorkingDirectoryIsReachableFromTheHostThroughTheCellsInit) {
  std::string marker = "marker-" + std::to_string(getpid());
  CellosProcess cellos(runArgs(writeDocument(
      "workdir.yaml",
      doc("workdir", sh("echo from the cell > " + marker + "; echo ready; exec sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("ready\n", 30s)) << cellos.err();
  std::vector<pid_t> seen, pending = {cellos.pid()};
  while (!pending.empty()) {
    pid_t p = pending.back();
    pending.pop_back();
    for (pid_t child : childrenOf(p)) {
      pending.push_back(child);
      std::string path = "/proc/" + std::to_string(child) + "/root/workspace/" + marker;
      if (vm()) {
        EXPECT_FALSE(std::filesystem::exists(path)) << path;
        path = "/proc/" + std::to_string(child) + "/root/work/" + marker;
        EXPECT_FALSE(std::filesystem::exists(path)) << path << ": copied before the exit";
        continue;
      }
      if (exeName(child) == "cellos-vmm-agent" && std::filesystem::exists(path)) {
        EXPECT_EQ(readFile(path), "from the cell\n");
        seen.push_back(child);
      }
    }
  }
  EXPECT_EQ(seen.size(), vm() ? 0u : 1u)
      << "exactly the cell's init shows the cell's working directory";
  EXPECT_FALSE(std::filesystem::exists("/workspace/" + marker)) << "nothing on the host's path";
  cellos.signalGroup(SIGINT);
  EXPECT_EQ(cellos.wait(30s), 128 + SIGKILL) << cellos.err();
}

// A syscall gVisor does not implement (the new mount API's fsopen) is an error the workload
// sees at once and survives: ENOSYS from gVisor's Sentry; EPERM from the linux backend's filter,
// and from the guest kernel of a microvm cell, whose workload holds no capability there.
TEST_P(CellBackends, AnUnimplementedSyscallIsAClearErrorNotAHang) {
  const char* probe = R"(import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
ctypes.set_errno(0)
r = libc.syscall(430, b"tmpfs", 0)
print("fsopen=" + (str(r) if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")))
print("still running")
)";
  auto result = run("nosys.yaml", doc("nosys", {"/usr/bin/python3", "-c", probe}));
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  std::string expected = backend() == "gvisor" ? "ENOSYS" : "EPERM";
  EXPECT_EQ(result.out, "fsopen=" + expected + "\nstill running\n");
}

// --- limits and clocks ---------------------------------------------------------------------------

// A microvm cell's memoryMaxBytes is its guest's RAM (at least 96 MiB: the guest kernel's own).
// Its hog takes 512 MiB a MiB at a time: the guest kernel refuses one allocation larger than
// its RAM outright (dd bs=120M exits 1, "memory exhausted"), so the hog must grow into the OOM
// kill, which happens in the guest and is reported by it.
TEST_P(CellBackends, MemoryHogIsOomKilledAtMemoryMaxAndReported) {
  std::string limit = vm() ? "134217728" : "33554432";
  std::vector<std::string> hog = {"/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"};
  if (vm()) hog = {"/usr/bin/python3", "-c", "a = [bytearray(1 << 20) for _ in range(512)]"};
  auto result = run("oom.yaml", doc("hog", hog, "    limits: {memoryMaxBytes: " + limit + "}\n"));
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.err;
  auto done = completed();
  EXPECT_EQ(done["oomKilled"], true);
  EXPECT_EQ(done["signal"], SIGKILL);
  EXPECT_EQ(done["timedOut"], false);

  auto fits =
      run("fits.yaml", doc("fits", {"/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"},
                           "    limits: {memoryMaxBytes: " + limit + "}\n"));
  EXPECT_EQ(fits.status, 0) << fits.err;
  EXPECT_EQ(completed()["oomKilled"], false) << "the control: a small buffer fits";
}

TEST_P(CellBackends, ForkBombStopsAtPidsMax) {
  // Every process forks for as long as it can; all of them end up refused (EAGAIN) and asleep.
  // The cell then holds exactly pidsMax processes: on linux its init, the bomb and its
  // descendants (the cgroup's pids.max); under gVisor the bomb and its descendants (the
  // Sentry's RLIMIT_NPROC).
  const char* bomb = R"(import os, time
top = os.getpid()
def spawn():
    while True:
        try:
            if os.fork() == 0:
                return spawn()
        except OSError as e:
            return e.errno
err = spawn()
if os.getpid() != top:
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
print("fork-failed", err)
print("processes", len([p for p in os.listdir("/proc") if p.isdigit()]))
)";
  auto result = run("bomb.yaml", doc("bomb", {"/usr/bin/python3", "-c", bomb},
                                     "    limits: {pidsMax: 16}\n    timeoutMs: 20000\n"));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "fork-failed 11\nprocesses 16\n");
}

TEST_P(CellBackends, CpuLoopIsThrottledToCpuMax) {
  // cpuMax 20000/100000: a fifth of one cpu. The share is measured from the cell's own cgroup
  // cpu time over wall-clock windows, never from how long the run took. Throttling bounds the
  // share from above in every window (asserted for each); a busy machine (2 shared cores) can
  // only lower it, so the lower bound is asserted on the best window. Under gVisor the cgroup
  // holds the Sentry and the gofer too: the quota is the whole sandbox's.
  CellosProcess cellos(runArgs(writeDocument(
      "cpu.yaml", doc("spin", {"/usr/bin/timeout", "5", "/bin/sh", "-c", "while :; do :; done"},
                      "    limits: {cpuMax: {quotaMicros: 20000, periodMicros: 100000}}\n"))));
  vmm::CellCgroup cgroup = vmm::CellCgroup::open("spin");
  bool running = false;
  for (int i = 0; i < 200 && !running; ++i) {
    try {
      running = cgroup.cpuUsageMicros() > 0;
    } catch (const std::exception&) {
    }
    if (!running) std::this_thread::sleep_for(25ms);
  }
  ASSERT_TRUE(running) << "the cell never started";
  std::this_thread::sleep_for(500ms);  // past the start-up (the Sentry's, under gVisor)
  std::vector<double> shares;
  for (int window = 0; window < 3; ++window) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t u0 = cgroup.cpuUsageMicros();
    std::this_thread::sleep_for(1s);
    uint64_t u1 = cgroup.cpuUsageMicros();
    double wall =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    shares.push_back(static_cast<double>(u1 - u0) / wall);
  }
  printf("%s: cpu share per 1 s window (cpuMax 20%%): %.3f %.3f %.3f\n", backend().c_str(),
         shares[0], shares[1], shares[2]);
  for (double share : shares) EXPECT_LE(share, 0.24) << "throttling failed";
  EXPECT_GE(*std::max_element(shares.begin(), shares.end()), 0.16)
      << "the loop never got its quota: " << shares[0] << " " << shares[1] << " " << shares[2];
  // A microvm cell's guest boots within its quota too (a fifth of TCG's seconds).
  EXPECT_EQ(cellos.wait(vm() ? 90s : 20s), 124) << cellos.err();  // timeout(1)'s killed status
}

TEST_P(CellBackends, TimeoutSendsSigtermAndReportsTimedOutWithinTheGracePeriod) {
  auto result = run("timeout.yaml", doc("sleeper", {"/bin/sleep", "1000"}, "    timeoutMs: 500\n"));
  EXPECT_EQ(result.status, 128 + SIGTERM) << result.err;
  auto done = completed();
  EXPECT_EQ(done["timedOut"], true);
  EXPECT_EQ(done["signal"], SIGTERM) << "sleep ended on the SIGTERM, before any SIGKILL";
  EXPECT_GE(done["durationMs"].get<int>(), 490);
  EXPECT_LT(done["durationMs"].get<int>(), 500 + 5000);
  EXPECT_NE(result.err.find("the cell timed out"), std::string::npos) << result.err;
}

TEST_P(CellBackends, AWorkloadIgnoringSigtermIsKilledAfterTheGracePeriod) {
  auto result =
      run("grace.yaml", doc("ignores-sigterm", sh("trap '' TERM; sleep 1000"),
                            "    timeoutMs: 300\n    limits: {gracefulShutdownSeconds: 1}\n"));
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.err;
  auto done = completed();
  EXPECT_EQ(done["timedOut"], true);
  EXPECT_EQ(done["signal"], SIGKILL);
  // SIGTERM at 300 ms was ignored; SIGKILL came one grace second later.
  EXPECT_GE(done["durationMs"].get<int>(), 1250);
  EXPECT_LT(done["durationMs"].get<int>(), 1300 + 3000);
}

TEST_P(CellBackends, TtlCapsTheWholeCell) {
  auto result = run("ttl.yaml", doc("ephemeral", {"/bin/sleep", "1000"}, "", "", 1));
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.err;
  auto done = completed();
  EXPECT_EQ(done["timedOut"], true);
  EXPECT_LT(done["durationMs"].get<int>(), 1000 + 3000);
}

// --- residue and crashes -------------------------------------------------------------------------

TEST_P(CellBackends, NothingOfTheCellRemainsAfterRun) {
  auto result = run("bg.yaml", doc("residue-check", sh("sleep 1000 & sleep 1000 & echo started")));
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "started\n");
  EXPECT_EQ(eventData("lifecycle.v1.destroyed").back()["residue"]["clean"], true);
  // TearDown: no process, cgroup, directory or mount of the cell is left on the host.
}

TEST_P(CellBackends, CtrlCCancelsTheCellAndLeavesNothing) {
  CellosProcess cellos(
      runArgs(writeDocument("long.yaml", doc("interrupted", sh("echo ready; sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("ready", 30s)) << cellos.err();
  cellos.signalGroup(SIGINT);  // what the terminal does on Ctrl-C
  EXPECT_EQ(cellos.wait(30s), 128 + SIGKILL) << cellos.err();
  EXPECT_NE(cellos.err().find("cancelling"), std::string::npos) << cellos.err();
  auto last = events().back();
  EXPECT_EQ(last["type"], "dev.cellos.events.cell.lifecycle.v1.destroyed");
  EXPECT_EQ(last["data"]["terminalState"], "forced");
}

TEST_P(CellBackends, AVmLauncherKilledMidCellIsReapedByTheNextStart) {
  CellosProcess cellos(
      runArgs(writeDocument("long.yaml", doc("orphan", sh("echo started; exec sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("started\n", 20s)) << cellos.err();
  pid_t agent = -1;
  for (pid_t child : childrenOf(cellos.pid())) {
    if (exeName(child) == "cellos-vmm-agent") agent = child;
  }
  ASSERT_GT(agent, 0);
  ASSERT_EQ(kill(agent, SIGKILL), 0);
  EXPECT_NE(cellos.wait(30s), 0) << "the run cannot succeed without its VM launcher";
  // What the killed launcher could not clean: its record and the cell's cgroups.
  EXPECT_TRUE(std::filesystem::exists(stateDir_ + "/vmm/orphan.json"));
  bool leftCgroup = false;
  vmm::CellCgroup orphanCgroup = vmm::CellCgroup::open("orphan");
  for (const auto& leaf : orphanCgroup.leaves()) {
    leftCgroup = leftCgroup || std::filesystem::exists(leaf);
  }
  EXPECT_TRUE(leftCgroup) << "nothing was left to reap: the test would prove nothing";

  // The next start of a VM launcher with the same state reaps it.
  auto next = run("hello.yaml", doc("after", {"/bin/true"}));
  EXPECT_EQ(next.status, 0) << next.err;
  EXPECT_FALSE(std::filesystem::exists(stateDir_ + "/vmm/orphan.json"));
  // TearDown: the residue check finds nothing.
}

// Whether any cgroup leaf of `cellId` exists.
bool cgroupExists(const std::string& cellId) {
  vmm::CellCgroup cgroup = vmm::CellCgroup::open(cellId);
  for (const auto& leaf : cgroup.leaves()) {
    if (std::filesystem::exists(leaf)) return true;
  }
  return false;
}

// Every launcher on the host shares the pool directory (the default, as `cellos run` uses it),
// and in it the claims of the cells each one runs.
std::string claimOf(const std::string& cellId) {
  return "/run/cellos/leases/cells/" + cellId + ".json";
}

// Lease files in the pool directory that nobody holds: what a killed launcher left and no later
// start removed.
std::vector<std::string> unheldLeases() {
  std::vector<std::string> unheld;
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator("/run/cellos/leases", ec)) {
    if (!entry.is_regular_file()) continue;
    int fd = open(entry.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) unheld.push_back(entry.path().filename().string());
    close(fd);
  }
  return unheld;
}

TEST_P(CellBackends, AKilledLaunchersCellIsReapedByALauncherOfAnotherStateDirButALiveOneIsNot) {
  // A run whose VM launcher is killed mid-cell (state directory: this test's).
  CellosProcess killed(
      runArgs(writeDocument("orphan.yaml", doc("orphan-x", sh("echo started; exec sleep 1000")))));
  ASSERT_TRUE(killed.waitForStdout("started\n", 30s)) << killed.err();
  pid_t agent = -1;
  for (pid_t child : childrenOf(killed.pid())) {
    if (exeName(child) == "cellos-vmm-agent") agent = child;
  }
  ASSERT_GT(agent, 0);
  ASSERT_EQ(kill(agent, SIGKILL), 0);
  EXPECT_NE(killed.wait(30s), 0);
  ASSERT_TRUE(cgroupExists("orphan-x")) << "nothing was left to reap: the test would prove nothing";
  ASSERT_TRUE(std::filesystem::exists(claimOf("orphan-x")));

  // A run that stays alive meanwhile, with a state directory of its own.
  std::string liveState = makeTempDir(), otherState = makeTempDir();
  writeFile(liveState + "/live.yaml", doc("survivor", sh("echo started; exec sleep 1000")));
  CellosProcess live({"run", liveState + "/live.yaml", "--state-dir", liveState, "--events",
                      liveState + "/events.jsonl"});
  ASSERT_TRUE(live.waitForStdout("started\n", 30s)) << live.err();
  std::vector<pid_t> survivors = vmm::CellCgroup::open("survivor").processes();
  ASSERT_FALSE(survivors.empty());
  nlohmann::json liveClaim = nlohmann::json::parse(readFile(claimOf("survivor")));
  std::string liveVeth = liveClaim["uplinkInterface"];
  ASSERT_TRUE(std::filesystem::exists("/sys/class/net/" + liveVeth)) << liveVeth;

  // A third run, with yet another state directory: its VM launcher's start reaps the killed
  // launcher's cell from the host-wide claim, and leaves the live one's alone.
  writeFile(otherState + "/next.yaml", doc("after-x", {"/bin/true"}));
  auto next = runCellos({"run", otherState + "/next.yaml", "--state-dir", otherState, "--events",
                         otherState + "/events.jsonl"});
  EXPECT_EQ(next.status, 0) << next.err;
  EXPECT_FALSE(cgroupExists("orphan-x")) << "the killed launcher's cgroups are still there";
  EXPECT_FALSE(std::filesystem::exists(claimOf("orphan-x")));
  EXPECT_FALSE(std::filesystem::exists(stateDir_ + "/vmm/orphan-x.json"))
      << "the killed launcher's own record goes with its claim";

  // Every process it had is still there (under gVisor the Sentry may have started more).
  std::vector<pid_t> still = vmm::CellCgroup::open("survivor").processes();
  EXPECT_TRUE(std::includes(still.begin(), still.end(), survivors.begin(), survivors.end()))
      << "the live cell was hit";
  EXPECT_TRUE(std::filesystem::exists(claimOf("survivor")));
  EXPECT_TRUE(std::filesystem::exists(liveState + "/vmm/survivor.json"));
  EXPECT_TRUE(std::filesystem::exists("/sys/class/net/" + liveVeth))
      << "the live cell's veth was removed";
  live.signalGroup(SIGINT);
  EXPECT_EQ(live.wait(30s), 128 + SIGKILL) << live.err();
  std::filesystem::remove_all(liveState);
  std::filesystem::remove_all(otherState);
  std::string unheld;
  for (const auto& name : unheldLeases()) unheld += name + " ";
  EXPECT_EQ(unheld, "") << "lease files nobody holds";
  // TearDown: nothing of either cell is left.
}

// What a `cellos run` killed by SIGKILL leaves (it cannot clean up): its runtime directory. Its
// daemons die with it (parent-death signal) and their teardown takes the cell; the next
// `cellos run` removes the directory, and its VM launcher reaps any cell left (the claims). A
// run alive meanwhile keeps its directory and its cell.
TEST_P(CellBackends, ARunKilledBySigkillLeavesNothingTheNextRunDoesNotClean) {
  auto runtimeDirs = []() {
    std::set<std::string> dirs;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator("/run", ec)) {
      if (entry.path().filename().string().rfind("cellos-run.", 0) == 0) {
        dirs.insert(entry.path().string());
      }
    }
    return dirs;
  };
  auto startedSince = [&](const std::set<std::string>& before) {
    std::vector<std::string> added;
    for (const std::string& dir : runtimeDirs()) {
      if (!before.count(dir)) added.push_back(dir);
    }
    return added;
  };
  // A run that stays alive throughout (its own state directory: a signer locks its chain).
  std::string liveState = makeTempDir();
  std::set<std::string> before = runtimeDirs();
  writeFile(liveState + "/live.yaml", doc("live-run", sh("echo started; exec sleep 1000")));
  CellosProcess live({"run", liveState + "/live.yaml", "--state-dir", liveState, "--events",
                      liveState + "/events.jsonl"});
  ASSERT_TRUE(live.waitForStdout("started\n", 30s)) << live.err();
  std::vector<std::string> theirs = startedSince(before);
  ASSERT_EQ(theirs.size(), 1u) << "the live run's runtime directory";

  // The run that is killed.
  before = runtimeDirs();
  CellosProcess cellos(runArgs(
      writeDocument("killed.yaml", doc("killed-run", sh("echo started; exec sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("started\n", 30s)) << cellos.err();
  std::vector<pid_t> daemons = childrenOf(cellos.pid());
  ASSERT_EQ(daemons.size(), 4u) << "signer, VM agent, DNS helper, broker";
  std::vector<std::string> mine = startedSince(before);
  ASSERT_EQ(mine.size(), 1u) << "this run's runtime directory";
  cellos.signal(SIGKILL);
  EXPECT_EQ(cellos.wait(30s), 128 + SIGKILL);

  // The daemons go by themselves, and with them the cell.
  auto alive = [&]() {
    int count = 0;
    for (pid_t pid : daemons) count += exeName(pid).rfind("cellos", 0) == 0;
    return count;
  };
  for (int i = 0; i < 300 && (alive() > 0 || cgroupExists("killed-run")); ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(alive(), 0) << "a daemon outlived its `cellos run`";
  EXPECT_FALSE(cgroupExists("killed-run")) << "the VM agent's teardown did not take the cell";
  ASSERT_TRUE(std::filesystem::exists(mine[0])) << "nothing was left: the test would prove nothing";

  // The next run removes the killed run's directory, and only that one.
  auto next = run("next.yaml", doc("after-kill", {"/bin/true"}));
  EXPECT_EQ(next.status, 0) << next.err;
  EXPECT_NE(next.err.find("removed " + mine[0] + ", left by a killed run"), std::string::npos)
      << next.err;
  EXPECT_FALSE(std::filesystem::exists(mine[0]));
  EXPECT_FALSE(std::filesystem::exists(claimOf("killed-run")));
  EXPECT_TRUE(std::filesystem::exists(theirs[0] + "/broker.sock"))
      << "the live run's runtime directory was removed";
  EXPECT_EQ(next.err.find(theirs[0]), std::string::npos) << next.err;
  EXPECT_TRUE(cgroupExists("live-run")) << "the live run's cell was hit";
  live.signalGroup(SIGINT);
  EXPECT_EQ(live.wait(30s), 128 + SIGKILL) << live.err();
  EXPECT_FALSE(std::filesystem::exists(theirs[0])) << "the live run cleans up after itself";
  std::filesystem::remove_all(liveState);
  // TearDown: no process, cgroup, interface, mount or runtime directory of any run remains.
}

// --- the network scope ---------------------------------------------------------------------------

TEST_P(CellBackends, DigGetsRefusedByTheDnsHelperAndTheQueryIsLogged) {
  auto result = run(
      "dig.yaml", doc("dig-refused",
                      sh("dig +tries=1 +time=3 @" + dnsAddress() + " example.com A; " +
                         "dig +tcp +tries=1 +time=3 @" + dnsAddress() + " example.org AAAA"),
                      "", "  authority:\n    dnsAuthority:\n      hostnameAllowlist: [a.test]\n"));
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("status: REFUSED"), std::string::npos) << result.out;
  std::set<std::string> seen;
  for (const auto& d : eventData("observability.v1.dns_query")) {
    EXPECT_EQ(d["decision"], "refused");
    EXPECT_EQ(d["reasonCode"], "not_in_allowlist");
    EXPECT_EQ(d["cellId"], "dig-refused");
    seen.insert(d["qname"].get<std::string>() + "/" + d["qtype"].get<std::string>() + "/" +
                d["transport"].get<std::string>());
  }
  EXPECT_EQ(seen, (std::set<std::string>{"example.com/A/udp", "example.org/AAAA/tcp"}));
}

const char* kEgressProbe = R"(import socket, errno
def tcp(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("10.214.0.1", port))
        return "ok:" + s.recv(16).decode().strip()
    except socket.timeout:
        return "blocked"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + str(e.errno)
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", ("10.214.0.1", port))
        return "sent"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + str(e.errno)
def dns_helper():
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (open("/etc/resolv.conf").read().split()[1], 53))
    return "answered" if s.recv(512)[:2] == b"\x12\x34" else "garbled"
print("allowed", tcp(8080))
print("denied", tcp(8081))
print("resolver", udp(53))
print("helper", dns_helper())
print(open("/etc/resolv.conf").read().strip())
)";

TEST_P(CellBackends, EgressReachesTheTestHostOnlyWhereARuleAllows) {
  UplinkHost host({8080, 8081}, {53});
  std::string authority =
      "  authority:\n"
      "    egressRules:\n"
      "      - {cidr: 10.214.0.0/24, port: 8080, protocol: tcp}\n"
      "    dnsAuthority:\n"
      "      hostnameAllowlist: [example.com]\n"
      "      resolvers:\n"
      "        - {resolverId: upstream, endpoint: \"10.214.0.1:53\", protocol: do53-udp}\n";
  auto result =
      run("net.yaml", doc("scoped", {"/usr/bin/python3", "-c", kEgressProbe}, "", authority),
          {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  // A guest's datagram to the resolver leaves the guest (its own kernel has no rule) and is
  // dropped on the forward path: the count at the test host below is the proof either way.
  std::string resolver = vm() ? "sent" : "blocked";
  EXPECT_EQ(result.out, "allowed ok:ok\ndenied blocked\nresolver " + resolver +
                            "\nhelper answered\nnameserver " + dnsAddress() + "\n");
  EXPECT_EQ(host.tcpAccepted(8080), 1);
  EXPECT_EQ(host.tcpAccepted(8081), 0) << "a port no rule allows was reached";
  // One datagram: the DNS child forwarding the allowed name (the test host never answers, so
  // the cell gets SERVFAIL); the workload's own datagram to the resolver was dropped.
  EXPECT_EQ(host.udpReceived(53), 1) << "the workload reached a declared resolver directly";

  auto scoped = eventData("network.v1.scoped");
  ASSERT_EQ(scoped.size(), 1u);
  EXPECT_EQ(scoped[0]["nftApplied"], true);
  EXPECT_EQ(scoped[0]["egressRuleCount"], 1);
  std::string cell = scoped[0]["cellAddress"], uplink = scoped[0]["uplinkAddress"];
  EXPECT_EQ(cell.rfind("10.213.", 0), 0u) << cell;
  EXPECT_EQ(uplink.substr(0, uplink.rfind('.')), cell.substr(0, cell.rfind('.')));
  EXPECT_EQ(std::string(scoped[0]["uplinkInterface"]).rfind("cellos", 0), 0u);
  EXPECT_TRUE(scoped[0]["setupTimingsMicros"].contains("nftables"));

  std::map<std::string, nlohmann::json> flows;
  for (const auto& flow : eventData("observability.v1.network_flow_decision")) {
    flows[flow["ruleId"]] = flow;
  }
  ASSERT_TRUE(flows.count("egress[0]")) << "one event per rule";
  EXPECT_EQ(flows["egress[0]"]["verdict"], "accept");
  // A guest's rules are matched where its packets arrive: on the forward path from its TAP.
  EXPECT_EQ(flows["egress[0]"]["rule"],
            std::string(vm() ? "iifname \"tap0\" " : "") + "ip daddr 10.214.0.0/24 tcp dport 8080");
  EXPECT_GE(flows["egress[0]"]["packets"].get<int>(), 1);
  EXPECT_EQ(flows["resolver:upstream"]["packets"], 1) << "the DNS child's forwarded query";
  EXPECT_EQ(flows["default-drop"]["verdict"], "drop");
  EXPECT_GE(flows["default-drop"]["packets"].get<int>(), 2) << "the SYN to 8081 and the datagram";
  EXPECT_EQ(flows["host-destination:v4"]["verdict"], "drop") << "the host is never a destination";
  EXPECT_EQ(flows["host-destination:v4"]["packets"], 0);
  if (vm()) {
    // The guest's query reaches the helper on the guest link (input), its flows the forward
    // path; the namespace's own output holds only the helper's rules.
    EXPECT_GE(flows["guest-dns:udp"]["packets"].get<int>(), 1) << "the query to the DNS helper";
    EXPECT_GE(flows["guest-masquerade"]["packets"].get<int>(), 1);
    EXPECT_EQ(flows.size(), 17u) << "6 output, 5 forward, 5 input rules and the masquerade";
  } else {
    EXPECT_GE(flows["loopback"]["packets"].get<int>(), 1) << "the query to the DNS helper";
    EXPECT_EQ(flows.size(), 10u) << "7 output rules and 3 input rules";
  }
  EXPECT_EQ(verify().status, 0);
  EXPECT_EQ(host.interfaces(), (std::vector<std::string>{"lo", "uplink0"}))
      << "the cell's veth outlived it";
}

// Issue 14: the host is never a destination, on either backend. The uplink namespace stands for
// the host and serves port 7000 on every address it has; a rule `cidr: 0.0.0.0/0` reaches none
// of them (the cell's uplink end, uplink0 as the host's eth0, an address on the host's lo), and
// still reaches the test host behind it.
const char* kHostProbe = R"(import socket, errno
def tcp(address):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((address, 7000))
        return "ok:" + s.recv(16).decode().strip()
    except socket.timeout:
        return "blocked"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + str(e.errno)
# The cell's own address (a UDP connect sends nothing); its uplink end is the one before it.
# A microvm guest has only its link's address: its cell's uplink end is in the pool's first
# /30 for this serial suite (and any pool address is a host destination).
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("10.214.0.1", 9))
mine = u.getsockname()[0].split(".")
uplink = ".".join(mine[:3] + [str(int(mine[3]) - 1)])
if mine[:2] == ["169", "254"]:
    uplink = "10.213.0.1"
print("uplinkEnd", tcp(uplink))
print("hostEth0", tcp("10.215.0.1"))
print("hostLo", tcp("10.216.0.1"))
print("control", tcp("10.214.0.1"))
)";

TEST_P(CellBackends, AWideCidrRuleReachesNoAddressOfTheHost) {
  UplinkHost host({7000}, {}, "10.214.0.1", {7000});
  std::string authority =
      "  authority:\n"
      "    egressRules:\n"
      "      - {cidr: 0.0.0.0/0, port: 7000, protocol: tcp}\n";
  auto result =
      run("wide.yaml", doc("host-wide", {"/usr/bin/python3", "-c", kHostProbe}, "", authority),
          {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(result.out, "uplinkEnd blocked\nhostEth0 blocked\nhostLo blocked\ncontrol ok:ok\n");
  EXPECT_EQ(host.hostTcpAccepted(7000), 0) << "a service on the host saw a cell's connection";
  EXPECT_EQ(host.tcpAccepted(7000), 1) << "the test host behind the host was not reached";
  std::map<std::string, nlohmann::json> flows;
  for (const auto& flow : eventData("observability.v1.network_flow_decision")) {
    flows[flow["ruleId"]] = flow;
  }
  EXPECT_GE(flows["host-destination:v4"]["packets"].get<int>(), 3);
}

// The host's default backend (host policy defaultBackend) runs a document that names none.
class HostDefaultBackend : public CellE2E {};

TEST_F(HostDefaultBackend, ADocumentNamingNoBackendRunsOnThePolicysDefault) {
  if (auto why = missingBackend("gvisor"); !why.empty()) GTEST_SKIP() << why;
  std::string policy = writeDocument("policy.yaml", "defaultBackend: gvisor\n");
  std::string cell = cellDocument("defaulted", {"/bin/uname", "-r"});
  auto result = run("defaulted.yaml", cell, {"--policy", policy});
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "4.4.0\n") << "gVisor's Sentry reports its own kernel version";
  auto accepted = eventData("admission.v1.accepted");
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0]["backend"], "gvisor");

  // The control: without the policy the same document runs on linux (the host's own kernel).
  auto linux = run("defaulted-linux.yaml", cell);
  ASSERT_EQ(linux.status, 0) << linux.err;
  EXPECT_NE(linux.out, "4.4.0\n");
}

// Issue 17: `cellos run --backend` chooses the backend of a document that names none, as
// docker's --runtime does, over the policy's default and within its allowedBackends.
TEST_F(HostDefaultBackend, RunBackendChoosesTheBackendOfADocumentThatNamesNone) {
  if (auto why = missingBackend("gvisor"); !why.empty()) GTEST_SKIP() << why;
  std::string cell = cellDocument("chosen", {"/bin/uname", "-r"});
  auto gvisor = run("chosen.yaml", cell, {"--backend", "gvisor"});
  ASSERT_EQ(gvisor.status, 0) << gvisor.err;
  EXPECT_EQ(gvisor.out, "4.4.0\n") << "gVisor's Sentry reports its own kernel version";
  auto accepted = eventData("admission.v1.accepted");
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0]["backend"], "gvisor");

  // Over the host policy's default: linux, the host's own kernel.
  std::string policy = writeDocument("policy.yaml", "defaultBackend: gvisor\n");
  auto linux = run("chosen-linux.yaml", cell, {"--policy", policy, "--backend", "linux"});
  ASSERT_EQ(linux.status, 0) << linux.err;
  EXPECT_NE(linux.out, "4.4.0\n");

  // Within the host policy: a backend it does not allow is refused at admission (exit 2).
  std::string linuxOnly = writeDocument("linux-only.yaml", "allowedBackends: [linux]\n");
  auto refused = run("refused.yaml", cell, {"--policy", linuxOnly, "--backend", "gvisor"});
  EXPECT_EQ(refused.status, 2) << refused.err;
  EXPECT_NE(refused.err.find("refused at admission"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("spec.placement.backend"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.out, "");
}

// A document that names another backend than --backend is a usage error, before anything runs.
TEST_F(HostDefaultBackend, RunBackendAgainstADocumentThatNamesAnotherIsAUsageError) {
  std::string cell = cellDocument("named", {"/bin/true"}, "", "  placement: {backend: linux}\n");
  auto disagree = run("disagree.yaml", cell, {"--backend", "gvisor"});
  EXPECT_EQ(disagree.status, 2);
  EXPECT_NE(disagree.err.find("cellos run: --backend gvisor, but " + stateDir_ +
                              "/disagree.yaml names backend linux (spec.placement.backend); drop "
                              "one of them"),
            std::string::npos)
      << disagree.err;
  auto unknown = run("unknown.yaml", cellDocument("unknown", {"/bin/true"}), {"--backend", "kata"});
  EXPECT_EQ(unknown.status, 2);
  EXPECT_NE(unknown.err.find("cellos run: --backend: \"kata\" is not one of linux, gvisor, "
                             "microvm, firecracker"),
            std::string::npos)
      << unknown.err;
  auto reserved =
      run("reserved.yaml", cellDocument("reserved", {"/bin/true"}), {"--backend", "firecracker"});
  EXPECT_EQ(reserved.status, 2);
  EXPECT_NE(reserved.err.find("backend firecracker is not available in this version"),
            std::string::npos)
      << reserved.err;
  EXPECT_TRUE(hostResidue().empty());
}

// --- kill -9 of a microVM cell's processes
// ---------------------------------------------------------

// What only a VM cell has: its VMM. The suite runs for microvm alone.
class VmCells : public CellBackends {
 protected:
  // Every descendant of `root` (by /proc/<pid>/stat's ppid).
  static std::vector<pid_t> descendantsOf(pid_t root) {
    std::map<pid_t, pid_t> parent;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string stat = readFile(entry.path().string() + "/stat");
      size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(stat.substr(close + 2));
      char state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      parent[std::stoi(name)] = ppid;
    }
    std::vector<pid_t> out;
    for (const auto& [pid, ppid] : parent) {
      for (pid_t p = ppid; p > 1; p = parent.count(p) ? parent[p] : 0) {
        if (p == root) {
          out.push_back(pid);
          break;
        }
      }
    }
    return out;
  }
  pid_t descendantNamed(pid_t root, const std::string& exe) {
    for (pid_t pid : descendantsOf(root)) {
      if (exeName(pid) == exe) return pid;
    }
    return -1;
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, VmCells, ::testing::Values("microvm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// QEMU killed mid-cell: the supervisor sees its VMM gone before the guest's exit status, the
// cell fails with that said, everything is torn down and the log verifies.
TEST_P(VmCells, AVmmKilledMidCellFailsTheCellAndLeavesNothing) {
  CellosProcess cellos(
      runArgs(writeDocument("vmm.yaml", doc("vmm-killed", sh("echo started; exec sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("started\n", 60s)) << cellos.err();
  pid_t qemu = descendantNamed(cellos.pid(), "qemu-system-x86_64");
  ASSERT_GT(qemu, 0) << "no QEMU under the run";
  ASSERT_EQ(kill(qemu, SIGKILL), 0);
  int status = cellos.wait(60s);
  EXPECT_NE(status, 0) << cellos.err();
  EXPECT_NE(status, -1) << "the run did not end";
  EXPECT_NE(cellos.err().find("the VMM"), std::string::npos) << cellos.err();
  auto destroyed = eventData("lifecycle.v1.destroyed");
  ASSERT_EQ(destroyed.size(), 1u);
  EXPECT_EQ(destroyed[0]["residue"]["clean"], true) << destroyed[0].dump();
  EXPECT_EQ(verify().status, 0);
  // TearDown: no process, cgroup, interface, mount or runtime directory of the run remains.
}

// The started event records what the guest boots: the accelerator (here TCG, as a fallback,
// with the reason) and the digests the spawner checked, which are the build's boot manifest's
// and the root image manifest's.
TEST_P(VmCells, TheStartedEventRecordsTheAcceleratorAndTheBootDigests) {
  auto result = run("boot.yaml", doc("boot-facts", {"/bin/true"}));
  ASSERT_EQ(result.status, 0) << result.err;
  auto started = eventData("lifecycle.v1.started");
  ASSERT_EQ(started.size(), 1u);
  const auto& guest = started[0]["guest"];
  auto manifest = nlohmann::json::parse(readFile(binDir() + "/../vm/boot-manifest.json"));
  EXPECT_EQ(guest["kernelSha256"], manifest["kernel"]["sha256"]) << guest.dump();
  EXPECT_EQ(guest["initramfsSha256"], manifest["initramfs"]["sha256"]) << guest.dump();
  std::string root = guest.value("rootImageSha256", "");
  bool listed = false;
  for (const auto& entry : std::filesystem::directory_iterator("/var/lib/cellos/vm/images")) {
    std::string name = entry.path().filename();
    if (name.rfind("root-", 0) != 0 || entry.path().extension() != ".json") continue;
    listed = listed || nlohmann::json::parse(readFile(entry.path()))["sha256"] == root;
  }
  EXPECT_TRUE(listed) << "no root image manifest has " << root;
  // No memoryMaxBytes: the guest gets the default 256 MiB of RAM, and the host's cgroup around
  // the VMM twice that plus the VMM's 192 MiB.
  EXPECT_EQ(guest["guestMemoryMiB"], 256) << guest.dump();
  EXPECT_EQ(guest["vcpus"], 1);
  EXPECT_EQ(guest["hostMemoryMaxBytes"], (2 * 256 + 192) * 1048576ull);
  std::string accel = guest.value("accelerator", "");
  EXPECT_TRUE(accel == "kvm" || accel == "tcg") << guest.dump();
  EXPECT_EQ(guest["acceleratorFallback"].is_boolean(), true) << guest.dump();
  if (guest["acceleratorFallback"] == true) {
    EXPECT_EQ(accel, "tcg");
    EXPECT_FALSE(guest.value("fallbackReason", "").empty()) << guest.dump();
  }
}

// The broker killed mid-cell: the VM launcher tears the VM cell down by itself (the broker's
// capability is gone), `cellos run` stops the other daemons, and the log, which ends without
// the run's destroyed event, still verifies.
TEST_P(VmCells, ABrokerKilledMidCellLeavesNothingAndTheLogVerifies) {
  CellosProcess cellos(runArgs(
      writeDocument("broker.yaml", doc("broker-killed", sh("echo started; exec sleep 1000")))));
  ASSERT_TRUE(cellos.waitForStdout("started\n", 60s)) << cellos.err();
  pid_t broker = -1;
  for (pid_t pid : childrenOf(cellos.pid())) {
    if (exeName(pid) == "cellos-broker") broker = pid;
  }
  ASSERT_GT(broker, 0);
  ASSERT_GT(descendantNamed(cellos.pid(), "qemu-system-x86_64"), 0);
  ASSERT_EQ(kill(broker, SIGKILL), 0);
  int status = cellos.wait(60s);
  EXPECT_NE(status, 0) << cellos.err();
  EXPECT_NE(status, -1) << "the run did not end";
  for (int i = 0; i < 100 && cgroupExists("broker-killed"); ++i) std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(cgroupExists("broker-killed")) << "the VM launcher did not take the cell down";
  EXPECT_TRUE(eventData("lifecycle.v1.destroyed").empty()) << "the broker writes it; it died";
  EXPECT_FALSE(eventData("lifecycle.v1.started").empty());
  EXPECT_EQ(verify().status, 0);
}

}  // namespace
}  // namespace cellos::testing
