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

#include "vmm-agent/linux_cell.h"

#include "core/cell_id.h"
#include "vmm-agent/secret_files.h"

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

#include "vmm-agent/cgroup.h"
#include "vmm-agent/sys_util.h"
#include "vmm-agent/workload_filter.h"

namespace cellos::vmm {
namespace {

// glibc 2.36's <sys/pidfd.h> lacks extern "C", so its declarations do not link from C++;
// the raw system calls are used instead.
int pidfdOpen(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}
int pidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// ---------------------------------------------------------------------------------------------
// Errors and small wrappers

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

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
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
};

// The init's ends of its channels to the launcher (fd numbers as inherited through clone).
struct InitFds {
  int control;        // SOCK_SEQPACKET: receives 'G' (in the cgroup), sends the setup report
  int launcherPidfd;  // the launcher itself, to notice it died before PR_SET_PDEATHSIG was set
  int start;          // read end of the start pipe
  int status;         // write end of the status pipe
  int stdoutWrite;
  int stderrWrite;
};

constexpr char kGoByte = 'G';
constexpr char kReadyByte = 'R';
constexpr char kErrorByte = 'E';

// PR_SET_PDEATHSIG makes the kernel SIGKILL this init when the launcher thread that cloned it
// exits, and the pid namespace collapse then takes the whole cell with it: a killed launcher
// leaves no running cell. The prctl only covers deaths after it, so the launcher must also be
// checked once. getppid() cannot tell: our parent lives outside our new pid namespace, so it
// returns 0 before and after a reparenting alike. A pidfd of the launcher, opened before clone,
// becomes readable exactly when the launcher has exited.
void dieWithLauncher(int launcherPidfd) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throwErrno("prctl(PR_SET_PDEATHSIG, SIGKILL)");
  pollfd launcher{launcherPidfd, POLLIN, 0};
  int ready = poll(&launcher, 1, 0);
  if (ready < 0) throwErrno("poll(launcher pidfd)");
  if (ready > 0) _exit(kCellAbortedExitCode);
  close(launcherPidfd);
}

// The init is a copy of the launcher, so it starts with the launcher's signal handlers (code
// that must not run here) and mask (a daemon blocks signals it reads through signalfd). Back to
// defaults: the kernel's pid-1 rules then decide what reaches us (SIGKILL/SIGSTOP from the
// host always do; a signal from inside the cell only if we installed a handler, which we
// don't). SIGPIPE is ignored so a launcher that closed statusFd yields EPIPE, not a dead init.
void resetInitSignals() {
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, nullptr) < 0) throwErrno("sigprocmask(SIG_SETMASK, {})");
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);  // EINVAL for the libc-reserved real-time signals: fine
  }
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGPIPE, &ign, nullptr) < 0) throwErrno("sigaction(SIGPIPE, SIG_IGN)");
}

// Closes every fd except `keep` (sorted, all >= 3) and 0-2.
void closeAllFdsExcept(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned int next = 3;
  for (int fd : keep) {
    if (static_cast<unsigned int>(fd) > next && close_range(next, fd - 1, 0) < 0) {
      throwErrno("close_range(" + std::to_string(next) + ", " + std::to_string(fd - 1) + ", 0)");
    }
    next = static_cast<unsigned int>(fd) + 1;
  }
  if (close_range(next, ~0U, 0) < 0)
    throwErrno("close_range(" + std::to_string(next) + ", ~0U, 0)");
}

// The init holds every fd the launcher had: other cells' start and status pipes (holding a
// copy of another cell's startFd would keep that cell from ever seeing EOF), pidfds, broker
// sockets, maybe a terminal. Keep only this cell's channels, and put /dev/null on 0-2 so
// nothing the init prints reaches the launcher's terminal. Channels that landed on 0-2 (the
// launcher had them closed) are moved up first, or the /dev/null dup2 would clobber them.
void keepOnlyCellFds(InitFds& fds) {
  for (int* fd : {&fds.control, &fds.start, &fds.status, &fds.stdoutWrite, &fds.stderrWrite}) {
    if (*fd <= 2) {
      int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
      if (moved < 0) throwErrno("fcntl(" + std::to_string(*fd) + ", F_DUPFD_CLOEXEC, 3)");
      *fd = moved;
    }
  }
  int devNull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devNull < 0) throwErrno("open(/dev/null, O_RDWR)");
  for (int target = 0; target <= 2; ++target) {
    if (devNull != target && dup2(devNull, target) < 0) {
      throwErrno("dup2(/dev/null, " + std::to_string(target) + ")");
    }
  }
  closeAllFdsExcept({fds.control, fds.start, fds.status, fds.stdoutWrite, fds.stderrWrite});
}

// Nothing below may run before the launcher has written our pid into the cell's cgroup: the
// tmpfs pages we are about to create and every process we fork must be charged to the cell.
// EOF means the launcher died or gave up; there is nobody to run for.
void waitForCgroupJoin(int control) {
  char byte = 0;
  ssize_t n;
  do {
    n = recv(control, &byte, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recv(control, 'go')");
  if (n == 0 || byte != kGoByte) _exit(kCellAbortedExitCode);
}

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

// The new mount namespace starts as a copy of the host's, with the host's propagation: where
// "/" is shared (systemd makes it so), the mounts below would appear on the host too, and host
// mounts would keep appearing in the cell. Making the whole tree private first is what keeps
// the cell's root tmpfs off the host's cellDir.
void makeMountsPrivate() {
  doMount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
}

// The cell's root is a fresh tmpfs rather than cellDir itself, so nothing the cell builds ever
// lands on the host's filesystem and unmounting (here: the namespace dying) removes it all.
void mountRootTmpfs(const std::string& newRoot) {
  doMount("tmpfs", newRoot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
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
    char link[PATH_MAX];
    ssize_t n = readlink(host.c_str(), link, sizeof link - 1);
    if (n < 0) throwErrno("readlink(" + host + ")");
    link[n] = '\0';
    if (symlink(link, target.c_str()) < 0) {
      throwErrno("symlink(" + std::string(link) + ", " + target + ")");
    }
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
      char link[PATH_MAX];
      ssize_t n = readlink(source.c_str(), link, sizeof link - 1);
      if (n < 0) throwErrno("readlink(" + source + ")");
      link[n] = '\0';
      if (symlink(link, target.c_str()) < 0) {
        throwErrno("symlink(" + std::string(link) + ", " + target + ")");
      }
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

// /dev with only the harmless character devices (bound from the host, since mknod in a fresh
// tmpfs would need the tmpfs to allow device nodes) and a /dev/shm tmpfs. No tty, no pts, no
// ptmx: no terminal can reach a cell (TIOCSTI). The /dev tmpfs itself is nodev and ends up
// read-only; the bound nodes keep working because a bind mount carries its own flags.
void mountDev(const std::string& newRoot) {
  std::string dev = newRoot + "/dev";
  makeDirectory(dev, 0755);
  doMount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755");
  for (const char* name : {"null", "zero", "full", "random", "urandom"}) {
    std::string host = std::string("/dev/") + name;
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
  doMount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  remountBind(dev, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
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
void mountTmp(const std::string& newRoot) {
  std::string tmp = newRoot + "/tmp";
  makeDirectory(tmp, 0755);
  doMount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

// The cell's UTS namespace is new, so this names only the cell.
void setCellHostname(const std::string& cellId) {
  if (sethostname(cellId.data(), cellId.size()) < 0) throwErrno("sethostname(" + cellId + ")");
}

// A new network namespace has only "lo", and it is down: 127.0.0.1 would not even reach the
// cell's own listeners. Anything else (veth, routes) is the launcher's job, from outside.
void bringUpLoopback() {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throwErrno("socket(AF_INET, SOCK_DGRAM)");
  ifreq ifr{};
  memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) {
    int e = errno;
    close(sock);
    errno = e;
    throwErrno("ioctl(lo, SIOCGIFFLAGS)");
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) {
    int e = errno;
    close(sock);
    errno = e;
    throwErrno("ioctl(lo, SIOCSIFFLAGS, IFF_UP)");
  }
  close(sock);
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

// Made after pivot_root on purpose: the directories are created by path, and a symlink on the
// way (the caller may name /bin/x, and /bin is a symlink) must resolve inside the cell's root,
// never on the host. A fresh tmpfs owned by the workload's host id, so the workload starts in
// an empty directory it can write to.
void mountWorkingDirectory(const std::string& workingDirectory, const CellIdRange& ids) {
  for (size_t slash = workingDirectory.find('/', 1);;
       slash = workingDirectory.find('/', slash + 1)) {
    std::string prefix = workingDirectory.substr(0, slash);
    if (mkdir(prefix.c_str(), 0755) < 0 && errno != EEXIST)
      throwErrno("mkdir(" + prefix + ", 0755)");
    if (slash == std::string::npos) break;
  }
  std::string options =
      "mode=0755,uid=" + std::to_string(ids.hostBase) + ",gid=" + std::to_string(ids.hostBase);
  doMount("tmpfs", workingDirectory, "tmpfs", MS_NOSUID | MS_NODEV, options.c_str());
  if (chdir(workingDirectory.c_str()) < 0) throwErrno("chdir(" + workingDirectory + ")");
}

// Last filesystem step: the root tmpfs holds only mount points and the usr-merge links; making
// it read-only means the workload can write nowhere but /tmp, /dev/shm and its working dir.
void remountRootReadOnly() {
  remountBind("/", MS_RDONLY | MS_NOSUID | MS_NODEV);
}

void sendReport(int control, const std::string& packet) {
  // MSG_NOSIGNAL: a launcher that gave up must not turn into a SIGPIPE here.
  while (send(control, packet.data(), packet.size(), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

void reportFailure(int control, int error, const std::string& what) {
  std::string packet(1, kErrorByte);
  int32_t code = error;
  packet.append(reinterpret_cast<const char*>(&code), sizeof code);
  packet += what.substr(0, 3000);
  sendReport(control, packet);
}

// Blocks until the launcher writes the start byte (true) or closes startFd (false: abort).
bool waitForStartByte(int start) {
  char byte;
  ssize_t n;
  do {
    n = read(start, &byte, 1);
  } while (n < 0 && errno == EINTR);
  return n == 1;
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
[[noreturn]] void execWorkload(const InitFds& fds, int mapsWritten, uint64_t nofileMax,
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
  failBeforeExec("exec", errno == EACCES || errno == ENOEXEC ? 126 : 127, argv[0]);
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

[[noreturn]] void runCellInit(const InitPlan& plan, InitFds fds) noexcept {
  try {
    // 1. Tie our life to the launcher's, start clean, and wait to be in the cell's cgroup.
    dieWithLauncher(fds.launcherPidfd);
    resetInitSignals();
    umask(022);
    keepOnlyCellFds(fds);
    hideLauncherArguments();
    waitForCgroupJoin(fds.control);
    enterCellCgroupNamespace();

    // 2. The cell's root, built under cellDir while the host is still visible.
    makeMountsPrivate();
    mountRootTmpfs(plan.newRoot);
    if (plan.imageRoot.empty()) {
      bindHostView(plan.newRoot);
    } else {
      bindImageView(plan.newRoot, plan.imageRoot);
    }
    mountProc(plan.newRoot);
    mountDev(plan.newRoot);
    mountTmp(plan.newRoot);
    installResolvConf(plan.newRoot, plan.resolvConf);

    // 3. Identity and network of the new UTS and network namespaces.
    setCellHostname(plan.cellId);
    bringUpLoopback();

    // 4. Into the new root; the host is gone.
    pivotIntoNewRoot(plan.newRoot);

    // 5. Working directory, then the root read-only; tell the launcher we are ready.
    mountWorkingDirectory(plan.workingDirectory, plan.ids);
    if (!plan.secretDelivery.empty()) mountSecretsTmpfs(kSecretsDirectory, plan.ids.hostBase);
    remountRootReadOnly();
    sendReport(fds.control, std::string(1, kReadyByte));
    close(fds.control);
  } catch (const std::system_error& e) {
    reportFailure(fds.control, e.code().value(), e.what());
    _exit(kCellAbortedExitCode);
  } catch (const std::exception& e) {
    reportFailure(fds.control, 0, e.what());
    _exit(kCellAbortedExitCode);
  } catch (...) {
    _exit(kCellAbortedExitCode);
  }

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
  int status = reapUntil(workload);
  ssize_t n;
  do {
    n = write(fds.status, &status, sizeof status);
  } while (n < 0 && errno == EINTR);
  _exit(0);
}

// ---------------------------------------------------------------------------------------------
// The launcher

constexpr uint64_t kCellNamespaces =
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;

// How long the launcher waits for the init to build the cell's root. Setup takes milliseconds;
// this only bounds a wedged mount.
constexpr int kSetupTimeoutMs = 30000;

// The kernel's struct clone_args up to CLONE_ARGS_SIZE_VER0 (64 bytes). Spelled out because
// <linux/sched.h> and glibc's <sched.h> both define the CLONE_* macros.
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t childTid;
  uint64_t parentTid;
  uint64_t exitSignal;
  uint64_t stack;
  uint64_t stackSize;
  uint64_t tls;
};
static_assert(sizeof(CloneArgs) == 64);

// Cells this process launched and has not destroyed yet, by id, with a pidfd of each init of
// our own. destroyCell signals and reaps through the pidfd, never through the bare pid, so an
// init the caller already reaped (whose pid may now be another process) is never touched.
struct LaunchedInit {
  pid_t pid;
  int pidfd;
};
std::mutex registryMutex;
std::map<std::string, LaunchedInit>& registry() {
  static std::map<std::string, LaunchedInit> cells;
  return cells;
}

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

// clone3 with CLONE_PIDFD gives the pidfd atomically with the child (no window in which the
// pid could be reaped and recycled). A seccomp profile may hide clone3 (ENOSYS: its flags sit
// behind a pointer a filter cannot inspect); clone + pidfd_open is then as safe, because the
// unreaped child's pid cannot be recycled. Returns 0 in the child, like fork.
pid_t cloneCellInit(int* pidfd) {
  CloneArgs args{};
  args.flags = kCellNamespaces | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uintptr_t>(pidfd);
  args.exitSignal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid >= 0) return static_cast<pid_t>(pid);
  if (errno != ENOSYS) {
    throwErrno(
        "clone3(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_PIDFD)");
  }
  pid = syscall(SYS_clone, kCellNamespaces | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) {
    throwErrno("clone(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC|SIGCHLD)");
  }
  if (pid == 0) return 0;
  *pidfd = pidfdOpen(static_cast<pid_t>(pid));
  if (*pidfd < 0) {
    int e = errno;
    kill(static_cast<pid_t>(pid), SIGKILL);
    waitpid(static_cast<pid_t>(pid), nullptr, 0);
    errno = e;
    throwErrno("pidfd_open(" + std::to_string(pid) + ", 0)");
  }
  return static_cast<pid_t>(pid);
}

// Waits for the init's setup report. Returns normally once the init is ready; throws with the
// init's own error (the failed call, from inside the cell) otherwise.
void awaitReady(int control, pid_t pid, const std::string& cellId) {
  pollfd pfd{control, POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, kSetupTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) throwErrno("poll(cell " + cellId + " control socket)");
  if (ready == 0)
    throw std::runtime_error("cell " + cellId + ": init did not finish setup in time");
  char packet[4096];
  ssize_t n;
  do {
    n = recv(control, packet, sizeof packet, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recv(cell " + cellId + " control socket)");
  if (n == 1 && packet[0] == kReadyByte) return;
  if (n >= 5 && packet[0] == kErrorByte) {
    int32_t code;
    memcpy(&code, packet + 1, sizeof code);
    std::string what(packet + 5, static_cast<size_t>(n - 5));
    if (code == 0) throw std::runtime_error("cell " + cellId + " setup: " + what);
    // e.what() of the init's system_error already ends in ": <strerror>"; keep only the call.
    std::string suffix = std::string(": ") + std::generic_category().message(code);
    if (what.size() >= suffix.size() &&
        what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0) {
      what.resize(what.size() - suffix.size());
    }
    throw std::system_error(code, std::generic_category(), "cell " + cellId + " setup: " + what);
  }
  if (n == 0) {
    // EOF without a report: the init died (killed, or out of memory under memory.max).
    int status = 0;
    pid_t reaped;
    do {
      reaped = waitpid(pid, &status, 0);
    } while (reaped < 0 && errno == EINTR);
    if (reaped == pid) {
      throw std::runtime_error("cell " + cellId + ": init " + describeWaitStatus(status) +
                               " during setup");
    }
  }
  throw std::runtime_error("cell " + cellId + ": init ended setup without a valid report");
}

// Undoes a half-made launch: whatever the init got to, killing it (its pid namespace with it)
// and removing the cgroup leaves nothing, because everything else lived in its namespaces.
void abandonLaunch(pid_t pid, int pidfd, CellCgroup& cgroup) noexcept {
  if (pidfd >= 0) pidfdSendSignal(pidfd, SIGKILL);
  if (pid > 0) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  try {
    cgroup.killAll();
    for (int attempt = 0; attempt < 100 && !cgroup.remove(); ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (...) {
    // Nothing better to do here; residueOf() reports what is left.
  }
}

}  // namespace

std::vector<std::string> imageEntries(const std::string& imageRoot) {
  DIR* dir = opendir(imageRoot.c_str());
  if (dir == nullptr) throwErrno("opendir(" + imageRoot + ")");
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    bool skipped = false;
    for (const char* own : kImageSkippedEntries) skipped = skipped || name == own;
    if (!skipped) names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

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
  plan.argv = launch.argv;
  for (const auto& [name, value] : launch.env) plan.envp.push_back(name + "=" + value);
  {
    std::lock_guard<std::mutex> lock(registryMutex);
    if (registry().count(launch.cellId)) {
      throw std::runtime_error("cell " + launch.cellId + " is still live; destroy it first");
    }
  }

  // The cgroup exists, with its limits, before the init does anything the limits should cover.
  CellCgroup cgroup = CellCgroup::create(launch.cellId);
  try {
    if (launch.pidsMax) cgroup.setPidsMax(*launch.pidsMax);
    if (launch.memoryMaxBytes) cgroup.setMemoryMax(*launch.memoryMaxBytes);
    if (launch.cpuMax) cgroup.setCpuMax(launch.cpuMax->quotaMicros, launch.cpuMax->periodMicros);
  } catch (...) {
    cgroup.remove();
    throw;
  }

  // Every channel is made before clone, so the init inherits its ends and each side closes the
  // other's right after. The control channel is a socket (not a pipe) so that both sides can
  // write with MSG_NOSIGNAL: a peer that died is an error value, never a SIGPIPE.
  Pipe out, err, start, status;
  Fd control, initControl, launcherPidfd, pidfd;
  pid_t pid = -1;
  try {
    out = makePipe("stdout");
    err = makePipe("stderr");
    start = makePipe("start");
    status = makePipe("status");
    for (int readEnd : {out.read.get(), err.read.get()}) {
      if (fcntl(readEnd, F_SETFL, O_NONBLOCK) < 0) throwErrno("fcntl(F_SETFL, O_NONBLOCK)");
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
      throwErrno("socketpair(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC)");
    }
    control = Fd(pair[0]);
    initControl = Fd(pair[1]);
    launcherPidfd = Fd(pidfdOpen(getpid()));
    if (launcherPidfd.get() < 0) throwErrno("pidfd_open(" + std::to_string(getpid()) + ", 0)");

    int newPidfd = -1;
    pid = cloneCellInit(&newPidfd);
    if (pid == 0) {
      runCellInit(plan, InitFds{initControl.get(), launcherPidfd.get(), start.read.get(),
                                status.write.get(), out.write.get(), err.write.get()});
    }
    pidfd = Fd(newPidfd);

    // The init's ends are the init's alone now.
    initControl.reset();
    launcherPidfd.reset();
    start.read.reset();
    status.write.reset();
    out.write.reset();
    err.write.reset();

    // Into the cgroup before the init does anything else; then let it go on.
    cgroup.addProcess(pid);
    char go = kGoByte;
    if (send(control.get(), &go, 1, MSG_NOSIGNAL) != 1) {
      throwErrno("send(cell " + launch.cellId + " control socket, 'go')");
    }
    awaitReady(control.get(), pid, launch.cellId);

    // The init is our unreaped child, so its pid cannot have been recycled.
    std::string netnsPath = "/proc/" + std::to_string(pid) + "/ns/net";
    Fd netns(open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (netns.get() < 0) throwErrno("open(" + netnsPath + ", O_RDONLY)");

    int registryPidfd = fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 3);
    if (registryPidfd < 0) throwErrno("fcntl(pidfd, F_DUPFD_CLOEXEC)");
    {
      std::lock_guard<std::mutex> lock(registryMutex);
      registry()[launch.cellId] = LaunchedInit{pid, registryPidfd};
    }
    return LaunchedCell{pid,
                        pidfd.release(),
                        netns.release(),
                        out.read.release(),
                        err.read.release(),
                        start.write.release(),
                        status.read.release()};
  } catch (...) {
    abandonLaunch(pid, pidfd.get(), cgroup);
    throw;
  }
}

std::vector<std::string> destroyCell(const std::string& cellId, pid_t initPid) {
  std::vector<std::string> residue;
  try {
    std::optional<LaunchedInit> ours;
    {
      std::lock_guard<std::mutex> lock(registryMutex);
      // The registry, not `initPid`, decides: its pidfd pins exactly the init we launched under
      // this id, even if the caller passes a stale pid (or 0, as a restarted agent does).
      auto it = registry().find(cellId);
      if (it != registry().end()) {
        ours = it->second;
        registry().erase(it);
      }
    }
    if (ours) {
      // SIGKILL to the init collapses the pid namespace: the kernel kills every process in it
      // and the init becomes a zombie only once they are all gone. ESRCH: already dead.
      pidfdSendSignal(ours->pidfd, SIGKILL);
      pollfd exited{ours->pidfd, POLLIN, 0};
      int ready;
      do {
        ready = poll(&exited, 1, 5000);
      } while (ready < 0 && errno == EINTR);
      siginfo_t info{};
      // ECHILD: the caller reaped it already (through its own pidfd or waitpid).
      if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(ours->pidfd), &info,
                 WEXITED | WNOHANG) == 0 &&
          info.si_pid == 0) {
        // Stuck (uninterruptible sleep): keep it registered so a later destroy can reap it.
        residue.push_back("cell init " + std::to_string(ours->pid) + " did not exit after SIGKILL");
        std::lock_guard<std::mutex> lock(registryMutex);
        registry().emplace(cellId, *ours);
      } else {
        close(ours->pidfd);
      }
    }
    // Everything else in the cell's cgroup: the init of a cell launched by an earlier launcher
    // process, or anything that got into the cgroup from outside the pid namespace.
    CellCgroup cgroup = CellCgroup::open(cellId);
    cgroup.killAll();
    // rmdir can briefly see EBUSY while the last killed processes finish exiting.
    for (int attempt = 0; attempt < 100 && !cgroup.remove(); ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception& e) {
    residue.push_back(std::string("destroy of cell ") + cellId + " failed: " + e.what());
  }
  for (std::string& item : residueOf(cellId, "", false)) residue.push_back(std::move(item));
  return residue;
}

std::vector<std::string> residueOf(const std::string& cellId, const std::string& cellDir,
                                   bool expectDirGone) {
  std::vector<std::string> residue;
  try {
    CellCgroup cgroup = CellCgroup::open(cellId);
    for (pid_t pid : cgroup.processes()) {
      residue.push_back("process " + std::to_string(pid) + " in the cgroup of cell " + cellId);
    }
    for (const std::string& leaf : cgroup.leaves()) {
      if (access(leaf.c_str(), F_OK) == 0) residue.push_back("cgroup " + leaf);
    }
    if (!cellDir.empty()) {
      std::string dir = cellDir;
      if (char* resolved = realpath(cellDir.c_str(), nullptr)) {
        dir = resolved;
        free(resolved);
      }
      for (const std::string& mountPoint : mountPointsUnder(dir)) {
        residue.push_back("mount on " + mountPoint);
      }
      struct stat st {};
      if (expectDirGone && lstat(cellDir.c_str(), &st) == 0) {
        residue.push_back("directory " + cellDir);
      }
    }
  } catch (const std::exception& e) {
    residue.push_back(std::string("residue check of cell ") + cellId + " failed: " + e.what());
  }
  return residue;
}

}  // namespace cellos::vmm
