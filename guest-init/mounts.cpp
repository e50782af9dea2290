#include "guest-init/mounts.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest-init/plan.h"
#include "guest-init/sys.h"

namespace cellos::guest {

namespace {

constexpr unsigned long kTmpfsFlags = MS_NOSUID | MS_NODEV;

void mountOrThrow(const char* source, const std::string& target, const char* type,
                  unsigned long flags, const std::string& data) {
  check(::mount(source, target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()),
        std::string("mount ") + (type != nullptr ? type : "(bind or remount)") + " at " + target);
}

// A mount point the image must carry: the read-only root cannot grow one.
void requireDirectory(const std::string& path, const std::string& purpose) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw GuestError("the root image has no directory " + path.substr(strlen(kNewRoot)) +
                     " (needed as the mount point of " + purpose + ")");
  }
}

void makeDevices(const std::string& dev) {
  struct Node {
    const char* name;
    unsigned minor;
  };
  // The memory devices (major 1) a program expects; nothing that reaches the guest's hardware.
  for (Node node :
       {Node{"null", 3}, Node{"zero", 5}, Node{"full", 7}, Node{"random", 8}, Node{"urandom", 9}}) {
    std::string path = dev + "/" + node.name;
    check(::mknod(path.c_str(), S_IFCHR | 0666, makedev(1, node.minor)), "mknod " + path);
  }
  for (auto [link, target] :
       {std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
        std::pair{"stdout", "/proc/self/fd/1"}, std::pair{"stderr", "/proc/self/fd/2"}}) {
    std::string path = dev + "/" + link;
    check(::symlink(target, path.c_str()), "symlink " + path);
  }
  std::string shm = dev + "/shm";
  check(::mkdir(shm.c_str(), 01777), "mkdir " + shm);
  mountOrThrow("shm", shm, "tmpfs", kTmpfsFlags | MS_NOEXEC, tmpfsOptions(16u << 20, 01777));
}

// resolv.conf lives on a tmpfs of its own outside the new root, bind-mounted read-only over the
// image's file: the image stays untouched, and the workload cannot rewrite its resolver.
void bindResolvConf(const std::string& content) {
  std::string target = std::string(kNewRoot) + "/etc/resolv.conf";
  struct stat st;
  if (::lstat(target.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw GuestError(
        "the root image has no regular file /etc/resolv.conf to bind the cell's resolver "
        "configuration over");
  }
  const std::string dir = "/cellos-etc";
  check(::mkdir(dir.c_str(), 0755), "mkdir " + dir);
  mountOrThrow("cellos-etc", dir, "tmpfs", kTmpfsFlags | MS_NOEXEC, tmpfsOptions(64u << 10, 0755));
  std::string source = dir + "/resolv.conf";
  writeFile(source, content, 0644);
  mountOrThrow(source.c_str(), target, nullptr, MS_BIND, "");
  mountOrThrow(nullptr, target, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
               "");
}

void wipe(std::string& secret) {
  explicit_bzero(secret.data(), secret.size());
  secret.clear();
}

void writeSecretFiles(vmchannel::GuestConfig& config, const std::string& run) {
  std::string secrets = run + "/secrets";
  check(::mkdir(secrets.c_str(), 0700), "mkdir " + secrets);
  mountOrThrow("secrets", secrets, "tmpfs", kTmpfsFlags | MS_NOEXEC, tmpfsOptions(1u << 20, 0700));
  for (auto& [name, value] : config.secrets) {
    if (!isSecretFileName(name)) {
      throw GuestError("secret name \"" + name + "\" is not a plain file name");
    }
    writeFile(secrets + "/" + name, value, 0400);
    wipe(value);
  }
  mountOrThrow(nullptr, secrets, nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               tmpfsOptions(1u << 20, 0700));
}

}  // namespace

void mountEarly() {
  mountOrThrow("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mountOrThrow("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  mountOrThrow("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
}

std::vector<std::string> loadModules(const std::string& dir) {
  std::vector<std::string> failures;
  for (std::string_view name : kModuleLoadOrder) {
    std::string path = dir + "/" + std::string(name) + ".ko";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      failures.push_back("open " + path + ": " + strerror(errno));
      continue;
    }
    // finit_module has no glibc wrapper.
    long rc = ::syscall(SYS_finit_module, fd, "", 0);
    int error = errno;
    ::close(fd);
    if (rc != 0 && error != EEXIST) failures.push_back("load " + path + ": " + strerror(error));
  }
  return failures;
}

void mountRootDisk(unsigned waitMs) {
  if (!waitForPath(kRootDisk, waitMs)) {
    throw GuestError(std::string("no root disk: ") + kRootDisk + " did not appear within " +
                     std::to_string(waitMs) + " ms");
  }
  mountOrThrow(kRootDisk, kNewRoot, "ext4", MS_RDONLY | MS_NODEV | MS_NOSUID, "");
}

std::string hostSideWorkingDirectory(const vmchannel::GuestConfig& config) {
  return std::string(kNewRoot) + config.workingDirectory;
}

void buildWorkloadRoot(vmchannel::GuestConfig& config) {
  std::string why;
  if (!checkWorkingDirectory(config.workingDirectory, &why)) throw GuestError(why);
  const std::string root = kNewRoot;

  requireDirectory(root + "/proc", "/proc");
  mountOrThrow("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");

  requireDirectory(root + "/dev", "/dev");
  mountOrThrow("dev", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, tmpfsOptions(64u << 10, 0755));
  makeDevices(root + "/dev");

  requireDirectory(root + "/tmp", "/tmp");
  mountOrThrow("tmp", root + "/tmp", "tmpfs", kTmpfsFlags, "mode=1777");

  bool secretFiles = config.secretDelivery == "file" && !config.secrets.empty();
  struct stat st;
  if (secretFiles || ::lstat((root + "/run").c_str(), &st) == 0) {
    requireDirectory(root + "/run", secretFiles ? "/run/secrets" : "/run");
    mountOrThrow("run", root + "/run", "tmpfs", kTmpfsFlags | MS_NOEXEC,
                 tmpfsOptions(2u << 20, 0755));
    if (secretFiles) writeSecretFiles(config, root + "/run");
  }

  std::string workingDirectory = hostSideWorkingDirectory(config);
  // tmpfs reads size=0 as "no limit": a zero budget is a host bug, not a wish for no bound.
  if (config.workingDirectoryMaxBytes == 0) throw GuestError("working directory size of 0 bytes");
  requireDirectory(workingDirectory, "the working directory");
  mountOrThrow("workspace", workingDirectory, "tmpfs", kTmpfsFlags,
               tmpfsOptions(config.workingDirectoryMaxBytes, 0755));

  if (!config.resolvConf.empty()) bindResolvConf(config.resolvConf);
}

}  // namespace cellos::guest
