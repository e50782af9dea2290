#include "broker/seccomp_profile.h"

#include <fcntl.h>

#include <string_view>

namespace cellos::broker {

namespace {
// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kAllow[] = {
    // (the event loop and SIGTERM/SIGINT: privsep::kKjEventLoop, below)
    // clients and helper links (fds pass through us by SCM_RIGHTS: the cell's netns)
    "accept4",
    "recvmsg",
    "sendmsg",
    "read",
    "write",
    "writev",
    "getsockopt",
    "close",
    "shutdown",  // Cap'n Proto half-closes a connection it drops (garbage, Abort)
    // the event log: append + fsync per batch
    "fsync",
    // the event log: a batch the log could not take in full is cut back off it, so no partial
    // line stays behind (broker/jsonl_log.cpp)
    "ftruncate",
    // the event log: size-based rotation renames the full file within the log directory, held
    // open since start-up (renameat on that fd; never a path outside it)
    "renameat",
    // the run journal: an entry is removed once its run's destroyed event is durable
    // (unlinkat on the journal's directory fd, broker/run_journal.h)
    "unlinkat",
    // exports: the run directories under the export root's fd (mode 0750; files are created
    // 0640 by openat below, exact because the umask is set to 027 before this filter)
    // (broker/artifact_export.h)
    "mkdirat",
    // secrets: values are read from files opened at start-up (pread: the fds are shared by
    // runs), written into a memfd that is sealed and leaves only as that fd
    // (broker/secret_broker.h; fcntl below)
    "pread64",
    "memfd_create",
    // memory (single-threaded glibc malloc: brk, mmap/munmap; mremap and madvise are answered
    // with an errno, privsep::kMallocFallbacks), time (clock_gettime: the vDSO's fallback),
    // randomness for ids, OpenSSL's fork check and the log's pid (getpid; the thread id is read
    // once before this filter)
    "mmap",
    "munmap",
    "brk",
    "clock_gettime",
    "getrandom",
    "getpid",
    "futex",
    "exit_group",
};
// clang-format on
}  // namespace

// Creating files, and only that: the next log file after a rotation, one file per dead letter
// and each artifact's temporary copy, under directory fds opened before seccomp. openat is allowed only with exactly these
// flags (broker/jsonl_log.h kCreateOnlyFlags: write-only, create, must not exist, no symlink),
// so the broker can never open, read or truncate an existing file by name.
constexpr uint64_t kCreateOnly[] = {O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW |
                                    O_CLOEXEC};
// fcntl only to seal a secret bundle and to move a received artifact fd above the standard ones.
constexpr uint64_t kFcntlCommands[] = {F_ADD_SEALS, F_DUPFD_CLOEXEC};
const privsep::ArgRule kArgs[] = {{"openat", 2, kCreateOnly}, {"fcntl", 1, kFcntlCommands}};
const privsep::SeccompGroup* const kGroups[] = {&privsep::kKjEventLoop};
const privsep::SeccompProfile kBrokerProfile{"broker", kAllow, privsep::kMallocFallbacks, kArgs,
                                             kGroups};

}  // namespace cellos::broker
