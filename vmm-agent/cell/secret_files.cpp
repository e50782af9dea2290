#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/sys_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {}  // namespace

bool isSecretName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

void mountSecretsTmpfs(const std::string& path, uid_t ownerId) {
  std::string parent = path.substr(0, path.rfind('/'));
  if (!parent.empty() && mkdir(parent.c_str(), 0755) < 0 && errno != EEXIST) {
    throwErrno("mkdir(" + parent + ", 0755)");
  }
  if (mkdir(path.c_str(), 0755) < 0 && errno != EEXIST) throwErrno("mkdir(" + path + ", 0755)");
  std::string options = "mode=0700,size=" + std::to_string(kSecretsTmpfsBytes) +
                        ",uid=" + std::to_string(ownerId) + ",gid=" + std::to_string(ownerId);
  if (mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str()) <
      0) {
    throwErrno("mount(tmpfs -> " + path + ", \"" + options + "\")");
  }
}

namespace {

// Creates files as the workload's host id for as long as it lives: the launcher holds no
// CAP_CHOWN, so the owner is set by creating the file under that fsuid/fsgid. (The kernel drops
// the file-related capabilities from the effective set while the fsuid is not 0, and restores
// them when it is 0 again.)
class ActingAs {
 public:
  explicit ActingAs(uid_t id) {
    setfsgid(id);
    setfsuid(id);
    changed_ = static_cast<uid_t>(setfsuid(static_cast<uid_t>(-1))) == id &&
               static_cast<gid_t>(setfsgid(static_cast<gid_t>(-1))) == id;
  }
  ~ActingAs() {
    setfsuid(0);
    setfsgid(0);
  }
  bool changed() const { return changed_; }

 private:
  bool changed_ = false;
};

}  // namespace

std::vector<std::string> writeSecretFiles(
    int dirFd, const std::vector<std::pair<std::string_view, std::string_view>>& secrets,
    uid_t ownerId, bool forEnvironment) {
  std::vector<std::string> written;
  ActingAs owner(ownerId);
  if (!owner.changed()) throw std::runtime_error("setfsuid/setfsgid to the workload's id failed");
  for (const auto& [name, value] : secrets) {
    std::string fileName(name);
    if (!isSecretName(name)) throw std::runtime_error("invalid secret name \"" + fileName + "\"");
    if (forEnvironment && value.find('\0') != std::string_view::npos) {
      throw std::runtime_error("secret " + fileName +
                               " contains a NUL byte and cannot be delivered in env");
    }
    int fd =
        openat(dirFd, fileName.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) {
      throw std::runtime_error("secret " + fileName + ": create: " + strerror(errno));
    }
    auto fail = [&](const char* call) {
      int error = errno;
      close(fd);
      throw std::runtime_error("secret " + fileName + ": " + call + ": " + strerror(error));
    };
    for (size_t done = 0; done < value.size();) {
      ssize_t n = write(fd, value.data() + done, value.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("write");
      done += static_cast<size_t>(n);
    }
    if (fchmod(fd, 0400) < 0) fail("fchmod");
    close(fd);
    written.push_back(fileName);
  }
  return written;
}

std::vector<std::string> takeSecretEnvironment(const std::string& path) {
  // Built in place and never moved afterwards (a moved short string leaves its bytes behind in
  // the source's inline buffer), so every copy of a value is one wipeStrings reaches.
  constexpr size_t kMaxSecrets = 1024;
  std::vector<std::string> env;
  env.reserve(kMaxSecrets);
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) throwErrno("opendir(" + path + ")");
  try {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name == "." || name == "..") continue;
      if (!isSecretName(name)) throw std::runtime_error("unexpected file " + path + "/" + name);
      int fd = openat(dirfd(dir), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) throwErrno("open(" + path + "/" + name + ")");
      if (env.size() == kMaxSecrets) throw std::runtime_error("more than 1024 secrets");
      struct stat st {};
      if (fstat(fd, &st) < 0) throwErrno("fstat(" + path + "/" + name + ")");
      std::string& var = env.emplace_back();
      var.reserve(name.size() + 1 + static_cast<size_t>(st.st_size) + 1);
      var.append(name).append(1, '=');  // no assignment: it could swap out the reserved buffer
      char buffer[4096];
      for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (var.size() + static_cast<size_t>(n) > var.capacity()) {
          throw std::runtime_error("secret " + name + " changed while being read");
        }
        var.append(buffer, static_cast<size_t>(n));
      }
      explicit_bzero(buffer, sizeof buffer);
      close(fd);
    }
  } catch (...) {
    closedir(dir);
    wipeStrings(env);
    throw;
  }
  closedir(dir);
  if (umount2(path.c_str(), MNT_DETACH) < 0) {
    wipeStrings(env);
    throwErrno("umount2(" + path + ", MNT_DETACH)");
  }
  return env;
}

void wipeStrings(std::vector<std::string>& strings) {
  for (auto& s : strings) {
    if (!s.empty()) explicit_bzero(s.data(), s.size());
  }
}

}  // namespace cellos::vmm
