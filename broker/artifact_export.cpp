#include "broker/artifact_export.h"

#include "core/encoding.h"

#include "broker/jsonl_log.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include <kj/debug.h>

namespace cellos::broker {

namespace {

constexpr size_t kChunkBytes = 1 << 20;

[[noreturn]] void fail(const std::string& what, int error) {
  throw std::runtime_error(what + ": " + strerror(error));
}

void makeDirectory(int rootFd, const std::string& relative) {
  if (mkdirat(rootFd, relative.c_str(), 0750) < 0 && errno != EEXIST) {
    fail("mkdir " + relative, errno);
  }
}

// One copy in progress: the temporary file, the running digest, and the cleanup that removes
// the temporary file unless the copy was renamed into place.
struct Copy {
  int rootFd;
  std::string tempPath;   // relative to the root
  std::string finalPath;  // relative to the root
  int in;
  int out = -1;
  uint64_t maxBytes;
  uint64_t bytes = 0;
  bool committed = false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> digest{EVP_MD_CTX_new(),
                                                                 &EVP_MD_CTX_free};
  std::vector<char> buffer = std::vector<char>(kChunkBytes);

  ~Copy() {
    if (out >= 0) close(out);
    if (!committed && !tempPath.empty()) unlinkat(rootFd, tempPath.c_str(), 0);
  }

  // Reads and writes one chunk; true at end of file.
  bool step() {
    ssize_t n;
    do {
      n = read(in, buffer.data(), buffer.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) fail("read", errno);
    if (n == 0) return true;
    bytes += static_cast<uint64_t>(n);
    if (bytes > maxBytes) {
      throw std::runtime_error("grew past the export cap of " + std::to_string(maxBytes) +
                               " bytes while being read");
    }
    if (EVP_DigestUpdate(digest.get(), buffer.data(), static_cast<size_t>(n)) != 1) {
      throw std::runtime_error("EVP_DigestUpdate failed");
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write(out, buffer.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail("write " + tempPath, errno);
      done += w;
    }
    return false;
  }
};

kj::Promise<void> pump(Copy& copy) {
  if (copy.step()) return kj::READY_NOW;
  return kj::evalLater([&copy]() { return pump(copy); });
}

}  // namespace

ArtifactExporter::ArtifactExporter(const std::string& root, uint64_t maxBytes, uid_t ownerUid,
                                   gid_t ownerGid)
    : root_(root), maxBytes_(maxBytes) {
  if (mkdir(root.c_str(), 0750) == 0 && geteuid() == 0) {
    KJ_SYSCALL(chown(root.c_str(), ownerUid, ownerGid), root);
  }
  KJ_SYSCALL(rootFd_ = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), root);
}

ArtifactExporter::~ArtifactExporter() {
  if (rootFd_ >= 0) close(rootFd_);
}

kj::Promise<ExportedArtifact> ArtifactExporter::copy(int fd, const std::string& cellId,
                                                     const std::string& runId,
                                                     const std::string& name) {
  return kj::evalNow([&]() {
    auto copy = kj::heap<Copy>();
    copy->rootFd = rootFd_;
    copy->in = fd;
    copy->maxBytes = maxBytes_;
    makeDirectory(rootFd_, cellId);
    std::string runDir = cellId + "/" + runId;
    makeDirectory(rootFd_, runDir);
    copy->finalPath = runDir + "/" + name;
    // In the cell's directory, beside the run directories: no artifact name can collide with
    // it, and rename stays within one file system.
    std::string temp = cellId + "/." + runId + ".partial";
    copy->out = openat(rootFd_, temp.c_str(), kCreateOnlyFlags, 0640);
    if (copy->out < 0) fail("create " + temp, errno);
    copy->tempPath = temp;
    if (!copy->digest || EVP_DigestInit_ex(copy->digest.get(), EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
    }
    auto& ref = *copy;
    return pump(ref).then([this, copy = kj::mv(copy)]() mutable {
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int size = 0;
      if (EVP_DigestFinal_ex(copy->digest.get(), digest, &size) != 1) {
        throw std::runtime_error("EVP_DigestFinal_ex failed");
      }
      if (fsync(copy->out) < 0) fail("fsync " + copy->tempPath, errno);
      if (renameat(rootFd_, copy->tempPath.c_str(), rootFd_, copy->finalPath.c_str()) < 0) {
        fail("rename to " + copy->finalPath, errno);
      }
      copy->committed = true;
      return ExportedArtifact{
          root_ + "/" + copy->finalPath,
          core::hexEncode(std::string_view(reinterpret_cast<const char*>(digest), size)),
          copy->bytes};
    });
  });
}

}  // namespace cellos::broker
