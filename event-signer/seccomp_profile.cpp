#include "event-signer/seccomp_profile.h"

#include <array>
#include <cerrno>
#include <string_view>

namespace cellos::signer {

namespace {
// Reviewed list: each line is a reason the signer needs the call.
// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kAllow[] = {
    // event loop (kj::UnixEventPort) and signal delivery
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "signalfd4",
    // accepting and serving broker / reader connections
    "accept4",
    "recvmsg",
    "sendmsg",
    "read",
    "write",
    "writev",
    "getsockopt",
    "close",
    "shutdown",  // Cap'n Proto half-closes a connection it drops (garbage, Abort)
    // chain head: write temp file, fsync, rename, fsync directory
    "openat",
    "fsync",
    "rename",
    "unlink",
    "fstat",
    "newfstatat",
    "lseek",
    // memory and time (OpenSSL, allocator, logging)
    "mmap",
    "munmap",
    "brk",
    "madvise",
    "mremap",
    "clock_gettime",
    "getrandom",
    "getpid",
    "gettid",
    "futex",
    // process exit
    "exit_group",
};
// clang-format on

}  // namespace

const privsep::ArgRule kArgs[] = {privsep::kKjIoctls};
const privsep::SeccompProfile kSignerProfile{"event-signer", kAllow, {}, kArgs};

}  // namespace cellos::signer
