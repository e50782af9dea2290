#pragma once
// The guest's file systems. The initramfs is the guest init's own root: the kernel's devtmpfs,
// proc and sysfs go there first. The workload's root is the host's ext4 image, read-only at
// /newroot, with everything a workload writes on tmpfs over the image's empty mount points
// (the image carries /proc /dev /tmp /run and the working directory: nothing can be created on
// a read-only root, so a missing mount point is an error, not something to make).

#include <string>
#include <vector>

#include "ipc/vm_channel.h"

namespace cellos::guest {

inline constexpr const char* kNewRoot = "/newroot";
inline constexpr const char* kRootDisk = "/dev/vda";

// devtmpfs at /dev, proc at /proc, sysfs at /sys.
void mountEarly();

// finit_module for each module of kModuleLoadOrder from `dir`/<name>.ko, in order; a module
// already there (EEXIST) is fine. Returns one line per module that failed (empty: all loaded);
// the caller reports them once the control port is up (or on the console if it never is).
std::vector<std::string> loadModules(const std::string& dir);

// Mounts the root disk read-only, nodev, nosuid at kNewRoot, waiting up to `waitMs` for the
// block device to appear.
void mountRootDisk(unsigned waitMs);

// Inside kNewRoot: proc, a fresh /dev (null zero full random urandom, /dev/shm), /tmp, /run,
// the working directory (tmpfs of config.workingDirectoryMaxBytes), /etc/resolv.conf when the
// config has one, and the secrets when delivered as files. Wipes every secret value of
// `config` it wrote to a file.
void buildWorkloadRoot(vmchannel::GuestConfig& config);

// The working directory as the guest init sees it (kNewRoot + config.workingDirectory).
std::string hostSideWorkingDirectory(const vmchannel::GuestConfig& config);

}  // namespace cellos::guest
