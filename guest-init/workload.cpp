#include "guest-init/workload.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest-init/mounts.h"
#include "guest-init/plan.h"
#include "guest-init/sys.h"

namespace cellos::guest {

namespace {

// In the child, after fork: only async-signal-safe calls from here to execve.
void say(const char* a, const char* b, const char* c) {
  for (const char* part : {a, b, c}) {
    size_t left = strlen(part);
    while (left > 0) {
      ssize_t n = ::write(2, part, left);
      if (n <= 0) return;
      part += n;
      left -= static_cast<size_t>(n);
    }
  }
}

[[noreturn]] void childFailed(const char* step) {
  say("cellos: ", step, ": ");
  say(strerror(errno), "\n", "");
  _exit(kAbortedWaitStatus >> 8);
}

// The workload is uid 0 of its guest, like a linux cell's workload is uid 0 of its user
// namespace, and like it holds no capability: none effective, permitted or inheritable, an
// empty bounding set (so execve as uid 0 grants nothing), no ambient ones, no_new_privs. The
// guest kernel is the isolation boundary; inside it the workload still cannot mount, load
// modules, reconfigure the network, or read what a file's mode does not give it.
void dropCapabilities() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) childFailed("PR_CAPBSET_DROP");
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) childFailed("PR_CAP_AMBIENT");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &header, data) < 0) childFailed("capset");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) childFailed("PR_SET_NO_NEW_PRIVS");
}

}  // namespace

Workload startWorkload(const vmchannel::GuestConfig& config, const std::vector<std::string>& env,
                       const std::string& cgroupProcs) {
  std::vector<char*> argv;
  for (const std::string& arg : config.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& entry : env) envp.push_back(const_cast<char*>(entry.c_str()));
  envp.push_back(nullptr);
  NofileLimit nofile = planNofile(config.nofileMax);
  const std::string workingDirectory = config.workingDirectory;

  int out[2], err[2];
  check(::pipe2(out, O_CLOEXEC), "pipe2 stdout");
  check(::pipe2(err, O_CLOEXEC), "pipe2 stderr");
  // Opened before the fork: the child's own /dev/null is inside the root it chroots into, and
  // an open in the child is one more step that could fail after fork.
  int devNull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) throwErrno("open /dev/null");

  int status[2];
  check(::pipe2(status, O_CLOEXEC), "pipe2 status");
  // Its write end is closed by the workload init once it has forked the workload, and by the
  // workload at its execve (O_CLOEXEC): the host's signals go to their process group
  // (relay.cpp), and one sent before the workload exists reaches only the workload init, which
  // as pid 1 of its namespace ignores it. A cell whose timeout ends during the guest's boot gets
  // its SIGTERM right at the workload's start, so startWorkload returns only after that EOF.
  int grouped[2];
  check(::pipe2(grouped, O_CLOEXEC), "pipe2 grouped");

  // The workload init: pid 1 of a new pid namespace, in a new mount namespace with that
  // namespace's /proc.
  pid_t pid = static_cast<pid_t>(
      ::syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, nullptr, nullptr, nullptr, 0));
  if (pid < 0) throwErrno("clone(CLONE_NEWPID|CLONE_NEWNS)");
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) signal(sig, SIG_DFL);
    umask(022);
    if (setsid() < 0) childFailed("setsid");
    int procs = ::open(cgroupProcs.c_str(), O_WRONLY | O_CLOEXEC);
    if (procs < 0 || ::write(procs, "0", 1) != 1) childFailed("join the workload cgroup");
    ::close(procs);
    if (dup2(devNull, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) childFailed("dup2");
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) childFailed("MS_PRIVATE");
    std::string proc = std::string(kNewRoot) + "/proc";
    if (mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) {
      childFailed("mount the workload's /proc");
    }
    pid_t workload = ::fork();
    if (workload < 0) childFailed("fork");
    if (workload > 0) {
      // As pid 1 of its namespace this process gets no signal it has no handler for (the
      // host's signals go to the process group, which the workload shares): it only waits.
      ::close(out[1]);
      ::close(err[1]);
      ::close(grouped[1]);
      for (;;) {
        int st = 0;
        pid_t reaped = ::waitpid(-1, &st, 0);
        if (reaped < 0 && errno == EINTR) continue;
        if (reaped == workload) {
          ssize_t ignored = ::write(status[1], &st, sizeof st);
          (void)ignored;
          _exit(0);
        }
        if (reaped < 0) _exit(kAbortedWaitStatus >> 8);
      }
    }
    if (chroot(kNewRoot) != 0) childFailed("chroot");
    if (chdir(workingDirectory.c_str()) != 0) childFailed("chdir to the working directory");
    rlimit files = {.rlim_cur = nofile.soft, .rlim_max = nofile.hard};
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) childFailed("setrlimit RLIMIT_NOFILE");
    rlimit core = {.rlim_cur = 0, .rlim_max = 0};
    if (setrlimit(RLIMIT_CORE, &core) != 0) childFailed("setrlimit RLIMIT_CORE");
    dropCapabilities();
    execve(argv[0], argv.data(), envp.data());
    int error = errno;
    say("cellos: exec ", argv[0], ": ");
    say(strerror(error), "\n", "");
    _exit(execFailureExitCode(error));
  }
  ::close(devNull);
  ::close(out[1]);
  ::close(err[1]);
  ::close(status[1]);
  ::close(grouped[1]);
  char byte;
  while (::read(grouped[0], &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(grouped[0]);
  int flags = ::fcntl(status[0], F_GETFL);
  ::fcntl(status[0], F_SETFL, flags | O_NONBLOCK);
  return {.pid = pid, .stdoutFd = out[0], .stderrFd = err[0], .statusFd = status[0]};
}

int workloadWaitStatus(int statusFd, int initStatus) {
  int st = 0;
  ssize_t n = statusFd >= 0 ? ::read(statusFd, &st, sizeof st) : -1;
  return n == static_cast<ssize_t>(sizeof st) ? st : initStatus;
}

}  // namespace cellos::guest
