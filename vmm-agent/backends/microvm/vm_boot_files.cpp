// TEMPORARY (not committed): replaced by the vm_image-based implementation.
#include "vmm-agent/backends/microvm/vm_boot_files.h"

#include <sys/stat.h>
#include <fstream>
#include <stdexcept>

namespace cellos::vmm {

namespace {
VerifiedBootFile identity(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) throw std::runtime_error("no " + path);
  VerifiedBootFile f;
  f.path = path;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = st.st_size;
  f.mtime = st.st_mtim;
  f.ctime = st.st_ctim;
  return f;
}
}  // namespace

std::string bootKernelPath(const MicrovmConfig& config) {
  std::ifstream in(config.kernelDir + "/current");
  std::string release;
  std::getline(in, release);
  return config.kernelDir + "/" + release + "/vmlinuz";
}

VmBootFiles prepareBootFiles(const MicrovmConfig& config, const std::string& imageRoot) {
  return {identity(bootKernelPath(config)), identity(config.initramfs),
          identity(config.imagesDir + "/dev-root.ext4")};
}

}  // namespace cellos::vmm
