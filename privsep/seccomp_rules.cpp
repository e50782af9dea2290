// The profile model: what both the build-time compiler and the run-time loader need to know
// about a profile, without libseccomp and without the compiled filters.

#include "privsep/seccomp.h"

#include <cerrno>

#include <sys/ioctl.h>

#include <set>
#include <string>

namespace cellos::privsep {

namespace {
constexpr std::string_view kKjEventLoopCalls[] = {"epoll_wait", "epoll_ctl", "signalfd4"};
constexpr uint64_t kKjIoctlValues[] = {FIONBIO, FIOCLEX};
constexpr ArgRule kKjIoctls[] = {{"ioctl", 1, kKjIoctlValues}};
}  // namespace

const SeccompGroup kKjEventLoop{"kj event loop", kKjEventLoopCalls, kKjIoctls};

namespace {
constexpr ErrnoRule kMallocFallbackRules[] = {{"mremap", ENOMEM}, {"madvise", ENOSYS}};
}  // namespace
const std::span<const ErrnoRule> kMallocFallbacks = kMallocFallbackRules;

namespace {
#ifdef CELLOS_SANITIZER_RUNTIME
// What compiler-rt's sanitizer runtime calls after start-up: reporting (write, the maps file,
// readlink of /proc/self/exe, getpid/gettid for the report header, sched_yield while another
// thread reports; a pipe2 pair to probe whether memory is readable before it dereferences it,
// as UBSan's checks and the unwinder do), unwinding (sigaltstack, rt_sigaction, rt_sigprocmask),
// its allocator (mmap/munmap/mprotect), a new thread's start in a threaded daemon
// (sched_getaffinity: libnats's threads in the forwarder), and dying (exit_group). madvise stays
// answered by errno where a profile says so: the runtime ignores its result.
constexpr std::string_view kSanitizerRuntime[] = {"write",
                                                  "writev",
                                                  "read",
                                                  "pread64",
                                                  "openat",
                                                  "open",
                                                  "close",
                                                  "fstat",
                                                  "newfstatat",
                                                  "lseek",
                                                  "readlink",
                                                  "readlinkat",
                                                  "getpid",
                                                  "gettid",
                                                  "getppid",
                                                  "sched_yield",
                                                  "mmap",
                                                  "munmap",
                                                  "mprotect",
                                                  "sigaltstack",
                                                  "rt_sigaction",
                                                  "rt_sigprocmask",
                                                  "prctl",
                                                  "futex",
                                                  "clock_gettime",
                                                  "getrlimit",
                                                  "prlimit64",
                                                  "uname",
                                                  "pipe2",
                                                  "pipe",
                                                  "sched_getaffinity",
                                                  "exit",
                                                  "exit_group"};
#else
constexpr std::span<const std::string_view> kSanitizerRuntime{};
#endif
}  // namespace

std::span<const std::string_view> sanitizerRuntimeCalls() {
  return kSanitizerRuntime;
}

size_t allowedSyscallCount(const SeccompProfile& profile) {
  std::set<std::string_view> names(profile.allow.begin(), profile.allow.end());
  for (const ArgRule& rule : profile.allowIf) names.insert(rule.syscall);
  for (const SeccompGroup* group : profile.groups) {
    names.insert(group->allow.begin(), group->allow.end());
    for (const ArgRule& rule : group->allowIf) names.insert(rule.syscall);
  }
  return names.size();
}

namespace {
void describeArgRules(std::span<const ArgRule> rules, std::string_view suffix, std::string& text) {
  for (const ArgRule& rule : rules) {
    for (uint64_t value : rule.values) {
      text += "allow-if " + std::string(rule.syscall) + " arg" + std::to_string(rule.argument) +
              " == " + std::to_string(value) + std::string(suffix) + "\n";
    }
  }
}
}  // namespace

std::string describeProfile(const SeccompProfile& profile) {
  std::string text = "profile " + std::string(profile.name) + "\n";
  for (std::string_view name : profile.allow) text += "allow " + std::string(name) + "\n";
  describeArgRules(profile.allowIf, "", text);
  for (const SeccompGroup* group : profile.groups) {
    std::string suffix = " (" + std::string(group->name) + ")";
    for (std::string_view name : group->allow) text += "allow " + std::string(name) + suffix + "\n";
    describeArgRules(group->allowIf, suffix, text);
  }
  for (const ErrnoRule& rule : profile.deny) {
    text += "errno " + std::string(rule.syscall) + " " + std::to_string(rule.error) + "\n";
  }
  for (std::string_view name : sanitizerRuntimeCalls()) {
    text += "allow " + std::string(name) + " (sanitizer runtime)\n";
  }
  return text;
}

}  // namespace cellos::privsep
