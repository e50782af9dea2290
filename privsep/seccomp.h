#pragma once
// Seccomp profiles as data. Each process keeps its profile beside its own code (e.g.
// broker/seccomp_profile.cpp); this file only knows how to install one. Default action: kill
// the whole process (SCMP_ACT_KILL_PROCESS), so a compromised process that strays dies instead
// of probing.

#include <cstdint>
#include <span>
#include <string_view>

namespace cellos::privsep {

// A syscall answered with an errno instead of running (for calls a library makes
// opportunistically and handles failing, where killing would be wrong).
struct ErrnoRule {
  std::string_view syscall;
  int error;
};

// A syscall allowed only when one argument equals one of a few values (e.g. ioctl only with
// FIONBIO/FIOCLEX, so a process that has a terminal fd still cannot TIOCSTI into it).
struct ArgRule {
  std::string_view syscall;
  unsigned argument;  // 0-based
  std::span<const uint64_t> values;
};

struct SeccompProfile {
  std::string_view name;  // for messages: "broker", "dns-child", ...
  std::span<const std::string_view> allow;
  std::span<const ErrnoRule> deny = {};
  std::span<const ArgRule> allowIf = {};
};

// ioctl requests every kj event loop makes on its own fds (non-blocking, close-on-exec).
extern const ArgRule kKjIoctls;

// Installs `profile` on the calling thread (and, with TSYNC, every thread of the process).
// Requires no_new_privs or CAP_SYS_ADMIN. Throws, naming the syscall, if a name is unknown to
// libseccomp on this architecture: a typo must stop start-up, not silently allow less or more.
void installSeccomp(const SeccompProfile& profile);

// The number of distinct syscalls the profile allows (recorded in docs/security.md).
size_t allowedSyscallCount(const SeccompProfile& profile);

// Reads the "Seccomp:" field of /proc/<pid>/status (0 none, 1 strict, 2 filter), -1 on error.
int seccompMode(int pid);

}  // namespace cellos::privsep
