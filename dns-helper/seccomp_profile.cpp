#include "dns-helper/seccomp_profile.h"

#include <sys/socket.h>

#include <string_view>

namespace cellos::dns {

namespace {

// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kSpawnerAllow[] = {
    // event loop (besides privsep::kKjEventLoop, below), signals, child exit
    "epoll_pwait",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigaction",
    "rt_sigtimedwait",
    "wait4",
    "waitid",
    // broker connection (the netns fd arrives by SCM_RIGHTS) and child channels
    "accept4",
    "recvmsg",
    "sendmsg",
    "sendto",
    "recvfrom",
    "read",
    "write",
    "writev",
    "readv",
    "getsockopt",
    "shutdown",
    "socketpair",
    "close",
    "fcntl",
    "dup2",
    "dup3",
    // starting a child: fork + exec of our own binary by fd
    "clone",
    "clone3",
    "execveat",
    "getppid",
    "exit",
    // what the child does before its own profile is installed (exec loader, setns, bind, drop)
    "execve",
    "brk",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "access",
    "openat",
    "newfstatat",
    "fstat",
    "pread64",
    "mprotect",
    "setns",
    "bind",
    "listen",
    "connect",
    "setsockopt",
    "setrlimit",
    "poll",
    "ppoll",
    "setgroups",
    "setresgid",
    "setresuid",
    "setuid",
    "capget",
    "capset",
    "prctl",
    "seccomp",
    "uname",
    "lseek",
    "getrandom",
    "futex",
    // memory, time, identity
    "mmap",
    "munmap",
    "madvise",
    "mremap",
    "clock_gettime",
    "gettid",
    "getpid",
    "exit_group",
};
// clang-format on

// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kChildAllow[] = {
    "poll",          "ppoll",                                    // the event loop
    "recvfrom",      "sendto", "recvmsg", "sendmsg", "accept4",  // DNS over UDP and TCP
    "connect",                                                   // TCP to the upstream
    "getrandom",                                                 // upstream transaction ids
    "close",                                                     // TCP clients, upstream sockets
    "clock_gettime", "getpid",                                   // latency, ready message
    "mmap",          "munmap", "brk",     "mremap",  "madvise",  // allocation
    "write",                                                     // a last error line on stderr
    "exit_group",    "exit",
};
// clang-format on

}  // namespace

// A child makes only IPv4/IPv6 sockets (port 53, and its upstream queries); no netlink, packet or
// Unix socket can be opened from the spawner or a child (socketpair is separate).
constexpr uint64_t kInetFamilies[] = {AF_INET, AF_INET6};
const privsep::ArgRule kSpawnerArgs[] = {{"socket", 0, kInetFamilies}};
const privsep::SeccompGroup* const kSpawnerGroups[] = {&privsep::kKjEventLoop};
const privsep::SeccompProfile kSpawnerProfile{
    "dns-spawner", kSpawnerAllow, {}, kSpawnerArgs, kSpawnerGroups};
// The child opens one upstream socket per forwarded query (UDP or TCP to the resolver).
const privsep::ArgRule kChildArgs[] = {{"socket", 0, kInetFamilies}};
const privsep::SeccompProfile kDnsChildProfile{"dns-child", kChildAllow, {}, kChildArgs};

}  // namespace cellos::dns
