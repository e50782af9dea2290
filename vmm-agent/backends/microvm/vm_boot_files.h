#pragma once
// The files a VM cell boots from, found and checked in the microVM spawner before each boot:
// the guest kernel (<kernelDir>/<current>/vmlinuz), the project's initramfs, and the cell's
// read-only root disk (vm_image.h: built from the VM host view or a registered directory image,
// cached by content). Each is hashed (SHA-256) and compared against its manifest; a file whose
// identity (device, inode, size, mtime, ctime) matches one this process already verified is not
// hashed again (a multi-GB disk per boot would cost seconds), and the supervisor refuses a file
// whose identity changed in between (vm_supervisor.h, openVerifiedBootFile).

#include "vmm-agent/backends/microvm/microvm_cell.h"
#include "vmm-agent/backends/microvm/vm_supervisor.h"

#include <string>

namespace cellos::vmm {

// <kernelDir>/<the release <kernelDir>/current names>/vmlinuz.
std::string bootKernelPath(const MicrovmConfig& config);

// The three verified boot files for a cell whose image is `imageRoot` ("" for the host view).
// Throws std::runtime_error naming the file and both digests on a mismatch.
VmBootFiles prepareBootFiles(const MicrovmConfig& config, const std::string& imageRoot);

}  // namespace cellos::vmm
