#pragma once
// Starting a VMM process, for every caller of a driver's command line (the VM supervisor, the
// accelerator probe): its resources at the fixed fd numbers of vmm_driver.h, nothing else open,
// and — for a cell's VMM — the cell's uid with no capability.

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace cellos::vmm {

// The fds a VMM gets (-1: not this one); each lands at its kVmm*Fd number.
struct VmmFds {
  int kernel = -1, initramfs = -1, rootDisk = -1, tap = -1, channel = -1, console = -1;
};

// In a forked child: signals reset, stdin/stdout /dev/null, stderr `stderrFd` (-1: /dev/null),
// `fds` at their numbers (moved above them first, so no dup2 overwrites a source not yet moved),
// every other fd closed; then, when `uid` is not 0, that uid and gid with no supplementary
// group but `group` (and so no capability); parent-death SIGKILL (after the uid change, which
// clears it); no_new_privs; execve(argv) with PATH only. Exits 125 when a step fails, 127 when
// execve does.
[[noreturn]] void execVmm(const std::vector<std::string>& argv, const VmmFds& fds, int stderrFd,
                          uid_t uid, std::optional<gid_t> group = std::nullopt) noexcept;

// The group through which an unprivileged VMM may open /dev/kvm: its group, when the node is a
// character device its group may read and write (udev makes it 0660 root:kvm). Else nullopt
// and `why` says what the node is: a VMM running as a cell's uid cannot use KVM on this host.
std::optional<gid_t> kvmAccessGroup(std::string* why);

// The uid the accelerator probe's VMM runs as: nobody, never a cell's.
inline constexpr uid_t kProbeUid = 65534;

}  // namespace cellos::vmm
