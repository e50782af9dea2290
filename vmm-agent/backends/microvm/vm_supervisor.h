#pragma once
// The VM cell runtime's pid 1 (the *VM supervisor*): pid 1 of a VM cell's pid, mount, network,
// uts and ipc namespaces, cloned by the microVM spawner (microvm_cell.h, supervisor_spawner.h)
// and following the pid-1 skeleton (cell/cell_init.h). VMM-neutral: the VMM's command line is
// its driver's (vmm_driver.h).
//
// Step 5 (build), before "ready":
//   - a root of its own on a tmpfs: the host's /usr read-only (the VMM's binary, libraries and
//     firmware) with the usr-merge links, a /dev of null/zero/full/random/urandom (and kvm when
//     the accelerator is KVM), the /proc of its pid namespace (hidepid=invisible), the cell's
//     working directory copy at /work (a size-capped tmpfs the guest's files are written into
//     once the workload is done, where the launcher reads artifacts) and the secrets tmpfs at
//     /secrets when the cell gets secrets;
//   - the guest link: TAP device kTapName in the cell's network namespace, kGuestGateway/30 on
//     it, IPv4 forwarding on (the launcher's veth and nftables come after "ready");
//   - the boot files opened and checked against what the spawner verified (same file identity).
// After the start byte: the VMM started as the cell's host uid (no capabilities, no_new_privs,
// its own sandbox), with every resource an fd; the guest's hello awaited (bounded: a guest that
// does not come up ends the cell with the tail of its console on its stderr). The boot is not
// part of the launch because the launcher and the spawner answer one request at a time, so a
// document's timeoutMs counts the boot too. The secrets are read (and their tmpfs unmounted)
// before the VMM starts; once it has started the supervisor drops from root to the VMM's uid,
// before it reads a single byte the guest sends. Then the
// guest's configuration sent, and the relay: guest output to the cell's stdout/stderr pipes, the
// working directory's files into /work, SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 to the workload as
// 'S' frames, the guest's exit status reported as the cell's. SIGKILL to the supervisor ends its
// pid namespace and the VMM with it. A guest that breaks the protocol is stopped, and the cell ends
// without a status (abnormal).

#include "vmm-agent/backends/microvm/vm_plan.h"
#include "vmm-agent/backends/microvm/vmm_driver.h"
#include "vmm-agent/cell/cell_init.h"

#include <sys/stat.h>

#include <memory>
#include <string>

namespace cellos::vmm {

// The guest link inside every VM cell's namespace (each cell has its own namespace, so the same
// addresses in every cell never meet): link-local, which the cell's rules already refuse as a
// forwarded destination (host destinations), so the guest reaches only the DNS helper on it.
inline constexpr const char* kTapName = "tap0";
inline constexpr const char* kGuestGateway = "169.254.0.1";  // the namespace's end; DNS helper
inline constexpr const char* kGuestAddress = "169.254.0.2";
inline constexpr uint32_t kGuestPrefixLength = 30;

// Inside the supervisor's root.
inline constexpr const char* kVmWorkDirectory = "/work";
inline constexpr const char* kVmSecretsDirectory = "/secrets";
// In the cell directory on the host, written by the supervisor when the guest reports its exit:
// "oomKills=<n> vmmStartUs=<µs> guestUpUs=<µs> runUs=<µs> powerOffUs=<µs>\n": the guest's OOM
// kills (which the host cgroup does not see), then the cell's phases from the start byte: the
// TAP, channel and VMM started; the guest booted to its init's hello; the config sent to the
// exit frame (the workload's run and the working directory's copy); the VMM gone. Written after
// the supervisor read guest bytes, so the launcher parses it as untrusted.
inline constexpr const char* kVmGuestExitFile = "guest-exit";

// A boot file as the spawner verified it: its path and identity (reopened by the supervisor,
// which refuses a file whose identity changed in between).
struct VerifiedBootFile {
  std::string path;
  std::string sha256;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  struct timespec mtime {};
  struct timespec ctime {};
};

struct VmBootFiles {
  VerifiedBootFile kernel, initramfs, rootDisk;
};

struct VmSupervisorPlan {
  VmPlan plan;
  VmBoot boot;
  VmBootFiles files;
  std::shared_ptr<const VmmDriver> driver;
  // How long the guest may take from the VMM's start to its hello (TCG boots in ~2 s here, and
  // a cpuMax quota slows it down in proportion).
  int bootTimeoutMs = 60000;
};

// The supervisor's whole life, in the cloned child. Never returns.
[[noreturn]] void runVmSupervisor(const VmSupervisorPlan& plan, InitChannels fds) noexcept;

// Opens `file.path` O_RDONLY|O_CLOEXEC and checks its identity against `file`; throws
// std::runtime_error naming the file when it changed since it was verified.
int openVerifiedBootFile(const VerifiedBootFile& file);

}  // namespace cellos::vmm
