#include "broker/cli/runtime_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

namespace cellos::cli {

namespace {

constexpr const char* kRunRoot = "/run";
constexpr const char* kPrefix = "cellos-run.";

// /proc/self/mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string unescapeMountPoint(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// A cell mounts nothing on the host's side, but a directory about to be removed recursively
// must not have a file system mounted under it (remove_all would descend into it): detach
// anything there, deepest first.
void detachMountsUnder(const std::string& dir) {
  std::vector<std::string> mountPoints;
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 5 && fields >> field; ++i) {
    }
    std::string mountPoint = unescapeMountPoint(field);
    if (mountPoint == dir || mountPoint.rfind(dir + "/", 0) == 0) mountPoints.push_back(mountPoint);
  }
  std::sort(mountPoints.rbegin(), mountPoints.rend());
  for (const std::string& mountPoint : mountPoints) {
    if (umount2(mountPoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL) {
      fprintf(stderr, "cellos: cannot detach %s: %s\n", mountPoint.c_str(), strerror(errno));
    }
  }
}

}  // namespace

HeldLock& HeldLock::operator=(HeldLock&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void HeldLock::reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

HeldLock holdRuntimeDirectory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open(" + dir + ")");
  // Nobody else can hold it: it was made a moment ago under the lock on /run.
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    throw std::system_error(e, std::generic_category(), "flock(" + dir + ", LOCK_EX)");
  }
  return HeldLock(fd);
}

HeldLock reapDeadRuntimeDirectories() {
  int runFd = open(kRunRoot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (runFd < 0) throw std::system_error(errno, std::generic_category(), "open(/run)");
  HeldLock creation(runFd);
  // Held only while a run makes its directory or reaps others: never for long.
  int rc;
  do {
    rc = flock(runFd, LOCK_EX);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw std::system_error(errno, std::generic_category(), "flock(/run, LOCK_EX)");

  std::vector<std::string> names;
  if (DIR* dir = opendir(kRunRoot)) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name.rfind(kPrefix, 0) == 0) names.push_back(name);
    }
    closedir(dir);
  }
  for (const std::string& name : names) {
    std::string path = std::string(kRunRoot) + "/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;  // not a directory of ours (or gone)
    struct stat st {};
    bool dead = fstat(fd, &st) == 0 && st.st_uid == 0 && flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (dead) {
      detachMountsUnder(path);
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      if (ec) {
        fprintf(stderr, "cellos: cannot remove %s, left by a killed run: %s\n", path.c_str(),
                ec.message().c_str());
      } else {
        fprintf(stderr, "cellos: removed %s, left by a killed run\n", path.c_str());
      }
    }
    close(fd);
  }
  return creation;
}

}  // namespace cellos::cli
