#pragma once
// Seccomp profiles as data. Each process keeps its profile beside its own code (e.g.
// broker/seccomp_profile.cpp), and its daemon's CMakeLists.txt registers it
// (cellos_seccomp_profiles(), cmake/CellosSeccomp.cmake). The build compiles every registered
// profile to BPF with libseccomp (privsep/seccomp_generate.cpp ->
// <build>/seccomp/<daemon>_seccomp_filters.cpp, linked into that daemon's program only, and the
// reviewed PFC text in packaging/seccomp/<name>.pfc); at run time installSeccomp() only loads
// the program the build made, so no daemon generates BPF, or even links libseccomp, at start-up.
// Default action: kill the whole process (SCMP_ACT_KILL_PROCESS), so a compromised process that
// strays dies instead of probing.
//
// Adding a syscall to a profile is a one-line change in that profile's seccomp_profile.cpp;
// the build recompiles the filter, and `cmake --build <build> --target seccomp-pfc` refreshes
// the committed PFC text so the review shows the change (a unit test fails until it does).

#include <cstdint>
#include <span>
#include <string>
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

// Calls several profiles allow for one shared reason, reviewed once where the group is defined
// (privsep/seccomp_rules.cpp) rather than again in every profile that needs them.
struct SeccompGroup {
  std::string_view name;  // "kj event loop": follows each of its calls in describeProfile()
  std::span<const std::string_view> allow;
  std::span<const ArgRule> allowIf = {};
};

struct SeccompProfile {
  std::string_view name;  // for messages and the compiled filter's name: "broker", ...
  std::span<const std::string_view> allow;
  std::span<const ErrnoRule> deny = {};
  std::span<const ArgRule> allowIf = {};
  // Groups the profile takes whole, as if their lines were its own.
  std::span<const SeccompGroup* const> groups = {};
};

// What a kj event loop (kj::UnixEventPort, set up by kj::setupAsyncIo() before the filter) calls
// once serving: epoll_wait for every wait (never epoll_pwait; kj timers are its timeout, not
// timerfds), epoll_ctl as it watches and unwatches fds, signalfd4 as it changes the signalfd's
// mask for the signals it was asked to capture (SIGTERM/SIGINT arrive through that fd: no handler
// ever runs, so no rt_sigreturn or rt_sigprocmask), and ioctl only to make its own fds
// non-blocking and close-on-exec (FIONBIO, FIOCLEX), never fcntl. Every daemon that serves Cap'n
// Proto RPC through kj takes this group; the launcher, the DNS child and the forwarder run no kj
// loop.
extern const SeccompGroup kKjEventLoop;

// Calls glibc's malloc makes only in cases it has a fallback for, answered with an errno
// instead of allowed: mremap (realloc of a large mapped block: ENOMEM, and realloc allocates,
// copies and frees instead) and madvise (trimming other threads' arenas: its result is
// ignored). For the single-threaded daemons, none of which was seen making either call.
extern const std::span<const ErrnoRule> kMallocFallbacks;

// Installs the filter the build compiled from `profile` on every thread of the process
// (SECCOMP_FILTER_FLAG_TSYNC), after setting no_new_privs. Throws, loading nothing, when the
// build compiled no filter of that name, or compiled it from a different profile (a stale
// build must not run with a filter nobody reviewed).
void installSeccomp(const SeccompProfile& profile);

// Sanitizer builds only (CELLOS_SANITIZE=ON, never shipped): the calls the ASan/UBSan runtime
// makes after a daemon's filter is in place, when it reports an error (print the report, read
// /proc/self/maps to name the modules, unwind on an alternate stack) or grows its allocator.
// The build-time compiler adds them to every profile's allow list, and describeProfile() lists
// them, so a sanitizer build's filters are compiled and checked like any other; without them a
// heap corruption found by ASan would end in SIGSYS before its report was written. Empty in a
// normal build.
std::span<const std::string_view> sanitizerRuntimeCalls();

// The number of distinct syscalls the profile allows (recorded in docs/security.md).
size_t allowedSyscallCount(const SeccompProfile& profile);

// The profile as canonical text, one rule a line ("allow read", "allow-if ioctl arg1 == 21537",
// "errno openat 1"). The build stores it beside each compiled filter, and installSeccomp()
// compares it with the profile it is given.
std::string describeProfile(const SeccompProfile& profile);

// Reads the "Seccomp:" field of /proc/<pid>/status (0 none, 1 strict, 2 filter), -1 on error.
int seccompMode(int pid);

}  // namespace cellos::privsep
