#include "event-forwarder/seccomp_profile.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>

#include <string_view>

namespace cellos::forwarder {

namespace {
// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kAllow[] = {
    // following the log: read whole lines, notice rotation (fstat of the open file against
    // fstatat of the name, under the directory fd held since start-up)
    "read",
    "newfstatat",
    "fstat",
    "close",
    "lseek",  // the checkpoint file is read from the cursor's offset
    // the cursor (temp file, fsync, rename, fsync directory) and dead letters (write, fsync)
    "write",
    "fsync",
    "renameat",
    "unlinkat",
    // libnats: one TCP connection, non-blocking connect, its reader and flusher threads
    "connect",
    "setsockopt",
    "getsockopt",
    "fcntl",
    "poll",
    "sendto",
    "recvfrom",
    "shutdown",
    // threads libnats starts (again) after a disconnect: stacks, robust futex lists, exit
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
    "futex",
    "set_robust_list",
    "rseq",
    "exit",
    "rt_sigprocmask",
    "rt_sigreturn",  // SIGTERM's handler sets the stop flag
    "gettid",
    "getpid",
    // time: polling the log, reconnect backoff, timeouts
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "getrandom",  // reconnect jitter
    "exit_group",
};

// Opening files, only in these forms (under directory fds opened before seccomp): reading a log
// file; the cursor's temp file; a dead letter (eventlog/dead_letter.h kCreateOnlyFlags).
constexpr uint64_t kOpenFlags[] = {
    O_RDONLY | O_NOFOLLOW | O_CLOEXEC,
    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
};
// TCP to NATS over IPv4 or IPv6; no Unix, netlink or raw sockets.
constexpr uint64_t kSocketFamilies[] = {AF_INET, AF_INET6};
// Threads and only threads: the flags glibc's pthread_create passes to clone. A fork (which
// would need SIGCHLD in the flags) kills.
constexpr uint64_t kThreadFlags[] = {CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                     CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
                                     CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID};
// clang-format on
}  // namespace

const privsep::ArgRule kArgs[] = {
    {"openat", 2, kOpenFlags},
    {"socket", 0, kSocketFamilies},
    {"clone", 0, kThreadFlags},
};
// glibc (2.34+) starts threads with clone3, whose flags sit in memory a filter cannot read;
// answered ENOSYS, glibc falls back to clone, whose flags the rule above checks.
const privsep::ErrnoRule kDeny[] = {{"clone3", ENOSYS}};
const privsep::SeccompProfile kForwarderProfile{"event-forwarder", kAllow, kDeny, kArgs};

}  // namespace cellos::forwarder
