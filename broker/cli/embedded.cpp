#include "broker/cli/embedded.h"

#include "privsep/credentials.h"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace cellos::cli {

namespace {

constexpr int kReadyTimeoutMs = 15000;
constexpr auto kStopGrace = std::chrono::seconds(5);

std::string describeStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "stopped";
}

// Waits up to `timeout` for `pid` to exit; true when it did (and was reaped).
bool waitForExit(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Starts args[0] with args and `environment` (nothing else), stdin on /dev/null and `readyFd` (if
// not -1) as fd 3, in its own process group — a Ctrl-C at the terminal reaches only the CLI, which
// then shuts the daemons down in order instead of all of them dying at once mid-cell — and
// with a parent-death signal, so that they go if the CLI dies (they re-arm it after switching
// user).
pid_t spawn(std::vector<std::string> args, int readyFd, std::vector<std::string> environment = {}) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& var : environment) envp.push_back(var.data());
  envp.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(125);
    if (readyFd >= 0) dup2(readyFd, 3);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    execve(argv[0], argv.data(), envp.data());
    dprintf(2, "cellos: cannot start %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

// Makes `dir` root's (0700) and lets `uid` alone search it too: one POSIX ACL entry
// (acl(5)), written as the kernel's system.posix_acl_access attribute
// (include/uapi/linux/posix_acl_xattr.h; entries sorted by tag). The mode then reads 0710, the
// group bits being the ACL mask. A file system without ACLs fails `cellos run` here rather
// than leaving the directory open to a whole group.
void restrictToRootAnd(const std::string& dir, uid_t uid) {
  struct Entry {
    uint16_t tag, perm;
    uint32_t id;
  };
  struct Acl {
    uint32_t version;
    Entry entries[5];
  };
  static_assert(sizeof(Acl) == 4 + 5 * 8, "the kernel's layout, without padding");
  constexpr uint32_t kNoId = ~0u;
  auto entry = [](uint16_t tag, uint16_t perm, uint32_t id) {
    return Entry{htole16(tag), htole16(perm), htole32(id)};
  };
  // USER_OBJ rwx, USER uid --x, GROUP_OBJ ---, MASK --x, OTHER ---.
  Acl acl{htole32(2),
          {entry(0x01, 7, kNoId), entry(0x02, 1, uid), entry(0x04, 0, kNoId), entry(0x10, 1, kNoId),
           entry(0x20, 0, kNoId)}};
  if (chown(dir.c_str(), 0, 0) < 0 || chmod(dir.c_str(), 0700) < 0 ||
      setxattr(dir.c_str(), "system.posix_acl_access", &acl, sizeof acl, 0) < 0) {
    throw std::system_error(errno, std::generic_category(),
                            "cannot restrict " + dir + " to root and the broker (its file " +
                                "system needs POSIX ACLs)");
  }
}

}  // namespace

std::string selfDirectory() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
}

EmbeddedSystem::EmbeddedSystem(EmbeddedOptions options) : options_(std::move(options)) {
  if (options_.binDir.empty()) options_.binDir = selfDirectory();
  eventsPath_ = options_.eventsPath.empty() ? options_.stateDir + "/events/events.jsonl"
                                            : options_.eventsPath;
}

EmbeddedSystem::~EmbeddedSystem() {
  try {
    stop();
  } catch (...) {
  }
}

std::vector<pid_t> EmbeddedSystem::pids() const {
  std::vector<pid_t> out;
  for (const auto& d : daemons_) out.push_back(d.pid);
  return out;
}

void EmbeddedSystem::launch(const std::string& name, std::vector<std::string> args) {
  const std::vector<std::string> originalArgs = args;
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  std::string path = options_.binDir + "/" + name;
  args.insert(args.begin(), path);
  args.push_back("--ready-fd=3");
  args.push_back("--log-level=" + options_.logLevel);
  // The daemons start with an empty environment; the broker alone gets the CLI's
  // CELLOS_SECRET_* variables, its `env` secret source (`CELLOS_SECRET_TOKEN=... cellos run`).
  std::vector<std::string> environment;
  if (name == "cellos-broker") {
    for (char** var = environ; *var != nullptr; ++var) {
      if (strncmp(*var, "CELLOS_SECRET_", 14) == 0) environment.emplace_back(*var);
    }
  }
  pid_t pid = spawn(args, ready[1], std::move(environment));
  close(ready[1]);
  daemons_.push_back({name, pid, originalArgs});
  pollfd p{ready[0], POLLIN, 0};
  int rc = poll(&p, 1, kReadyTimeoutMs);
  char byte = 0;
  bool ok = rc == 1 && read(ready[0], &byte, 1) == 1;
  close(ready[0]);
  if (!ok) {
    int status = 0;
    std::string why = waitForExit(pid, std::chrono::milliseconds(200), &status)
                          ? describeStatus(status)
                          : "did not become ready within 15 s";
    if (WIFEXITED(status) || WIFSIGNALED(status)) daemons_.back().pid = -1;
    stop();
    throw std::runtime_error(name + " failed to start: " + why + " (its log is above)");
  }
}

void EmbeddedSystem::start() {
  // Validate the accounts first: a missing user should be one clear line, not a daemon crash.
  privsep::lookupAccount("cellos");
  privsep::lookupAccount("cellos-signer");
  privsep::lookupAccount("cellos-dns");
  auto group = privsep::lookupGroup("cellos");
  if (!group) throw std::runtime_error("group cellos does not exist; run scripts/setup");

  // The state directory holds keys and logs: root-owned, not world-writable.
  std::filesystem::create_directories(options_.stateDir);
  chmod(options_.stateDir.c_str(), 0755);

  // What killed runs left goes first; the lock on /run keeps others from reaping ours until we
  // hold it (broker/cli/runtime_dir.h).
  HeldLock creating = reapDeadRuntimeDirectories();
  char dirTemplate[] = "/run/cellos-run.XXXXXX";
  if (mkdtemp(dirTemplate) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp /run/cellos-run.XXXXXX");
  }
  runtimeDir_ = dirTemplate;
  runtimeLock_ = holdRuntimeDirectory(runtimeDir_);
  creating.reset();
  // Who enters: root (the CLI and the root daemons) and the broker, which connects to the
  // three helpers' sockets after it dropped to `cellos`; nobody lists it. Not group cellos:
  // its members are the host service's clients and have no business with this run's daemons.
  restrictToRootAnd(runtimeDir_, privsep::lookupAccount("cellos").uid);

  launch("cellos-event-signer",
         {"--socket=" + runtimeDir_ + "/signer.sock",
          "--state-dir=" + options_.stateDir + "/signer", "--config=/dev/null"});
  // Its cell records live in the state directory, not the private runtime directory, so the
  // next `cellos run` reaps what a VM launcher killed mid-cell left behind.
  std::vector<std::string> vmmArgs = {
      "--socket=" + runtimeDir_ + "/vmm.sock", "--run-dir=" + runtimeDir_ + "/vmm",
      "--state-dir=" + options_.stateDir + "/vmm", "--images-dir=" + options_.stateDir + "/images",
      "--config=/dev/null"};
  if (!options_.uplinkNetns.empty()) vmmArgs.push_back("--uplink-netns=" + options_.uplinkNetns);
  vmmArgs.insert(vmmArgs.end(), options_.vmmArgs.begin(), options_.vmmArgs.end());
  launch("cellos-vmm-agent", std::move(vmmArgs));
  launch("cellos-dns-helper", {"--socket=" + runtimeDir_ + "/dns.sock", "--config=/dev/null"});
  std::vector<std::string> brokerArgs = {"--socket=" + runtimeDir_ + "/broker.sock",
                                         "--signer-socket=" + runtimeDir_ + "/signer.sock",
                                         "--vmm-socket=" + runtimeDir_ + "/vmm.sock",
                                         "--dns-socket=" + runtimeDir_ + "/dns.sock",
                                         "--events=" + eventsPath_,
                                         "--export-root=" + options_.stateDir + "/exports",
                                         "--config=/dev/null"};
  if (!options_.policyPath.empty()) brokerArgs.push_back("--policy=" + options_.policyPath);
  brokerArgs.insert(brokerArgs.end(), options_.brokerArgs.begin(), options_.brokerArgs.end());
  launch("cellos-broker", std::move(brokerArgs));
}

void EmbeddedSystem::restart(const std::string& name) {
  auto it = std::find_if(daemons_.begin(), daemons_.end(),
                         [&](const Daemon& d) { return d.name == name; });
  if (it == daemons_.end()) throw std::runtime_error(name + " was never started");
  if (it->pid > 0) {
    kill(it->pid, SIGKILL);
    int status = 0;
    waitpid(it->pid, &status, 0);
  }
  std::vector<std::string> args = it->args;
  size_t index = it - daemons_.begin();
  daemons_.erase(it);
  launch(name, args);
  // Keep start order (stop() goes in reverse): move the new entry back to its place.
  std::rotate(daemons_.begin() + index, daemons_.end() - 1, daemons_.end());
}

int EmbeddedSystem::publishToNats(const std::string& natsUrl, unsigned timeoutSeconds) {
  std::vector<std::string> args = {options_.binDir + "/cellos-event-forwarder",
                                   "--drain",
                                   "--drain-timeout=" + std::to_string(timeoutSeconds),
                                   "--nats-url=" + natsUrl,
                                   "--events=" + eventsPath_,
                                   "--state-dir=" + options_.stateDir + "/forwarder",
                                   "--log-level=" + options_.logLevel,
                                   "--config=/dev/null"};
  pid_t pid = spawn(args, -1);
  int status = 0;
  // The forwarder bounds its own retries; the grace covers its start and a last publish.
  if (!waitForExit(pid, std::chrono::seconds(timeoutSeconds) + 2 * kStopGrace, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void EmbeddedSystem::stop() {
  // Reverse order: the broker first (no new work), then the helpers it used, the signer last
  // so every event the broker had in flight can still be signed.
  for (auto it = daemons_.rbegin(); it != daemons_.rend(); ++it) {
    if (it->pid <= 0) continue;
    kill(it->pid, SIGTERM);
    int status = 0;
    if (!waitForExit(it->pid, kStopGrace, &status)) {
      fprintf(stderr, "cellos: %s did not stop within 5 s; killing it\n", it->name.c_str());
      kill(it->pid, SIGKILL);
      waitpid(it->pid, &status, 0);
    }
    it->pid = -1;
  }
  daemons_.clear();
  if (!runtimeDir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(runtimeDir_, ignored);
    runtimeDir_.clear();
    runtimeLock_.reset();
  }
}

}  // namespace cellos::cli
