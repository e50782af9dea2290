#include "vmm-agent/gvisor_cell.h"

#include "core/cell_id.h"
#include "privsep/daemon.h"
#include "vmm-agent/cgroup.h"
#include "vmm-agent/secret_files.h"
#include "vmm-agent/sys_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {

namespace {

constexpr size_t kSupervisorFdCount = 6;  // pidfd, netns, stdout, stderr, start, status

bool isDirectory(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string readLink(const std::string& path) {
  char link[PATH_MAX];
  ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
  if (n < 0) throwErrno("readlink(" + path + ")");
  return std::string(link, static_cast<size_t>(n));
}

void makeDirectories(const std::string& path, mode_t mode) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string prefix = slash == std::string::npos ? path : path.substr(0, slash);
    if (mkdir(prefix.c_str(), mode) < 0 && errno != EEXIST) throwErrno("mkdir(" + prefix + ")");
    if (slash == std::string::npos) return;
  }
}

void writeWholeFile(const std::string& path, const std::string& content, mode_t mode) {
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

// --- the supervisor (pid 1 of the cell's pid namespace) ---------------------------------------

// Async-signal-safe: a line on the workload's stderr (the user sees why the cell did not run).
void supervisorSay(int errFd, const char* what) {
  const char prefix[] = "cellos: gvisor cell: ";
  ssize_t ignored = write(errFd, prefix, sizeof prefix - 1);
  ignored = write(errFd, what, strlen(what));
  ignored = write(errFd, "\n", 1);
  (void)ignored;
}

[[noreturn]] void supervisorFail(int errFd, const std::string& what) {
  std::string line = what + ": " + strerror(errno);
  supervisorSay(errFd, line.c_str());
  _exit(kCellAbortedExitCode);
}

void noopHandler(int) {}

constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};

struct SupervisorPlan {
  GvisorConfig config;
  std::string cellId;
  GvisorPaths paths;
};

struct SupervisorFds {
  int start, status, out, err, ready;
};

// Forks and execs `argv` with stdin /dev/null and the given stdout/stderr; returns its pid.
pid_t spawnRunsc(const std::vector<std::string>& argv, int out, int err, const sigset_t& original) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char env0[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {env0, nullptr};
  pid_t pid = fork();
  if (pid != 0) return pid;
  for (int sig : kForwardedSignals) signal(sig, SIG_DFL);
  signal(SIGCHLD, SIG_DFL);
  sigprocmask(SIG_SETMASK, &original, nullptr);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0 || dup2(null, 0) < 0 || dup2(out >= 0 ? out : null, 1) < 0 ||
      dup2(err >= 0 ? err : null, 2) < 0) {
    _exit(kCellAbortedExitCode);
  }
  execve(args[0], args.data(), envp);
  int e = errno;
  std::string line = "exec " + argv[0] + ": " + strerror(e);
  supervisorSay(2, line.c_str());
  _exit(e == EACCES || e == ENOEXEC ? 126 : 127);
}

// Where `viewPath` is on the host, through the bundle's binds (the longest destination that is
// a prefix wins) or else under its root directory.
std::string hostPathOf(const nlohmann::json& config, const std::string& viewPath) {
  std::string best, source;
  for (const auto& m : config.value("mounts", nlohmann::json::array())) {
    if (m.value("type", "") != "bind") continue;
    std::string destination = m.value("destination", "");
    bool under = viewPath == destination ||
                 (viewPath.rfind(destination + "/", 0) == 0 && destination.size() > 1);
    if (under && destination.size() > best.size()) {
      best = destination;
      source = m.value("source", "");
    }
  }
  if (!best.empty()) return source + viewPath.substr(best.size());
  return config["root"].value("path", "") + viewPath;
}

// Whether the workload's argv[0] exists and is executable in the cell's view, resolved as the
// sandbox will (symlinks inside the view, binds to their host sources): 0, or the errno that
// exec would give. runsc itself reports a missing program as its own failure (exit 128);
// checking first gives the workload's 127/126, as the linux backend does.
int executableErrno(const nlohmann::json& config) {
  std::string path = config["process"]["args"][0];
  for (int hops = 0; hops < 40; ++hops) {
    // Resolve component by component so a symlink anywhere is followed inside the view.
    std::string resolved;
    size_t at = 1;
    bool restarted = false;
    while (at <= path.size()) {
      size_t slash = path.find('/', at);
      std::string name =
          path.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
      at = slash == std::string::npos ? path.size() + 1 : slash + 1;
      if (name.empty() || name == ".") continue;
      if (name == "..") {
        resolved = resolved.substr(0, resolved.rfind('/'));
        continue;
      }
      std::string candidate = resolved + "/" + name;
      std::string host = hostPathOf(config, candidate);
      struct stat st {};
      if (lstat(host.c_str(), &st) < 0) return errno == ENOTDIR ? ENOENT : errno;
      if (S_ISLNK(st.st_mode)) {
        std::string target = readLink(host);
        std::string rest = at <= path.size() ? path.substr(at - 1) : "";
        path = (target[0] == '/' ? target : resolved + "/" + target) + rest;
        restarted = true;
        break;
      }
      resolved = candidate;
    }
    if (restarted) continue;
    struct stat st {};
    std::string host = hostPathOf(config, resolved);
    if (stat(host.c_str(), &st) < 0) return errno;
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) return EACCES;
    return 0;
  }
  return ELOOP;
}

// The first component of an absolute path ("/a/b" -> "a").
std::string topComponent(const std::string& path) {
  size_t end = path.find('/', 1);
  return path.substr(1, end == std::string::npos ? std::string::npos : end - 1);
}

// The supervisor's own root: the host's top-level entries bound as they are (runsc, /proc,
// /sys/fs/cgroup, /dev and the run directory must stay where runsc looks for them) plus the
// cell's working directory at the document's path, bound from <cellDir>/work. So the cell's
// working directory is at the same path for a process on the host looking through the
// supervisor (/proc/<initPid>/root<workingDirectory>, or setns into its mount namespace) as for
// a linux cell's init, never a host directory of that name. A working directory under a
// top-level entry runsc needs (/usr, /etc, /run ...) gets no such view.
// With secrets, a tmpfs for them at kGvisorSecretsSource, owned by the workload's host id.
void buildSupervisorRoot(const SupervisorPlan& plan, const nlohmann::json& config) {
  const std::string workingDirectory = config["process"].value("cwd", "");
  const std::string delivery =
      config.value("annotations", nlohmann::json::object()).value(kGvisorSecretsAnnotation, "");
  const std::string root = plan.paths.supervisorRoot;
  if (mkdir(root.c_str(), 0700) < 0 && errno != EEXIST) throwErrno("mkdir(" + root + ")");
  if (mount("tmpfs", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
    throwErrno("mount(tmpfs, " + root + ")");
  }
  std::set<std::string> needed = {"usr", "etc",  "proc", "sys",   "dev",   "run",
                                  "bin", "sbin", "lib",  "lib32", "lib64", "libx32"};
  needed.insert(topComponent(plan.paths.bundle));
  needed.insert(topComponent(plan.config.runsc));
  std::string work = topComponent(workingDirectory);
  bool view = !work.empty() && !needed.count(work);
  DIR* dir = opendir("/");
  if (dir == nullptr) throwErrno("opendir(/)");
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    bool ours = "/" + name == kGvisorSecretsSource || "/" + name == kGvisorPrivateBundle ||
                "/" + name == kGvisorPrivateState;
    if (name != "." && name != ".." && !ours && !(view && name == work)) names.push_back(name);
  }
  closedir(dir);
  for (const std::string& name : names) {
    std::string source = "/" + name, target = root + "/" + name;
    struct stat st {};
    if (lstat(source.c_str(), &st) < 0) continue;
    if (S_ISLNK(st.st_mode)) {
      if (symlink(readLink(source).c_str(), target.c_str()) < 0) throwErrno("symlink " + target);
    } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
      int made = S_ISDIR(st.st_mode) ? mkdir(target.c_str(), 0755)
                                     : mknod(target.c_str(), S_IFREG | 0644, 0);
      if (made < 0) {
        throwErrno("mount point " + target);
      }
      if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) {
        throwErrno("mount(" + source + ", MS_BIND|MS_REC)");
      }
    }
  }
  if (view) {
    makeDirectories(root + workingDirectory, 0755);
    std::string at = root + workingDirectory;
    if (mount(plan.paths.work.c_str(), at.c_str(), nullptr, MS_BIND, nullptr) < 0) {
      throwErrno("mount(" + plan.paths.work + ", " + at + ", MS_BIND)");
    }
  }
  if (!delivery.empty()) {
    mountSecretsTmpfs(root + kGvisorSecretsSource, config["process"]["user"]["uid"].get<uid_t>());
  }
  if (chdir(root.c_str()) < 0) throwErrno("chdir(" + root + ")");
  if (syscall(SYS_pivot_root, ".", ".") < 0) throwErrno("pivot_root(., .) in " + root);
  if (umount2(".", MNT_DETACH) < 0) throwErrno("umount2(old root, MNT_DETACH)");
  if (chdir("/") < 0) throwErrno("chdir(/)");
}

// Env delivery: the secret files become "NAME=value" entries of process.env (after the
// document's), written as kGvisorPrivateBundle/config.json on the supervisor's own tmpfs root;
// the secrets tmpfs is unmounted (takeSecretEnvironment). The values never enter the JSON
// library: config.json is the document's config with a placeholder entry (a random marker),
// into which the values are spliced (escaped) in one buffer reserved to its final size, so
// every copy this process made is one it wipes. The one left is the private bundle (and, once runsc
// has read it, runsc's private state and the sandbox), all gone with the supervisor.
void writeSecretBundle(nlohmann::json config) {
  std::vector<std::string> secretEnv = takeSecretEnvironment(kGvisorSecretsSource);
  std::string text;
  try {
    for (const char* dir : {kGvisorPrivateBundle, kGvisorPrivateState}) {
      if (mkdir(dir, 0700) < 0) throwErrno(std::string("mkdir(") + dir + ")");
    }
    // A name no document can guess (it is not NAME=value either), so it marks only the slot.
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != static_cast<ssize_t>(sizeof nonce)) {
      throwErrno("getrandom");
    }
    static const char hex[] = "0123456789abcdef";
    std::string marker = "cellos-secret-environment-";
    for (unsigned char b : nonce) {
      marker.push_back(hex[b >> 4]);
      marker.push_back(hex[b & 15]);
    }
    const std::string placeholder = "\"" + marker + "\"";
    std::string shape;
    if (!secretEnv.empty()) config["process"]["env"].push_back(marker);
    shape = config.dump(2) + "\n";
    size_t at = secretEnv.empty() ? shape.size() : shape.find(placeholder);
    if (at == std::string::npos) throw std::runtime_error("config.json has no environment");
    size_t size = shape.size();
    for (const std::string& var : secretEnv) size += 6 * var.size() + 16;
    text.reserve(size);
    text.append(shape, 0, at);
    for (size_t i = 0; i < secretEnv.size(); ++i) {
      if (i > 0) text.append(", ");
      text.push_back('"');
      for (unsigned char c : secretEnv[i]) {
        if (c == '"' || c == '\\') {
          text.push_back('\\');
          text.push_back(static_cast<char>(c));
        } else if (c < 0x20 || c == 0x7f) {
          text.append("\\u00");
          text.push_back(hex[c >> 4]);
          text.push_back(hex[c & 15]);
        } else {
          text.push_back(static_cast<char>(c));  // UTF-8 as it is
        }
      }
      text.push_back('"');
    }
    if (at < shape.size()) text.append(shape, at + placeholder.size(), std::string::npos);
    writeWholeFile(std::string(kGvisorPrivateBundle) + "/config.json", text, 0600);
  } catch (...) {
    wipeStrings(secretEnv);
    if (!text.empty()) explicit_bzero(text.data(), text.size());
    throw;
  }
  wipeStrings(secretEnv);
  explicit_bzero(text.data(), text.size());
}

[[noreturn]] void runSupervisor(const SupervisorPlan& plan, SupervisorFds fds) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "cellos-gvisor");
  signal(SIGCHLD, SIG_DFL);
  privsep::closeStrayFds({fds.start, fds.status, fds.out, fds.err, fds.ready});

  // A mount namespace of our own, private, with the /proc of our pid namespace: runsc reads
  // /proc/<pid> of the processes it starts, by the pids it sees.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) {
    supervisorFail(fds.err, "mount(/, MS_REC|MS_PRIVATE)");
  }
  nlohmann::json config;
  try {
    std::ifstream in(plan.paths.bundle + "/config.json");
    config = nlohmann::json::parse(in);
    buildSupervisorRoot(plan, config);
  } catch (const std::exception& e) {
    supervisorSay(fds.err, (std::string("supervisor root: ") + e.what()).c_str());
    _exit(kCellAbortedExitCode);
  }
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) {
    supervisorFail(fds.err, "mount(proc, /proc)");
  }
  if (sethostname(plan.cellId.data(), plan.cellId.size()) < 0) {
    supervisorFail(fds.err, "sethostname");
  }
  // The new network namespace's lo is down; the sandbox uses this namespace as its host's.
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  memcpy(ifr.ifr_name, "lo", 3);
  if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) supervisorFail(fds.err, "lo flags");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) supervisorFail(fds.err, "lo up");
  close(sock);

  // As pid 1 we receive a signal from outside our namespace only if we handle it; the handler
  // does nothing, the signal is taken with sigwaitinfo below.
  sigset_t wanted, original;
  sigemptyset(&wanted);
  for (int sig : kForwardedSignals) sigaddset(&wanted, sig);
  sigaddset(&wanted, SIGCHLD);
  sigprocmask(SIG_BLOCK, &wanted, &original);
  struct sigaction action {};
  action.sa_handler = noopHandler;
  for (int sig : kForwardedSignals) sigaction(sig, &action, nullptr);
  sigaction(SIGCHLD, &action, nullptr);

  // Ready: the spawner replies only now, so /proc/<our pid>/root is the cell's view when the
  // launcher opens the working directory and the secrets directory through it.
  ssize_t r = write(fds.ready, "r", 1);
  (void)r;
  close(fds.ready);

  char go = 0;
  ssize_t n;
  do {
    n = read(fds.start, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) _exit(kCellAbortedExitCode);  // the launcher aborted the cell
  close(fds.start);

  // A program that is not there fails as the workload's exec would (127/126, with the reason).
  try {
    if (int e = executableErrno(config); e != 0) {
      std::string line =
          "exec " + config["process"]["args"][0].get<std::string>() + ": " + strerror(e);
      ssize_t ignored = write(fds.err, "cellos: ", 8);
      ignored = write(fds.err, line.data(), line.size());
      ignored = write(fds.err, "\n", 1);
      (void)ignored;
      int status = (e == EACCES || e == ENOEXEC ? 126 : 127) << 8;
      ssize_t w = write(fds.status, &status, sizeof status);
      (void)w;
      _exit(0);
    }
  } catch (const std::exception& e) {
    supervisorSay(fds.err, (std::string("bundle: ") + e.what()).c_str());
    _exit(kCellAbortedExitCode);
  }

  // The launcher has written the secrets by now (secret_files.h): read-only files for the
  // sandbox, or the workload's environment in a private bundle the host never sees.
  std::string bundleDir = plan.paths.bundle, stateDir = plan.paths.state;
  try {
    const std::string delivery =
        config.value("annotations", nlohmann::json::object()).value(kGvisorSecretsAnnotation, "");
    if (delivery == "file") {
      if (mount(nullptr, kGvisorSecretsSource, nullptr,
                MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) {
        throwErrno(std::string("remount(") + kGvisorSecretsSource + ", MS_RDONLY)");
      }
    } else if (delivery == "env") {
      writeSecretBundle(config);
      bundleDir = kGvisorPrivateBundle;
      stateDir = kGvisorPrivateState;
    }
  } catch (const std::exception& e) {
    supervisorSay(fds.err, (std::string("secrets: ") + e.what()).c_str());
    _exit(kCellAbortedExitCode);
  }

  const GvisorConfig& c = plan.config;
  std::vector<std::string> global = {c.runsc, "--root", stateDir, "--network=host",
                                     "--platform=" + c.platform};
  auto with = [&](std::vector<std::string> tail) {
    std::vector<std::string> argv = global;
    argv.insert(argv.end(), tail.begin(), tail.end());
    return argv;
  };
  pid_t runsc =
      spawnRunsc(with({"run", "--bundle", bundleDir, plan.cellId}), fds.out, fds.err, original);
  if (runsc < 0) supervisorFail(fds.err, "fork(runsc run)");
  close(fds.out);
  close(fds.err);

  int runscStatus = 0;
  for (bool done = false; !done;) {
    siginfo_t info{};
    int sig = sigwaitinfo(&wanted, &info);
    if (sig < 0) continue;
    if (sig == SIGCHLD) {
      int status = 0;
      for (pid_t pid; (pid = waitpid(-1, &status, WNOHANG)) > 0;) {
        if (pid == runsc) {
          runscStatus = status;
          done = true;
        }
      }
      continue;
    }
    // The command's timeout, or a kill() through the Cell capability: to every process of the
    // container, as the linux backend's init does. Reaped by the loop above.
    spawnRunsc(with({"kill", "--all", plan.cellId, std::to_string(sig)}), -1, -1, original);
  }
  // `runsc run` deletes the container it ran; a run that failed half-way may leave its state.
  std::error_code ec;
  if (!std::filesystem::is_empty(stateDir, ec) && !ec) {
    pid_t del = spawnRunsc(with({"delete", "--force", plan.cellId}), -1, -1, original);
    int ignored;
    if (del > 0) waitpid(del, &ignored, 0);
  }
  // The private bundle may hold the secrets in its environment: gone before the status is.
  if (bundleDir != plan.paths.bundle) std::filesystem::remove_all(bundleDir, ec);
  int status = gvisorWaitStatus(runscStatus);
  ssize_t w = write(fds.status, &status, sizeof status);
  (void)w;
  _exit(0);
}

// --- the spawner -------------------------------------------------------------------------------

// The supervisor of `cellId`, cloned into its new namespaces; returns its ends (see
// LaunchedCell). The spawner ignores SIGCHLD, so supervisors are reaped by the kernel.
LaunchedCell spawnSupervisor(const GvisorConfig& config, const std::string& runDir,
                             const std::string& cellId) {
  SupervisorPlan plan{config, cellId, gvisorPaths(runDir + "/cells/" + cellId)};
  if (!isDirectory(plan.paths.bundle)) {
    throw std::runtime_error("cell " + cellId + " has no bundle at " + plan.paths.bundle);
  }
  Pipe out = makePipe("stdout"), err = makePipe("stderr"), start = makePipe("start"),
       status = makePipe("status"), ready = makePipe("ready");
  for (int readEnd : {out.read.get(), err.read.get()}) {
    if (fcntl(readEnd, F_SETFL, O_NONBLOCK) < 0) throwErrno("fcntl(F_SETFL, O_NONBLOCK)");
  }
  long pid = syscall(
      SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD,
      nullptr, nullptr, nullptr, 0);
  if (pid < 0) throwErrno("clone(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC)");
  if (pid == 0) {
    try {
      runSupervisor(plan, {start.read.get(), status.write.get(), out.write.get(), err.write.get(),
                           ready.write.get()});
    } catch (...) {
    }
    _exit(kCellAbortedExitCode);
  }
  start.read.reset();
  status.write.reset();
  out.write.reset();
  err.write.reset();
  ready.write.reset();
  // Until the supervisor is ready (or gone: a failure is reported on its stderr and status).
  char byte;
  while (read(ready.read.get(), &byte, 1) < 0 && errno == EINTR) {
  }
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.get() < 0) {
    kill(static_cast<pid_t>(pid), SIGKILL);
    throwErrno("pidfd_open(" + std::to_string(pid) + ")");
  }
  std::string netnsPath = "/proc/" + std::to_string(pid) + "/ns/net";
  Fd netns(open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC));
  if (netns.get() < 0) {
    syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    throwErrno("open(" + netnsPath + ")");
  }
  return LaunchedCell{static_cast<pid_t>(pid), pidfd.release(),    netns.release(),
                      out.read.release(),      err.read.release(), start.write.release(),
                      status.read.release()};
}

void sendReply(int sock, const std::string& text, const std::vector<int>& fds) {
  if (sendWithFds(sock, text.data(), text.size(), fds) < 0) {
    throwErrno("sendmsg(gvisor spawner reply)");
  }
}

[[noreturn]] void runSpawner(int sock, const GvisorConfig& config, const std::string& runDir) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "vmm-gvisor");
  privsep::closeStrayFds({sock});
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN);  // supervisors are signalled through pidfds and reaped by the kernel
  for (;;) {
    char buffer[128];
    ssize_t n = recv(sock, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);  // the launcher closed its end
    std::string request(buffer, static_cast<size_t>(n));
    std::string reply;
    std::vector<int> fds;
    try {
      const std::string verb = "spawn ";
      if (request.rfind(verb, 0) != 0) throw std::runtime_error("unknown request");
      std::string cellId = request.substr(verb.size());
      if (!core::isValidCellId(cellId)) throw std::runtime_error("invalid cell id");
      LaunchedCell cell = spawnSupervisor(config, runDir, cellId);
      fds = {cell.pidFd, cell.netnsFd, cell.stdoutFd, cell.stderrFd, cell.startFd, cell.statusFd};
      reply = "ok " + std::to_string(cell.initPid);
    } catch (const std::exception& e) {
      reply = std::string("error ") + e.what();
    }
    try {
      sendReply(sock, reply, fds);
    } catch (const std::exception&) {
      _exit(0);
    }
    for (int fd : fds) close(fd);
  }
}

}  // namespace

GvisorPaths gvisorPaths(const std::string& cellDir) {
  return GvisorPaths{cellDir + "/bundle", cellDir + "/rootfs",      cellDir + "/work",
                     cellDir + "/runsc",  cellDir + "/resolv.conf", cellDir + "/supervisor-root"};
}

GvisorRootView gvisorRootView(const std::string& imageRoot) {
  GvisorRootView view;
  auto add = [&](const std::string& source, const std::string& name) {
    struct stat st {};
    if (lstat(source.c_str(), &st) < 0) throwErrno("lstat(" + source + ")");
    if (S_ISLNK(st.st_mode)) {
      view.symlinks.emplace_back(name, readLink(source));
    } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
      view.binds.push_back({source, "/" + name, false});
    }
  };
  if (imageRoot.empty()) {
    for (const char* name : {"usr", "etc"}) {
      if (!isDirectory(std::string("/") + name)) {
        throw std::runtime_error(std::string("host /") + name + " is not a directory");
      }
      add(std::string("/") + name, name);
    }
    for (const char* name : {"bin", "lib", "lib32", "lib64", "libx32", "sbin"}) {
      struct stat st {};
      if (lstat((std::string("/") + name).c_str(), &st) == 0) add(std::string("/") + name, name);
    }
    return view;
  }
  for (const auto& name : imageEntries(imageRoot)) add(imageRoot + "/" + name, name);
  if (view.binds.empty() && view.symlinks.empty()) {
    throw std::runtime_error("image " + imageRoot + " has nothing a cell could run");
  }
  return view;
}

std::string gvisorOciConfig(const CellLaunch& launch, const GvisorPaths& paths,
                            const GvisorRootView& root) {
  if (!core::isValidCellId(launch.cellId)) throw std::invalid_argument("invalid cell id");
  if (launch.argv.empty() || launch.argv[0].empty() || launch.argv[0][0] != '/') {
    throw std::invalid_argument("argv[0] must be an absolute path");
  }
  if (launch.workingDirectory.empty() || launch.workingDirectory[0] != '/') {
    throw std::invalid_argument("workingDirectory must be absolute");
  }
  if (launch.ids.hostBase == 0) throw std::invalid_argument("a cell never runs as host root");
  if (!launch.secretDelivery.empty() && launch.secretDelivery != "env" &&
      launch.secretDelivery != "file") {
    throw std::invalid_argument("secret delivery must be env or file");
  }
  using nlohmann::json;
  json env = json::array();
  for (const auto& [name, value] : launch.env) env.push_back(name + "=" + value);
  json rlimits = json::array();
  rlimits.push_back({{"type", "RLIMIT_NOFILE"},
                     {"hard", launch.nofileMax},
                     {"soft", std::min<uint64_t>(1024, launch.nofileMax)}});
  rlimits.push_back({{"type", "RLIMIT_CORE"}, {"hard", 0}, {"soft", 0}});
  // gVisor counts a sandbox's processes itself: the host's pids controller would count the
  // Sentry's threads too, and the Sentry cannot survive being refused one.
  if (launch.pidsMax) {
    rlimits.push_back(
        {{"type", "RLIMIT_NPROC"}, {"hard", *launch.pidsMax}, {"soft", *launch.pidsMax}});
  }
  json none = json::array();
  json process = {{"terminal", false},
                  {"user", {{"uid", launch.ids.hostBase}, {"gid", launch.ids.hostBase}}},
                  {"args", launch.argv},
                  {"env", env},
                  {"cwd", launch.workingDirectory},
                  {"capabilities",
                   {{"bounding", none},
                    {"effective", none},
                    {"inheritable", none},
                    {"permitted", none},
                    {"ambient", none}}},
                  {"rlimits", rlimits},
                  {"noNewPrivileges", true}};
  json mounts = json::array();
  mounts.push_back({{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}});
  mounts.push_back({{"destination", "/tmp"},
                    {"type", "tmpfs"},
                    {"source", "tmpfs"},
                    {"options", {"nosuid", "nodev", "mode=1777"}}});
  bool hasEtc = false;
  for (const auto& bind : root.binds) {
    hasEtc = hasEtc || (bind.destination == "/etc" && isDirectory(bind.source));
    mounts.push_back({{"destination", bind.destination},
                      {"type", "bind"},
                      {"source", bind.source},
                      {"options", {"rbind", "ro", "nosuid", "nodev"}}});
  }
  if (hasEtc && !launch.resolvConf.empty()) {
    mounts.push_back({{"destination", "/etc/resolv.conf"},
                      {"type", "bind"},
                      {"source", paths.resolvConf},
                      {"options", {"bind", "ro", "nosuid", "nodev", "noexec"}}});
  }
  mounts.push_back({{"destination", launch.workingDirectory},
                    {"type", "bind"},
                    {"source", paths.work},
                    {"options", {"rbind", "rw", "nosuid", "nodev"}}});
  if (launch.secretDelivery == "file") {
    mounts.push_back({{"destination", kSecretsDirectory},
                      {"type", "bind"},
                      {"source", kGvisorSecretsSource},
                      {"options", {"rbind", "ro", "nosuid", "nodev", "noexec"}}});
  }
  json resources = json::object();
  if (launch.memoryMaxBytes) resources["memory"] = {{"limit", *launch.memoryMaxBytes}};
  if (launch.cpuMax) {
    resources["cpu"] = {{"quota", launch.cpuMax->quotaMicros},
                        {"period", launch.cpuMax->periodMicros}};
  }
  json config = {{"ociVersion", "1.0.2"},
                 {"process", process},
                 {"root", {{"path", paths.rootfs}, {"readonly", true}}},
                 {"hostname", launch.cellId},
                 {"mounts", mounts},
                 {"linux",
                  {{"namespaces",
                    {{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
                   {"cgroupsPath", "/cellos/" + launch.cellId},
                   {"resources", resources}}}};
  if (!launch.secretDelivery.empty()) {
    config["annotations"] = {{kGvisorSecretsAnnotation, launch.secretDelivery}};
  }
  return config.dump(2) + "\n";
}

void writeGvisorBundle(const CellLaunch& launch) {
  GvisorPaths paths = gvisorPaths(launch.cellDir);
  GvisorRootView root = gvisorRootView(launch.imageRoot);
  std::string config = gvisorOciConfig(launch, paths, root);

  // The root: mount points and symlinks only; everything in it is bound over by the sandbox.
  if (mkdir(paths.rootfs.c_str(), 0755) < 0) throwErrno("mkdir(" + paths.rootfs + ")");
  for (const auto& [name, target] : root.symlinks) {
    std::string at = paths.rootfs + "/" + name;
    if (symlink(target.c_str(), at.c_str()) < 0) throwErrno("symlink(" + target + ", " + at + ")");
  }
  for (const auto& bind : root.binds) {
    std::string at = paths.rootfs + bind.destination;
    if (isDirectory(bind.source)) {
      if (mkdir(at.c_str(), 0755) < 0) throwErrno("mkdir(" + at + ")");
    } else {
      writeWholeFile(at, "", 0644);
    }
  }
  for (const char* own : kImageSkippedEntries) {
    if (std::string(own) == "sys") continue;  // never in a cell
    std::string at = paths.rootfs + "/" + own;
    if (mkdir(at.c_str(), 0755) < 0 && errno != EEXIST) throwErrno("mkdir(" + at + ")");
  }
  makeDirectories(paths.rootfs + launch.workingDirectory, 0755);
  if (launch.secretDelivery == "file") makeDirectories(paths.rootfs + kSecretsDirectory, 0755);

  // The working directory lives on the host, so what the workload leaves there can be read
  // (exported) from outside after the run; only the cell's host id may enter it.
  if (mkdir(paths.work.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.work + ")");
  if (chown(paths.work.c_str(), launch.ids.hostBase, launch.ids.hostBase) < 0) {
    throwErrno("chown(" + paths.work + ")");
  }
  if (!launch.resolvConf.empty()) writeWholeFile(paths.resolvConf, launch.resolvConf, 0644);
  if (mkdir(paths.state.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.state + ")");
  if (mkdir(paths.bundle.c_str(), 0700) < 0) throwErrno("mkdir(" + paths.bundle + ")");
  writeWholeFile(paths.bundle + "/config.json", config, 0600);
}

std::vector<std::string> removeGvisorLeftovers(const std::string& cellId,
                                               const std::string& cellDir) {
  std::vector<std::string> residue;
  if (!core::isValidCellId(cellId)) return {"invalid cell id " + cellId};
  if (!cellDir.empty()) {
    GvisorPaths paths = gvisorPaths(cellDir);
    for (const std::string& path : {paths.bundle, paths.rootfs, paths.work, paths.state,
                                    paths.resolvConf, paths.supervisorRoot}) {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      if (ec) residue.push_back(path + ": " + ec.message());
    }
  }
  // cgroup v1: runsc makes the cell's cgroup in every controller the launcher did not (it joins
  // the launcher's, which exist); a start that failed half-way leaves them behind.
  if (!CellCgroup::isV2()) {
    std::error_code ec;
    for (const auto& controller : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
      std::string leaf = controller.path().string() + "/cellos/" + cellId;
      if (rmdir(leaf.c_str()) < 0 && errno != ENOENT && errno != ENOTDIR) {
        residue.push_back("cgroup " + leaf + ": " + strerror(errno));
      }
    }
  }
  return residue;
}

pid_t startGvisorSpawner(const GvisorConfig& config, const std::string& runDir, int& launcherEnd) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    throwErrno("socketpair(gvisor spawner)");
  }
  pid_t pid = fork();
  if (pid < 0) throwErrno("fork(gvisor spawner)");
  if (pid == 0) {
    close(pair[0]);
    try {
      runSpawner(pair[1], config, runDir);
    } catch (...) {
    }
    _exit(kCellAbortedExitCode);
  }
  close(pair[1]);
  launcherEnd = pair[0];
  return pid;
}

LaunchedCell spawnGvisorCell(int spawnerFd, const std::string& cellId) {
  if (spawnerFd < 0) throw std::runtime_error("this VM launcher runs no gVisor spawner");
  std::string request = "spawn " + cellId;
  if (send(spawnerFd, request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    throwErrno("send(gvisor spawner)");
  }
  char buffer[1024];
  iovec iov{buffer, sizeof buffer};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kSupervisorFdCount)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(spawnerFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throwErrno("recvmsg(gvisor spawner)");
  if (n == 0) throw std::runtime_error("the gVisor spawner is gone");
  std::vector<Fd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  std::string reply(buffer, static_cast<size_t>(n));
  if (reply.rfind("ok ", 0) != 0) {
    throw std::runtime_error("gVisor spawner: " +
                             (reply.rfind("error ", 0) == 0 ? reply.substr(6) : reply));
  }
  if (fds.size() != kSupervisorFdCount || (msg.msg_flags & MSG_CTRUNC)) {
    throw std::runtime_error("gVisor spawner sent " + std::to_string(fds.size()) + " fds");
  }
  pid_t pid = static_cast<pid_t>(std::stol(reply.substr(3)));
  return LaunchedCell{pid,
                      fds[0].release(),
                      fds[1].release(),
                      fds[2].release(),
                      fds[3].release(),
                      fds[4].release(),
                      fds[5].release()};
}

int gvisorWaitStatus(int runscStatus) {
  if (WIFSIGNALED(runscStatus)) return runscStatus;  // runsc itself was killed
  int code = WEXITSTATUS(runscStatus);
  if (code > 128 && code <= 128 + 64) return code - 128;  // W_EXITCODE(0, signal)
  return code << 8;                                       // W_EXITCODE(code, 0)
}

}  // namespace cellos::vmm
