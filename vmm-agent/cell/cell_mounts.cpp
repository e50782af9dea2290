#include "vmm-agent/cell/cell_mounts.h"

#include "vmm-agent/cell/sys_util.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>

namespace cellos::vmm {

std::string mountFlagsText(unsigned long flags) {
  static const std::pair<unsigned long, const char*> kNames[] = {
      {MS_REMOUNT, "MS_REMOUNT"},       {MS_BIND, "MS_BIND"},         {MS_REC, "MS_REC"},
      {MS_PRIVATE, "MS_PRIVATE"},       {MS_RDONLY, "MS_RDONLY"},     {MS_NOSUID, "MS_NOSUID"},
      {MS_NODEV, "MS_NODEV"},           {MS_NOEXEC, "MS_NOEXEC"},     {MS_NOATIME, "MS_NOATIME"},
      {MS_NODIRATIME, "MS_NODIRATIME"}, {MS_RELATIME, "MS_RELATIME"},
  };
  std::string text;
  for (auto [bit, name] : kNames) {
    if (flags & bit) {
      if (!text.empty()) text += '|';
      text += name;
      flags &= ~bit;
    }
  }
  if (flags != 0) {
    char hex[32];
    snprintf(hex, sizeof hex, "%s0x%lx", text.empty() ? "" : "|", flags);
    text += hex;
  }
  return text.empty() ? "0" : text;
}

// mount(2) with the whole call in the error: "mount(/usr -> /x/usr, MS_BIND|MS_REC): ...".
void doMount(const char* source, const std::string& target, const char* fstype, unsigned long flags,
             const char* data) {
  if (mount(source, target.c_str(), fstype, flags, data) == 0) return;
  std::string call = "mount(";
  if (flags & MS_REMOUNT) {
    call += target;
  } else {
    call += std::string(source ? source : "none") + " -> " + target;
    if (fstype) call += std::string(", type ") + fstype;
  }
  call += ", " + mountFlagsText(flags);
  if (data) call += std::string(", \"") + data + "\"";
  throwErrno(call + ")");
}

void makeDirectory(const std::string& path, mode_t mode) {
  if (mkdir(path.c_str(), mode) < 0) {
    char octal[8];
    snprintf(octal, sizeof octal, "%04o", mode);
    throwErrno("mkdir(" + path + ", " + octal + ")");
  }
}

// /proc/self/mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string unescapeMountPath(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const char* digits = field.c_str() + i + 1;
      if (digits[0] >= '0' && digits[0] <= '7' && digits[1] >= '0' && digits[1] <= '7' &&
          digits[2] >= '0' && digits[2] <= '7') {
        out +=
            static_cast<char>((digits[0] - '0') * 64 + (digits[1] - '0') * 8 + (digits[2] - '0'));
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

// Reads a kernel-generated file (procfs) whole.
std::string readWholeFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open(" + path + ", O_RDONLY)");
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      throwErrno("read(" + path + ")");
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return text;
}

// Mount points equal to `dir` or below it in this process's mount namespace, in mountinfo order
// (a parent mount is listed before the mounts on top of it).
std::vector<std::string> mountPointsUnder(const std::string& dir) {
  std::vector<std::string> found;
  std::string prefix = dir == "/" ? "/" : dir + "/";
  std::istringstream mountinfo(readWholeFile("/proc/self/mountinfo"));
  for (std::string line; std::getline(mountinfo, line);) {
    // Fields: mount-id parent-id major:minor root mount-point options ...
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 5 && fields >> field; ++i) {
    }
    if (!fields) continue;
    std::string mountPoint = unescapeMountPath(field);
    if (mountPoint == dir || mountPoint.compare(0, prefix.size(), prefix) == 0) {
      found.push_back(mountPoint);
    }
  }
  return found;
}

// The new mount namespace starts as a copy of the host's, with the host's propagation: where
// "/" is shared (systemd makes it so), the mounts below would appear on the host too, and host
// mounts would keep appearing in the cell. Making the whole tree private first is what keeps
// the cell's root tmpfs off the host's cellDir.
void makeMountsPrivate() {
  doMount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
}

// Changes the per-mount flags of the mount at `path` to `flags` plus the ones it already has.
// A bind mount ignores flags in the MS_BIND call itself; only a second MS_REMOUNT|MS_BIND call
// sets them, and that call replaces all of them. Flags already set (and, in a user namespace,
// the locked ones: atime mode, nosuid, nodev, noexec, ro, which give EPERM when dropped) are
// read back with statvfs and passed again.
void remountBind(const std::string& path, unsigned long flags) {
  struct statvfs st {};
  if (statvfs(path.c_str(), &st) < 0) throwErrno("statvfs(" + path + ")");
  static const std::pair<unsigned long, unsigned long> kKeep[] = {
      {ST_RDONLY, MS_RDONLY},     {ST_NOSUID, MS_NOSUID},   {ST_NODEV, MS_NODEV},
      {ST_NOEXEC, MS_NOEXEC},     {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME},
      {ST_RELATIME, MS_RELATIME},
  };
  for (auto [st_flag, ms_flag] : kKeep) {
    if (st.f_flag & st_flag) flags |= ms_flag;
  }
  doMount("none", path, nullptr, MS_REMOUNT | MS_BIND | flags, nullptr);
}

// pivot_root(".", ".") stacks the old root on top of the new one at the same place (allowed
// since Linux 3.17 and documented in pivot_root(2)), so the new root needs no put_old
// directory; umount2(".", MNT_DETACH) then drops the old root, and every host mount under it,
// from this namespace. From here on the host filesystem is reachable only through the
// read-only binds made above.
void pivotIntoNewRoot(const std::string& newRoot) {
  if (chdir(newRoot.c_str()) < 0) throwErrno("chdir(" + newRoot + ")");
  if (syscall(SYS_pivot_root, ".", ".") < 0) throwErrno("pivot_root(., .) in " + newRoot);
  if (umount2(".", MNT_DETACH) < 0) throwErrno("umount2(old root, MNT_DETACH)");
  if (chdir("/") < 0) throwErrno("chdir(/)");
}

void makeDirectories(const std::string& path, mode_t mode) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string prefix = slash == std::string::npos ? path : path.substr(0, slash);
    if (mkdir(prefix.c_str(), mode) < 0 && errno != EEXIST) throwErrno("mkdir(" + prefix + ")");
    if (slash == std::string::npos) return;
  }
}

bool isDirectory(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void writeNewFile(const std::string& path, const std::string& content, mode_t mode) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) throwErrno("open(" + path + ", O_CREAT|O_EXCL)");
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throwErrno("write(" + path + ")");
    done += static_cast<size_t>(n);
  }
}

std::string readLink(const std::string& path) {
  char link[PATH_MAX];
  ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
  if (n < 0) throwErrno("readlink(" + path + ")");
  return std::string(link, static_cast<size_t>(n));
}

void copySymlink(const std::string& source, const std::string& target) {
  std::string link = readLink(source);
  if (symlink(link.c_str(), target.c_str()) < 0)
    throwErrno("symlink(" + link + ", " + target + ")");
}

std::string tmpfsSizeOption(uint64_t bytes) {
  return bytes == 0 ? "" : ",size=" + std::to_string(bytes);
}

void mountDev(const std::string& newRoot, const std::vector<std::string>& extraDevices,
              uint64_t shmBytes) {
  std::string dev = newRoot + "/dev";
  makeDirectory(dev, 0755);
  doMount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755");
  std::vector<std::string> names = {"null", "zero", "full", "random", "urandom"};
  names.insert(names.end(), extraDevices.begin(), extraDevices.end());
  for (const std::string& name : names) {
    std::string host = "/dev/" + name;
    std::string target = dev + "/" + name;
    struct stat st {};
    if (stat(host.c_str(), &st) < 0) throwErrno("stat(" + host + ")");
    if (!S_ISCHR(st.st_mode))
      throw std::runtime_error("host " + host + " is not a character device");
    int placeholder =
        open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0444);
    if (placeholder < 0) throwErrno("open(" + target + ", O_CREAT|O_EXCL, 0444)");
    close(placeholder);
    doMount(host.c_str(), target, nullptr, MS_BIND, nullptr);
    remountBind(target, MS_NOSUID | MS_NOEXEC);
  }
  std::string shm = dev + "/shm";
  makeDirectory(shm, 0755);
  doMount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV,
          ("mode=1777" + tmpfsSizeOption(shmBytes)).c_str());
  remountBind(dev, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

}  // namespace cellos::vmm
