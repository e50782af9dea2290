#include "vmm-agent/launcher/artifact_open.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace cellos::vmm {

namespace {

// O_NONBLOCK: opening a FIFO for reading must not wait for a writer (one never comes), and a
// device's open must not block either; O_NOCTTY: a tty node must not become our terminal.
constexpr int kArtifactOpenFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;

OpenedArtifact refuse(std::string why) {
  OpenedArtifact out;
  out.refused = std::move(why);
  return out;
}

// Splits `relative` into components; empty when any is empty, "." or "..".
std::vector<std::string> components(const std::string& relative) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = relative.find('/', start);
    std::string part = relative.substr(start, slash == std::string::npos ? slash : slash - start);
    if (part.empty() || part == "." || part == "..") return {};
    parts.push_back(std::move(part));
    if (slash == std::string::npos) return parts;
    start = slash + 1;
  }
}

std::string describeType(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symlink";
  return "not a regular file";
}

// Why an open below the working directory failed, in the words export.v2.failed carries.
std::string describeOpenError(int error) {
  switch (error) {
    case ELOOP:
      return "a symlink is on its path (artifacts are read without following symlinks)";
    case EXDEV:
      return "its path leaves the working directory (or crosses into another file system)";
    case ENOENT:
      return "no such file in the working directory";
    case ENOTDIR:
      return "a component of its path is not a directory";
    case EACCES:
      return "permission denied (a device node on a nodev file system?)";
    default:
      return std::string("cannot open: ") + strerror(error);
  }
}

// The checks every opened candidate passes before it is handed out: a regular file, within
// the cap.
OpenedArtifact checkOpened(int fd, uint64_t maxBytes) {
  struct stat st {};
  if (fstat(fd, &st) < 0) {
    int error = errno;
    close(fd);
    return refuse(std::string("fstat: ") + strerror(error));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return refuse("is " + describeType(st.st_mode) + ", not a regular file");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > maxBytes) {
    close(fd);
    return refuse("is " + std::to_string(size) + " bytes, over the export cap of " +
                  std::to_string(maxBytes) + " bytes");
  }
  OpenedArtifact out;
  out.fd = fd;
  out.bytes = size;
  return out;
}

}  // namespace

OpenedArtifact openArtifactByWalk(int workdirFd, const std::string& relativePath,
                                  uint64_t maxBytes) {
  std::vector<std::string> parts = components(relativePath);
  if (parts.empty()) return refuse("its path is empty or has a \".\" or \"..\" component");
  struct stat root {};
  if (fstat(workdirFd, &root) < 0) return refuse(std::string("fstat: ") + strerror(errno));
  int dir = fcntl(workdirFd, F_DUPFD_CLOEXEC, 3);
  if (dir < 0) return refuse(std::string("fcntl(F_DUPFD_CLOEXEC): ") + strerror(errno));
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = openat(dir, parts[i].c_str(), O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
    int error = errno;
    // O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR: say what it really is.
    struct stat link {};
    if (next < 0 && error == ENOTDIR &&
        fstatat(dir, parts[i].c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode)) {
      error = ELOOP;
    }
    close(dir);
    if (next < 0) return refuse(describeOpenError(error));
    struct stat st {};
    if (fstat(next, &st) < 0 || st.st_dev != root.st_dev) {
      close(next);
      return refuse(describeOpenError(EXDEV));
    }
    dir = next;
  }
  int fd = openat(dir, parts.back().c_str(), kArtifactOpenFlags);
  int error = errno;
  close(dir);
  if (fd < 0) return refuse(describeOpenError(error));
  struct stat st {};
  if (fstat(fd, &st) == 0 && st.st_dev != root.st_dev) {
    close(fd);
    return refuse(describeOpenError(EXDEV));
  }
  return checkOpened(fd, maxBytes);
}

OpenedArtifact openArtifact(int workdirFd, const std::string& workingDirectory,
                            const std::string& path, uint64_t maxBytes) {
  std::string prefix = workingDirectory == "/" ? "/" : workingDirectory + "/";
  if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) {
    return refuse("its path is not inside the working directory " + workingDirectory);
  }
  std::string relative = path.substr(prefix.size());
  // The document's validator already refuses these; the launcher does not rely on it.
  if (components(relative).empty()) {
    return refuse("its path is empty or has a \".\" or \"..\" component");
  }
  open_how how{};
  how.flags = static_cast<uint64_t>(kArtifactOpenFlags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd = syscall(SYS_openat2, workdirFd, relative.c_str(), &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) return openArtifactByWalk(workdirFd, relative, maxBytes);
  if (fd < 0) return refuse(describeOpenError(errno));
  return checkOpened(static_cast<int>(fd), maxBytes);
}

int openWorkingDirectory(const std::string& path) {
  return open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
}

}  // namespace cellos::vmm
