// The seccomp profile of every cellos process, tested by running it (as Firecracker tests its
// filters): a syscall outside a profile kills the process with SIGSYS, and the work the process
// really does once serving still runs under its profile.
//
// Death tests install a profile in a child and make one forbidden call through syscall(2), with
// arguments chosen so that the call would fail harmlessly were the profile to allow it (a missing
// path, an invalid command): these tests run as root, and a broken profile must not be able to
// mount, load a module or unload a crash kernel. Happy-path tests fork a child that sets up in
// the daemon's order (open what it needs, kj::setupAsyncIo(), then installSeccomp) and then does
// the daemon's work; a SIGSYS there means the profile lacks a syscall the work needs (dmesg shows
// `audit: type=1326 ... syscall=N`).

#include "broker/seccomp_profile.h"
#include "core/dns_policy.h"
#include "core/dns_wire.h"
#include "core/signing.h"
#include "core/uuid.h"
#include "core/verifiability.h"
#include "dns-helper/child.h"
#include "dns-helper/seccomp_profile.h"
#include "event-signer/event_chain.h"
#include "event-signer/key_store.h"
#include "event-signer/seccomp_profile.h"
#include "ipc/dns.capnp.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"
#include "privsep/seccomp.h"
#include "privsep/seccomp_compiler.h"
#include "vmm-agent/seccomp_profile.h"

#include <arpa/inet.h>
#include <capnp/message.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <kj/async-io.h>
#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace cellos {
namespace {

using privsep::SeccompProfile;

// ---------------------------------------------------------------------------------------------
// Forbidden calls. Each is made raw, with arguments that make it fail harmlessly if allowed.

constexpr const char* kNowhere = "/nonexistent/cellos-seccomp-test";

struct Syscall {
  std::string_view name;  // also the test-name suffix
  long (*call)();
};

const Syscall kCalls[] = {
    {"execve",
     +[]() -> long {
       char* const none[] = {nullptr};
       return syscall(SYS_execve, kNowhere, none, none);
     }},
    {"ptrace", +[]() -> long { return syscall(SYS_ptrace, PTRACE_PEEKDATA, -1, 0, 0); }},
    {"mount", +[]() -> long { return syscall(SYS_mount, "none", kNowhere, "tmpfs", 0, nullptr); }},
    {"unshare_newuser", +[]() -> long { return syscall(SYS_unshare, CLONE_NEWUSER); }},
    // -1000 is no special keyring id: EINVAL.
    {"keyctl", +[]() -> long { return syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, -1000, 0); }},
    {"bpf", +[]() -> long { return syscall(SYS_bpf, -1, nullptr, 0); }},
    {"socket_inet", +[]() -> long { return syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0); }},
    {"open", +[]() -> long { return syscall(SYS_open, "/dev/null", O_RDONLY | O_CLOEXEC); }},
    {"openat",
     +[]() -> long { return syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC); }},
    // More segments than KEXEC_SEGMENT_MAX (16) and an unknown architecture: EINVAL, never the
    // "no segments = unload the crash kernel" form.
    {"kexec_load",
     +[]() -> long { return syscall(SYS_kexec_load, 0, 1000, nullptr, 0x7fff0000UL); }},
    // A zero-length image is refused (ENOEXEC) before anything is loaded.
    {"init_module", +[]() -> long { return syscall(SYS_init_module, nullptr, 0, ""); }},
    {"finit_module", +[]() -> long { return syscall(SYS_finit_module, -1, "", 0); }},
    {"delete_module",
     +[]() -> long { return syscall(SYS_delete_module, "cellos_no_such_module", O_NONBLOCK); }},
    {"perf_event_open",
     +[]() -> long { return syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0); }},
    {"userfaultfd", +[]() -> long { return syscall(SYS_userfaultfd, ~0); }},
    {"open_by_handle_at",
     +[]() -> long { return syscall(SYS_open_by_handle_at, -1, nullptr, O_RDONLY); }},
    {"chroot", +[]() -> long { return syscall(SYS_chroot, kNowhere); }},
    // The filter looks only at the request (argument 1), so an invalid fd exercises the same
    // rule as fd 0 would, without pushing a byte into a real terminal if the rule were wrong.
    {"ioctl_TIOCSTI",
     +[]() -> long {
       char byte = 'x';
       return syscall(SYS_ioctl, -1, TIOCSTI, &byte);
     }},
    {"ioctl_FIONBIO",
     +[]() -> long {
       int one = 1;
       return syscall(SYS_ioctl, -1, FIONBIO, &one);
     }},
    // The other half of each class of forbidden call (issue 9: exec, ptrace, mount, namespace
    // creation, keys, socket families), each with arguments that fail harmlessly if allowed.
    {"execveat",
     +[]() -> long {
       char* const none[] = {nullptr};
       return syscall(SYS_execveat, -1, kNowhere, none, none, 0);
     }},
    {"process_vm_readv",
     +[]() -> long {
       return syscall(SYS_process_vm_readv, 0x7ffffff0, nullptr, 0, nullptr, 0, 0);
     }},
    // A filesystem name no kernel has: ENODEV, nothing is created.
    {"fsopen", +[]() -> long { return syscall(SYS_fsopen, "cellos-no-such-fs", 0); }},
    {"setns", +[]() -> long { return syscall(SYS_setns, -1, CLONE_NEWNET); }},
    // CLONE_NEWUSER with CLONE_FS is refused (EINVAL) before any process is made.
    {"clone_newuser",
     +[]() -> long { return syscall(SYS_clone, CLONE_NEWUSER | CLONE_FS | SIGCHLD, 0, 0, 0, 0); }},
    {"add_key", +[]() -> long { return syscall(SYS_add_key, nullptr, nullptr, nullptr, 0, 0); }},
    {"request_key",
     +[]() -> long { return syscall(SYS_request_key, nullptr, nullptr, nullptr, 0); }},
    {"socket_unix", +[]() -> long { return syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0); }},
    {"socket_netlink",
     +[]() -> long { return syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE); }},
    {"socket_packet", +[]() -> long { return syscall(SYS_socket, AF_PACKET, SOCK_DGRAM, 0); }},
    // Unknown flags: EINVAL before any file is read.
    {"kexec_file_load",
     +[]() -> long { return syscall(SYS_kexec_file_load, -1, -1, 0, nullptr, 0x80000000UL); }},
    // Without LINUX_REBOOT_MAGIC1 the kernel answers EINVAL and does nothing.
    {"reboot", +[]() -> long { return syscall(SYS_reboot, 0, 0, 0, nullptr); }},
    {"swapon", +[]() -> long { return syscall(SYS_swapon, kNowhere, 0); }},
    {"clock_settime", +[]() -> long { return syscall(SYS_clock_settime, -1, nullptr); }},
    // Zero entries: EINVAL before anything is set up.
    {"io_uring_setup", +[]() -> long { return syscall(SYS_io_uring_setup, 0, nullptr); }},
};

const Syscall kGetpid{"getpid", +[]() -> long { return syscall(SYS_getpid); }};

const Syscall& callNamed(std::string_view name) {
  for (const Syscall& c : kCalls) {
    if (c.name == name) return c;
  }
  std::abort();  // a typo in the tables below
}

// Every process, and the calls its profile must not allow.
struct Process {
  std::string_view name;
  const SeccompProfile* profile;
  std::vector<std::string_view> forbidden;
};

const std::vector<Process>& processes() {
  // Per class: exec (execve, execveat), tracing (ptrace, process_vm_readv), mounting (mount,
  // fsopen), namespaces (unshare, clone with a namespace flag, setns), keys (keyctl, add_key,
  // request_key), bpf, socket families, opening files, the kernel itself (kexec, modules,
  // perf), and terminal injection.
  // clang-format off: one process a block, its forbidden calls packed by class.
  static const std::vector<Process> all = {
      {"broker",
       &broker::kBrokerProfile,
       {"execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "mount",
        "fsopen",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "socket_unix",
        "socket_netlink",
        "socket_packet",
        "open",
        "openat",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "ioctl_TIOCSTI"}},
      // The signer writes its chain head with openat; the legacy open(2) is still outside.
      {"signer",
       &signer::kSignerProfile,
       {"execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "mount",
        "fsopen",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "socket_inet",
        "socket_unix",
        "socket_netlink",
        "socket_packet",
        "open",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "ioctl_TIOCSTI"}},
      {"vmm_agent",
       &vmm::kAgentProfile,
       {"execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "mount",
        "fsopen",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "socket_unix",
        "socket_netlink",
        "socket_packet",
        "open",
        "openat",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "ioctl_TIOCSTI"}},
      // Builds cells (mount, unshare, exec are its job); workloads inherit this filter. The
      // dangerous calls (ptrace, bpf, keys, modules, kexec, ...) answer EPERM instead of killing,
      // so a workload sees the documented EPERM through the stacked workload filter
      // (tests/integration/test_linux_cell.cpp, LauncherProfileAnswersEpermToDangerousCalls);
      // anything in neither list still kills.
      {"vmm_launcher", &vmm::kLauncherProfile, {"io_uring_setup"}},
      // Reads a hostile guest's frames: no exec, clone, mount, socket, tracing or kernel calls.
      {"vm_supervisor",
       &vmm::kVmSupervisorProfile,
       {"execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "mount",
        "fsopen",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "keyctl",
        "bpf",
        "socket_inet",
        "socket_unix",
        "socket_netlink",
        "socket_packet",
        "open",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "ioctl_TIOCSTI",
        "chroot",
        "io_uring_setup"}},
      // Execs its children and makes their sockets (AF_INET only); changing the filesystem view
      // is not its job.
      {"dns_spawner",
       &dns::kSpawnerProfile,
       {"chroot", "ptrace", "process_vm_readv", "mount", "fsopen", "unshare_newuser", "keyctl",
        "add_key", "request_key", "bpf", "socket_unix", "socket_netlink", "socket_packet", "open",
        "kexec_load", "init_module", "perf_event_open", "ioctl_TIOCSTI"}},
      // No ioctl at all: even the kj requests kill. Its upstream queries need AF_INET/AF_INET6
      // sockets; every other family kills.
      {"dns_child",
       &dns::kDnsChildProfile,
       {"execve",
        "execveat",
        "ptrace",
        "process_vm_readv",
        "mount",
        "fsopen",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "socket_unix",
        "socket_netlink",
        "socket_packet",
        "open",
        "openat",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "ioctl_FIONBIO"}},
  };
  // clang-format on
  return all;
}

const Process& processNamed(std::string_view name) {
  for (const Process& p : processes()) {
    if (p.name == name) return p;
  }
  std::abort();
}

void PrintTo(const Process& p, std::ostream* os) {
  *os << p.name;
}

constexpr int kSurvived = 42;

// Confines the calling process to `profile` and makes `call`. Only returns (by _exit) when the
// call was allowed, saying what it returned; write(2) and exit_group are in every profile.
[[noreturn]] void confineAndCall(const SeccompProfile& profile, const Syscall& call) {
  privsep::setNoNewPrivs();
  privsep::installSeccomp(profile);
  long rc = call.call();
  int error = errno;
  char line[160];
  int n = snprintf(line, sizeof(line), "%.*s returned %ld (errno %d) under %.*s\n",
                   int(call.name.size()), call.name.data(), rc, rc < 0 ? error : 0,
                   int(profile.name.size()), profile.name.data());
  size_t length = std::min(size_t(n), sizeof(line) - 1);
  if (write(STDERR_FILENO, line, length) < 0) _exit(kSurvived + 1);
  _exit(kSurvived);
}

// ---------------------------------------------------------------------------------------------
// Death tests: one per (process, forbidden call).

struct DeathCase {
  const Process* process;
  std::string_view call;
};

std::vector<DeathCase> deathCases() {
  std::vector<DeathCase> cases;
  for (const Process& p : processes()) {
    for (std::string_view call : p.forbidden) cases.push_back({&p, call});
  }
  return cases;
}

void PrintTo(const DeathCase& c, std::ostream* os) {
  *os << c.process->name << " " << c.call;
}

class ForbiddenSyscall : public testing::TestWithParam<DeathCase> {};

TEST_P(ForbiddenSyscall, KillsWithSigsys) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const DeathCase& c = GetParam();
  EXPECT_EXIT(confineAndCall(*c.process->profile, callNamed(c.call)),
              testing::KilledBySignal(SIGSYS), "")
      << c.process->name << " must die on " << c.call;
}

INSTANTIATE_TEST_SUITE_P(Profiles, ForbiddenSyscall, testing::ValuesIn(deathCases()),
                         [](const testing::TestParamInfo<DeathCase>& info) {
                           return std::string(info.param.process->name) + "_" +
                                  std::string(info.param.call);
                         });

// The control for the death tests: the same path with an allowed call survives, so the SIGSYS
// above comes from the forbidden call, not from installing the profile or leaving afterwards.
class ProfileControl : public testing::TestWithParam<Process> {};

TEST_P(ProfileControl, AllowedCallSurvives) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(confineAndCall(*GetParam().profile, kGetpid), testing::ExitedWithCode(kSurvived),
              "getpid returned [0-9]+ \\(errno 0\\)");
}

INSTANTIATE_TEST_SUITE_P(Profiles, ProfileControl, testing::ValuesIn(processes()),
                         [](const testing::TestParamInfo<Process>& info) {
                           return std::string(info.param.name);
                         });

// kj makes every fd it wraps non-blocking and close-on-exec by ioctl; that, and only that, is
// what the ioctl rule of the kj-based daemons lets through (TIOCSTI kills: see the table above).
[[noreturn]] void kjIoctlsUnder(const SeccompProfile& profile) {
  int fds[2];
  if (pipe2(fds, 0) < 0) _exit(2);
  privsep::setNoNewPrivs();
  privsep::installSeccomp(profile);
  int one = 1;
  bool ok = ioctl(fds[0], FIONBIO, &one) == 0 && ioctl(fds[0], FIOCLEX) == 0;
  _exit(ok ? 0 : 1);
}

class KjIoctls : public testing::TestWithParam<Process> {};

TEST_P(KjIoctls, FionbioAndFioclexSurvive) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(kjIoctlsUnder(*GetParam().profile), testing::ExitedWithCode(0), "");
}

INSTANTIATE_TEST_SUITE_P(Profiles, KjIoctls,
                         testing::Values(processNamed("broker"), processNamed("signer"),
                                         processNamed("vmm_agent"), processNamed("dns_spawner")),
                         [](const testing::TestParamInfo<Process>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------------
// Installing and counting.

// A profile naming a syscall libseccomp does not know must stop the build (the generator runs
// compileProfile on every profile) with an exception that names it.
TEST(SeccompCompile, UnknownSyscallThrowsNamingIt) {
  static constexpr std::string_view kAllowTypo[] = {"read", "write", "no_such_syscall",
                                                    "exit_group"};
  static constexpr std::string_view kAllow[] = {"read", "write", "exit_group"};
  static constexpr uint64_t kValues[] = {1};
  static const privsep::ArgRule kArgTypo[] = {{"no_such_syscall", 0, kValues}};
  static const privsep::ErrnoRule kDenyTypo[] = {{"no_such_syscall", EPERM}};

  auto compileError = [](const SeccompProfile& profile) -> std::string {
    try {
      privsep::compileProfile(profile);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "compiled";
  };
  EXPECT_EQ(compileError({"typo-in-allow", kAllowTypo}),
            "seccomp profile typo-in-allow: unknown syscall no_such_syscall");
  EXPECT_EQ(compileError({"typo-in-allowIf", kAllow, {}, kArgTypo}),
            "seccomp profile typo-in-allowIf: unknown syscall no_such_syscall");
  EXPECT_EQ(compileError({"typo-in-deny", kAllow, kDenyTypo}),
            "seccomp profile typo-in-deny: unknown syscall no_such_syscall");
  // The control: the same profile without the typo compiles.
  EXPECT_EQ(compileError({"no-typo", kAllow}), "compiled");
}

// installSeccomp loads only what the build compiled: a profile whose filter this program does
// not carry (no daemon registered it, or its daemon's filters are not linked here), or
// one that is not what the build compiled under that name, is refused, having loaded nothing
// (afterwards a call outside the profile still works and the process has no filter).
[[noreturn]] void installRefuses(const SeccompProfile& profile) {
  try {
    privsep::installSeccomp(profile);
  } catch (const std::runtime_error& e) {
    fprintf(stderr, "%s\n", e.what());
    int fd = socket(AF_INET, SOCK_DGRAM, 0);  // outside every profile below
    _exit(fd >= 0 && privsep::seccompMode(getpid()) == 0 ? 0 : 1);
  }
  _exit(2);
}

TEST(SeccompInstall, RefusesProfilesTheBuildDidNotCompile) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  static constexpr std::string_view kAllow[] = {"read", "write", "exit_group"};
  const SeccompProfile notCompiled{"not-compiled", kAllow};
  // Named like a real profile, but not the profile the build compiled under that name.
  const SeccompProfile impostor{broker::kBrokerProfile.name, kAllow};
  EXPECT_EXIT(installRefuses(notCompiled), testing::ExitedWithCode(0),
              "seccomp profile not-compiled was not compiled at build time");
  EXPECT_EXIT(installRefuses(impostor), testing::ExitedWithCode(0),
              "seccomp profile broker differs from the filter compiled at build time");
}

// The loader sets no_new_privs itself (as libseccomp's seccomp_load did) and, with TSYNC, puts
// a thread that already existed under the filter too.
[[noreturn]] void installWithASecondThread() {
  int wake[2];
  if (pipe2(wake, O_CLOEXEC) < 0) _exit(3);
  pid_t tid = 0;
  std::thread sleeper([&]() {
    tid = gettid();
    char byte;
    if (read(wake[0], &byte, 1) < 0) _exit(4);
  });
  while (__atomic_load_n(&tid, __ATOMIC_SEQ_CST) == 0) sched_yield();
  int before = privsep::seccompMode(tid);
  // The launcher's profile: it still allows reading /proc and prctl, to look afterwards.
  privsep::installSeccomp(vmm::kLauncherProfile);
  int after = privsep::seccompMode(tid);
  int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (write(wake[1], "x", 1) != 1) _exit(5);
  sleeper.join();
  fprintf(stderr, "thread seccomp %d -> %d, no_new_privs %d\n", before, after, nnp);
  _exit(before == 0 && after == 2 && nnp == 1 ? 0 : 1);
}

TEST(SeccompInstall, FiltersEveryThreadAndSetsNoNewPrivs) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(installWithASecondThread(), testing::ExitedWithCode(0),
              "thread seccomp 0 -> 2, no_new_privs 1");
}

TEST(SeccompInstall, AllowedSyscallCountCountsDistinctNames) {
  static constexpr std::string_view kAllow[] = {"read", "write", "read", "close", "write"};
  static constexpr uint64_t kValues[] = {FIONBIO};
  static const privsep::ArgRule kArgs[] = {{"ioctl", 1, kValues}, {"write", 0, kValues}};
  static const privsep::ErrnoRule kDeny[] = {{"openat", EPERM}};
  // read, write, close, ioctl: duplicates and an allowIf of an allowed name count once; a
  // call answered with an errno is not allowed.
  EXPECT_EQ(privsep::allowedSyscallCount({"count", kAllow, kDeny, kArgs}), 4u);
  EXPECT_EQ(privsep::allowedSyscallCount({"empty", {}}), 0u);
  // A group's lines count as the profile's own: epoll_wait, epoll_ctl, signalfd4 are new, its
  // ioctl is already counted.
  static const privsep::SeccompGroup* const kGroups[] = {&privsep::kKjEventLoop};
  EXPECT_EQ(privsep::allowedSyscallCount({"grouped", kAllow, kDeny, kArgs, kGroups}), 7u);

  for (const Process& p : processes()) {
    size_t count = privsep::allowedSyscallCount(*p.profile);
    size_t lines = p.profile->allow.size() + p.profile->allowIf.size();
    for (const privsep::SeccompGroup* group : p.profile->groups) {
      lines += group->allow.size() + group->allowIf.size();
    }
    EXPECT_GT(count, 0u) << p.name;
    EXPECT_LE(count, lines) << p.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Happy paths: the real work, in a forked child, under the process's profile.

// How a child leaves. The daemons return from main (exit(): atexit handlers and static
// destructors run under the profile too); the DNS child and the launcher use _exit.
enum class Leave { kExit, kUnderscoreExit };

std::string describeStatus(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    std::string text = "killed by signal " + std::to_string(WTERMSIG(status));
    if (WTERMSIG(status) == SIGSYS) {
      text +=
          " (SIGSYS: the work made a syscall its profile lacks; dmesg shows it as "
          "`audit: type=1326 ... syscall=N`)";
    }
    return text;
  }
  return "status " + std::to_string(status);
}

int waitFor(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

// Runs `work` in a forked child and returns its wait status. An exception becomes exit code 99
// with its message on stderr; a child still running after 30 s dies of SIGALRM.
int runInChild(const std::function<int()>& work, Leave leave) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    alarm(30);
    int code = 99;
    try {
      code = work();
    } catch (const kj::Exception& e) {
      fprintf(stderr, "child: %s\n", e.getDescription().cStr());
    } catch (const std::exception& e) {
      fprintf(stderr, "child: %s\n", e.what());
    }
    if (leave == Leave::kExit) std::exit(code);
    _exit(code);
  }
  return waitFor(pid);
}

#define EXPECT_EXITED_ZERO(status) \
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describeStatus(status)

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/cellos-seccomp-XXXXXX";  // mkdtemp: mode 0700
    KJ_SYSCALL(mkdtemp(pattern) != nullptr ? 0 : -1, "mkdtemp");
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// Reads until EOF or `timeoutMs` without data.
std::string readAll(int fd, int timeoutMs = 10'000) {
  std::string out;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeoutMs) <= 0) return out;
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return out;
    out.append(buffer, size_t(n));
  }
}

// -- The kj-based daemons: broker, vmm-agent, dns-spawner (and the signer's serving half).

// The DnsProxy interface is the smallest in ipc/: info() answers the serving process's pid.
class PidProxy final : public ipc::DnsProxy::Server {
 protected:
  kj::Promise<void> info(InfoContext context) override {
    context.getResults().setPid(uint32_t(getpid()));
    return kj::READY_NOW;
  }
};

struct EventLoopWork {
  const SeccompProfile* profile;
  std::string process;
  unsigned listenerFds;  // fds per message its listener accepts (its daemon's LinkOptions)
  bool passesFds;        // its helper links carry fds (the cell's netns)
  bool appendsLog;       // broker: append + fsync the event log
  bool makesUuids;       // broker: event ids from OpenSSL's RNG
  bool spawnsChildren;   // dns-spawner: fork + execveat by fd, reaped through the event loop
};

// Set up as the daemons do (open, listen, connect, setupAsyncIo, then seccomp), then serve: an
// RPC peer checked by SO_PEERCRED, a framed message with an fd across a socketpair, a timer, a
// log line, and each process's own extra. Returns 0 when everything answered as expected.
int serveUnderProfile(const EventLoopWork& w, const std::string& dir) {
  privsep::setupLogging("seccomp-test-" + w.process, "info");
  int raw;
  kj::AutoCloseFd log, exe, netns;
  if (w.appendsLog) {
    std::string path = dir + "/events.jsonl";
    KJ_SYSCALL(raw = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640), path);
    log = kj::AutoCloseFd(raw);
  }
  if (w.spawnsChildren) {
    KJ_SYSCALL(raw = open("/bin/true", O_PATH | O_CLOEXEC));
    exe = kj::AutoCloseFd(raw);
  }
  if (w.passesFds) {
    KJ_SYSCALL(raw = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    netns = kj::AutoCloseFd(raw);
  }
  auto listenFd = ipc::listenUnix({dir + "/rpc.sock", 0600});
  auto clientFd = ipc::connectUnix(dir + "/rpc.sock");
  int pair[2];
  KJ_SYSCALL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair));
  kj::AutoCloseFd left(pair[0]), right(pair[1]);
  if (w.makesUuids) core::newUuidV7();  // OpenSSL reads its configuration now (as the broker)
  uid_t self = getuid();  // the daemons look their peers' accounts up before seccomp too

  privsep::setNoNewPrivs();
  privsep::captureShutdownSignals();
  if (w.spawnsChildren) kj::UnixEventPort::captureChildExit();
  auto io = kj::setupAsyncIo();
  privsep::installSeccomp(*w.profile);

  auto& ws = io.waitScope;
  auto& timer = io.provider->getTimer();

  // 1. RPC: accept, check the peer, serve a call.
  ipc::RpcListener listener(io, kj::mv(listenFd), "rpc.sock", ipc::PeerPolicy{{self}, {}},
                            ipc::LinkOptions{.maxFdsPerMessage = w.listenerFds},
                            [](const ipc::PeerCredentials&) -> capnp::Capability::Client {
                              return kj::heap<PidProxy>();
                            });
  auto accepting = listener.run().eagerlyEvaluate(
      [](kj::Exception&& e) { spdlog::error("listener: {}", e.getDescription().cStr()); });
  {
    ipc::RpcLink link(*io.lowLevelProvider, kj::mv(clientFd),
                      ipc::LinkOptions{.maxFdsPerMessage = w.listenerFds},
                      capnp::rpc::twoparty::Side::CLIENT, nullptr);
    auto call = link.bootstrap<ipc::DnsProxy>().infoRequest().send().then(
        [](capnp::Response<ipc::DnsProxy::InfoResults>&& r) { return r.getPid(); });
    uint32_t pid = ipc::withTimeout(timer, 10 * kj::SECONDS, "info()", kj::mv(call)).wait(ws);
    KJ_REQUIRE(pid == uint32_t(getpid()), "RPC answered the wrong pid", pid);
    KJ_REQUIRE(listener.connectionCount() == 1, listener.connectionCount());
  }

  // 2. A framed message (with the netns fd where the links carry one), as on the helper links.
  //    Wrapping here, under the profile, is what kj does for every accepted connection:
  //    ioctl(FIONBIO) and ioctl(FIOCLEX).
  auto sender = io.lowLevelProvider->wrapUnixSocketFd(kj::mv(left));
  auto receiver = io.lowLevelProvider->wrapUnixSocketFd(kj::mv(right));
  capnp::MallocMessageBuilder message;
  message.initRoot<ipc::DnsChildMessage>().setReady(uint32_t(getpid()));
  kj::AutoCloseFd fdSpace[1];
  if (w.passesFds) {
    int fds[] = {netns.get()};
    capnp::writeMessage(*sender, kj::arrayPtr(fds, 1), message).wait(ws);
    auto received = capnp::readMessage(*receiver, kj::arrayPtr(fdSpace, 1)).wait(ws);
    KJ_REQUIRE(received.reader->getRoot<ipc::DnsChildMessage>().getReady() == uint32_t(getpid()));
    KJ_REQUIRE(received.fds.size() == 1 && received.fds[0].get() >= 0, "the fd did not arrive");
  } else {
    capnp::writeMessage(*sender, message).wait(ws);
    auto received = capnp::readMessage(*receiver).wait(ws);
    KJ_REQUIRE(received->getRoot<ipc::DnsChildMessage>().getReady() == uint32_t(getpid()));
  }

  // 3. A timer (the broker's phase timeouts, the spawner's readiness deadline).
  kj::TimePoint before = timer.now();
  timer.afterDelay(20 * kj::MILLISECONDS).wait(ws);
  KJ_REQUIRE(timer.now() - before >= 20 * kj::MILLISECONDS, "timer fired early");

  // 4. The log line.
  spdlog::info("{}: event loop served under its seccomp profile", w.process);

  // 5. Each process's own work.
  if (w.makesUuids) {
    KJ_REQUIRE(core::newUuidV7().size() == 36);
  }
  if (w.appendsLog) {
    std::string line = R"({"event":"seccomp-test"})"
                       "\n";
    ssize_t n;
    KJ_SYSCALL(n = write(log, line.data(), line.size()));
    KJ_REQUIRE(size_t(n) == line.size());
    KJ_SYSCALL(fsync(log));  // as broker/jsonl_log.cpp: fsync per batch, never fdatasync
  }
  if (w.spawnsChildren) {
    pid_t child;
    KJ_SYSCALL(child = fork());
    if (child == 0) {
      // As the spawner's spawnChild: clear the signal mask kj set, exec our binary by fd.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      const char* argv[] = {"true", nullptr};
      const char* envp[] = {nullptr};
      syscall(SYS_execveat, exe.get(), "", argv, envp, AT_EMPTY_PATH);
      _exit(126);
    }
    kj::Maybe<pid_t> childPid = child;
    int status = io.unixEventPort.onChildExit(childPid).wait(ws);
    KJ_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exec'd child failed", status);
  }
  return 0;
}

void expectServesUnderProfile(const EventLoopWork& work) {
  TempDir dir;
  int status = runInChild([&]() { return serveUnderProfile(work, dir.path); }, Leave::kExit);
  EXPECT_EXITED_ZERO(status);
  if (work.appendsLog) {
    std::ifstream in(dir.path + "/events.jsonl");
    std::string line;
    EXPECT_TRUE(std::getline(in, line) && line == R"({"event":"seccomp-test"})");
  }
}

TEST(SeccompHappyPath, BrokerServesUnderItsProfile) {
  expectServesUnderProfile({&broker::kBrokerProfile, "broker", /*listenerFds=*/0,
                            /*passesFds=*/true, /*appendsLog=*/true, /*makesUuids=*/true,
                            /*spawnsChildren=*/false});
}

TEST(SeccompHappyPath, VmmAgentServesUnderItsProfile) {
  expectServesUnderProfile({&vmm::kAgentProfile, "vmm-agent", 1, true, false, false, false});
}

TEST(SeccompHappyPath, DnsSpawnerServesAndSpawnsUnderItsProfile) {
  expectServesUnderProfile({&dns::kSpawnerProfile, "dns-spawner", 1, true, false, false, true});
}

// -- The signer: sign a batch (OpenSSL Ed25519, durable chain head) under its profile.

std::string unsignedEvent(int n) {
  nlohmann::json event = {
      {"specversion", "1.0"},
      {"id", "0190a6e2-7c1d-7b3a-9f00-00000000000" + std::to_string(n)},
      {"source", "cellos://seccomp-test/broker"},
      {"type", "dev.cellos.lifecycle.v1.started"},
      {"subject", "cell/seccomp-test"},
      {"time", "2026-01-02T03:04:05.123456Z"},
      {"datacontenttype", "application/json"},
      {"data", {{"cellId", "seccomp-test"}, {"n", n}}},
  };
  return event.dump();
}

int signUnderProfile(const std::string& stateDir, int out) {
  privsep::setupLogging("seccomp-test-signer", "info");
  privsep::setNoNewPrivs();
  // The daemon's order: keys and chain are loaded (files opened) before seccomp.
  signer::KeyStore keys(stateDir, "");
  signer::EventChain chain(stateDir, keys.current());
  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  privsep::installSeccomp(signer::kSignerProfile);

  auto signedEvents = chain.signBatch({unsignedEvent(1), unsignedEvent(2)});
  KJ_REQUIRE(signedEvents.size() == 2, signedEvents.size());
  KJ_REQUIRE(chain.head().nextSequence == 2, chain.head().nextSequence);
  for (const std::string& event : signedEvents) {
    std::string line = event + "\n";
    ssize_t n;
    KJ_SYSCALL(n = write(out, line.data(), line.size()));
    KJ_REQUIRE(size_t(n) == line.size());
  }
  spdlog::info("signed {} events", signedEvents.size());
  return 0;
}

TEST(SeccompHappyPath, SignerSignsBatchUnderItsProfile) {
  TempDir dir;
  int pipeFds[2];
  ASSERT_EQ(pipe2(pipeFds, O_CLOEXEC), 0);
  kj::AutoCloseFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  int status =
      runInChild([&]() { return signUnderProfile(dir.path, writeEnd.get()); }, Leave::kExit);
  writeEnd = nullptr;
  EXPECT_EXITED_ZERO(status);

  // Verify independently of the child: the two events chain from genesis and their signatures
  // verify under the keyset the signer published.
  std::vector<nlohmann::json> events;
  std::istringstream lines(readAll(readEnd.get()));
  for (std::string line; std::getline(lines, line);) events.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(events.size(), 2u);

  std::ifstream keysetFile(dir.path + "/keyset.json");
  std::string keysetText((std::istreambuf_iterator<char>(keysetFile)), {});
  std::string error;
  auto keyset = core::parseKeyset(keysetText, &error);
  ASSERT_TRUE(keyset.has_value()) << error;
  std::string prev = core::genesisLink();
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].value("sequence", ""), core::formatSequence(i));
    EXPECT_EQ(events[i].value("cellosprev", ""), prev);
    EXPECT_EQ(core::verifyEventSignature(events[i], *keyset), std::nullopt) << i;
    prev = core::chainLink(events[i].value("dssematerial", ""));
  }
  std::ifstream headFile(dir.path + "/chain-head.json");
  auto head = nlohmann::json::parse(headFile);
  EXPECT_EQ(head.at("nextSequence").get<uint64_t>(), 2u);
  EXPECT_EQ(head.at("prevLink").get<std::string>(), prev);
}

// -- The DNS child.

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

std::optional<core::DnsResponse> receiveResponse(int fd, int timeoutMs = 10'000) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, timeoutMs) != 1) return std::nullopt;
  uint8_t buffer[4096];
  ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
  if (n <= 0) return std::nullopt;
  auto parsed = core::parseResponse(std::span<const uint8_t>(buffer, size_t(n)));
  if (!std::holds_alternative<core::DnsResponse>(parsed)) return std::nullopt;
  return std::get<core::DnsResponse>(parsed);
}

// Under both filters, stacked as in a real child (the spawner's is inherited across exec):
// receive one query, decide it, answer it.
int answerOneQuery(int udp) {
  privsep::setNoNewPrivs();
  privsep::installSeccomp(dns::kSpawnerProfile);
  privsep::installSeccomp(dns::kDnsChildProfile);
  core::DnsPolicyRules rules{{"allowed.example"}, {}};

  pollfd p{udp, POLLIN, 0};
  if (poll(&p, 1, 10'000) != 1) return 3;
  uint8_t packet[4096];
  sockaddr_storage from{};
  socklen_t fromLen = sizeof(from);
  ssize_t n =
      recvfrom(udp, packet, sizeof(packet), 0, reinterpret_cast<sockaddr*>(&from), &fromLen);
  if (n <= 0) return 4;
  std::span<const uint8_t> bytes(packet, size_t(n));
  auto parsed = core::parseQuery(bytes);
  if (!std::holds_alternative<core::DnsQuery>(parsed)) return 5;
  auto& query = std::get<core::DnsQuery>(parsed);
  auto verdict = core::decideQuery(rules, query.question);
  if (verdict.decision != core::DnsDecision::kRefused) return 6;
  auto response = core::buildErrorResponse(query, bytes, core::DnsRcode::kRefused);
  if (sendto(udp, response.data(), response.size(), 0, reinterpret_cast<sockaddr*>(&from),
             fromLen) != ssize_t(response.size())) {
    return 7;
  }
  return 0;
}

TEST(SeccompHappyPath, DnsChildAnswersUnderStackedProfiles) {
  // Both sockets exist before the profiles, as the child binds before installing its own.
  int raw = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(raw, 0);
  kj::AutoCloseFd server(raw);
  sockaddr_in addr = loopback(0);
  ASSERT_EQ(bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  raw = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(raw, 0);
  kj::AutoCloseFd client(raw);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  auto query = core::buildQuery(0x5ec0, "forbidden.example", core::kDnsTypeA);
  ASSERT_FALSE(query.empty());
  ASSERT_EQ(send(client, query.data(), query.size(), 0), ssize_t(query.size()));
  int status = runInChild([&]() { return answerOneQuery(server.get()); }, Leave::kUnderscoreExit);
  EXPECT_EXITED_ZERO(status);

  auto response = receiveResponse(client.get());
  ASSERT_TRUE(response.has_value()) << "no parseable response";
  EXPECT_EQ(response->id, 0x5ec0);
  EXPECT_EQ(response->rcode, core::DnsRcode::kRefused);
  EXPECT_EQ(response->question.name, "forbidden.example");
}

// The real dns::runChild(), forked under the spawner's profile as the spawner starts it: it
// reads its configuration, enters a network namespace this test made, binds port 53 there,
// drops to nobody, installs its own profile, and serves UDP and TCP until its channel closes.
struct CellNetwork {
  kj::AutoCloseFd netns, udp, tcp;
  kj::AutoCloseFd upstream, spoofer;  // a fake resolver and an off-path sender, both UDP
  std::string error;
};

// Made on a short-lived thread: a network namespace belongs to a thread, so the test process
// itself never leaves the host's. Sockets keep the namespace they were made in.
CellNetwork makeCellNetwork() {
  CellNetwork cell;
  std::thread([&cell]() {
    if (unshare(CLONE_NEWNET) < 0) {
      cell.error = std::string("unshare(CLONE_NEWNET): ") + strerror(errno);
      return;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
        (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
      cell.error = std::string("bringing lo up: ") + strerror(errno);
    }
    if (s >= 0) close(s);
    cell.netns = kj::AutoCloseFd(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    cell.udp = kj::AutoCloseFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    cell.tcp = kj::AutoCloseFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    cell.upstream = kj::AutoCloseFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    cell.spoofer = kj::AutoCloseFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  }).join();
  if (cell.error.empty() && (cell.netns.get() < 0 || cell.udp.get() < 0 || cell.tcp.get() < 0)) {
    cell.error = "cannot open the namespace or its sockets";
  }
  return cell;
}

// The child's audit records as text, whether they come one to a datagram or in batches.
struct AuditText {
  std::string qname, transport, decision, reason;
};

class AuditReader {
 public:
  explicit AuditReader(int channel) : channel_(channel) {}
  std::optional<AuditText> next() {
    while (pending_.empty()) {
      pollfd p{channel_, POLLIN, 0};
      if (poll(&p, 1, 10'000) != 1) return std::nullopt;
      std::vector<capnp::word> buffer(64 * 1024 / sizeof(capnp::word));
      ssize_t n = recv(channel_, buffer.data(), buffer.size() * sizeof(capnp::word), 0);
      if (n <= 0 || n % sizeof(capnp::word) != 0) return std::nullopt;
      capnp::FlatArrayMessageReader reader(
          kj::arrayPtr(buffer.data(), size_t(n) / sizeof(capnp::word)));
      auto message = reader.getRoot<ipc::DnsChildMessage>();
      if (message.isQuery()) {
        add(message.getQuery());
      } else if (message.isBatch()) {
        for (auto record : message.getBatch()) add(record);
      } else {
        return std::nullopt;
      }
    }
    AuditText out = pending_.front();
    pending_.pop_front();
    return out;
  }

 private:
  void add(ipc::DnsQueryRecord::Reader r) {
    pending_.push_back({r.getQname(), r.getTransport(), r.getDecision(), r.getReasonCode()});
  }
  int channel_;
  std::deque<AuditText> pending_;
};

// An answer to `query` (a packet as the fake resolver received it): its id and question, one
// A record for the question name (a pointer to it) with `address`.
std::vector<uint8_t> answerTo(std::span<const uint8_t> query, uint16_t id,
                              std::array<uint8_t, 4> address) {
  auto parsed = core::parseQuery(query);
  if (!std::holds_alternative<core::DnsQuery>(parsed)) return {};
  std::vector<uint8_t> out(query.begin(),
                           query.begin() + long(std::get<core::DnsQuery>(parsed).questionEnd));
  out[0] = uint8_t(id >> 8);
  out[1] = uint8_t(id);
  out[2] = 0x81;             // QR, RD
  out[3] = 0x80;             // RA, NOERROR
  out[6] = 0, out[7] = 1;    // ancount 1
  out[10] = 0, out[11] = 0;  // arcount 0
  const uint8_t record[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
  out.insert(out.end(), std::begin(record), std::end(record));
  out.insert(out.end(), address.begin(), address.end());
  return out;
}

TEST(SeccompHappyPath, RealDnsChildServesUnderStackedProfiles) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: a network namespace, setns, port 53";
  CellNetwork cell = makeCellNetwork();
  ASSERT_EQ(cell.error, "");
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  kj::AutoCloseFd channel(pair[0]), theirs(pair[1]);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(30);
    try {
      // What the spawner process is when it forks a child: no_new_privs, its own profile.
      privsep::setNoNewPrivs();
      privsep::installSeccomp(dns::kSpawnerProfile);
      // Move both above 4 first so neither dup2 closes the other (as spawnChild does).
      int netns = fcntl(cell.netns, F_DUPFD, 10);
      int chan = fcntl(theirs, F_DUPFD, 10);
      if (netns < 0 || chan < 0 || dup2(netns, dns::kChildNetnsFd) < 0 ||
          dup2(chan, dns::kChildChannelFd) < 0) {
        _exit(97);
      }
      // Exec closes everything else in the real child (spawnChild closes fds 5..1023 and the
      // rest are CLOEXEC). Here nothing execs, so close them by hand: above all our copy of the
      // spawner's end of the channel, whose closing is the child's signal to stop.
      for (int fd = 5; fd < 1024; ++fd) close(fd);
      _exit(dns::runChild());
    } catch (const kj::Exception& e) {
      fprintf(stderr, "child: %s\n", e.getDescription().cStr());
    } catch (const std::exception& e) {
      fprintf(stderr, "child: %s\n", e.what());
    }
    _exit(98);
  }
  theirs = nullptr;
  // From here on the child must be reaped on every path, including a failed assertion.
  bool reaped = false;
  KJ_DEFER(if (!reaped) {
    kill(pid, SIGKILL);
    waitFor(pid);
  });

  // The spawner's configuration message.
  capnp::MallocMessageBuilder configMessage;
  auto config = configMessage.initRoot<ipc::DnsChildConfig>();
  auto policy = config.initPolicy();
  policy.setCellId("seccomp-test");
  policy.initHostnameAllowlist(1).set(0, "allowed.example");
  policy.setBindAddress("127.0.0.1");
  // The fake resolver on the namespace's loopback; silence means SERVFAIL after 300 ms.
  sockaddr_in upstreamAddress = loopback(5300), spooferAddress = loopback(5301);
  ASSERT_EQ(
      bind(cell.upstream, reinterpret_cast<sockaddr*>(&upstreamAddress), sizeof(upstreamAddress)),
      0);
  ASSERT_EQ(
      bind(cell.spoofer, reinterpret_cast<sockaddr*>(&spooferAddress), sizeof(spooferAddress)), 0);
  auto resolver = policy.initResolvers(1)[0];
  resolver.setResolverId("fake");
  resolver.setAddress("127.0.0.1");
  resolver.setPort(5300);
  resolver.setProtocol("do53-udp");
  policy.setUpstreamTimeoutMs(300);
  config.setUid(65534);
  config.setGid(65534);
  config.setMemoryLimitBytes(512ull << 20);
  auto words = capnp::messageToFlatArray(configMessage);
  ASSERT_EQ(send(channel, words.asBytes().begin(), words.asBytes().size(), MSG_NOSIGNAL),
            ssize_t(words.asBytes().size()));

  std::vector<capnp::word> buffer(64 * 1024 / sizeof(capnp::word));
  {
    pollfd p{channel, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10'000), 1) << "no ready message";
    ssize_t n = recv(channel, buffer.data(), buffer.size() * sizeof(capnp::word), 0);
    ASSERT_GT(n, 0) << "channel closed before ready: the child "
                    << (reaped = true, describeStatus(waitFor(pid)));
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(buffer.data(), size_t(n) / sizeof(capnp::word)));
    auto message = reader.getRoot<ipc::DnsChildMessage>();
    ASSERT_TRUE(message.isReady());
    EXPECT_EQ(message.getReady(), uint32_t(pid));
  }
  EXPECT_EQ(privsep::seccompMode(pid), 2);

  // UDP: a refused name, never forwarded; a permitted one, forwarded.
  sockaddr_in port53 = loopback(53);
  ASSERT_EQ(connect(cell.udp, reinterpret_cast<sockaddr*>(&port53), sizeof(port53)), 0);
  auto refused = core::buildQuery(0x1001, "forbidden.example", core::kDnsTypeA);
  ASSERT_EQ(send(cell.udp, refused.data(), refused.size(), 0), ssize_t(refused.size()));
  auto response = receiveResponse(cell.udp);
  ASSERT_TRUE(response.has_value()) << "no UDP response";
  EXPECT_EQ(response->id, 0x1001);
  EXPECT_EQ(response->rcode, core::DnsRcode::kRefused);
  auto permitted = core::buildQuery(0x1002, "allowed.example", core::kDnsTypeA);
  ASSERT_EQ(send(cell.udp, permitted.data(), permitted.size(), 0), ssize_t(permitted.size()));
  {
    // What the resolver sees: the same question under the child's own id, from its own port.
    pollfd p{cell.upstream, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10'000), 1) << "the child did not forward the permitted query";
    uint8_t forwarded[4096];
    sockaddr_in from{};
    socklen_t fromLength = sizeof(from);
    ssize_t n = recvfrom(cell.upstream, forwarded, sizeof(forwarded), 0,
                         reinterpret_cast<sockaddr*>(&from), &fromLength);
    ASSERT_GT(n, 0);
    std::span<const uint8_t> query(forwarded, size_t(n));
    auto parsed = core::parseQuery(query);
    ASSERT_TRUE(std::holds_alternative<core::DnsQuery>(parsed));
    EXPECT_EQ(std::get<core::DnsQuery>(parsed).question.name, "allowed.example");
    uint16_t id = std::get<core::DnsQuery>(parsed).id;
    auto* to = reinterpret_cast<sockaddr*>(&from);
    // Ignored: the right answer from another port, a wrong id, a wrong name.
    auto spoofed = answerTo(query, id, {192, 0, 2, 66});
    ASSERT_GT(sendto(cell.spoofer, spoofed.data(), spoofed.size(), 0, to, fromLength), 0);
    auto wrongId = answerTo(query, uint16_t(id ^ 1), {192, 0, 2, 67});
    ASSERT_GT(sendto(cell.upstream, wrongId.data(), wrongId.size(), 0, to, fromLength), 0);
    auto other = core::buildQuery(id, "other.example", core::kDnsTypeA);
    auto wrongName = answerTo(other, id, {192, 0, 2, 68});
    ASSERT_GT(sendto(cell.upstream, wrongName.data(), wrongName.size(), 0, to, fromLength), 0);
    auto right = answerTo(query, id, {192, 0, 2, 1});
    ASSERT_GT(sendto(cell.upstream, right.data(), right.size(), 0, to, fromLength), 0);
  }
  response = receiveResponse(cell.udp);
  ASSERT_TRUE(response.has_value()) << "no UDP response";
  EXPECT_EQ(response->id, 0x1002) << "not mapped back to the client's id";
  EXPECT_EQ(response->rcode, core::DnsRcode::kNoError);
  auto addresses = core::ipv4Answers(*response);
  ASSERT_EQ(addresses.size(), 1u);
  EXPECT_EQ(addresses[0], (std::array<uint8_t, 4>{192, 0, 2, 1}));
  EXPECT_FALSE(receiveResponse(cell.udp, 200).has_value()) << "a second answer was relayed";

  // A resolver that stays silent: SERVFAIL after the configured timeout.
  auto silent = core::buildQuery(0x1004, "allowed.example", core::kDnsTypeA);
  ASSERT_EQ(send(cell.udp, silent.data(), silent.size(), 0), ssize_t(silent.size()));
  response = receiveResponse(cell.udp);
  ASSERT_TRUE(response.has_value()) << "no UDP response";
  EXPECT_EQ(response->id, 0x1004);
  EXPECT_EQ(response->rcode, core::DnsRcode::kServFail);
  {
    uint8_t unanswered[4096];
    ASSERT_GT(recv(cell.upstream, unanswered, sizeof(unanswered), MSG_DONTWAIT), 0)
        << "the timed-out query never reached the resolver";
  }

  // TCP (RFC 1035 4.2.2 length prefix): accept4, recv, sendmsg under the child's profile.
  ASSERT_EQ(connect(cell.tcp, reinterpret_cast<sockaddr*>(&port53), sizeof(port53)), 0);
  auto tcpQuery = core::buildQuery(0x1003, "forbidden.example", core::kDnsTypeAaaa);
  std::vector<uint8_t> framed = {uint8_t(tcpQuery.size() >> 8), uint8_t(tcpQuery.size())};
  framed.insert(framed.end(), tcpQuery.begin(), tcpQuery.end());
  ASSERT_EQ(send(cell.tcp, framed.data(), framed.size(), MSG_NOSIGNAL), ssize_t(framed.size()));
  std::vector<uint8_t> stream;
  while (stream.size() < 2 || stream.size() < 2 + ((size_t(stream[0]) << 8) | stream[1])) {
    pollfd p{cell.tcp, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10'000), 1) << "no TCP response";
    uint8_t chunk[4096];
    ssize_t n = recv(cell.tcp, chunk, sizeof(chunk), 0);
    ASSERT_GT(n, 0) << "TCP connection closed";
    stream.insert(stream.end(), chunk, chunk + n);
  }
  auto tcpParsed = core::parseResponse(std::span<const uint8_t>(stream).subspan(2));
  ASSERT_TRUE(std::holds_alternative<core::DnsResponse>(tcpParsed));
  EXPECT_EQ(std::get<core::DnsResponse>(tcpParsed).id, 0x1003);
  EXPECT_EQ(std::get<core::DnsResponse>(tcpParsed).rcode, core::DnsRcode::kRefused);

  // A permitted query, then the client shuts down its sending side: the forwarded answer still
  // reaches it (RFC 7766), and then the child closes the connection.
  auto tcpPermitted = core::buildQuery(0x1005, "allowed.example", core::kDnsTypeA);
  framed = {uint8_t(tcpPermitted.size() >> 8), uint8_t(tcpPermitted.size())};
  framed.insert(framed.end(), tcpPermitted.begin(), tcpPermitted.end());
  ASSERT_EQ(send(cell.tcp, framed.data(), framed.size(), MSG_NOSIGNAL), ssize_t(framed.size()));
  ASSERT_EQ(shutdown(cell.tcp, SHUT_WR), 0);
  {
    pollfd p{cell.upstream, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10'000), 1) << "the child did not forward the TCP query";
    uint8_t forwarded[4096];
    sockaddr_in from{};
    socklen_t fromLength = sizeof(from);
    ssize_t n = recvfrom(cell.upstream, forwarded, sizeof(forwarded), 0,
                         reinterpret_cast<sockaddr*>(&from), &fromLength);
    ASSERT_GT(n, 0);
    std::span<const uint8_t> query(forwarded, size_t(n));
    auto parsed = core::parseQuery(query);
    ASSERT_TRUE(std::holds_alternative<core::DnsQuery>(parsed));
    auto right = answerTo(query, std::get<core::DnsQuery>(parsed).id, {192, 0, 2, 5});
    ASSERT_GT(sendto(cell.upstream, right.data(), right.size(), 0,
                     reinterpret_cast<sockaddr*>(&from), fromLength),
              0);
  }
  stream.clear();
  for (;;) {
    pollfd p{cell.tcp, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10'000), 1) << "no TCP response after the half-close";
    uint8_t chunk[4096];
    ssize_t n = recv(cell.tcp, chunk, sizeof(chunk), 0);
    ASSERT_GE(n, 0);
    if (n == 0) break;  // the child closed once it had answered
    stream.insert(stream.end(), chunk, chunk + n);
  }
  ASSERT_GE(stream.size(), 2u) << "the connection closed without the answer";
  tcpParsed = core::parseResponse(std::span<const uint8_t>(stream).subspan(2));
  ASSERT_TRUE(std::holds_alternative<core::DnsResponse>(tcpParsed));
  EXPECT_EQ(std::get<core::DnsResponse>(tcpParsed).id, 0x1005);
  EXPECT_EQ(core::ipv4Answers(std::get<core::DnsResponse>(tcpParsed)).size(), 1u);

  // The audit records the child sent its spawner, one per query, in order.
  struct Expected {
    const char* qname;
    const char* transport;
    const char* decision;
    const char* reason;
  };
  const Expected expected[] = {
      {"forbidden.example", "udp", "refused", "not_in_allowlist"},
      {"allowed.example", "udp", "permitted", "allowlist_match"},
      {"allowed.example", "udp", "permitted", "upstream_timeout"},
      {"forbidden.example", "tcp", "refused", "not_in_allowlist"},
      {"allowed.example", "tcp", "permitted", "allowlist_match"},
  };
  AuditReader audit(channel);
  for (const Expected& e : expected) {
    auto record = audit.next();
    ASSERT_TRUE(record.has_value()) << "missing record for " << e.qname << "/" << e.transport;
    EXPECT_EQ(record->qname, e.qname);
    EXPECT_EQ(record->transport, e.transport);
    EXPECT_EQ(record->decision, e.decision);
    EXPECT_EQ(record->reason, e.reason);
  }

  // Closing the channel is the spawner's "stop": the child leaves with 0, not SIGSYS.
  channel = nullptr;
  int status = waitFor(pid);
  reaped = true;
  EXPECT_EXITED_ZERO(status);
}

// -- The launcher: cells inherit its filter, so ordinary programs must run under it.

int runShellUnderLauncher(int out) {
  privsep::setNoNewPrivs();  // the agent sets it before starting the launcher
  signal(SIGPIPE, SIG_IGN);
  privsep::installSeccomp(vmm::kLauncherProfile);
  int fds[2];
  KJ_SYSCALL(pipe2(fds, O_CLOEXEC));
  pid_t pid;
  KJ_SYSCALL(pid = fork());
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    const char* argv[] = {"/bin/sh", "-c", "echo ok; grep '^Seccomp:' /proc/self/status", nullptr};
    const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
    execve(argv[0], const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    _exit(127);
  }
  close(fds[1]);
  std::string output = readAll(fds[0]);
  close(fds[0]);
  ssize_t n;
  KJ_SYSCALL(n = write(out, output.data(), output.size()));
  KJ_REQUIRE(size_t(n) == output.size());
  int status = waitFor(pid);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

TEST(SeccompHappyPath, LauncherRunsAShellUnderItsProfile) {
  int pipeFds[2];
  ASSERT_EQ(pipe2(pipeFds, O_CLOEXEC), 0);
  kj::AutoCloseFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  int status =
      runInChild([&]() { return runShellUnderLauncher(writeEnd.get()); }, Leave::kUnderscoreExit);
  writeEnd = nullptr;
  EXPECT_EXITED_ZERO(status) << " (128+31 = the shell died of SIGSYS)";
  // "Seccomp: 2": the workload runs inside the inherited filter.
  EXPECT_EQ(readAll(readEnd.get()), "ok\nSeccomp:\t2\n");
}

}  // namespace
}  // namespace cellos
