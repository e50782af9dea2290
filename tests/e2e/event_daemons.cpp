#include "tests/e2e/event_daemons.h"

#include "ipc/broker.capnp.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <kj/async-io.h>
#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace cellos::testing {

namespace {

std::string buildDir() {
  const char* dir = getenv("CELLOS_BUILD_DIR");
  return dir ? dir : CELLOS_TEST_BUILD_DIR;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool reap(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Collects stdout and stderr of a child until it exits or the deadline passes.
VerifyResult runArgv(std::vector<std::string> args, std::chrono::seconds timeout) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd p{out[0], POLLIN, 0};
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(&p, 1, 100) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(out[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    text.append(buffer, n);
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, text};
}

}  // namespace

std::string binary(const std::string& name) {
  return buildDir() + "/bin/" + name;
}

EventDaemons::EventDaemons(std::string stateDir) : stateDir_(std::move(stateDir)) {
  auto group = privsep::lookupGroup("cellos");
  if (!group) throw std::runtime_error("group cellos does not exist; run scripts/setup");
  char dir[] = "/run/cellos-evtest.XXXXXX";
  if (mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp in /run");
  runtimeDir_ = dir;
  // root:cellos 0750, as `cellos run` makes it: the broker reaches the sockets, nobody else.
  if (chown(dir, 0, *group) < 0 || chmod(dir, 0750) < 0) throw std::runtime_error("chown");
  std::filesystem::create_directories(stateDir_ + "/logs");
}

EventDaemons::~EventDaemons() {
  stopAll();
  std::error_code ignored;
  std::filesystem::remove_all(runtimeDir_, ignored);
}

std::string EventDaemons::socket(const std::string& name) const {
  return runtimeDir_ + "/" + name + ".sock";
}

void EventDaemons::launch(const std::string& name, const std::string& binaryName,
                          std::vector<std::string> args, std::vector<std::string> env) {
  if (running(name)) throw std::runtime_error(name + " is already running");
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
  std::string path = binary(binaryName);
  args.insert(args.begin(), path);
  args.push_back("--ready-fd=3");
  args.push_back("--log-level=info");
  args.push_back("--config=/dev/null");
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string logPath = stateDir_ + "/logs/" + name + ".log";
  uint64_t fileSizeLimit = fileSizeLimits_[name];
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(ready[1], 3);
    int log = open(logPath.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    dup2(log, 2);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (fileSizeLimit > 0) {
      rlimit limit{fileSizeLimit, fileSizeLimit};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    execve(path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(ready[1]);
  pids_[name] = pid;
  pollfd p{ready[0], POLLIN, 0};
  char byte = 0;
  bool ok = poll(&p, 1, 20000) == 1 && read(ready[0], &byte, 1) == 1;
  close(ready[0]);
  if (!ok) {
    kill9(name);
    throw std::runtime_error(name + " did not become ready; its log:\n" + log(name));
  }
}

void EventDaemons::startSigner(std::vector<std::string> extra, std::vector<std::string> env) {
  std::vector<std::string> args = {"--socket=" + socket("signer"), "--state-dir=" + signerDir()};
  args.insert(args.end(), extra.begin(), extra.end());
  launch("signer", "cellos-event-signer", args, env);
}

void EventDaemons::startHelpers() {
  launch("vmm", "cellos-vmm-agent",
         {"--socket=" + socket("vmm"), "--run-dir=" + runtimeDir_ + "/vmm"}, {});
  launch("dns", "cellos-dns-helper", {"--socket=" + socket("dns")}, {});
}

void EventDaemons::startBroker(std::vector<std::string> extra) {
  std::vector<std::string> args = {
      "--socket=" + socket("broker"), "--signer-socket=" + socket("signer"),
      "--vmm-socket=" + socket("vmm"), "--dns-socket=" + socket("dns"), "--events=" + eventsPath(),
      "--host-id=evtest",
      // Its own export root: the default (/var/lib/cellos/exports) needs a set-up host.
      "--export-root=" + stateDir_ + "/exports"};
  args.insert(args.end(), extra.begin(), extra.end());
  launch("broker", "cellos-broker", args, {});
}

void EventDaemons::startForwarder(const std::string& natsUrl, std::vector<std::string> extra) {
  std::vector<std::string> args = {"--events=" + eventsPath(), "--nats-url=" + natsUrl,
                                   "--state-dir=" + stateDir_ + "/forwarder"};
  args.insert(args.end(), extra.begin(), extra.end());
  launch("forwarder", "cellos-event-forwarder", args, {});
}

bool EventDaemons::running(const std::string& name) {
  auto it = pids_.find(name);
  if (it == pids_.end() || it->second <= 0) return false;
  int status = 0;
  if (waitpid(it->second, &status, WNOHANG) == it->second) {
    it->second = -1;
    return false;
  }
  return true;
}

pid_t EventDaemons::pid(const std::string& name) const {
  auto it = pids_.find(name);
  return it == pids_.end() ? -1 : it->second;
}

int EventDaemons::stop(const std::string& name) {
  if (!running(name)) return 0;
  pid_t p = pids_[name];
  kill(p, SIGTERM);
  int status = 0;
  if (!reap(p, std::chrono::seconds(10), &status)) {
    kill(p, SIGKILL);
    waitpid(p, &status, 0);
  }
  pids_[name] = -1;
  return status;
}

void EventDaemons::stopAll() {
  for (const char* name : {"forwarder", "broker", "dns", "vmm", "signer"}) stop(name);
}

void EventDaemons::kill9(const std::string& name) {
  auto it = pids_.find(name);
  if (it == pids_.end() || it->second <= 0) return;
  kill(it->second, SIGKILL);
  int status = 0;
  waitpid(it->second, &status, 0);
  it->second = -1;
}

std::string EventDaemons::log(const std::string& name) const {
  return slurp(stateDir_ + "/logs/" + name + ".log");
}

bool EventDaemons::waitForLog(const std::string& name, const std::string& needle,
                              std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (log(name).find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

namespace {

class DiscardOutput final : public ipc::OutputSink::Server {
 public:
  kj::Promise<void> write(WriteContext) override { return kj::READY_NOW; }
  kj::Promise<void> done(DoneContext) override { return kj::READY_NOW; }
};

}  // namespace

std::vector<Submission> submitDocuments(const std::string& brokerSocket,
                                        const std::vector<std::string>& documents,
                                        bool waitForRuns) {
  auto io = kj::setupAsyncIo();
  std::vector<Submission> results(documents.size());
  try {
    ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(brokerSocket), {.maxFdsPerMessage = 0},
                      capnp::rpc::twoparty::Side::CLIENT, nullptr);
    auto broker = link.bootstrap<ipc::Broker>();
    kj::Vector<kj::Promise<void>> calls;
    for (size_t i = 0; i < documents.size(); ++i) {
      auto request = broker.submitRequest();
      const std::string& document = documents[i];
      request.setDocument(
          kj::arrayPtr(reinterpret_cast<const capnp::byte*>(document.data()), document.size()));
      request.setOutput(kj::heap<DiscardOutput>());
      Submission* result = &results[i];
      calls.add(
          request.send()
              .then([result, waitForRuns](
                        capnp::Response<ipc::Broker::SubmitResults> r) -> kj::Promise<void> {
                result->delivered = true;
                for (auto v : r.getViolations()) result->violations.push_back(v.cStr());
                if (!waitForRuns || !r.hasRun()) return kj::READY_NOW;
                return r.getRun().waitRequest().send().then(
                    [result](capnp::Response<ipc::Run::WaitResults> w) {
                      result->outcome = w.getResult().getOutcome().cStr();
                      result->exitCode = w.getResult().getStatus().getExitCode();
                    });
              })
              .catch_([result](kj::Exception&& e) { result->error = e.getDescription().cStr(); }));
    }
    ipc::withTimeout(io.provider->getTimer(), 120 * kj::SECONDS, "submissions",
                     kj::joinPromises(calls.releaseAsArray()))
        .wait(io.waitScope);
  } catch (const kj::Exception& e) {
    for (auto& r : results) {
      if (!r.delivered && r.error.empty()) r.error = e.getDescription().cStr();
    }
  }
  return results;
}

std::string rejectedDocument(const std::string& id) {
  // Valid id, invalid ttl: refused at admission, one rejected event naming the cell.
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
         "\n  lifetime: {ttlSeconds: -5}\n  run:\n    argv: [/bin/true]\n";
}

VerifyResult cellosVerify(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {binary("cellos"), "verify"};
  argv.insert(argv.end(), args.begin(), args.end());
  return runArgv(argv, std::chrono::seconds(120));
}

VerifyResult runShell(const std::string& command, std::chrono::seconds timeout) {
  return runArgv({"/bin/sh", "-c", command}, timeout);
}

std::vector<std::string> logFiles(const std::string& eventsPath) {
  std::vector<std::string> rotated;
  auto path = std::filesystem::path(eventsPath);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path(), ec)) {
    std::string name = entry.path().filename().string();
    std::string prefix = path.filename().string() + ".";
    if (name.rfind(prefix, 0) == 0 && name.size() == prefix.size() + 20 &&
        std::all_of(name.begin() + prefix.size(), name.end(), ::isdigit)) {
      rotated.push_back(entry.path().string());
    }
  }
  std::sort(rotated.begin(), rotated.end());
  rotated.push_back(eventsPath);
  return rotated;
}

}  // namespace cellos::testing
