#include "broker/seccomp_profile.h"

#include <fcntl.h>

#include <string_view>

namespace cellos::broker {

namespace {
// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kAllow[] = {
    // event loop, signals, timers
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "signalfd4",
    // clients and helper links (fds pass through us by SCM_RIGHTS: the cell's netns)
    "accept4",
    "recvmsg",
    "sendmsg",
    "read",
    "write",
    "writev",
    "readv",
    "getsockopt",
    "close",
    "shutdown",  // Cap'n Proto half-closes a connection it drops (garbage, Abort)
    "fcntl",
    // the event log: append + fsync per batch
    "fsync",
    "fdatasync",
    // the event log: a batch the log could not take in full is cut back off it, so no partial
    // line stays behind (broker/jsonl_log.cpp)
    "ftruncate",
    // the event log: size-based rotation renames the full file within the log directory, held
    // open since start-up (renameat on that fd; never a path outside it)
    "renameat",
    // the run journal: an entry is removed once its run's destroyed event is durable
    // (unlinkat on the journal's directory fd, broker/run_journal.h)
    "unlinkat",
    // exports: run directories under the export root's fd, and each artifact's mode 0640
    // (broker/artifact_export.h)
    "mkdirat",
    "fchmod",
    // secrets: values are read from files opened at start-up (pread: the fds are shared by
    // runs), sealed into a memfd, and leave only as that fd (broker/secret_broker.h)
    "pread64",
    "memfd_create",
    "pwrite64",
    // memory, time, randomness for ids
    "mmap",
    "munmap",
    "brk",
    "madvise",
    "mremap",
    "clock_gettime",
    "getrandom",
    "gettid",
    "getpid",
    "futex",
    "exit_group",
};
// clang-format on
}  // namespace

// Creating files, and only that: the next log file after a rotation and one file per dead
// letter, under directory fds opened before seccomp. openat is allowed only with exactly these
// flags (broker/jsonl_log.h kCreateOnlyFlags: write-only, create, must not exist, no symlink),
// so the broker can never open, read or truncate an existing file by name.
constexpr uint64_t kCreateOnly[] = {O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW |
                                    O_CLOEXEC};
const privsep::ArgRule kArgs[] = {privsep::kKjIoctls, {"openat", 2, kCreateOnly}};
const privsep::SeccompProfile kBrokerProfile{"broker", kAllow, {}, kArgs};

}  // namespace cellos::broker
