// End-to-end break attempts: a hostile workload in a real cell (`cellos run`, linux backend)
// tries what a cell must never do, and reports each errno. Every call is made for real inside
// the cell; nothing is mocked.

#include "tests/e2e/cell_e2e.h"

#include <sys/syscall.h>

#include <map>
#include <sstream>

namespace cellos::testing {
namespace {

class CellIsolation : public CellE2E {};

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
  return R"(import ctypes, errno, fcntl, os, subprocess, termios
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
call("unshare-user", lambda: libc.unshare(0x10000000))
call("unshare-net", lambda: libc.unshare(0x40000000))
call("clone-user", lambda: libc.syscall()" +
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
call("chroot", lambda: libc.chroot(b"/tmp"))
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
print("isatty=" + "".join("1" if os.isatty(i) else "0" for i in range(3)))
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("tiocsti=ok")
except OSError as e:
    print("tiocsti=" + errno.errorcode[e.errno])
tryopen("write-workspace", "/workspace/ok", os.O_WRONLY | os.O_CREAT)
sleeper.kill()
)";
}

TEST_F(CellIsolation, BreakAttemptsInsideARealCellAllFail) {
  // The program rides in the environment: argv is bounded (it must fit a kernel command line).
  auto result = run(
      "break.yaml",
      cellDocument("breakout", {"/usr/bin/python3", "-c", "import os; exec(os.environ['PROBE'])"},
                   "    env: {PROBE: " + nlohmann::json(breakAttempts()).dump() + "}\n"));
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = keyed(result.out);
  for (const char* call : {"mount", "umount", "ptrace-attach", "unshare-user", "unshare-net",
                           "clone-user", "finit_module", "init_module", "bpf", "perf_event_open",
                           "keyctl", "kexec_load", "setns", "chroot", "sethostname"}) {
    EXPECT_EQ(got[call], "EPERM") << call << "\n" << result.out;
  }
  EXPECT_EQ(got["procs"], "1,2,3") << "only init, the workload and its child: no host process";
  EXPECT_EQ(got["read-root"], "ENOENT");
  EXPECT_EQ(got["read-home"], "ENOENT");
  EXPECT_EQ(got["read-shadow"], "EACCES") << "cell root is not host root";
  EXPECT_EQ(got["write-root"], "EROFS");
  EXPECT_EQ(got["write-usr"], "EROFS");
  EXPECT_EQ(got["write-etc"], "EROFS");
  EXPECT_EQ(got["tty"], "ENOENT");
  EXPECT_EQ(got["ptmx"], "ENOENT");
  EXPECT_EQ(got["console"], "ENOENT");
  EXPECT_EQ(got["isatty"], "000");
  EXPECT_EQ(got["tiocsti"], "ENOTTY");
  EXPECT_EQ(got["write-workspace"], "ok") << "the control: its own scratch space is writable";
}

}  // namespace
}  // namespace cellos::testing
