// cellos-make-initramfs: packs the VM cell's initramfs (initramfs.h) from the static guest init
// and the guest kernel's modules. A build tool run on the host; it reads two inputs and writes
// one file, nothing else.

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "guest-init/frame_writer.h"
#include "guest-init/initramfs.h"

namespace {

constexpr const char* kUsage =
    "usage: cellos-make-initramfs --init PATH --modules DIR --out FILE\n"
    "\n"
    "Writes the VM cell's initramfs, a newc cpio archive: /init (PATH, mode 0755),\n"
    "/lib/modules/<name>.ko for virtio_ring virtio virtio_mmio virtio_console virtio_blk\n"
    "failover net_failover virtio_net (from DIR, the kernel/ tree of the guest kernel's\n"
    "package, uncompressed .ko), and the empty directories dev proc sys newroot.\n"
    "The output is reproducible: mtimes and owners are 0 and inode numbers fixed.\n"
    "\n"
    "  --init PATH     the static guest init (cellos-guest-init)\n"
    "  --modules DIR   the guest kernel's modules directory\n"
    "  --out FILE      the archive to write (replaced atomically)\n"
    "  --help          this text\n";

int usageError(const std::string& why) {
  fprintf(stderr, "cellos-make-initramfs: %s\n%s", why.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string init, modules, out;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fputs(kUsage, stdout);
      return 0;
    }
    std::string* into = arg == "--init"      ? &init
                        : arg == "--modules" ? &modules
                        : arg == "--out"     ? &out
                                             : nullptr;
    if (into == nullptr) return usageError("unknown argument " + std::string(arg));
    if (i + 1 >= argc) return usageError(std::string(arg) + " needs a value");
    *into = argv[++i];
  }
  if (init.empty() || modules.empty() || out.empty()) {
    return usageError("--init, --modules and --out are all required");
  }
  try {
    std::string archive =
        cellos::guest::newcArchive(cellos::guest::initramfsEntries(init, modules));
    // Written beside the target and renamed over it: a build interrupted half-way never leaves
    // a truncated archive that a VM would boot from.
    std::string temporary = out + ".tmp";
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !cellos::guest::writeFully(fd, archive) || ::fsync(fd) != 0 || ::close(fd) != 0 ||
        ::rename(temporary.c_str(), out.c_str()) != 0) {
      fprintf(stderr, "cellos-make-initramfs: writing %s: %s\n", out.c_str(), strerror(errno));
      ::unlink(temporary.c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "cellos-make-initramfs: %s\n", e.what());
    return 1;
  }
  return 0;
}
