#pragma once
// The VM cell's initramfs as a newc cpio archive (the format the kernel unpacks into its rootfs:
// Documentation/driver-api/early-userspace/buffer-format.rst): "070701" headers of thirteen
// 8-digit hex fields, name and data each padded to 4 bytes, "TRAILER!!!" last. Written here
// rather than with cpio(1) so the build needs no cpio, no root and no loop mount, and so the
// archive is byte-for-byte reproducible: every mtime is 0, owners are 0, inode numbers are the
// entries' positions.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cellos::guest {

struct CpioEntry {
  std::string name;   // relative: "init", "lib/modules/virtio.ko", "dev"
  uint32_t mode = 0;  // file type and permission bits (S_IFREG | 0755, S_IFDIR | 0755)
  std::string data;   // a regular file's content; empty for a directory
};

// The whole archive, entries in the order given, then the trailer.
std::string newcArchive(const std::vector<CpioEntry>& entries);

// Where each module of kModuleLoadOrder sits in the kernel package's kernel/ tree.
struct ModuleSource {
  std::string_view name;
  std::string_view path;
};
extern const std::vector<ModuleSource> kModuleSources;

// The guest's initramfs: the empty directories the init mounts on (dev, proc, sys, newroot),
// /init (mode 0755) and lib/modules/<name>.ko for each module. Throws std::runtime_error naming
// the file it could not read.
std::vector<CpioEntry> initramfsEntries(const std::string& initPath, const std::string& modulesDir);

}  // namespace cellos::guest
