#include "vmm-agent/backends/gvisor/gvisor_supervisor.h"

#include "vmm-agent/cell/cell_mounts.h"
#include "vmm-agent/cell/secret_files.h"
#include "vmm-agent/cell/sys_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <system_error>

namespace cellos::vmm {
namespace {

void noopHandler(int) {}

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

constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};

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
  _exit(execFailureExitCode(e));
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
void buildSupervisorRoot(const SupervisorPlan& plan) {
  const std::string& workingDirectory = plan.workingDirectory;
  const std::string& delivery = plan.secretDelivery;
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
      copySymlink(source, target);
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
    mountSecretsTmpfs(root + kGvisorSecretsSource, plan.workloadId);
  }
  pivotIntoNewRoot(root);
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
    writeNewFile(std::string(kGvisorPrivateBundle) + "/config.json", text, 0600);
  } catch (...) {
    wipeStrings(secretEnv);
    if (!text.empty()) explicit_bzero(text.data(), text.size());
    throw;
  }
  wipeStrings(secretEnv);
  explicit_bzero(text.data(), text.size());
}

}  // namespace

SupervisorPlan loadSupervisorPlan(const GvisorConfig& config, const std::string& runDir,
                                  const std::string& cellId) {
  SupervisorPlan plan{config, cellId, gvisorPaths(runDir + "/cells/" + cellId), {}, {}, {}, 0};
  if (!isDirectory(plan.paths.bundle)) {
    throw std::runtime_error("cell " + cellId + " has no bundle at " + plan.paths.bundle);
  }
  try {
    std::ifstream in(plan.paths.bundle + "/config.json");
    plan.oci = nlohmann::json::parse(in);
    plan.workingDirectory = plan.oci.at("process").at("cwd").get<std::string>();
    plan.secretDelivery =
        plan.oci.value("annotations", nlohmann::json::object()).value(kGvisorSecretsAnnotation, "");
    plan.workloadId = plan.oci.at("process").at("user").at("uid").get<uid_t>();
    if (!plan.oci.at("process").at("args").at(0).is_string()) throw std::runtime_error("args");
  } catch (const std::exception& e) {
    throw std::runtime_error("cell " + cellId + ": bundle config.json: " + e.what());
  }
  return plan;
}

// The supervisor: the pid-1 skeleton (cell/cell_init.h) with the gvisor backend's step 5. It
// joins the cell's cgroup before it builds anything, as the linux init does: the spawner writes
// its pid into the cgroup while it is the spawner's unreaped child (so the pid is still its
// own), and only then sends 'G'. Its root's tmpfs and every runsc process are charged to the
// cell from the first page, and no host process is ever moved into a cell's cgroup by a pid
// that might have been recycled.
[[noreturn]] void runSupervisor(const SupervisorPlan& plan, InitChannels fds) noexcept {
  sigset_t wanted, original;
  setUpCellInit(fds, [&] {
    if (prctl(PR_SET_NAME, "cellos-gvisor", 0, 0, 0) < 0) throwErrno("prctl(PR_SET_NAME)");
    // A mount namespace of our own, private, with the /proc of our pid namespace: runsc reads
    // /proc/<pid> of the processes it starts, by the pids it sees.
    makeMountsPrivate();
    buildSupervisorRoot(plan);
    doMount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    if (sethostname(plan.cellId.data(), plan.cellId.size()) < 0) throwErrno("sethostname");
    // The sandbox uses this namespace as its host's (runsc --network=host).
    bringUpLoopback();
    // As pid 1 we receive a signal from outside our namespace only if we handle it; the handler
    // does nothing, the signal is taken with sigwaitinfo below.
    sigemptyset(&wanted);
    for (int sig : kForwardedSignals) sigaddset(&wanted, sig);
    sigaddset(&wanted, SIGCHLD);
    sigprocmask(SIG_BLOCK, &wanted, &original);
    struct sigaction action {};
    action.sa_handler = noopHandler;
    for (int sig : kForwardedSignals) sigaction(sig, &action, nullptr);
    sigaction(SIGCHLD, &action, nullptr);
  });

  if (!waitForStartByte(fds.start)) _exit(kCellAbortedExitCode);  // the launcher aborted the cell
  close(fds.start);

  // A program that is not there fails as the workload's exec would (127/126, with the reason).
  try {
    if (int e = executableErrno(plan.oci); e != 0) {
      std::string line =
          "exec " + plan.oci["process"]["args"][0].get<std::string>() + ": " + strerror(e);
      ssize_t ignored = write(fds.stderrWrite, "cellos: ", 8);
      ignored = write(fds.stderrWrite, line.data(), line.size());
      ignored = write(fds.stderrWrite, "\n", 1);
      (void)ignored;
      reportWaitStatusAndExit(fds.status, execFailureExitCode(e) << 8);
    }
  } catch (const std::exception& e) {
    supervisorSay(fds.stderrWrite, (std::string("bundle: ") + e.what()).c_str());
    _exit(kCellAbortedExitCode);
  }
  // The launcher has written the secrets by now (secret_files.h): read-only files for the
  // sandbox, or the workload's environment in a private bundle the host never sees.
  std::string bundleDir = plan.paths.bundle, stateDir = plan.paths.state;
  try {
    if (plan.secretDelivery == "file") {
      if (mount(nullptr, kGvisorSecretsSource, nullptr,
                MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) {
        throwErrno(std::string("remount(") + kGvisorSecretsSource + ", MS_RDONLY)");
      }
    } else if (plan.secretDelivery == "env") {
      writeSecretBundle(plan.oci);
      bundleDir = kGvisorPrivateBundle;
      stateDir = kGvisorPrivateState;
    }
  } catch (const std::exception& e) {
    supervisorSay(fds.stderrWrite, (std::string("secrets: ") + e.what()).c_str());
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
  pid_t runsc = spawnRunsc(with({"run", "--bundle", bundleDir, plan.cellId}), fds.stdoutWrite,
                           fds.stderrWrite, original);
  if (runsc < 0) supervisorFail(fds.stderrWrite, "fork(runsc run)");
  close(fds.stdoutWrite);
  close(fds.stderrWrite);

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
  reportWaitStatusAndExit(fds.status, gvisorWaitStatus(runscStatus));
}

}  // namespace cellos::vmm
