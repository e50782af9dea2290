#include "broker/seccomp_profile.h"

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

const privsep::ArgRule kArgs[] = {privsep::kKjIoctls};
const privsep::SeccompProfile kBrokerProfile{"broker", kAllow, {}, kArgs};

}  // namespace cellos::broker
