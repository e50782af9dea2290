// End-to-end break attempts: a hostile workload in a real cell (`cellos run`, each backend)
// tries what a cell must never do, and reports each errno. Every call is made for real inside
// the cell; nothing is mocked.

#include "tests/e2e/cell_e2e.h"

#include <sys/syscall.h>

#include <map>
#include <sstream>

namespace cellos::testing {
namespace {

class CellIsolation : public CellE2E, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    CellE2E::SetUp();
    if (IsSkipped()) return;
    if (auto why = missingBackend(GetParam()); !why.empty()) GTEST_SKIP() << why;
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, CellIsolation, ::testing::Values("linux", "gvisor", "microvm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// "name=value" lines into a map.
std::map<std::string, std::string> keyed(const std::string& out) {
  std::map<std::string, std::string> values;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return values;
}

std::string breakAttempts() {
  auto nr = [](long n) { return std::to_string(n); };
  return R"(import ctypes, errno, fcntl, os, socket, subprocess, termios
libc = ctypes.CDLL(None, use_errno=True)
def call(name, f):
    ctypes.set_errno(0)
    r = f()
    print(name + "=" + ("ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")))
def tryopen(name, path, flags):
    try:
        os.close(os.open(path, flags, 0o644))
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
call("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
call("umount", lambda: libc.umount2(b"/proc", 2))
sleeper = subprocess.Popen(["/bin/sleep", "30"])
call("ptrace-attach", lambda: libc.ptrace(16, sleeper.pid, None, None))
def isolated(name, f):
    # In a child, so a call that succeeds (inside gVisor's Sentry) changes nothing for the rest.
    pid = os.fork()
    if pid == 0:
        ctypes.set_errno(0)
        r = f()
        os._exit(0 if r >= 0 else ctypes.get_errno())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(name + "=" + ("ok" if code == 0 else errno.errorcode.get(code, "?")))
isolated("unshare-user", lambda: libc.unshare(0x10000000))
isolated("unshare-net", lambda: libc.unshare(0x40000000))
isolated("clone-user", lambda: libc.syscall()" +
         nr(SYS_clone) + R"(, 0x10000000 | 17, 0, 0, 0, 0))
null = os.open("/dev/null", os.O_RDONLY)
call("finit_module", lambda: libc.syscall()" +
         nr(SYS_finit_module) + R"(, null, b"", 0))
call("init_module", lambda: libc.syscall()" +
         nr(SYS_init_module) + R"(, 0, 0, b""))
call("bpf", lambda: libc.syscall()" +
         nr(SYS_bpf) + R"(, 0, 0, 0))
call("perf_event_open", lambda: libc.syscall()" +
         nr(SYS_perf_event_open) + R"(, 0, 0, -1, -1, 0))
call("keyctl", lambda: libc.syscall()" +
         nr(SYS_keyctl) + R"(, 0, 0, 0, 0, 0))
call("kexec_load", lambda: libc.syscall()" +
         nr(SYS_kexec_load) + R"(, 0, 0, 0, 0))
call("setns", lambda: libc.setns(null, 0))
isolated("chroot", lambda: libc.chroot(b"/tmp"))
call("sethostname", lambda: libc.sethostname(b"evil", 4))
print("procs=" + ",".join(str(p) for p in sorted(int(p) for p in os.listdir("/proc") if p.isdigit())))
tryopen("read-root", "/root", os.O_RDONLY)
tryopen("read-home", "/home", os.O_RDONLY)
tryopen("read-shadow", "/etc/shadow", os.O_RDONLY)
tryopen("write-root", "/x", os.O_WRONLY | os.O_CREAT)
tryopen("write-usr", "/usr/x", os.O_WRONLY | os.O_CREAT)
tryopen("write-etc", "/etc/x", os.O_WRONLY | os.O_CREAT)
tryopen("tty", "/dev/tty", os.O_RDWR)
tryopen("ptmx", "/dev/ptmx", os.O_RDWR)
tryopen("console", "/dev/console", os.O_RDWR)
tryopen("kvm", "/dev/kvm", os.O_RDWR)
print("isatty=" + "".join("1" if os.isatty(i) else "0" for i in range(3)))
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("tiocsti=ok")
except OSError as e:
    print("tiocsti=" + errno.errorcode[e.errno])
tryopen("write-workspace", "/workspace/ok", os.O_WRONLY | os.O_CREAT)
def sock(name, family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
sock("socket-vsock", 40, socket.SOCK_STREAM)
sock("socket-vsock-dgram", 40, socket.SOCK_DGRAM)
sock("socket-packet", 17, socket.SOCK_RAW)
sock("socket-unix", socket.AF_UNIX, socket.SOCK_STREAM)
sock("socket-inet", socket.AF_INET, socket.SOCK_STREAM)
sock("socket-inet6", socket.AF_INET6, socket.SOCK_DGRAM)
sleeper.kill()
)";
}

TEST_P(CellIsolation, BreakAttemptsInsideARealCellAllFail) {
  // The program rides in the environment: argv is bounded (it must fit a kernel command line).
  auto result = run(
      "break.yaml",
      cellDocument("breakout", {"/usr/bin/python3", "-c", "import os; exec(os.environ['PROBE'])"},
                   "    env: {PROBE: " + nlohmann::json(breakAttempts()).dump() + "}\n",
                   "  placement: {backend: " + GetParam() + "}\n"));
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = keyed(result.out);
  std::map<std::string, std::string> expected;
  if (GetParam() == "linux") {
    // Every call that could reach the host kernel's privileged parts: EPERM from the workload
    // filter; the files and terminals of the host: absent or refused.
    for (const char* call : {"mount", "umount", "ptrace-attach", "unshare-user", "unshare-net",
                             "clone-user", "finit_module", "init_module", "bpf", "perf_event_open",
                             "keyctl", "kexec_load", "setns", "chroot", "sethostname"}) {
      expected[call] = "EPERM";
    }
    expected["procs"] = "1,2,3";  // only init, the workload and its child: no host process
    for (const char* write : {"write-root", "write-usr", "write-etc"}) expected[write] = "EROFS";
    expected["tty"] = expected["ptmx"] = "ENOENT";
  } else if (GetParam() == "microvm") {
    // In a microVM the workload is root of its own guest kernel with every capability dropped
    // (guest-init/workload.cpp), chrooted into the guest's cell root in its own pid and mount
    // namespaces: what needs a capability is refused by the guest kernel (EPERM), a user
    // namespace too (the kernel refuses one to a chrooted process), and the guest's /dev has no
    // terminal. None of it could reach the host anyway: the guest's only ways out are its
    // virtio devices (the read-only disk, the channel, the TAP).
    for (const char* call :
         {"mount", "umount", "unshare-user", "unshare-net", "clone-user", "finit_module",
          "init_module", "bpf", "kexec_load", "chroot", "sethostname"}) {
      expected[call] = "EPERM";
    }
    expected["ptrace-attach"] = "ok";        // its own child, in its own guest
    expected["perf_event_open"] = "EFAULT";  // no attributes: refused before any permission
    expected["keyctl"] = "EINVAL";
    expected["setns"] = "EINVAL";  // /dev/null is no namespace
    expected["procs"] = "1,2,3";   // the workload init, the workload, its sleeper
    for (const char* write : {"write-root", "write-usr", "write-etc"}) expected[write] = "EROFS";
    expected["tty"] = expected["ptmx"] = "ENOENT";
  } else {
    // Under gVisor the workload talks to the Sentry, never the host kernel: the Sentry refuses
    // mounts, modules, bpf, kexec, keys, perf, hostname changes and namespace joins itself, and
    // emulates what stays inside the sandbox (tracing a sibling, a user namespace, a pty from
    // its own devpts), so those succeed without touching the host.
    expected = {{"mount", "EPERM"},
                {"umount", "EPERM"},
                {"ptrace-attach", "ok"},
                {"unshare-user", "ok"},
                {"unshare-net", "EPERM"},
                {"clone-user", "ok"},
                {"finit_module", "EPERM"},
                {"init_module", "EPERM"},
                {"bpf", "EPERM"},
                {"perf_event_open", "ENODEV"},
                {"keyctl", "EACCES"},
                {"kexec_load", "EPERM"},
                {"setns", "ENOTSUP"},
                {"chroot", "EPERM"},
                {"sethostname", "EPERM"},
                {"tty", "EIO"},
                {"ptmx", "ok"}};
    // The workload (1), its sleeper (2) and the exited child of the successful clone-user (6):
    // the sandbox's own pids, no host process.
    expected["procs"] = "1,2,6";
    // The read-only view refuses writes by permission first (the workload's unprivileged id).
    for (const char* write : {"write-root", "write-usr", "write-etc"}) expected[write] = "EACCES";
  }
  // No backend's workload sees the host's /dev/kvm (a microvm's VMM may open it; its guest
  // has none).
  expected["read-root"] = expected["read-home"] = expected["console"] = expected["kvm"] = "ENOENT";
  // Cell root is not host root; a VM's image holds only what any host user may read, so the
  // shadow file is not there at all.
  expected["read-shadow"] = GetParam() == "microvm" ? "ENOENT" : "EACCES";
  expected["isatty"] = "000";
  expected["tiocsti"] = "ENOTTY";
  expected["write-workspace"] = "ok";  // the control: its own scratch space is writable
  // vsock ignores network namespaces and nftables (on a VM host it reaches the hypervisor's
  // side), a packet socket sees raw frames: refused as by a kernel without them. The families a
  // cell uses still work.
  expected["socket-vsock"] = expected["socket-vsock-dgram"] = "EAFNOSUPPORT";
  // (In a guest, a packet socket needs CAP_NET_RAW, which the workload does not have.)
  expected["socket-packet"] = GetParam() == "microvm" ? "EPERM" : "EAFNOSUPPORT";
  expected["socket-unix"] = expected["socket-inet"] = expected["socket-inet6"] = "ok";
  for (const auto& [key, value] : expected) {
    EXPECT_EQ(got[key], value) << key << "\n" << result.out;
  }
  EXPECT_EQ(got.size(), expected.size()) << result.out;
}

// The cell's pid 1 and its cgroups, as the workload reads them: nothing of the host's paths,
// the agent's arguments or the host's cgroup tree.
TEST_P(CellIsolation, PidOneAndTheCgroupsShowNothingOfTheHost) {
  const char* probe = R"(import os, errno
def show(name, path, mode="r"):
    try:
        with open(path, "rb") as f:
            data = f.read()
        print(name + "=" + data.decode(errors="replace").replace("\0", "|").replace("\n", ";"))
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
show("cmdline", "/proc/1/cmdline")
show("comm", "/proc/1/comm")
show("environ", "/proc/1/environ")
try:
    print("exe=" + os.readlink("/proc/1/exe"))
except OSError as e:
    print("exe=" + errno.errorcode[e.errno])
show("cgroup", "/proc/self/cgroup")
show("init-cgroup", "/proc/1/cgroup")
show("mountinfo", "/proc/self/mountinfo")
)";
  auto result = run("pid1.yaml", cellDocument("pid-one", {"/usr/bin/python3", "-c", probe}, "",
                                              "  placement: {backend: " + GetParam() + "}\n"));
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  // None of what the VM agent was started with: its binary, the runtime directory of this run,
  // the state directory, the images directory under it.
  for (const std::string& host : {std::string("cellos-vmm-agent"), std::string("/run/cellos-run."),
                                  stateDir_, stateDir_ + "/images", binDir()}) {
    EXPECT_EQ(result.out.find(host), std::string::npos) << host << " shows in\n" << result.out;
  }
  EXPECT_EQ(result.out.find("/cellos/"), std::string::npos) << "the host's cgroup tree\n"
                                                            << result.out;
  auto got = keyed(result.out);
  if (GetParam() == "linux") {
    EXPECT_EQ(got["cmdline"], "cellos-init|");
    EXPECT_EQ(got["comm"], "cellos-init;");
    // The init is host root: its environment and executable need ptrace access to it.
    EXPECT_EQ(got["environ"], "EACCES");
    EXPECT_EQ(got["exe"], "EACCES");
    // The root of the cell's own cgroup namespace, in every hierarchy.
    for (const char* key : {"cgroup", "init-cgroup"}) {
      std::istringstream lines(got[key]);
      int count = 0;
      for (std::string line; std::getline(lines, line, ';'); ++count) {
        EXPECT_EQ(line.substr(line.rfind(':')), ":/") << key << ": " << got[key];
      }
      EXPECT_GE(count, 1) << key;
    }
  } else if (GetParam() == "microvm") {
    // pid 1 is the workload init of the guest (the guest init's child, not a program of the
    // host), with its capabilities: the workload, with none, may not read its environment or
    // executable. Its cgroup is the guest's own.
    EXPECT_EQ(got["cmdline"], "/init|") << got["cmdline"];
    EXPECT_EQ(got["environ"], "EACCES");
    EXPECT_EQ(got["exe"], "EACCES");
    EXPECT_EQ(got["cgroup"].rfind("0::/", 0), 0u) << got["cgroup"];
  } else {
    // Under gVisor pid 1 is the workload itself, in the Sentry's own pid namespace: its own
    // command line and environment. The Sentry mounts no cgroupfs and reports no cgroup.
    EXPECT_EQ(got["cmdline"].rfind("/usr/bin/python3|-c|", 0), 0u) << got["cmdline"];
    EXPECT_EQ(got["comm"], "python3;");
    EXPECT_EQ(got["environ"], "HOME=/|");
    EXPECT_EQ(got["cgroup"], "");
  }
}

}  // namespace
}  // namespace cellos::testing
