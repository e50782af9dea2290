#pragma once
// The files a VM cell boots from, found and checked in the microVM spawner before each boot:
// the guest kernel and the project's initramfs, pinned by digest in the boot manifest beside the
// initramfs (<dir>/boot-manifest.json, written by the build: cellos-vm-boot-manifest), and the
// cell's read-only root disk (vm_image.h: built from the VM host view or a registered directory
// image, cached by content). Each is hashed (SHA-256) and compared with its manifest; a file
// whose identity (device, inode, size, mtime, ctime) matches one this process already verified
// is not hashed again (a 1.6 GB disk per boot would cost seconds), and the supervisor refuses a
// file whose identity changed in between (vm_supervisor.h, openVerifiedBootFile).

#include "vmm-agent/backends/microvm/microvm_cell.h"
#include "vmm-agent/backends/microvm/vm_image.h"
#include "vmm-agent/backends/microvm/vm_supervisor.h"

#include <map>
#include <string>

namespace cellos::vmm {

// <kernelDir>/<the release <kernelDir>/current names>/vmlinuz.
std::string bootKernelPath(const MicrovmConfig& config);

// <the initramfs's directory>/boot-manifest.json: where the build writes the manifest that pins
// the kernel and initramfs it packed for.
std::string bootManifestDir(const MicrovmConfig& config);

// One spawner's boot files: the root images it built or reused (one per image and working
// directory, kept for the spawner's life: a host upgraded under a running launcher gets a new
// image at the launcher's next start) and the digests it verified.
class BootFilePreparer {
 public:
  explicit BootFilePreparer(MicrovmConfig config);

  // The three verified boot files for a cell whose image is `imageRoot` ("" for the host view)
  // and whose guest mounts its working directory on `workingDirectory`. Throws
  // std::runtime_error naming the file and both digests on a mismatch, or naming what the
  // manifest pins when it is not what the configuration says.
  VmBootFiles prepare(const std::string& imageRoot, const std::string& workingDirectory);

  // What the last prepare() cost, for the cell's started event and the logs.
  struct Timings {
    uint64_t imageMillis = 0;   // building or finding the root image
    uint64_t verifyMillis = 0;  // checking the three digests
    bool imageBuilt = false;
  };
  const Timings& lastTimings() const { return timings_; }

 private:
  void rememberBuilt(const RootImage& image);

  MicrovmConfig config_;
  std::map<std::string, RootImage> images_;  // by image root and working directory
  VerifiedFileCache verified_;
  std::string verifiedPath_;  // <imagesDir>/verified-digests: the cache across launchers
  std::string bootId_;
  uint64_t savedHashes_ = 0;
  Timings timings_;
};

}  // namespace cellos::vmm
