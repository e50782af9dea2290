// cellos-vm-boot-manifest: pins a guest kernel and the project's initramfs by digest, for the
// microvm backend to check before every boot (vm_image.h, BootManifest). The build runs it right
// after it packs the initramfs (guest-init/CMakeLists.txt), so what is pinned is what was built.

#include "vmm-agent/backends/microvm/vm_image.h"

#include <fcntl.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

const char kUsage[] =
    "usage: cellos-vm-boot-manifest --kernel VMLINUZ --initramfs CPIO --out DIR\n"
    "\n"
    "Writes DIR/boot-manifest.json: the absolute paths of the guest kernel and initramfs with\n"
    "their SHA-256 digests. The VM launcher refuses to boot a guest whose kernel or initramfs\n"
    "does not have the digest this file pins.\n";

std::string digestOf(const std::string& path) {
  cellos::vmm::Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) cellos::vmm::throwErrno("open(" + path + ")");
  return cellos::vmm::sha256OfFd(fd.get(), path);
}

}  // namespace

int main(int argc, char** argv) {
  std::string kernel, initramfs, out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "cellos-vm-boot-manifest: %s needs a value\n%s", arg.c_str(), kUsage);
      return 2;
    }
    std::string value = argv[++i];
    if (arg == "--kernel") {
      kernel = value;
    } else if (arg == "--initramfs") {
      initramfs = value;
    } else if (arg == "--out") {
      out = value;
    } else {
      std::fprintf(stderr, "cellos-vm-boot-manifest: unknown option %s\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  if (kernel.empty() || initramfs.empty() || out.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    cellos::vmm::BootManifest manifest;
    manifest.kernel = {kernel, digestOf(kernel)};
    manifest.initramfs = {initramfs, digestOf(initramfs)};
    cellos::vmm::writeBootManifest(out, manifest);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cellos-vm-boot-manifest: %s\n", e.what());
    return 1;
  }
  return 0;
}
