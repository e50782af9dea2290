#include "vmm-agent/backends/microvm/vm_boot_files.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace cellos::vmm {

namespace {

VerifiedBootFile identityOf(const VerifiedFile& file) {
  struct stat st {};
  if (fstat(file.fd.get(), &st) < 0) throwErrno("fstat(" + file.path + ")");
  VerifiedBootFile f;
  f.path = file.path;
  f.sha256 = file.sha256;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = st.st_size;
  f.mtime = st.st_mtim;
  f.ctime = st.st_ctim;
  return f;
}

// The same path once ".." and symbolic links are resolved ("<build>/bin/../vm/initramfs.cpio").
bool sameFile(const std::string& a, const std::string& b) {
  std::error_code ea, eb;
  auto ca = std::filesystem::weakly_canonical(a, ea);
  auto cb = std::filesystem::weakly_canonical(b, eb);
  return !ea && !eb && ca == cb;
}

std::string readBootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

uint64_t millisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace

std::string bootKernelPath(const MicrovmConfig& config) {
  std::ifstream in(config.kernelDir + "/current");
  std::string release;
  std::getline(in, release);
  return config.kernelDir + "/" + release + "/vmlinuz";
}

std::string bootManifestDir(const MicrovmConfig& config) {
  size_t slash = config.initramfs.rfind('/');
  return slash == std::string::npos ? "." : config.initramfs.substr(0, slash);
}

BootFilePreparer::BootFilePreparer(MicrovmConfig config)
    : config_(std::move(config)),
      verifiedPath_(config_.imagesDir + "/verified-digests"),
      bootId_(readBootId()) {
  verified_.load(verifiedPath_, bootId_);
}

// An image this process has just built was hashed as it was written (buildRootImage): hashing
// it again before its first boot would cost seconds for nothing.
void BootFilePreparer::rememberBuilt(const RootImage& image) {
  struct stat st {};
  if (!image.built || stat(image.path.c_str(), &st) < 0) return;
  if (uint64_t(st.st_size) == image.sizeBytes) verified_.remember(st, image.sha256);
}

VmBootFiles BootFilePreparer::prepare(const std::string& imageRoot,
                                      const std::string& workingDirectory) {
  BootManifest manifest = readBootManifest(bootManifestDir(config_));
  // The manifest pins what the build packed for: a launcher pointed at another kernel would
  // boot modules of one release under the kernel of another.
  if (!sameFile(manifest.kernel.path, bootKernelPath(config_))) {
    throw std::runtime_error("the boot manifest in " + bootManifestDir(config_) +
                             " pins the kernel " + manifest.kernel.path + ", not " +
                             bootKernelPath(config_) + " (rebuild the vm-initramfs target)");
  }
  if (!sameFile(manifest.initramfs.path, config_.initramfs)) {
    throw std::runtime_error("the boot manifest in " + bootManifestDir(config_) +
                             " pins the initramfs " + manifest.initramfs.path + ", not " +
                             config_.initramfs);
  }

  auto start = std::chrono::steady_clock::now();
  RootImageSource source;
  source.imageRoot = imageRoot;
  bool fixed = std::any_of(std::begin(kRootImageMountPoints), std::end(kRootImageMountPoints),
                           [&](const char* m) { return workingDirectory == m; });
  if (!workingDirectory.empty() && !fixed) source.mountPoints.push_back(workingDirectory);
  std::string key = imageRoot + '\n' + workingDirectory;
  auto found = images_.find(key);
  timings_ = {};
  if (found == images_.end()) {
    RootImage image = buildRootImage(source, config_.imagesDir);
    if (image.built) {
      spdlog::info("built the microvm root image {} ({} MB) in {} ms", image.path,
                   image.sizeBytes >> 20, image.buildMillis);
    }
    timings_.imageBuilt = image.built;
    rememberBuilt(image);
    found = images_.emplace(key, std::move(image)).first;
  }
  timings_.imageMillis = millisSince(start);
  manifest.rootImage = {found->second.path, found->second.sha256};

  start = std::chrono::steady_clock::now();
  BootArtifacts artifacts;
  try {
    artifacts = verifyBootArtifacts(manifest, verified_);
  } catch (const std::system_error& e) {
    // Another launcher's builder may have evicted the image this spawner remembered (each
    // keeps the most recently used few): build or find it again, once.
    if (e.code() != std::errc::no_such_file_or_directory) throw;
    images_.erase(found);
    RootImage image = buildRootImage(source, config_.imagesDir);
    timings_.imageBuilt = image.built;
    rememberBuilt(image);
    manifest.rootImage = {image.path, image.sha256};
    images_.emplace(key, std::move(image));
    artifacts = verifyBootArtifacts(manifest, verified_);
  }
  timings_.verifyMillis = millisSince(start);
  spdlog::info("microvm boot files: root image {} ms{}, digests {} ms", timings_.imageMillis,
               timings_.imageBuilt ? " (built)" : "", timings_.verifyMillis);
  if (verified_.hashes() != savedHashes_) {
    savedHashes_ = verified_.hashes();
    try {
      verified_.save(verifiedPath_, bootId_);
    } catch (const std::exception& e) {
      // The next launcher hashes the files again; nothing else depends on the file.
      spdlog::warn("could not keep the verified boot digests: {}", e.what());
    }
  }
  return {identityOf(artifacts.kernel), identityOf(artifacts.initramfs),
          identityOf(artifacts.rootImage)};
}

}  // namespace cellos::vmm
