#include "guest-init/workload.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

  pid_t pid = ::fork();
  if (pid < 0) throwErrno("fork");
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
    if (chroot(kNewRoot) != 0) childFailed("chroot");
    if (chdir(workingDirectory.c_str()) != 0) childFailed("chdir to the working directory");
    rlimit files = {.rlim_cur = nofile.soft, .rlim_max = nofile.hard};
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) childFailed("setrlimit RLIMIT_NOFILE");
    rlimit core = {.rlim_cur = 0, .rlim_max = 0};
    if (setrlimit(RLIMIT_CORE, &core) != 0) childFailed("setrlimit RLIMIT_CORE");
    execve(argv[0], argv.data(), envp.data());
    int error = errno;
    say("cellos: exec ", argv[0], ": ");
    say(strerror(error), "\n", "");
    _exit(execFailureExitCode(error));
  }
  ::close(devNull);
  ::close(out[1]);
  ::close(err[1]);
  return {.pid = pid, .stdoutFd = out[0], .stderrFd = err[0]};
}

}  // namespace cellos::guest
