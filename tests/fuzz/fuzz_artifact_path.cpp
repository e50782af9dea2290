// libFuzzer: the artifact path a request names (it comes from the broker, which took it from a
// cell document) against a fixed hostile working directory (symlinks out and up, a FIFO, a
// directory, a file outside). Whatever the bytes, the opener either refuses with a reason or
// returns a regular file that lies inside the working directory -- through openat2 and through
// the fallback walk alike.

#include "vmm-agent/launcher/artifact_open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

// Built once, removed at exit.
struct Tree {
  std::string root, workdir;
  int workdirFd = -1;
  dev_t device = 0;

  Tree() {
    char dir[] = "/tmp/cellos-fuzz-artifact-XXXXXX";
    if (mkdtemp(dir) == nullptr) abort();
    root = dir;
    workdir = root + "/ws";
    std::filesystem::create_directories(workdir + "/out/deep");
    std::ofstream(workdir + "/out/report") << "report";
    std::ofstream(workdir + "/out/deep/x") << "x";
    std::ofstream(root + "/outside") << "outside";
    symlink("/etc/passwd", (workdir + "/out/passwd").c_str());
    symlink("..", (workdir + "/out/up").c_str());
    symlink("report", (workdir + "/out/alias").c_str());
    mkfifo((workdir + "/out/pipe").c_str(), 0600);
    workdirFd = cellos::vmm::openWorkingDirectory(workdir);
    struct stat st {};
    if (workdirFd < 0 || fstat(workdirFd, &st) < 0) abort();
    device = st.st_dev;
  }
  ~Tree() {
    if (workdirFd >= 0) close(workdirFd);
    std::error_code ignored;
    std::filesystem::remove_all(root, ignored);
  }
  Tree(const Tree&) = delete;
  Tree& operator=(const Tree&) = delete;
};

void check(const Tree& t, const cellos::vmm::OpenedArtifact& opened) {
  if (opened.fd < 0) {
    if (opened.refused.empty()) abort();  // a refusal always says why
    return;
  }
  struct stat st {};
  if (fstat(opened.fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != t.device ||
      static_cast<uint64_t>(st.st_size) != opened.bytes || opened.bytes > 4096) {
    abort();
  }
  char target[4096];
  ssize_t n =
      readlink(("/proc/self/fd/" + std::to_string(opened.fd)).c_str(), target, sizeof target - 1);
  if (n < 0) abort();
  std::string where(target, static_cast<size_t>(n));
  if (where.compare(0, t.workdir.size() + 1, t.workdir + "/") != 0) abort();
  close(opened.fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tree tree;
  std::string path(reinterpret_cast<const char*>(data), size);
  check(tree, cellos::vmm::openArtifact(tree.workdirFd, "/ws", path, 4096));
  check(tree, cellos::vmm::openArtifactByWalk(tree.workdirFd, path, 4096));
  return 0;
}
