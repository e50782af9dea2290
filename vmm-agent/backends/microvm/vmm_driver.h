#pragma once
// The VMM-specific part of a VM cell: how one VMM is started for a guest and how it is told to
// stop. Everything else of a VM cell (guest image, the guest's configuration, the host<->guest
// channel, TAP and nftables, limits, teardown, reaping, events) is the VM cell runtime's
// (vm_supervisor.h, microvm_cell.h) and written once. This version has one driver, QEMU's
// microvm machine (qemu_driver.h); a Firecracker driver would be a second implementation.
//
// The runtime hands the VMM every resource as an fd it opened itself, at fixed numbers: the
// VMM opens no host path of its own (its mount namespace holds only its binary's /usr, a /dev
// of null/zero/urandom, and /dev/kvm when it accelerates with KVM).

#include <cstdint>
#include <string>
#include <vector>

namespace cellos::vmm {

// Where the runtime puts each resource in the VMM's process (dup2'd before exec).
inline constexpr int kVmmKernelFd = 3;     // the guest kernel (bzImage), O_RDONLY
inline constexpr int kVmmInitramfsFd = 4;  // the project's initramfs (guest init), O_RDONLY
inline constexpr int kVmmRootDiskFd = 5;   // the cell's read-only root disk (ext4), O_RDONLY
inline constexpr int kVmmTapFd = 6;        // the cell's TAP device (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)
inline constexpr int kVmmChannelFd = 7;    // the guest's channel port (a stream socket end)
inline constexpr int kVmmConsoleFd = 8;    // the guest's serial console (a stream socket end)

// "kvm" or "tcg" (the runtime decides which: microvm_cell.h, VmAccel).
struct VmBoot {
  std::string accelerator = "tcg";
  uint64_t memoryMiB = 256;
  uint32_t vcpus = 1;
  std::string guestMac = "52:54:00:12:34:56";
  // Appended to the kernel command line: never configuration or secrets (those cross the
  // channel), only boot switches such as the probe's "cellos.poweroff".
  std::string extraKernelArgs;
  // Only the kernel, the initramfs and the console (fds kVmmKernelFd, kVmmInitramfsFd,
  // kVmmConsoleFd): the accelerator probe, whose guest powers off at once.
  bool bare = false;
};

class VmmDriver {
 public:
  virtual ~VmmDriver() = default;
  virtual const char* name() const = 0;
  // The VMM's argv (argv[0] the binary's absolute path), for the fds above.
  virtual std::vector<std::string> commandLine(const VmBoot& boot) const = 0;
};

}  // namespace cellos::vmm
