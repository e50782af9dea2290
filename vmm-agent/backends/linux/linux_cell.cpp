// The linux backend's cell runtime. Read it in two halves:
//
//   * the cell init (runCellInit and the steps it calls, in the order it calls them): runs in
//     the forked child, pid 1 of the cell's new pid namespace, still as root with the launcher's
//     capabilities. It builds the cell's root, then waits for the start byte, then forks the
//     workload, which drops everything before it execs.
//   * the launcher (launchCell, destroyCell, residueOf): runs in the caller's process.
//
// The order inside the cell init is the security argument, like bubblewrap's:
//   1. die with the launcher; keep only this cell's fds; overwrite the launcher's arguments and
//      environment (the cell reads them as /proc/1/cmdline); wait until the launcher has put us
//      into the cell's cgroup (so everything below is already counted and limited), then make
//      that cgroup the root of a new cgroup namespace (the cell sees "/", not /cellos/<id>);
//   2. make every mount private (nothing propagates to the host), mount the root tmpfs on
//      cellDir, bind the read-only host view (or the image's entries) into it, fresh /proc with
//      its sensitive files masked, minimal /dev, /tmp, and the cell's own /etc/resolv.conf;
//   3. hostname, loopback up (the namespaces are new, so this touches only the cell);
//   4. pivot_root into the new root and detach the old one: from here on no host path is
//      reachable except what step 2 bound in, read-only;
//   5. the working directory tmpfs (owned by the workload's host id), the /run/secrets tmpfs
//      when the cell gets secrets (secret_files.h), then the root itself read-only; report
//      "ready";
//   6. wait for the start byte (the launcher has filled /run/secrets by then): move the secrets
//      into the workload's environment and unmount them, or make them read-only; clone the workload
//      into a new user namespace and write its id maps (cell root = an unprivileged host id); the
//      workload becomes that id, closes every fd but 0-2, resets signals, starts a session, drops
//      every capability, sets rlimits and no_new_privs, installs its seccomp filter and execs;
//   7. reap until the workload exits, hand its wait status to the launcher, exit (the kernel
//      then kills whatever is left in the pid namespace). SIGTERM from the launcher (a timeout)
//      is passed on to every process of the cell.
//
// The other namespaces are created by (and owned by) the host's user namespace, not the
// workload's: even a workload that regained every capability inside its own user namespace
// could not mount, change the network or enter a namespace, and nftables sees its packets'
// owners as plain host ids (meta skuid), which keeps the DNS helper's uid distinguishable.

#include "vmm-agent/backends/linux/linux_cell.h"

#include "core/cell_id.h"
#include "vmm-agent/cell/secret_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "vmm-agent/cell/cell_init.h"
#include "vmm-agent/cell/cell_mounts.h"
#include "vmm-agent/cell/cell_processes.h"
#include "vmm-agent/cell/cgroup.h"
#include "vmm-agent/cell/sys_util.h"
#include "vmm-agent/cell/workload_filter.h"

namespace cellos::vmm {
namespace {

// ---------------------------------------------------------------------------------------------
// The cell init. Everything below up to "The launcher" runs in the cloned child. It never
// returns into the launcher's code: every path ends in _exit().

// What the launcher computes before clone, so the init does no lookups that are not its job.
struct InitPlan {
  std::string cellId;
  std::string newRoot;    // canonical cellDir
  std::string imageRoot;  // canonical image directory, or empty for the host view
  std::string workingDirectory;
  std::vector<std::string> argv;
  std::vector<std::string> envp;  // "NAME=value"
  CellIdRange ids;
  std::string resolvConf;
  uint64_t nofileMax;
  std::string secretDelivery;  // "", "file" or "env"
  uint64_t scratchBytes = 0;   // size of /tmp, /dev/shm and the working dir each (0: default)
};

// The init is a clone of the launcher, so /proc/1/cmdline in the cell would read the agent's
// arguments (its socket, run, state and images directories) and /proc/1/environ its environment
// (a service's RUNTIME_DIRECTORY, CREDENTIALS_DIRECTORY, ...). Both are read from the init's own
// memory, between the addresses /proc/self/stat lists as arg_start..arg_end and
// env_start..env_end: overwriting them in place is the one way that needs no capability
// (PR_SET_MM_ARG_START and friends need CAP_SYS_RESOURCE) and no second program whose path and
// plan would have to be passed along (a re-exec). The argument area is then "cellos-init", NULs,
// and a last byte that is not NUL: the kernel's setproctitle rule (get_mm_cmdline in
// fs/proc/base.c) then returns exactly the first string, "cellos-init\0". The environment area
// becomes NULs, and libc's environ goes too. The thread name (comm, /proc/1/status) follows.
// /proc/1/exe, maps and the like still name the host's binary, but opening them takes ptrace
// access to the init, which the workload (another host uid, no capability) never has.
constexpr char kInitName[] = "cellos-init";

void hideLauncherArguments() {
  std::string stat = readWholeFile("/proc/self/stat");
  // Fields after the parenthesised name start at field 3; arg_start is field 48 (proc(5)).
  size_t close = stat.rfind(')');
  if (close == std::string::npos) throw std::runtime_error("/proc/self/stat: no command name");
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  for (int number = 3; number < 48 && fields >> field; ++number) {
  }
  unsigned long argStart = 0, argEnd = 0, envStart = 0, envEnd = 0;
  if (!(fields >> argStart >> argEnd >> envStart >> envEnd) || argStart == 0 ||
      argEnd <= argStart || envEnd < envStart) {
    throw std::runtime_error("/proc/self/stat: no argument and environment addresses");
  }
  char* args = reinterpret_cast<char*>(argStart);
  size_t argBytes = argEnd - argStart;
  memset(args, 0, argBytes);
  memcpy(args, kInitName, std::min(argBytes - 1, sizeof kInitName - 1));
  if (argBytes > sizeof kInitName) args[argBytes - 1] = ' ';
  if (envEnd > envStart) memset(reinterpret_cast<char*>(envStart), 0, envEnd - envStart);
  clearenv();
  if (prctl(PR_SET_NAME, kInitName, 0, 0, 0) < 0) throwErrno("prctl(PR_SET_NAME, cellos-init)");
}

// A cgroup namespace rooted at the cell's own cgroup: /proc/<pid>/cgroup is written relative to
// the reader's namespace root, so the cell sees "/" (v2: "0::/"; v1: "/" in every hierarchy,
// those the launcher does not manage included) where it would see /cellos/<id> and the host's
// slices. It must come after the launcher moved us into the cell's cgroup (the namespace's root
// is the cgroup its creator is in at that moment), which is why it is not a clone flag. A
// cgroupfs mount made inside would show only that subtree too, but the cell has no /sys and its
// workload cannot mount.
void enterCellCgroupNamespace() {
  if (unshare(CLONE_NEWCGROUP) < 0) throwErrno("unshare(CLONE_NEWCGROUP)");
}

// The cell's root is a fresh tmpfs rather than cellDir itself, so nothing the cell builds ever
// lands on the host's filesystem and unmounting (here: the namespace dying) removes it all.
void mountRootTmpfs(const std::string& newRoot) {
  doMount("tmpfs", newRoot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

// A read-only, nosuid, nodev view of host directory `source` at `target`. MS_REC brings the
// mounts below `source` along, and the remount only changes the top one, so each of those is
// remounted read-only too (found in mountinfo, as bubblewrap does).
void bindReadOnly(const std::string& source, const std::string& target) {
  makeDirectory(target, 0755);
  doMount(source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr);
  for (const std::string& mountPoint : mountPointsUnder(target)) {
    remountBind(mountPoint, MS_RDONLY | MS_NOSUID | MS_NODEV);
  }
}

// On a /usr-merged host /bin, /lib, ... are symlinks into /usr and must stay symlinks (binding
// them would follow the link and duplicate /usr/bin); on an older layout they are directories
// that need their own read-only bind; and some (lib32, libx32) exist only on some hosts.
void mirrorHostPath(const std::string& newRoot, const std::string& name) {
  std::string host = "/" + name;
  std::string target = newRoot + "/" + name;
  struct stat st {};
  if (lstat(host.c_str(), &st) < 0) {
    if (errno == ENOENT) return;
    throwErrno("lstat(" + host + ")");
  }
  if (S_ISLNK(st.st_mode)) {
    copySymlink(host, target);
  } else if (S_ISDIR(st.st_mode)) {
    bindReadOnly(host, target);
  } else {
    throw std::runtime_error("host " + host + " is neither a directory nor a symlink");
  }
}

// A read-only, nosuid, nodev bind of the regular file `source` onto a new empty file `target`.
void bindFileReadOnly(const std::string& source, const std::string& target) {
  int placeholder = open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0444);
  if (placeholder < 0) throwErrno("open(" + target + ", O_CREAT|O_EXCL, 0444)");
  close(placeholder);
  doMount(source.c_str(), target, nullptr, MS_BIND, nullptr);
  remountBind(target, MS_RDONLY | MS_NOSUID | MS_NODEV);
}

// A directory image the host registered: every top-level entry is bound read-only (directories
// and files) or recreated (symlinks, which then resolve inside the cell), except the names the
// cell gets fresh (proc, dev, tmp) or never gets (sys). Sockets, fifos and device nodes at the
// top level are left out.
void bindImageView(const std::string& newRoot, const std::string& imageRoot) {
  for (const std::string& name : imageEntries(imageRoot)) {
    std::string source = imageRoot + "/" + name;
    std::string target = newRoot + "/" + name;
    struct stat st {};
    if (lstat(source.c_str(), &st) < 0) throwErrno("lstat(" + source + ")");
    if (S_ISDIR(st.st_mode)) {
      bindReadOnly(source, target);
    } else if (S_ISREG(st.st_mode)) {
      bindFileReadOnly(source, target);
    } else if (S_ISLNK(st.st_mode)) {
      copySymlink(source, target);
    }
  }
}

// The host view a workload needs to run programs: /usr and /etc read-only (the cell's own
// writable space is only tmpfs), and the usr-merge links. Nothing else of the host (no /home,
// /root, /var, /run, /sys) exists in the cell.
void bindHostView(const std::string& newRoot) {
  for (const char* required : {"usr", "etc"}) {
    std::string host = std::string("/") + required;
    struct stat st {};
    if (lstat(host.c_str(), &st) < 0) throwErrno("lstat(" + host + ")");
    if (!S_ISDIR(st.st_mode)) throw std::runtime_error("host " + host + " is not a directory");
    bindReadOnly(host, newRoot + host);
  }
  for (const char* name : {"bin", "lib", "lib32", "lib64", "libx32", "sbin"}) {
    mirrorHostPath(newRoot, name);
  }
}

// What the host's kernel says about itself that a cell has no business reading: physical
// memory (kcore), the keyrings of every user (keys), timer and scheduler internals that leak
// other processes' activity and kernel addresses (timer_list, sched_debug, latency_stats,
// timer_stats), and hardware trees (acpi, scsi, asound). Files are covered by /dev/null,
// directories by an empty read-only tmpfs, as runc's masked paths do.
void maskProcPaths(const std::string& proc) {
  for (const char* name :
       {"kcore", "keys", "timer_list", "sched_debug", "latency_stats", "timer_stats"}) {
    std::string path = proc + "/" + name;
    struct stat st {};
    if (stat(path.c_str(), &st) < 0) continue;  // not in this kernel
    doMount("/dev/null", path, nullptr, MS_BIND, nullptr);
    remountBind(path, MS_RDONLY | MS_NOSUID | MS_NOEXEC);
  }
  for (const char* name : {"acpi", "scsi", "asound"}) {
    std::string path = proc + "/" + name;
    struct stat st {};
    if (stat(path.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) continue;
    doMount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555");
  }
}

// A proc of the cell's own pid namespace (mounted from inside it, so it lists only the cell's
// processes). The workload runs as uid 0, and some proc files act on the whole host with no
// capability check beyond the file owner (kernel.core_pattern under /proc/sys runs a program on
// the host; /proc/sysrq-trigger reboots it), so those are bound read-only over themselves, as
// docker and runc do.
void mountProc(const std::string& newRoot) {
  std::string proc = newRoot + "/proc";
  makeDirectory(proc, 0555);
  doMount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  for (const char* name : {"sys", "sysrq-trigger", "irq", "bus", "fs"}) {
    std::string path = proc + "/" + name;
    if (access(path.c_str(), F_OK) < 0) continue;
    doMount(path.c_str(), path, nullptr, MS_BIND | MS_REC, nullptr);
    remountBind(path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  }
  maskProcPaths(proc);
}

// Resolves `path` (absolute, inside the cell) against the cell's root under construction,
// following symlinks as the cell will see them, without ever leaving `newRoot`. Returns the
// host-side path of the final target (which may not exist yet).
std::string resolveInsideRoot(const std::string& newRoot, const std::string& path) {
  std::vector<std::string> done;
  std::vector<std::string> pending;
  auto pushPath = [&](const std::string& p) {
    std::vector<std::string> parts;
    std::stringstream stream(p);
    for (std::string part; std::getline(stream, part, '/');) {
      if (!part.empty() && part != ".") parts.push_back(part);
    }
    pending.insert(pending.begin(), parts.begin(), parts.end());
  };
  pushPath(path);
  for (int links = 0; !pending.empty();) {
    std::string part = pending.front();
    pending.erase(pending.begin());
    if (part == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    std::string host = newRoot;
    for (const std::string& d : done) host += "/" + d;
    host += "/" + part;
    struct stat st {};
    if (lstat(host.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      if (++links > 16) throw std::runtime_error("too many symlinks resolving " + path);
      char link[PATH_MAX];
      ssize_t n = readlink(host.c_str(), link, sizeof link - 1);
      if (n < 0) throwErrno("readlink(" + host + ")");
      link[n] = '\0';
      if (link[0] == '/') done.clear();
      pushPath(link);
      continue;
    }
    done.push_back(part);
  }
  std::string resolved = newRoot;
  for (const std::string& d : done) resolved += "/" + d;
  return resolved;
}

// The cell's resolver is its DNS helper on 127.0.0.1:53, whatever the view says. The host's
// /etc is bound read-only, so its resolv.conf (a file, or a symlink into /run as with
// systemd-resolved) is covered by a bind of the cell's own file; where the target does not
// exist it is created on the root tmpfs (which becomes read-only in step 5).
void installResolvConf(const std::string& newRoot, const std::string& content) {
  if (content.empty()) return;
  std::string target = resolveInsideRoot(newRoot, "/etc/resolv.conf");
  auto writeNew = [](const std::string& path, const std::string& text) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) throwErrno("open(" + path + ", O_CREAT|O_EXCL, 0644)");
    ssize_t n = write(fd, text.data(), text.size());
    int e = errno;
    close(fd);
    errno = e;
    if (n != static_cast<ssize_t>(text.size())) throwErrno("write(" + path + ")");
  };
  struct stat st {};
  if (lstat(target.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) throw std::runtime_error(target + " is not a regular file");
    // The source lives on the root tmpfs only until the bind holds it.
    std::string source = newRoot + "/.cellos-resolv.conf";
    writeNew(source, content);
    doMount(source.c_str(), target, nullptr, MS_BIND, nullptr);
    remountBind(target, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    if (unlink(source.c_str()) < 0) throwErrno("unlink(" + source + ")");
    return;
  }
  // Missing (an image without one, or a dangling link into /run): create it, and the
  // directories leading to it, on the root tmpfs. Inside a read-only bind this fails closed.
  for (size_t slash = target.find('/', newRoot.size() + 1); slash != std::string::npos;
       slash = target.find('/', slash + 1)) {
    std::string dir = target.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) throwErrno("mkdir(" + dir + ", 0755)");
  }
  writeNew(target, content);
}

// /tmp is the cell's own scratch space, gone with the mount namespace.
void mountTmp(const std::string& newRoot, uint64_t bytes) {
  std::string tmp = newRoot + "/tmp";
  makeDirectory(tmp, 0755);
  doMount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV,
          ("mode=1777" + tmpfsSizeOption(bytes)).c_str());
}

// The cell's UTS namespace is new, so this names only the cell.
void setCellHostname(const std::string& cellId) {
  if (sethostname(cellId.data(), cellId.size()) < 0) throwErrno("sethostname(" + cellId + ")");
}

// Made after pivot_root on purpose: the directories are created by path, and a symlink on the
// way (the caller may name /bin/x, and /bin is a symlink) must resolve inside the cell's root,
// never on the host. A fresh tmpfs owned by the workload's host id, so the workload starts in
// an empty directory it can write to.
void mountWorkingDirectory(const std::string& workingDirectory, const CellIdRange& ids,
                           uint64_t bytes) {
  for (size_t slash = workingDirectory.find('/', 1);;
       slash = workingDirectory.find('/', slash + 1)) {
    std::string prefix = workingDirectory.substr(0, slash);
    if (mkdir(prefix.c_str(), 0755) < 0 && errno != EEXIST)
      throwErrno("mkdir(" + prefix + ", 0755)");
    if (slash == std::string::npos) break;
  }
  std::string options = "mode=0755,uid=" + std::to_string(ids.hostBase) +
                        ",gid=" + std::to_string(ids.hostBase) + tmpfsSizeOption(bytes);
  doMount("tmpfs", workingDirectory, "tmpfs", MS_NOSUID | MS_NODEV, options.c_str());
  if (chdir(workingDirectory.c_str()) < 0) throwErrno("chdir(" + workingDirectory + ")");
}

// Last filesystem step: the root tmpfs holds only mount points and the usr-merge links; making
// it read-only means the workload can write nowhere but /tmp, /dev/shm and its working dir.
void remountRootReadOnly() {
  remountBind("/", MS_RDONLY | MS_NOSUID | MS_NODEV);
}

// In the workload child, right after a failed call: reports it on the workload's stderr.
// Arguments are plain pointers so nothing allocates (and clobbers errno) before errno is read.
[[noreturn]] void failBeforeExec(const char* call, int exitCode, const char* detail = nullptr) {
  int error = errno;
  std::string line = std::string("cellos: ") + call;
  if (detail) line += std::string(" ") + detail;
  line += std::string(": ") + strerror(error) + "\n";
  ssize_t ignored = write(2, line.data(), line.size());
  (void)ignored;
  _exit(exitCode);
}

// Empties the bounding set (so an exec as uid 0 gains nothing: root's file capabilities are
// masked by it), the ambient and inheritable sets, and the current sets. The launcher's
// SYS_ADMIN, NET_ADMIN, ... would otherwise let the workload undo every mount above.
void dropAllCapabilities() {
  for (int cap = 0; cap < 64; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
      if (errno == EINVAL) break;  // past the kernel's last capability
      failBeforeExec("prctl(PR_CAPBSET_DROP)", kCellAbortedExitCode);
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
    failBeforeExec("prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)", kCellAbortedExitCode);
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, data) < 0) failBeforeExec("capset(all 0)", kCellAbortedExitCode);
}

// Writes `text` to a /proc file of the workload in one write(2), as the kernel requires for
// id maps. Returns false with errno set.
bool writeProcFile(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = write(fd, text.data(), text.size());
  int e = errno;
  close(fd);
  errno = e;
  return n == static_cast<ssize_t>(text.size());
}

// Maps ids 0..size-1 of the workload's new user namespace to the cell's host range. Written by
// the init, which is in the parent namespace and holds CAP_SETUID/CAP_SETGID there, so the map
// may name ids other than its own. setgroups is denied first: the workload has no supplementary
// groups (the init cleared them before the clone) and must not be able to change that.
bool writeIdMaps(pid_t workload, const CellIdRange& ids, std::string* failed) {
  std::string base = "/proc/" + std::to_string(workload);
  std::string line = "0 " + std::to_string(ids.hostBase) + " " + std::to_string(ids.size) + "\n";
  for (auto [file, text] : {std::pair<const char*, std::string>{"/setgroups", "deny"},
                            {"/uid_map", line},
                            {"/gid_map", line}}) {
    if (!writeProcFile(base + file, text)) {
      *failed = "write(" + base + file + ")";
      return false;
    }
  }
  return true;
}

// The workload's rlimits: no core dumps (a dump would write the workload's memory, secrets
// included, wherever the host's core_pattern says), and a bounded number of open files.
void setWorkloadRlimits(uint64_t nofileMax) {
  rlimit core{0, 0};
  if (setrlimit(RLIMIT_CORE, &core) < 0)
    failBeforeExec("setrlimit(RLIMIT_CORE, 0)", kCellAbortedExitCode);
  rlimit current{};
  if (getrlimit(RLIMIT_NOFILE, &current) < 0)
    failBeforeExec("getrlimit(RLIMIT_NOFILE)", kCellAbortedExitCode);
  rlim_t hard = std::min<rlim_t>(current.rlim_max, nofileMax);
  rlimit nofile{std::min<rlim_t>(1024, hard), hard};
  if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
    failBeforeExec("setrlimit(RLIMIT_NOFILE)", kCellAbortedExitCode);
}

// The forked workload child, pid 2 of the cell, born in its own user namespace. It waits until
// the init has written its id maps, then becomes id 0 there (an unprivileged host id). Only this
// cell's stdout/stderr pipes and /dev/null survive into execve; signals are as a fresh process
// has them (the init ignores SIGPIPE, and ignored signals survive exec); a new session so it has
// no controlling terminal and is the leader of its own process group; no capabilities,
// rlimits, no_new_privs and the workload filter so no exec can raise its privilege and the
// namespace and kernel calls answer EPERM; exactly the environment it was given.
[[noreturn]] void execWorkload(const InitChannels& fds, int mapsWritten, uint64_t nofileMax,
                               char* const* argv, char* const* envp) {
  char byte;
  ssize_t got;
  do {
    got = read(mapsWritten, &byte, 1);
  } while (got < 0 && errno == EINTR);
  if (got != 1) _exit(kCellAbortedExitCode);  // the init could not map us; it reports why
  close(mapsWritten);
  if (dup2(fds.stderrWrite, 2) < 0) _exit(kCellAbortedExitCode);  // nowhere to report to
  // Both name id 0 of our namespace, i.e. the cell's host base id; gid first, as usual.
  if (setresgid(0, 0, 0) < 0)
    failBeforeExec("setresgid(0, 0, 0) in the cell's user namespace", kCellAbortedExitCode);
  if (setresuid(0, 0, 0) < 0)
    failBeforeExec("setresuid(0, 0, 0) in the cell's user namespace", kCellAbortedExitCode);
  if (dup2(fds.stdoutWrite, 1) < 0) failBeforeExec("dup2(stdout pipe, 1)", kCellAbortedExitCode);
  int devNull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devNull < 0) failBeforeExec("open(/dev/null, O_RDONLY)", kCellAbortedExitCode);
  if (dup2(devNull, 0) < 0) failBeforeExec("dup2(/dev/null, 0)", kCellAbortedExitCode);
  if (close_range(3, ~0U, 0) < 0) failBeforeExec("close_range(3, ~0U, 0)", kCellAbortedExitCode);

  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, nullptr) < 0) {
    failBeforeExec("sigprocmask(SIG_SETMASK, {})", kCellAbortedExitCode);
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  umask(022);
  if (setsid() < 0) failBeforeExec("setsid()", kCellAbortedExitCode);
  dropAllCapabilities();
  setWorkloadRlimits(nofileMax);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    failBeforeExec("prctl(PR_SET_NO_NEW_PRIVS, 1)", kCellAbortedExitCode);
  }
  if (int error = installWorkloadFilter(); error != 0) {
    errno = error;
    failBeforeExec("seccomp(workload filter)", kCellAbortedExitCode);
  }
  execve(argv[0], argv, envp);
  failBeforeExec("exec", execFailureExitCode(errno), argv[0]);
}

// A timeout reaches the cell as SIGTERM to its init (the only process the launcher can name);
// the init passes it on to every other process of its pid namespace (kill(-1) from a namespace's
// init skips only the init). The flag covers a SIGTERM that arrives before the workload exists.
volatile sig_atomic_t terminationRequested = 0;
void forwardTermination(int) {
  int saved = errno;
  terminationRequested = 1;
  kill(-1, SIGTERM);
  errno = saved;
}

// Pid 1 inherits every orphan of the cell, so it reaps everything, and stops at the workload.
int reapUntil(pid_t workload) {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid == workload) return status;
    if (pid < 0 && errno != EINTR) _exit(kCellAbortedExitCode);
  }
}

// The cell init: the pid-1 skeleton (cell_init.h) with the linux backend's step 5.
[[noreturn]] void runCellInit(const InitPlan& plan, InitChannels fds) noexcept {
  // Steps 1-4 (die with the launcher, reset signals, keep only the cell's fds, wait to be in the
  // cell's cgroup) are the skeleton's; then:
  setUpCellInit(fds, [&] {
    // a. Hide the launcher's arguments, and a cgroup namespace rooted at the cell's cgroup.
    hideLauncherArguments();
    enterCellCgroupNamespace();

    // b. The cell's root, built under cellDir while the host is still visible.
    makeMountsPrivate();
    mountRootTmpfs(plan.newRoot);
    if (plan.imageRoot.empty()) {
      bindHostView(plan.newRoot);
    } else {
      bindImageView(plan.newRoot, plan.imageRoot);
    }
    mountProc(plan.newRoot);
    mountDev(plan.newRoot, {}, plan.scratchBytes);
    mountTmp(plan.newRoot, plan.scratchBytes);
    installResolvConf(plan.newRoot, plan.resolvConf);

    // c. Identity and network of the new UTS and network namespaces.
    setCellHostname(plan.cellId);
    bringUpLoopback();

    // d. Into the new root; the host is gone.
    pivotIntoNewRoot(plan.newRoot);

    // e. Working directory, then the root read-only; the skeleton reports ready.
    mountWorkingDirectory(plan.workingDirectory, plan.ids, plan.scratchBytes);
    if (!plan.secretDelivery.empty()) mountSecretsTmpfs(kSecretsDirectory, plan.ids.hostBase);
    remountRootReadOnly();
  });

  // 6. Nothing of the workload runs until the launcher says so.
  if (!waitForStartByte(fds.start)) _exit(kCellAbortedExitCode);
  close(fds.start);

  // The launcher has filled /run/secrets by now: into the environment (and the mount gone), or
  // left in place, read-only.
  std::vector<std::string> secretEnv;
  try {
    if (plan.secretDelivery == "env") {
      secretEnv = takeSecretEnvironment(kSecretsDirectory);
    } else if (plan.secretDelivery == "file") {
      remountBind(kSecretsDirectory, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    }
  } catch (const std::exception& e) {
    std::string line = std::string("cellos: secrets: ") + e.what() + "\n";
    ssize_t ignored = write(fds.stderrWrite, line.data(), line.size());
    (void)ignored;
    _exit(kCellAbortedExitCode);
  }

  std::vector<char*> argv, envp;
  for (const std::string& arg : plan.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  for (const std::string& var : plan.envp) envp.push_back(const_cast<char*>(var.c_str()));
  for (const std::string& var : secretEnv) envp.push_back(const_cast<char*>(var.c_str()));
  envp.push_back(nullptr);

  // The workload inherits no host group; the init needs none either.
  if (setgroups(0, nullptr) < 0) _exit(kCellAbortedExitCode);
  struct sigaction term {};
  term.sa_handler = forwardTermination;
  term.sa_flags = SA_RESTART;
  sigemptyset(&term.sa_mask);
  if (sigaction(SIGTERM, &term, nullptr) < 0) _exit(kCellAbortedExitCode);
  int maps[2];
  if (pipe2(maps, O_CLOEXEC) < 0) _exit(kCellAbortedExitCode);

  // clone with CLONE_NEWUSER rather than unshare in the child: the init (parent namespace,
  // CAP_SETUID there) must write the maps, and the child must not run before they exist.
  pid_t workload = static_cast<pid_t>(
      syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
  if (workload == 0) {
    close(fds.status);
    close(maps[1]);
    execWorkload(fds, maps[0], plan.nofileMax, argv.data(), envp.data());
  }
  if (workload < 0) {
    // E.g. pids.max is 1. No wait status exists to report: EOF on statusFd says so.
    std::string line = std::string("cellos: clone(CLONE_NEWUSER): ") + strerror(errno) + "\n";
    ssize_t ignored = write(fds.stderrWrite, line.data(), line.size());
    (void)ignored;
    _exit(kCellAbortedExitCode);
  }
  close(maps[0]);
  wipeStrings(secretEnv);  // the workload has its own copy (and execs to replace it)
  std::string failedCall;
  if (!writeIdMaps(workload, plan.ids, &failedCall)) {
    std::string line = "cellos: " + failedCall + ": " + strerror(errno) + "\n";
    ssize_t ignored = write(fds.stderrWrite, line.data(), line.size());
    (void)ignored;
    _exit(kCellAbortedExitCode);  // the pid namespace dies with us, the workload with it
  }
  char mapped = 'M';
  if (write(maps[1], &mapped, 1) != 1) _exit(kCellAbortedExitCode);
  close(maps[1]);
  if (terminationRequested) kill(-1, SIGTERM);
  // Only the workload and its descendants may hold the write ends, so the launcher sees EOF
  // once they are all gone.
  close(fds.stdoutWrite);
  close(fds.stderrWrite);

  // 7. Reap, report, exit: the kernel kills whatever the workload left behind.
  reportWaitStatusAndExit(fds.status, reapUntil(workload));
}

// ---------------------------------------------------------------------------------------------
// The launcher

constexpr uint64_t kCellNamespaces =
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;

bool hasNul(const std::string& s) {
  return s.find('\0') != std::string::npos;
}

// The id is validated upstream, but it becomes a path element and a hostname here, so it is
// checked again; the rest are the preconditions the init relies on.
void validateLaunch(const CellLaunch& launch) {
  if (!core::isValidCellId(launch.cellId)) {
    throw std::invalid_argument("cell id \"" + launch.cellId +
                                "\" is not [a-z0-9][a-z0-9._-]{0,62}");
  }
  if (launch.argv.empty() || launch.argv[0].empty() || launch.argv[0][0] != '/') {
    throw std::invalid_argument("cell " + launch.cellId + ": argv[0] must be an absolute path");
  }
  for (const std::string& arg : launch.argv) {
    if (hasNul(arg)) throw std::invalid_argument("cell " + launch.cellId + ": argv contains NUL");
  }
  for (const auto& [name, value] : launch.env) {
    if (name.empty() || name.find('=') != std::string::npos || hasNul(name) || hasNul(value)) {
      throw std::invalid_argument("cell " + launch.cellId + ": bad environment variable name \"" +
                                  name + "\"");
    }
  }
  const std::string& wd = launch.workingDirectory;
  if (wd.size() < 2 || wd[0] != '/' || wd.back() == '/' || wd.find("//") != std::string::npos ||
      hasNul(wd) || (wd + "/").find("/./") != std::string::npos ||
      (wd + "/").find("/../") != std::string::npos) {
    throw std::invalid_argument("cell " + launch.cellId + ": working directory \"" + wd +
                                "\" must be a normalized absolute path other than /");
  }
  if (launch.cellDir.empty() || launch.cellDir[0] != '/') {
    throw std::invalid_argument("cell " + launch.cellId + ": cellDir must be an absolute path");
  }
  if (!launch.secretDelivery.empty() && launch.secretDelivery != "env" &&
      launch.secretDelivery != "file") {
    throw std::invalid_argument("cell " + launch.cellId + ": secret delivery must be env or file");
  }
  // Host id 0 must never be mapped, and the range must not reach (uid_t)-1.
  if (launch.ids.hostBase == 0 || launch.ids.size == 0 ||
      uint64_t{launch.ids.hostBase} + launch.ids.size - 1 >= 0xffffffffull) {
    throw std::invalid_argument("cell " + launch.cellId + ": id range " +
                                std::to_string(launch.ids.hostBase) + "+" +
                                std::to_string(launch.ids.size) + " is not an unprivileged range");
  }
  if (!launch.imageRoot.empty() && launch.imageRoot[0] != '/') {
    throw std::invalid_argument("cell " + launch.cellId + ": image root must be an absolute path");
  }
  if (launch.resolvConf.find('\0') != std::string::npos) {
    throw std::invalid_argument("cell " + launch.cellId + ": resolv.conf contains NUL");
  }
  if (launch.nofileMax < 16) {
    throw std::invalid_argument("cell " + launch.cellId + ": nofileMax must be >= 16");
  }
}

// The init compares mount points with this path textually, so symlinks are resolved first.
std::string canonicalDirectory(const std::string& path) {
  char* resolved = realpath(path.c_str(), nullptr);
  if (!resolved) throwErrno("realpath(" + path + ")");
  std::string canonical(resolved);
  free(resolved);
  struct stat st {};
  if (stat(canonical.c_str(), &st) < 0) throwErrno("stat(" + canonical + ")");
  if (!S_ISDIR(st.st_mode)) throw std::invalid_argument("cellDir " + path + " is not a directory");
  if (canonical == "/") throw std::invalid_argument("cellDir must not be /");
  return canonical;
}

}  // namespace

LaunchedCell launchCell(const CellLaunch& launch) {
  validateLaunch(launch);
  InitPlan plan;
  plan.cellId = launch.cellId;
  plan.newRoot = canonicalDirectory(launch.cellDir);
  if (!launch.imageRoot.empty()) plan.imageRoot = canonicalDirectory(launch.imageRoot);
  plan.workingDirectory = launch.workingDirectory;
  plan.ids = launch.ids;
  plan.resolvConf = launch.resolvConf;
  plan.nofileMax = launch.nofileMax;
  plan.secretDelivery = launch.secretDelivery;
  plan.scratchBytes = launch.memoryMaxBytes.value_or(0) / 2;  // cell_mounts.h, tmpfsSizeOption
  plan.argv = launch.argv;
  for (const auto& [name, value] : launch.env) plan.envp.push_back(name + "=" + value);
  requireUnregistered(launch.cellId);

  // The cgroup exists, with its limits, before the init does anything the limits should cover.
  CellCgroup cgroup = createLimitedCgroup(launch, launch.pidsMax);

  // Every channel is made before clone, so the init inherits its ends and each side closes the
  // other's right after.
  Fd pidfd;
  pid_t pid = -1;
  try {
    InitPipes pipes = InitPipes::make();
    int newPidfd = -1;
    pid = cloneCellInit(kCellNamespaces, &newPidfd);
    if (pid == 0) runCellInit(plan, pipes.childChannels());
    pidfd = Fd(newPidfd);
    pipes.closeChildEnds();

    // Into the cgroup before the init does anything else (it is our unreaped child, so the pid
    // is still its own); then let it go on.
    cgroup.addProcess(pid);
    sendCgroupJoined(pipes.control.get(), launch.cellId);
    awaitReady(pipes.control.get(), pid, launch.cellId);

    LaunchedCell cell;
    cell.initPid = pid;
    std::string netnsPath = "/proc/" + std::to_string(pid) + "/ns/net";
    cell.netnsFd = Fd(open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (cell.netnsFd.get() < 0) throwErrno("open(" + netnsPath + ", O_RDONLY)");
    // The init has built the cell's root and mounted the working directory, and the workload
    // has not run yet: the paths, resolved through the init's root, are still ours.
    cell.workingDirectory = openInsideRoot(pid, launch.workingDirectory);
    if (!launch.secretDelivery.empty()) cell.secrets = openInsideRoot(pid, kSecretsDirectory);
    cell.resolvConf = launch.resolvConf;

    int registryPidfd = fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 3);
    if (registryPidfd < 0) throwErrno("fcntl(pidfd, F_DUPFD_CLOEXEC)");
    registerLaunchedCell(launch.cellId, pid, registryPidfd);
    pipes.handOver(std::move(pidfd), cell);
    return cell;
  } catch (...) {
    // Whatever the init got to, killing it (its pid namespace with it) and removing the cgroup
    // leaves nothing, because everything else lived in its namespaces.
    killAndReap(pid, pidfd.get());
    removeCellCgroup(cgroup);
    throw;
  }
}

namespace {

class LinuxBackend final : public CellBackend {
 public:
  const char* name() const override { return "linux"; }
  LaunchedCell launch(const CellLaunch& launch) override { return launchCell(launch); }
  std::vector<std::string> destroy(const std::string& cellId, pid_t initPid) override {
    return destroyCell(cellId, initPid);
  }
  std::vector<std::string> removeLeftovers(const std::string&, const std::string&) override {
    return {};
  }
};

}  // namespace

std::unique_ptr<CellBackend> makeLinuxBackend() {
  return std::make_unique<LinuxBackend>();
}

}  // namespace cellos::vmm
