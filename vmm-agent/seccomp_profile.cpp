#include "vmm-agent/seccomp_profile.h"

#include <array>
#include <cerrno>
#include <string_view>

namespace cellos::vmm {

namespace {

constexpr std::string_view kAgentAllow[] = {
    // event loop and signals
    "epoll_wait", "epoll_pwait", "epoll_ctl", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait",
    "timerfd_create", "timerfd_settime", "signalfd4",
    // broker connections and the launcher socketpair (fds arrive by SCM_RIGHTS)
    "accept4", "recvmsg", "sendmsg", "read", "write", "writev", "readv", "getsockopt", "close",
    "shutdown",  // Cap'n Proto half-closes a connection it drops (garbage, Abort)
    "fcntl",
    // signalling cells (timeout, kill, destroy)
    "pidfd_send_signal",
    // memory, time, logging
    "mmap", "munmap", "brk", "madvise", "mremap", "mprotect", "clock_gettime", "clock_nanosleep",
    "getrandom", "gettid", "getpid", "futex",
    "exit_group",
};

// Cell construction plus the syscalls of ordinary programs (a shell, coreutils, dig), since
// the cell inherits this filter. Dangerous calls a workload has no business making are absent,
// so they kill the cell: ptrace, bpf, perf_event_open, kexec_*, init_module, finit_module,
// delete_module, keyctl, add_key, request_key, open_by_handle_at, userfaultfd, swapon,
// reboot, acct, settimeofday, clock_settime, iopl, ioperm, quotactl, lookup_dcookie.
constexpr std::string_view kLauncherAllow[] = {
    // building a cell
    "clone", "clone3", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "sethostname", "setdomainname", "mkdir", "mkdirat", "rmdir", "symlink", "symlinkat",
    "mknod", "mknodat", "pidfd_open", "pidfd_send_signal", "prctl", "capget", "capset",
    "setresuid", "setresgid", "setgroups", "setuid", "setgid", "setsid", "setpgid", "getpgid",
    "getpgrp", "getsid", "kill", "tgkill", "tkill", "wait4", "waitid", "execve", "execveat",
    "exit", "exit_group", "socket", "socketpair", "sendmsg", "recvmsg", "sendto", "recvfrom",
    "connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername",
    "setsockopt", "getsockopt", "shutdown", "close_range", "seccomp",
    // files
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "open",
    "openat", "openat2", "close", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs",
    "fstatfs", "lseek", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
    "getdents64", "getdents", "fcntl", "ioctl", "dup", "dup2", "dup3", "pipe", "pipe2",
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "link", "linkat", "chmod",
    "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown", "truncate", "ftruncate",
    "fsync", "fdatasync", "sync", "getcwd", "chdir", "fchdir", "umask", "utimensat", "futimesat",
    "utimes", "utime", "fallocate", "fadvise64", "sendfile", "copy_file_range", "splice",
    "tee", "flock", "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
    "flistxattr", "memfd_create", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    // memory, threads, time, signals
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "mlock", "munlock", "msync",
    "futex", "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_getscheduler", "getpriority", "setpriority", "nanosleep", "clock_nanosleep",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "times", "alarm", "getitimer",
    "setitimer", "timer_create", "timer_settime", "timer_gettime", "timer_delete",
    "timerfd_create", "timerfd_settime", "signalfd4", "timerfd_gettime", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo",
    "sigaltstack", "pause", "signalfd4", "eventfd2", "poll", "ppoll", "select", "pselect6",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    // identity and limits
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "uname", "sysinfo", "getrlimit", "setrlimit", "prlimit64",
    "getrusage", "getrandom", "getcpu",
    // more of what shells, coreutils and resolvers use
    "vfork", "fork", "restart_syscall", "sendmmsg", "recvmmsg", "epoll_create", "eventfd",
    "mincore", "membarrier", "readahead", "sync_file_range", "mlock2", "fstatfs", "getpgrp",
    "sched_get_priority_max", "sched_get_priority_min", "ioprio_get", "personality",
};

}  // namespace

const privsep::ArgRule kAgentArgs[] = {privsep::kKjIoctls};
const privsep::SeccompProfile kAgentProfile{"vmm-agent", kAgentAllow, {}, kAgentArgs};
const privsep::SeccompProfile kLauncherProfile{"vmm-launcher", kLauncherAllow};

}  // namespace cellos::vmm
