#include "vmm-agent/backends/microvm/vmm_process.h"

#include "vmm-agent/backends/microvm/vmm_driver.h"
#include "vmm-agent/cell/cell_backend.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace cellos::vmm {

std::optional<gid_t> kvmAccessGroup(std::string* why) {
  struct stat st {};
  if (stat("/dev/kvm", &st) < 0) {
    *why = std::string("/dev/kvm: ") + strerror(errno);
    return std::nullopt;
  }
  if (!S_ISCHR(st.st_mode) || (st.st_mode & (S_IRGRP | S_IWGRP)) != (S_IRGRP | S_IWGRP) ||
      st.st_gid == 0) {
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    *why = std::string("/dev/kvm is ") + mode + " uid " + std::to_string(st.st_uid) + " gid " +
           std::to_string(st.st_gid) +
           ": the VMM runs as the cell's uid and opens it through its group (udev's 0660 "
           "root:kvm)";
    return std::nullopt;
  }
  return st.st_gid;
}

void execVmm(const std::vector<std::string>& argv, const VmmFds& fds, int stderrFd, uid_t uid,
             std::optional<gid_t> group) noexcept {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  int sources[] = {fds.kernel, fds.initramfs, fds.rootDisk, fds.tap, fds.channel, fds.console};
  const int targets[] = {kVmmKernelFd, kVmmInitramfsFd, kVmmRootDiskFd,
                         kVmmTapFd,    kVmmChannelFd,   kVmmConsoleFd};
  for (int& fd : sources) {
    if (fd < 0) continue;
    fd = fcntl(fd, F_DUPFD_CLOEXEC, 64);
    if (fd < 0) _exit(kCellAbortedExitCode);
  }
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  int err = stderrFd >= 0 ? fcntl(stderrFd, F_DUPFD_CLOEXEC, 64) : null;
  if (null < 0 || err < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(err, 2) < 0) {
    _exit(kCellAbortedExitCode);
  }
  for (size_t i = 0; i < 6; ++i) {
    if (sources[i] >= 0 && dup2(sources[i], targets[i]) < 0) _exit(kCellAbortedExitCode);
  }
  syscall(SYS_close_range, kVmmConsoleFd + 1, ~0u, 0);
  if (uid != 0) {
    gid_t gid = uid;
    gid_t groups[1] = {group.value_or(0)};
    if (setgroups(group ? 1 : 0, groups) < 0 || setresgid(gid, gid, gid) < 0 ||
        setresuid(uid, uid, uid) < 0) {
      _exit(kCellAbortedExitCode);
    }
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    _exit(kCellAbortedExitCode);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char path[] = "PATH=/usr/bin:/bin";
  char* envp[] = {path, nullptr};
  execve(args[0], args.data(), envp);
  const char* why = strerror(errno);
  const char* parts[] = {"exec ", args[0], ": ", why, "\n"};
  for (const char* part : parts) {
    ssize_t ignored = write(2, part, strlen(part));
    (void)ignored;
  }
  _exit(127);
}

}  // namespace cellos::vmm
