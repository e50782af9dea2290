#include "vmm-agent/backends/microvm/vm_image.h"

#include "core/clock.h"
#include "core/digest.h"
#include "core/encoding.h"
#include "vmm-agent/cell/cell_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

namespace cellos::vmm {
namespace {

using nlohmann::json;

constexpr uint64_t kBlock = 4096;
constexpr mode_t kKeptModeBits = 0777 | S_ISVTX;

uint64_t roundUp(uint64_t bytes) {
  return (bytes + kBlock - 1) / kBlock * kBlock;
}

int64_t nanos(const timespec& t) {
  return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

bool worldListable(const struct stat& st) {
  return (st.st_mode & (S_IROTH | S_IXOTH)) == (S_IROTH | S_IXOTH);
}

// The names in a directory but "." and "..", sorted (readdir's order is the filesystem's hash
// order; the listing and the staging order must not depend on it).
std::vector<std::string> listDirectory(int dirFd, const std::string& what) {
  int copy = fcntl(dirFd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throwErrno("fcntl(F_DUPFD_CLOEXEC, " + what + ")");
  DIR* dir = fdopendir(copy);
  if (dir == nullptr) {
    close(copy);
    throwErrno("fdopendir(" + what + ")");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, closedir);
  rewinddir(dir);
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
    errno = 0;
  }
  if (errno != 0) throwErrno("readdir(" + what + ")");
  std::sort(names.begin(), names.end());
  return names;
}

Fd openDirectoryAt(int parentFd, const std::string& name, const std::string& what) {
  int fd = openat(parentFd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) throwErrno("open(" + what + ")");
  return Fd(fd);
}

// Removes `name` under `parentFd` and everything below it, never following a symlink. Makes
// each directory writable first, so a staged 0555 directory goes too when the builder is not
// root.
void removeTree(int parentFd, const std::string& name) {
  struct stat st;
  if (fstatat(parentFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return;
    throwErrno("lstat(" + name + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    fchmodat(parentFd, name.c_str(), 0700, 0);
    Fd dir = openDirectoryAt(parentFd, name, name);
    for (const std::string& child : listDirectory(dir.get(), name)) removeTree(dir.get(), child);
    if (unlinkat(parentFd, name.c_str(), AT_REMOVEDIR) < 0) throwErrno("rmdir(" + name + ")");
  } else if (unlinkat(parentFd, name.c_str(), 0) < 0 && errno != ENOENT) {
    throwErrno("unlink(" + name + ")");
  }
}

// One pass over a source: the listing always, the staged tree too when stagingRoot >= 0.
class SourceWalk {
 public:
  explicit SourceWalk(int stagingRoot) : stagingRoot_(stagingRoot) {}

  // Takes the source entry `name` of `srcParent` as `rel` (its parent is already staged).
  void take(int srcParent, const std::string& name, const std::string& rel) {
    struct stat st;
    if (fstatat(srcParent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("lstat(" + rel + ")");
    }
    if (S_ISDIR(st.st_mode)) {
      if (!worldListable(st)) return;  // the subtree is not the unprivileged user's to read
      record(rel, 'd', st, roundUp(std::max<uint64_t>(st.st_size, kBlock)));
      Fd src = openDirectoryAt(srcParent, name, rel);
      struct stat opened;
      if (fstat(src.get(), &opened) < 0) throwErrno("fstat(" + rel + ")");
      if (opened.st_ino != st.st_ino || opened.st_dev != st.st_dev) changed(rel);
      if (staging()) stageDirectory(rel, st);
      for (const std::string& child : listDirectory(src.get(), rel)) {
        take(src.get(), child, rel + "/" + child);
      }
    } else if (S_ISREG(st.st_mode)) {
      if ((st.st_mode & S_IROTH) == 0) return;
      record(rel, 'f', st, roundUp(st.st_size));
      if (staging()) stageFile(srcParent, name, rel, st);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(PATH_MAX, '\0');
      ssize_t length = readlinkat(srcParent, name.c_str(), target.data(), target.size());
      if (length < 0) throwErrno("readlink(" + rel + ")");
      target.resize(length);
      // A target of 60 bytes or more does not fit in the inode (ext4 "fast symlinks").
      StagedEntry& entry = record(rel, 'l', st, target.size() >= 60 ? kBlock : 0);
      entry.target = target;
      if (staging()) stageSymlink(rel, target, st.st_uid, st.st_gid, st.st_mtim);
    }
    // Sockets, fifos and devices never enter an image.
  }

  // An ancestor of a host-view path: the directory alone, with the host's owner, mode and mtime.
  void takeAncestor(const std::string& rel, const struct stat& st) {
    if (entries_.count(rel) != 0) return;
    record(rel, 'd', st, kBlock);
    if (staging()) stageDirectory(rel, st);
  }

  // A directory the builder adds (a mount point, an ancestor of one): an empty directory owned
  // by root unless the source has a directory there. A non-directory in the way is removed.
  void ensureDirectory(const std::string& rel, mode_t mode) {
    size_t slash = rel.rfind('/');
    if (slash != std::string::npos) ensureDirectory(rel.substr(0, slash), 0755);
    auto it = entries_.find(rel);
    if (it != entries_.end() && it->second.type == 'd') return;
    if (it != entries_.end()) drop(rel);
    StagedEntry& entry = entries_[rel];
    entry = StagedEntry{rel, 'd', mode, 0, 0, 0, 0, ""};
    bytes_ += kBlock;
    if (staging()) {
      if (mkdirat(stagingRoot_, rel.c_str(), 0700) < 0) throwErrno("mkdir(staging/" + rel + ")");
      ownAsRoot(rel);
    }
  }

  // /etc/resolv.conf as a regular file the guest binds its own over: the source's when it is a
  // readable regular file, else an empty one.
  void ensureResolvConf() {
    ensureDirectory("etc", 0755);
    const std::string rel = "etc/resolv.conf";
    auto it = entries_.find(rel);
    if (it != entries_.end() && it->second.type == 'f') return;
    if (it != entries_.end()) drop(rel);
    entries_[rel] = StagedEntry{rel, 'f', 0644, 0, 0, 0, 0, ""};
    if (staging()) {
      int fd = openat(stagingRoot_, rel.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) throwErrno("create(staging/" + rel + ")");
      close(fd);
      ownAsRoot(rel);
      setTimes(rel, timespec{0, 0});
    }
  }

  void addSymlink(const std::string& rel, const std::string& target) {
    if (entries_.count(rel) != 0) return;
    entries_[rel] = StagedEntry{rel, 'l', 0777, 0, 0, 0, 0, target};
    if (staging()) stageSymlink(rel, target, 0, 0, timespec{0, 0});
  }

  // Gives each staged directory its final mode, mtime and owner, children before parents
  // (adding an entry changes a directory's mtime, and a 0555 directory takes no more entries).
  // The owner comes last: chmod and utimensat of a file one does not own need CAP_FOWNER, which
  // the VM launcher does not have (it has CAP_CHOWN and CAP_DAC_OVERRIDE).
  void finishDirectories() {
    if (!staging()) return;
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
      const StagedEntry& entry = it->second;
      if (entry.type != 'd') continue;
      if (fchmodat(stagingRoot_, entry.path.c_str(), entry.mode, 0) < 0) {
        throwErrno("chmod(staging/" + entry.path + ")");
      }
      timespec mtime{entry.mtimeNs / 1000000000, entry.mtimeNs % 1000000000};
      setTimes(entry.path, mtime);
      if (geteuid() == 0) ownAs(entry.path, entry.uid, entry.gid);
    }
  }

  RootImagePlan plan(std::vector<std::string> sourcePaths) const {
    RootImagePlan plan;
    plan.stagedBytes = bytes_;
    plan.sourcePaths = std::move(sourcePaths);
    // The canonical listing: fixed fields separated by NUL (no path or target contains one),
    // one entry a line, sorted by path, after a header naming the format version.
    std::string listing = "cellos-root-image v" + std::to_string(kRootImageFormatVersion);
    listing += '\n';
    for (const auto& [path, entry] : entries_) {
      plan.entries.push_back(entry);
      listing += path;
      listing += '\0';
      listing += entry.type;
      listing += '\0';
      for (const std::string& field :
           {std::to_string(entry.mode), std::to_string(entry.uid), std::to_string(entry.gid),
            std::to_string(entry.size), std::to_string(entry.mtimeNs), entry.target}) {
        listing += field;
        listing += '\0';
      }
      listing += '\n';
    }
    plan.key = core::hexEncode(core::sha256(listing));
    return plan;
  }

 private:
  bool staging() const { return stagingRoot_ >= 0; }

  StagedEntry& record(const std::string& rel, char type, const struct stat& st, uint64_t bytes) {
    StagedEntry& entry = entries_[rel];
    entry = StagedEntry{rel,
                        type,
                        st.st_mode & kKeptModeBits,
                        st.st_uid,
                        st.st_gid,
                        type == 'f' ? uint64_t(st.st_size) : 0,
                        nanos(st.st_mtim),
                        ""};
    if (type == 'l') entry.mode = 0777;
    bytes_ += bytes;
    return entry;
  }

  void drop(const std::string& rel) {
    for (auto it = entries_.lower_bound(rel); it != entries_.end();) {
      if (it->first != rel && it->first.compare(0, rel.size() + 1, rel + "/") != 0) break;
      it = entries_.erase(it);
    }
    if (staging()) removeTree(stagingRoot_, rel);
  }

  [[noreturn]] static void changed(const std::string& rel) {
    throw std::runtime_error("root image source changed while it was read: " + rel);
  }

  void ownAs(const std::string& rel, uid_t uid, gid_t gid) {
    struct stat st;
    if (fstatat(stagingRoot_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("lstat(staging/" + rel + ")");
    }
    if (st.st_uid == uid && st.st_gid == gid) return;
    if (fchownat(stagingRoot_, rel.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("chown(staging/" + rel + ", " + std::to_string(uid) + ":" + std::to_string(gid) +
                 ")");
    }
  }

  // What the builder adds is root's in the image; a builder that is not root (a test) leaves it
  // its own.
  void ownAsRoot(const std::string& rel) {
    if (geteuid() == 0) ownAs(rel, 0, 0);
  }

  void setTimes(const std::string& rel, timespec mtime) {
    timespec times[2] = {mtime, mtime};
    if (utimensat(stagingRoot_, rel.c_str(), times, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("utimensat(staging/" + rel + ")");
    }
  }

  void stageDirectory(const std::string& rel, const struct stat& st) {
    // Owned by the builder until finishDirectories() has filled it.
    if (mkdirat(stagingRoot_, rel.c_str(), 0700) < 0) throwErrno("mkdir(staging/" + rel + ")");
  }

  void stageSymlink(const std::string& rel, const std::string& target, uid_t uid, gid_t gid,
                    timespec mtime) {
    if (symlinkat(target.c_str(), stagingRoot_, rel.c_str()) < 0) {
      throwErrno("symlink(staging/" + rel + ")");
    }
    setTimes(rel, mtime);  // before the owner: see finishDirectories()
    if (uid == 0 && gid == 0) {
      ownAsRoot(rel);
    } else {
      ownAs(rel, uid, gid);
    }
  }

  // A hard link when the staged file may keep the source's inode as it is (its mode needs no
  // change; mke2fs drops xattrs itself), else a copy with the masked mode.
  void stageFile(int srcParent, const std::string& name, const std::string& rel,
                 const struct stat& st) {
    if ((st.st_mode & ~(S_IFMT | kKeptModeBits)) == 0) {
      if (linkat(srcParent, name.c_str(), stagingRoot_, rel.c_str(), 0) == 0) {
        struct stat staged;
        if (fstatat(stagingRoot_, rel.c_str(), &staged, AT_SYMLINK_NOFOLLOW) < 0) {
          throwErrno("lstat(staging/" + rel + ")");
        }
        // link(2) takes whatever has the name now: it must be the inode the listing describes.
        if (staged.st_ino != st.st_ino || staged.st_dev != st.st_dev ||
            nanos(staged.st_mtim) != nanos(st.st_mtim) || staged.st_mode != st.st_mode) {
          changed(rel);
        }
        return;
      }
      if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
        throwErrno("link(" + rel + ", staging)");
      }
    }
    copyFile(srcParent, name, rel, st);
  }

  void copyFile(int srcParent, const std::string& name, const std::string& rel,
                const struct stat& st) {
    Fd src(openat(srcParent, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (src.get() < 0) throwErrno("open(" + rel + ")");
    struct stat opened;
    if (fstat(src.get(), &opened) < 0) throwErrno("fstat(" + rel + ")");
    if (opened.st_ino != st.st_ino || opened.st_dev != st.st_dev) changed(rel);
    Fd dst(openat(stagingRoot_, rel.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  0600));
    if (dst.get() < 0) throwErrno("create(staging/" + rel + ")");
    uint64_t copied = 0;
    std::vector<char> buffer(1 << 20);
    for (;;) {
      ssize_t n = read(src.get(), buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throwErrno("read(" + rel + ")");
      if (n == 0) break;
      for (ssize_t done = 0; done < n;) {
        ssize_t w = write(dst.get(), buffer.data() + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throwErrno("write(staging/" + rel + ")");
        done += w;
      }
      copied += n;
    }
    if (copied != uint64_t(st.st_size)) changed(rel);
    // Mode and times before the owner: see finishDirectories().
    if (fchmod(dst.get(), st.st_mode & kKeptModeBits) < 0) throwErrno("chmod(staging/" + rel + ")");
    timespec times[2] = {st.st_mtim, st.st_mtim};
    if (futimens(dst.get(), times) < 0) throwErrno("futimens(staging/" + rel + ")");
    if (fchown(dst.get(), st.st_uid, st.st_gid) < 0 &&
        (st.st_uid != geteuid() || st.st_gid != getegid())) {
      throwErrno("chown(staging/" + rel + ")");
    }
  }

  int stagingRoot_;
  std::map<std::string, StagedEntry> entries_;
  uint64_t bytes_ = kBlock;  // the root directory
};

// The host view's patterns expanded: sorted, without a path below another taken one.
std::vector<std::string> expandHostView(const std::vector<std::string>& patterns) {
  std::vector<std::string> paths;
  for (const std::string& pattern : patterns) {
    bool underRoot = pattern == "/usr" || pattern == "/etc" || pattern.rfind("/usr/", 0) == 0 ||
                     pattern.rfind("/etc/", 0) == 0;
    if (!underRoot || pattern.find("/../") != std::string::npos ||
        pattern.find("/./") != std::string::npos || pattern.find("//") != std::string::npos ||
        pattern.back() == '/' || pattern.size() < 4 || pattern.ends_with("/..")) {
      throw std::invalid_argument(
          "host view path must be a normal absolute path under /usr or "
          "/etc: " +
          pattern);
    }
    glob_t matches{};
    int rc = glob(pattern.c_str(), GLOB_NOSORT, nullptr, &matches);
    if (rc == 0) {
      for (size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
    }
    globfree(&matches);
    if (rc != 0 && rc != GLOB_NOMATCH) {
      throw std::runtime_error("glob(" + pattern + ") failed");
    }
  }
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  std::vector<std::string> taken;
  for (const std::string& path : paths) {
    bool below = std::any_of(taken.begin(), taken.end(), [&](const std::string& t) {
      return path.compare(0, t.size() + 1, t + "/") == 0;
    });
    if (!below) taken.push_back(path);
  }
  return taken;
}

// Takes `path` (absolute, on the host) with its ancestors as directories: each ancestor must be
// world-listable, like every directory on the way to a file the image holds.
void takeHostPath(SourceWalk& walk, const std::string& path) {
  Fd dir(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) throwErrno("open(/)");
  std::string rel;
  size_t start = 1;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string name = path.substr(start, slash == std::string::npos ? slash : slash - start);
    std::string next = rel.empty() ? name : rel + "/" + name;
    if (slash == std::string::npos) {
      walk.take(dir.get(), name, next);
      return;
    }
    struct stat st;
    if (fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("lstat(/" + next + ")");
    }
    if (!S_ISDIR(st.st_mode) || !worldListable(st)) return;
    walk.takeAncestor(next, st);
    dir = openDirectoryAt(dir.get(), name, "/" + next);
    rel = next;
    start = slash + 1;
  }
}

std::vector<std::string> walkSource(SourceWalk& walk, const RootImageSource& source) {
  std::vector<std::string> sourcePaths;
  if (source.imageRoot.empty()) {
    for (const std::string& path : expandHostView(source.hostViewPaths)) {
      takeHostPath(walk, path);
      sourcePaths.push_back(path);
    }
    for (const char* name : {"bin", "sbin", "lib", "lib64"}) {
      walk.addSymlink(name, std::string("usr/") + name);
    }
  } else {
    if (source.imageRoot.front() != '/') {
      throw std::invalid_argument("directory image must be an absolute path: " + source.imageRoot);
    }
    Fd root(open(source.imageRoot.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (root.get() < 0) throwErrno("open(" + source.imageRoot + ")");
    for (const std::string& name : listDirectory(root.get(), source.imageRoot)) {
      bool skipped = std::any_of(std::begin(kImageSkippedEntries), std::end(kImageSkippedEntries),
                                 [&](const char* s) { return name == s; });
      if (!skipped) walk.take(root.get(), name, name);
    }
    sourcePaths.push_back(source.imageRoot);
  }
  std::vector<std::string> mountPoints(std::begin(kRootImageMountPoints),
                                       std::end(kRootImageMountPoints));
  mountPoints.insert(mountPoints.end(), source.mountPoints.begin(), source.mountPoints.end());
  for (const std::string& mountPoint : mountPoints) {
    if (mountPoint.size() < 2 || mountPoint.front() != '/' || mountPoint.back() == '/' ||
        mountPoint.find("//") != std::string::npos || mountPoint.find("/.") != std::string::npos) {
      throw std::invalid_argument("mount point must be a normal absolute path: " + mountPoint);
    }
    walk.ensureDirectory(mountPoint.substr(1), mountPoint == "/tmp" ? 01777 : 0755);
  }
  walk.ensureResolvConf();
  walk.finishDirectories();
  return sourcePaths;
}

}  // namespace

std::vector<std::string> defaultHostViewPaths() {
#if defined(__x86_64__)
  const char* multiarch = "/usr/lib/x86_64-linux-gnu";
#elif defined(__aarch64__)
  const char* multiarch = "/usr/lib/aarch64-linux-gnu";
#else
#error "the host view's multiarch library directory is not known for this architecture"
#endif
  return {"/usr/bin",          "/usr/sbin",           multiarch, "/usr/lib64",
          "/usr/lib/python3*", "/usr/share/zoneinfo", "/etc"};
}

RootImagePlan planRootImage(const RootImageSource& source) {
  SourceWalk walk(-1);
  std::vector<std::string> sourcePaths = walkSource(walk, source);
  return walk.plan(std::move(sourcePaths));
}

RootImagePlan stageRootImage(const RootImageSource& source, const std::string& stagingDir) {
  Fd root(open(stagingDir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (root.get() < 0) throwErrno("open(" + stagingDir + ")");
  if (!listDirectory(root.get(), stagingDir).empty()) {
    throw std::invalid_argument("staging directory is not empty: " + stagingDir);
  }
  SourceWalk walk(root.get());
  std::vector<std::string> sourcePaths = walkSource(walk, source);
  return walk.plan(std::move(sourcePaths));
}

std::string sha256OfFd(int fd, const std::string& name) {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (kSha256 == nullptr) throw std::runtime_error("EVP_MD_fetch(SHA256) failed");
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), kSha256, nullptr) != 1) {
    throw std::runtime_error("EVP_DigestInit_ex(SHA-256) failed");
  }
  std::vector<unsigned char> buffer(4 << 20);
  for (off_t offset = 0;;) {
    ssize_t n = pread(fd, buffer.data(), buffer.size(), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("pread(" + name + ")");
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1) {
      throw std::runtime_error("EVP_DigestUpdate(SHA-256) failed");
    }
    offset += n;
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out, &length) != 1 || length != 32) {
    throw std::runtime_error("EVP_DigestFinal_ex(SHA-256) failed");
  }
  return core::hexEncode(std::string_view(reinterpret_cast<const char*>(out), length));
}

namespace {

std::string findMke2fs() {
  for (const char* path : {"/usr/sbin/mke2fs", "/sbin/mke2fs"}) {
    if (access(path, X_OK) == 0) return path;
  }
  throw std::runtime_error("mke2fs not found at /usr/sbin/mke2fs or /sbin/mke2fs (e2fsprogs)");
}

// Runs mke2fs with `args` and an environment of LC_ALL=C only (no MKE2FS_CONFIG or
// E2FSPROGS_* of the launcher's reaches it), its output collected for the error.
void runMke2fs(const std::vector<std::string>& args) {
  std::string program = findMke2fs();
  std::vector<char*> argv;
  argv.push_back(program.data());
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  char lcAll[] = "LC_ALL=C";
  char* envp[] = {lcAll, nullptr};
  Pipe output = makePipe("mke2fs output");
  Fd devNull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devNull.get() < 0) throwErrno("open(/dev/null)");
  pid_t pid = fork();
  if (pid < 0) throwErrno("fork(mke2fs)");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and execve.
    if (dup2(devNull.get(), 0) < 0 || dup2(output.write.get(), 1) < 0 ||
        dup2(output.write.get(), 2) < 0) {
      _exit(127);
    }
    syscall(SYS_close_range, 3, ~0U, 0);
    execve(program.c_str(), argv.data(), envp);
    _exit(127);
  }
  output.write.reset();
  std::string text;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(output.read.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (text.size() < 16384) text.append(buffer, n);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throwErrno("waitpid(mke2fs)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("mke2fs failed (wait status " + std::to_string(status) + "): " + text);
  }
}

void fsyncFd(int fd, const std::string& what) {
  if (fsync(fd) < 0) throwErrno("fsync(" + what + ")");
}

// Writes `text` as `dirFd`/`name` atomically: a temporary name, fsync, rename, fsync of the
// directory.
void writeFileAtomically(int dirFd, const std::string& dirPath, const std::string& name,
                         const std::string& text, mode_t mode) {
  std::string temporary = name + ".tmp";
  Fd fd(openat(dirFd, temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
               mode));
  if (fd.get() < 0) throwErrno("create(" + dirPath + "/" + temporary + ")");
  for (size_t done = 0; done < text.size();) {
    ssize_t n = write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("write(" + dirPath + "/" + temporary + ")");
    done += n;
  }
  if (fchmod(fd.get(), mode) < 0) throwErrno("fchmod(" + dirPath + "/" + temporary + ")");
  fsyncFd(fd.get(), dirPath + "/" + temporary);
  if (renameat(dirFd, temporary.c_str(), dirFd, name.c_str()) < 0) {
    throwErrno("rename(" + dirPath + "/" + temporary + ")");
  }
  fsyncFd(dirFd, dirPath);
}

std::optional<std::string> readSmallFile(int dirFd, const std::string& name) {
  Fd fd(openat(dirFd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    throwErrno("open(" + name + ")");
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    ssize_t n = read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("read(" + name + ")");
    if (n == 0) break;
    text.append(buffer, n);
    if (text.size() > (1 << 20)) throw std::runtime_error(name + " is larger than 1 MiB");
  }
  return text;
}

bool isHexDigest(const json& value) {
  if (!value.is_string()) return false;
  const std::string& text = value.get_ref<const std::string&>();
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The image `key` in the cache, if its manifest and image agree on the key and the size.
std::optional<RootImage> cachedImage(int cacheFd, const std::string& cacheDir,
                                     const std::string& key) {
  std::optional<std::string> text = readSmallFile(cacheFd, "root-" + key + ".json");
  if (!text) return std::nullopt;
  json manifest = json::parse(*text, nullptr, false);
  if (!manifest.is_object() || manifest.value("key", "") != key ||
      !isHexDigest(manifest.value("sha256", json())) || !manifest["size"].is_number_unsigned()) {
    return std::nullopt;  // a manifest a dead builder left half-made: build again
  }
  std::string imageName = "root-" + key + ".ext4";
  struct stat st;
  if (fstatat(cacheFd, imageName.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
      uint64_t(st.st_size) != manifest["size"].get<uint64_t>()) {
    return std::nullopt;
  }
  RootImage image;
  image.path = cacheDir + "/" + imageName;
  image.sha256 = manifest["sha256"].get<std::string>();
  image.sizeBytes = st.st_size;
  image.key = key;
  return image;
}

// Opens the cache directory, making it 0700 when missing. One that exists must be a directory
// of the caller's, writable by no one else: whoever can write it chooses what guests boot.
Fd openCacheDir(const std::string& cacheDir) {
  if (cacheDir.empty() || cacheDir.front() != '/') {
    throw std::invalid_argument("image cache directory must be absolute: " + cacheDir);
  }
  for (size_t slash = cacheDir.find('/', 1);; slash = cacheDir.find('/', slash + 1)) {
    std::string prefix = cacheDir.substr(0, slash);
    if (mkdir(prefix.c_str(), 0700) < 0 && errno != EEXIST) throwErrno("mkdir(" + prefix + ")");
    if (slash == std::string::npos) break;
  }
  Fd fd(open(cacheDir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) throwErrno("open(" + cacheDir + ")");
  struct stat st;
  if (fstat(fd.get(), &st) < 0) throwErrno("fstat(" + cacheDir + ")");
  if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
    throw std::runtime_error("image cache directory " + cacheDir + " must be owned by uid " +
                             std::to_string(geteuid()) +
                             " and writable by no one else (chmod 0700)");
  }
  return fd;
}

// Removes what a builder that died under the lock left (staging trees, temporary files).
void removeBuilderLeftovers(int cacheFd, const std::string& cacheDir) {
  for (const std::string& name : listDirectory(cacheFd, cacheDir)) {
    if (name.rfind(".staging-", 0) == 0 || name.ends_with(".tmp")) removeTree(cacheFd, name);
  }
}

// Keeps the `keep` most recently used images (always `current`), and removes the others and
// any image without a manifest.
void evictImages(int cacheFd, const std::string& cacheDir, const std::string& current,
                 size_t keep) {
  std::vector<std::pair<int64_t, std::string>> used;  // (manifest mtime, key)
  std::vector<std::string> names = listDirectory(cacheFd, cacheDir);
  for (const std::string& name : names) {
    if (name.rfind("root-", 0) != 0 || !name.ends_with(".json")) continue;
    struct stat st;
    if (fstatat(cacheFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    std::string key = name.substr(5, name.size() - 10);
    used.emplace_back(key == current ? INT64_MAX : nanos(st.st_mtim), key);
  }
  std::sort(used.rbegin(), used.rend());
  std::vector<std::string> kept;
  for (size_t i = 0; i < used.size(); ++i) {
    if (i < std::max<size_t>(keep, 1)) {
      kept.push_back(used[i].second);
    } else {
      removeTree(cacheFd, "root-" + used[i].second + ".json");
      removeTree(cacheFd, "root-" + used[i].second + ".ext4");
    }
  }
  for (const std::string& name : names) {
    if (name.rfind("root-", 0) != 0 || !name.ends_with(".ext4")) continue;
    std::string key = name.substr(5, name.size() - 10);
    if (std::find(kept.begin(), kept.end(), key) == kept.end()) removeTree(cacheFd, name);
  }
}

}  // namespace

RootImage buildRootImage(const RootImageSource& source, const std::string& cacheDir,
                         size_t keepImages) {
  Fd cacheFd = openCacheDir(cacheDir);
  Fd lock(openat(cacheFd.get(), ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (lock.get() < 0) throwErrno("open(" + cacheDir + "/.lock)");
  // Builders of one cache take turns: the second finds the first's image and reuses it.
  while (flock(lock.get(), LOCK_EX) < 0) {
    if (errno != EINTR) throwErrno("flock(" + cacheDir + "/.lock)");
  }
  removeBuilderLeftovers(cacheFd.get(), cacheDir);

  RootImagePlan planned = planRootImage(source);
  if (std::optional<RootImage> cached = cachedImage(cacheFd.get(), cacheDir, planned.key)) {
    std::string manifestName = "root-" + planned.key + ".json";
    if (utimensat(cacheFd.get(), manifestName.c_str(), nullptr, AT_SYMLINK_NOFOLLOW) < 0) {
      throwErrno("utimensat(" + cacheDir + "/" + manifestName + ")");  // the LRU clock
    }
    return *cached;
  }

  auto started = std::chrono::steady_clock::now();
  std::string stagingName = ".staging-" + std::to_string(getpid());
  std::string stagingPath = cacheDir + "/" + stagingName;
  if (mkdirat(cacheFd.get(), stagingName.c_str(), 0700) < 0)
    throwErrno("mkdir(" + stagingPath + ")");
  RootImagePlan staged;
  std::string temporaryName = "root-" + planned.key + ".ext4.tmp";
  try {
    staged = stageRootImage(source, stagingPath);
    // The staged tree is what the image holds: name it by that (the same key unless the
    // source changed since it was planned).
    temporaryName = "root-" + staged.key + ".ext4.tmp";
    uint64_t sizeKiB = (staged.stagedBytes + staged.stagedBytes * 3 / 10 + (64u << 20)) / 1024;
    sizeKiB = (sizeKiB + 3) / 4 * 4;
    uint64_t inodes = staged.entries.size() + staged.entries.size() / 4 + 1024;
    runMke2fs({"-q", "-t", "ext4", "-O", "^has_journal", "-b", "4096", "-m", "0", "-N",
               std::to_string(inodes), "-E", "root_owner=0:0,no_copy_xattrs", "-L", "cellos-root",
               "-d", stagingPath, cacheDir + "/" + temporaryName, std::to_string(sizeKiB) + "k"});
    removeTree(cacheFd.get(), stagingName);
  } catch (...) {
    removeTree(cacheFd.get(), stagingName);
    removeTree(cacheFd.get(), temporaryName);
    throw;
  }

  RootImage image;
  image.key = staged.key;
  std::string imageName = "root-" + staged.key + ".ext4";
  image.path = cacheDir + "/" + imageName;
  {
    Fd fd(openat(cacheFd.get(), temporaryName.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) throwErrno("open(" + cacheDir + "/" + temporaryName + ")");
    fsyncFd(fd.get(), temporaryName);
    if (fchmod(fd.get(), 0444) < 0) throwErrno("fchmod(" + temporaryName + ")");
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throwErrno("fstat(" + temporaryName + ")");
    image.sizeBytes = st.st_size;
    image.sha256 = sha256OfFd(fd.get(), image.path);
  }
  // The image first, then its manifest: a manifest always names a complete image.
  if (renameat(cacheFd.get(), temporaryName.c_str(), cacheFd.get(), imageName.c_str()) < 0) {
    throwErrno("rename(" + cacheDir + "/" + temporaryName + ")");
  }
  fsyncFd(cacheFd.get(), cacheDir);
  json manifest = {{"key", image.key},
                   {"sha256", image.sha256},
                   {"size", image.sizeBytes},
                   {"formatVersion", kRootImageFormatVersion},
                   {"sourcePaths", staged.sourcePaths},
                   {"builtAt", core::formatRfc3339Micros(core::unixMicrosNow())}};
  writeFileAtomically(cacheFd.get(), cacheDir, "root-" + image.key + ".json",
                      manifest.dump(2) + "\n", 0444);
  evictImages(cacheFd.get(), cacheDir, image.key, keepImages);
  image.built = true;
  image.buildMillis = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - started)
                          .count();
  return image;
}

// --- Boot artifacts ------------------------------------------------------------------------

void writeBootManifest(const std::string& dir, const BootManifest& manifest) {
  for (const ExpectedFile* file : {&manifest.kernel, &manifest.initramfs}) {
    if (file->path.empty() || file->path.front() != '/' || !isHexDigest(file->sha256)) {
      throw std::invalid_argument("boot manifest entry needs an absolute path and a hex sha256: " +
                                  file->path);
    }
  }
  json document = {
      {"kernel", {{"path", manifest.kernel.path}, {"sha256", manifest.kernel.sha256}}},
      {"initramfs", {{"path", manifest.initramfs.path}, {"sha256", manifest.initramfs.sha256}}}};
  Fd dirFd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() < 0) throwErrno("open(" + dir + ")");
  writeFileAtomically(dirFd.get(), dir, "boot-manifest.json", document.dump(2) + "\n", 0644);
}

BootManifest readBootManifest(const std::string& dir) {
  std::string path = dir + "/boot-manifest.json";
  Fd dirFd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() < 0) throwErrno("open(" + dir + ")");
  std::optional<std::string> text = readSmallFile(dirFd.get(), "boot-manifest.json");
  if (!text) throw std::runtime_error(path + ": missing");
  json document = json::parse(*text, nullptr, false);
  auto bad = [&](const std::string& why) { return std::runtime_error(path + ": " + why); };
  if (!document.is_object() || document.size() != 2) {
    throw bad("must be an object with exactly \"kernel\" and \"initramfs\"");
  }
  BootManifest manifest;
  for (auto [name, file] :
       {std::pair{"kernel", &manifest.kernel}, std::pair{"initramfs", &manifest.initramfs}}) {
    const json* entry = document.contains(name) ? &document[name] : nullptr;
    if (entry == nullptr || !entry->is_object() || entry->size() != 2 ||
        !(*entry)["path"].is_string() || !isHexDigest((*entry)["sha256"])) {
      throw bad(std::string("\"") + name +
                "\" must be {\"path\": absolute path, \"sha256\": 64 lower-case hex digits}");
    }
    file->path = (*entry)["path"].get<std::string>();
    file->sha256 = (*entry)["sha256"].get<std::string>();
    if (file->path.empty() || file->path.front() != '/') {
      throw bad(std::string("\"") + name + "\" path must be absolute");
    }
  }
  return manifest;
}

std::optional<std::string> VerifiedFileCache::lookup(const struct stat& st) const {
  std::lock_guard<std::mutex> guard(mutex_);
  auto it = files_.find({st.st_dev, st.st_ino});
  if (it == files_.end()) return std::nullopt;
  const Identity& known = it->second;
  if (known.size != st.st_size || nanos(known.mtime) != nanos(st.st_mtim) ||
      nanos(known.ctime) != nanos(st.st_ctim)) {
    return std::nullopt;
  }
  return known.sha256;
}

void VerifiedFileCache::remember(const struct stat& st, const std::string& sha256) {
  std::lock_guard<std::mutex> guard(mutex_);
  files_[{st.st_dev, st.st_ino}] = Identity{st.st_size, st.st_mtim, st.st_ctim, sha256};
}

void VerifiedFileCache::load(const std::string& path, const std::string& bootId) {
  std::ifstream in(path);
  std::string first;
  if (!std::getline(in, first) || first != bootId || bootId.empty()) return;
  std::map<std::pair<dev_t, ino_t>, Identity> loaded;
  unsigned long long dev, ino;
  long long size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec;
  std::string sha256;
  while (in >> dev >> ino >> size >> mtimeSec >> mtimeNsec >> ctimeSec >> ctimeNsec >> sha256) {
    if (!isHexDigest(json(sha256))) return;
    loaded[{dev_t(dev), ino_t(ino)}] =
        Identity{off_t(size), timespec{mtimeSec, mtimeNsec}, timespec{ctimeSec, ctimeNsec}, sha256};
  }
  if (!in.eof()) return;
  std::lock_guard<std::mutex> guard(mutex_);
  for (auto& [id, identity] : loaded) files_.emplace(id, identity);
}

void VerifiedFileCache::save(const std::string& path, const std::string& bootId) const {
  std::string text = bootId + "\n";
  {
    std::lock_guard<std::mutex> guard(mutex_);
    for (const auto& [id, f] : files_) {
      text += std::to_string(id.first) + " " + std::to_string(id.second) + " " +
              std::to_string(f.size) + " " + std::to_string(f.mtime.tv_sec) + " " +
              std::to_string(f.mtime.tv_nsec) + " " + std::to_string(f.ctime.tv_sec) + " " +
              std::to_string(f.ctime.tv_nsec) + " " + f.sha256 + "\n";
    }
  }
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  Fd dirFd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() < 0) throwErrno("open(" + dir + ")");
  writeFileAtomically(dirFd.get(), dir, path.substr(slash + 1), text, 0600);
}

uint64_t VerifiedFileCache::hashes() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return hashes_;
}

void VerifiedFileCache::countHash() {
  std::lock_guard<std::mutex> guard(mutex_);
  ++hashes_;
}

namespace {

bool sameIdentity(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         nanos(a.st_mtim) == nanos(b.st_mtim) && nanos(a.st_ctim) == nanos(b.st_ctim);
}

}  // namespace

BootArtifacts verifyBootArtifacts(const BootManifest& manifest, VerifiedFileCache& cache) {
  auto verify = [&](const char* role, const ExpectedFile& expected) {
    VerifiedFile file;
    file.path = expected.path;
    file.fd = Fd(open(expected.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (file.fd.get() < 0) throwErrno(std::string("open(") + role + " " + expected.path + ")");
    struct stat before;
    if (fstat(file.fd.get(), &before) < 0) throwErrno("fstat(" + expected.path + ")");
    if (!S_ISREG(before.st_mode)) {
      throw std::runtime_error(std::string(role) + " " + expected.path + " is not a regular file");
    }
    file.sizeBytes = before.st_size;
    if (std::optional<std::string> known = cache.lookup(before)) {
      file.sha256 = *known;
    } else {
      cache.countHash();
      file.sha256 = sha256OfFd(file.fd.get(), expected.path);
      file.hashed = true;
      struct stat after;
      if (fstat(file.fd.get(), &after) < 0) throwErrno("fstat(" + expected.path + ")");
      if (!sameIdentity(before, after)) {
        throw std::runtime_error(std::string(role) + " " + expected.path +
                                 " changed while it was hashed");
      }
    }
    if (file.sha256 != expected.sha256) {
      throw std::runtime_error(std::string(role) + " " + expected.path + ": sha256 is " +
                               file.sha256 + ", expected " + expected.sha256);
    }
    if (file.hashed) cache.remember(before, file.sha256);
    return file;
  };
  BootArtifacts artifacts;
  artifacts.kernel = verify("kernel", manifest.kernel);
  artifacts.initramfs = verify("initramfs", manifest.initramfs);
  artifacts.rootImage = verify("root image", manifest.rootImage);
  return artifacts;
}

}  // namespace cellos::vmm
