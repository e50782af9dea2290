#include "event-signer/seccomp_profile.h"

#include <array>
#include <cerrno>
#include <string_view>

namespace cellos::signer {

namespace {
// Reviewed list: each line is a reason the signer needs the call.
// clang-format off: one reviewed group per line, each with its reason.
constexpr std::string_view kAllow[] = {
    // (the event loop and SIGTERM/SIGINT, blocked and captured before this filter:
    // privsep::kKjEventLoop, below)
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
    // chain head and key rotation: write temp file, fsync, rename, fsync directory (files are
    // read only at start-up, before this filter: no stat, no seek)
    "openat",
    "fsync",
    "rename",
    "unlink",
    // memory: glibc malloc in a single-threaded process grows and trims the heap with brk and
    // maps large blocks with mmap/munmap (mremap and madvise, which it can do without, are
    // answered with an errno: privsep::kMallocFallbacks)
    "mmap",
    "munmap",
    "brk",
    // time: the vDSO answers clock_gettime, but falls back to the syscall on hosts whose clock
    // source has no vDSO support (e.g. some hypervisors), so it stays
    "clock_gettime",
    // OpenSSL reseeds its DRBG from getrandom
    "getrandom",
    // the log line's pid and OpenSSL's fork check (the thread id is read before this filter);
    // locks (OpenSSL run-once)
    "getpid",
    "futex",
    // process exit
    "exit_group",
};
// clang-format on

}  // namespace

const privsep::SeccompGroup* const kGroups[] = {&privsep::kKjEventLoop};
const privsep::SeccompProfile kSignerProfile{
    "event-signer", kAllow, privsep::kMallocFallbacks, {}, kGroups};

}  // namespace cellos::signer
