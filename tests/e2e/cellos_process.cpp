#include "tests/e2e/cellos_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cellos::testing {

std::string binDir() {
  const char* dir = getenv("CELLOS_BUILD_DIR");
  return std::string(dir ? dir : CELLOS_TEST_BUILD_DIR) + "/bin";
}

std::string sourceDir() {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  return dir ? dir : CELLOS_TEST_SOURCE_DIR;
}

CellosProcess::CellosProcess(std::vector<std::string> args) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) throw std::runtime_error("pipe");
  std::string path = binDir() + "/cellos";
  args.insert(args.begin(), path);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    // Its own process group, like a job a shell starts: signalGroup() then behaves as Ctrl-C.
    setpgid(0, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    // Signals a test runner may have blocked or ignored must reach cellos as a user's would.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGINT, SIG_DFL);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  outFd_ = out[0];
  errFd_ = err[0];
}

CellosProcess::~CellosProcess() {
  if (!reaped_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (outFd_ >= 0) close(outFd_);
  if (errFd_ >= 0) close(errFd_);
}

void CellosProcess::pump(int timeoutMs) {
  pollfd fds[2] = {{outFd_, POLLIN, 0}, {errFd_, POLLIN, 0}};
  if (poll(fds, 2, timeoutMs) <= 0) return;
  char buf[4096];
  for (int i = 0; i < 2; ++i) {
    if (fds[i].revents == 0 || fds[i].fd < 0) continue;
    ssize_t n = read(fds[i].fd, buf, sizeof(buf));
    if (n > 0) {
      (i == 0 ? out_ : err_).append(buf, n);
    } else {
      close(fds[i].fd);
      (i == 0 ? outFd_ : errFd_) = -1;
    }
  }
}

bool CellosProcess::waitForStdout(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out_.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline || (outFd_ < 0 && errFd_ < 0)) return false;
    pump(50);
  }
  return true;
}

int CellosProcess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (outFd_ >= 0 || errFd_ >= 0) {
    if (std::chrono::steady_clock::now() > deadline) break;
    pump(50);
  }
  while (!reaped_) {
    pid_t r = waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      reaped_ = true;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  return 128 + WTERMSIG(status_);
}

void CellosProcess::signal(int sig) {
  kill(pid_, sig);
}

void CellosProcess::signalGroup(int sig) {
  kill(-pid_, sig);
}

RunResult runCellos(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  CellosProcess process(args);
  int status = process.wait(timeout);
  return {status, process.out(), process.err()};
}

std::vector<pid_t> childrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    pid_t candidate = atoi(e->d_name);
    if (candidate <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // Field 4 (ppid) comes after the parenthesised command name, which may contain spaces.
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(candidate);
  }
  closedir(dir);
  return out;
}

std::string statusField(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::string value = line.substr(field.size() + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

std::string exeName(pid_t pid) {
  std::error_code ec;
  auto target = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  return ec ? "" : target.filename().string();
}

std::vector<std::string> hostResidue() {
  std::vector<std::string> residue;
  DIR* dir = opendir("/proc");
  while (dir && (errno = 0, true)) {
    dirent* e = readdir(dir);
    if (!e) break;
    pid_t pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::string exe = exeName(pid);
    // QEMU: a microvm cell's VMM (nothing else on a test host runs it).
    bool ours = (exe.rfind("cellos", 0) == 0 && exe != "integration-linux-cell") ||
                exe.rfind("qemu-system", 0) == 0;
    if (ours) {
      residue.push_back("process " + std::to_string(pid) + " (" + exe + ")");
    }
  }
  if (dir) closedir(dir);
  // Every controller's cellos/ (v1: runsc makes cells' cgroups in controllers the launcher does
  // not manage, e.g. cpuset and devices), and v2's /sys/fs/cgroup/cellos.
  std::vector<std::string> roots = {"/sys/fs/cgroup/cellos"};
  {
    std::error_code ec;
    for (auto& controller : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
      roots.push_back(controller.path().string() + "/cellos");
    }
  }
  for (const std::string& root : roots) {
    std::error_code ec;
    if (!std::filesystem::exists(root, ec)) continue;
    for (auto& entry : std::filesystem::directory_iterator(root, ec)) {
      if (entry.is_directory()) residue.push_back("cgroup " + entry.path().string());
    }
  }
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator("/run", ec)) {
    if (entry.path().filename().string().rfind("cellos-run.", 0) == 0) {
      residue.push_back("runtime dir " + entry.path().string());
    }
  }
  // Uplink ends of cells' veth pairs in the host's namespace ("cellos<slot>").
  for (auto& entry : std::filesystem::directory_iterator("/sys/class/net", ec)) {
    if (entry.path().filename().string().rfind("cellos", 0) == 0) {
      residue.push_back("interface " + entry.path().filename().string());
    }
  }
  // Mounts of ours: anything under a runtime directory or a VM launcher's run directory.
  std::ifstream mounts("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mountPoint;
    fields >> id >> parent >> device >> root >> mountPoint;
    if (mountPoint.rfind("/run/cellos", 0) == 0) residue.push_back("mount " + line);
  }
  return residue;
}

std::string makeTempDir() {
  char tmpl[] = "/tmp/cellos-e2e.XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  return tmpl;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::vector<std::string> readLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string missingBackend(const std::string& backend) {
  if (backend == "gvisor" && access("/usr/bin/runsc", X_OK) != 0) {
    return "needs runsc (scripts/setup installs it)";
  }
  if (backend == "microvm") {
    // What the VM launcher itself checks (microvmUnavailableReason): QEMU, a guest kernel, the
    // initramfs of this build. scripts/setup installs the first two, the build makes the third.
    std::string initramfs = binDir() + "/../vm/initramfs.cpio";
    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0 ||
        access("/var/lib/cellos/vm/kernel/current", R_OK) != 0 ||
        access(initramfs.c_str(), R_OK) != 0) {
      return "needs qemu-system-x86_64, a guest kernel and " + initramfs +
             " (scripts/setup, then the build's vm-initramfs target)";
    }
  }
  return "";
}

std::vector<std::string> ourResidue() {
  std::vector<std::string> residue;
  for (const std::string& item : hostResidue()) {
    if (item.rfind("process ", 0) == 0) {
      std::error_code ec;
      std::string pid = item.substr(8, item.find(' ', 8) - 8);
      auto exe = std::filesystem::read_symlink("/proc/" + pid + "/exe", ec);
      if (ec || exe.string().rfind(binDir() + "/", 0) != 0) continue;
    }
    residue.push_back(item);
  }
  return residue;
}

RunResult runCellosPrepared(std::vector<std::string> args, const std::function<bool()>& prepare,
                            Capture capture) {
  int pipeFds[2];
  if (pipe(pipeFds) < 0) return {-1, "", "pipe"};
  std::string path = binDir() + "/cellos";
  args.insert(args.begin(), path);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipeFds[1], 2);
    if (capture == Capture::kMerged) {
      dup2(pipeFds[1], 1);
    } else {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
    }
    if (!prepare()) _exit(126);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(pipeFds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(pipeFds[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(pipeFds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (capture == Capture::kMerged) return {code, text, ""};
  return {code, "", text};
}

}  // namespace cellos::testing
