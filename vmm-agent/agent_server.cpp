#include "vmm-agent/agent_server.h"

#include <capnp/serialize-async.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <regex>

#include <kj/debug.h>

namespace cellos::vmm {

namespace {

constexpr size_t kLaunchedFdCount = 6;

uint64_t monotonicMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

capnp::ReaderOptions launcherReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1 << 16;
  options.nestingLimit = 8;
  return options;
}

}  // namespace

template <typename T>
kj::Promise<T> LauncherLink::serialized(kj::Function<kj::Promise<T>()> request) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto previous = kj::mv(tail_);
  tail_ = kj::mv(paf.promise);
  return previous.then(kj::mv(request))
      .attach(kj::defer([fulfiller = kj::mv(paf.fulfiller)]() mutable { fulfiller->fulfill(); }));
}

kj::Promise<kj::Own<capnp::MessageReader>> LauncherLink::exchange(
    capnp::MessageBuilder& request, kj::ArrayPtr<kj::AutoCloseFd> fdSpace) {
  return capnp::writeMessage(*stream_, nullptr, request).then([this, fdSpace]() {
    return capnp::readMessage(*stream_, fdSpace, launcherReaderOptions())
        .then([fdSpace](capnp::MessageReaderAndFds result) {
          KJ_REQUIRE(result.fds.size() == 0 || result.fds.begin() == fdSpace.begin());
          return kj::mv(result.reader);
        });
  });
}

kj::Promise<LaunchedFds> LauncherLink::launch(ipc::CellRequest::Reader request) {
  auto message = kj::heap<capnp::MallocMessageBuilder>();
  message->initRoot<ipc::LauncherRequest>().setLaunch(request);
  return serialized<LaunchedFds>([this, message = kj::mv(message)]() mutable {
    auto fds = kj::heapArray<kj::AutoCloseFd>(kLaunchedFdCount);
    auto promise = exchange(*message, fds);
    return promise
        .then([fds = kj::mv(fds)](kj::Own<capnp::MessageReader> reader) mutable {
          auto reply = reader->getRoot<ipc::LauncherReply>();
          if (reply.isFailed()) {
            return kj::Promise<LaunchedFds>(
                KJ_EXCEPTION(FAILED, "cell launch failed", reply.getFailed()));
          }
          KJ_REQUIRE(reply.isLaunched(), "unexpected launcher reply");
          for (auto& fd : fds) KJ_REQUIRE(fd.get() >= 0, "launcher sent too few fds");
          LaunchedFds out;
          out.initPid = reply.getLaunched();
          out.pidFd = kj::mv(fds[0]);
          out.netnsFd = kj::mv(fds[1]);
          out.stdoutFd = kj::mv(fds[2]);
          out.stderrFd = kj::mv(fds[3]);
          out.startFd = kj::mv(fds[4]);
          out.statusFd = kj::mv(fds[5]);
          return kj::Promise<LaunchedFds>(kj::mv(out));
        })
        .attach(kj::mv(message));
  });
}

kj::Promise<std::vector<std::string>> LauncherLink::destroy(const std::string& cellId,
                                                            int initPid) {
  auto message = kj::heap<capnp::MallocMessageBuilder>();
  auto destroy = message->initRoot<ipc::LauncherRequest>().initDestroy();
  destroy.setCellId(cellId);
  destroy.setInitPid(initPid);
  return serialized<std::vector<std::string>>([this, message = kj::mv(message)]() mutable {
    auto promise = exchange(*message, nullptr);
    return promise
        .then([](kj::Own<capnp::MessageReader> reader) {
          auto reply = reader->getRoot<ipc::LauncherReply>();
          if (reply.isFailed()) {
            return std::vector<std::string>{std::string("destroy failed: ") +
                                            reply.getFailed().cStr()};
          }
          std::vector<std::string> residue;
          for (auto item : reply.getDestroyed()) residue.emplace_back(item.cStr());
          return residue;
        })
        .attach(kj::mv(message));
  });
}

void AgentState::taskFailed(kj::Exception&& exception) {
  spdlog::error("background task failed: {}", exception.getDescription().cStr());
}

namespace {

// The cell's network namespace as a capability: the fd rides along with it (getFd()), so the
// broker can hand it to the DNS helper without anyone naming a path.
class NetworkNamespaceServer final : public ipc::NetworkNamespace::Server {
 public:
  NetworkNamespaceServer(std::string cellId, kj::AutoCloseFd fd)
      : cellId_(std::move(cellId)), fd_(kj::mv(fd)) {}
  kj::Maybe<int> getFd() override { return fd_.get(); }
  kj::Promise<void> id(IdContext context) override {
    context.getResults().setCellId(cellId_);
    return kj::READY_NOW;
  }

 private:
  std::string cellId_;
  kj::AutoCloseFd fd_;
};

struct OutputCounter {
  uint64_t relayed = 0;
  uint64_t total = 0;
  bool truncated = false;
};

class CellServer final : public ipc::Cell::Server {
 public:
  CellServer(AgentState& state, std::string cellId, LaunchedFds fds, uint64_t timeoutMs)
      : state_(state),
        cellId_(std::move(cellId)),
        initPid_(fds.initPid),
        pidFd_(kj::mv(fds.pidFd)),
        stdoutFd_(kj::mv(fds.stdoutFd)),
        stderrFd_(kj::mv(fds.stderrFd)),
        startFd_(kj::mv(fds.startFd)),
        statusFd_(kj::mv(fds.statusFd)),
        timeoutMs_(timeoutMs) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    finished_ = paf.promise.fork();
    finishedFulfiller_ = kj::mv(paf.fulfiller);
  }

  ~CellServer() noexcept(false) {
    // The broker dropped the cell (or disconnected): destroy it in the background.
    if (!destroyed_) {
      spdlog::info("cell {}: released without destroy; tearing down", cellId_);
      state_.tasks.add(teardown().ignoreResult());
    }
  }

  kj::Promise<void> start(StartContext context) override {
    KJ_REQUIRE(!started_, "cell already started");
    KJ_REQUIRE(!destroyed_, "cell destroyed");
    started_ = true;
    auto output = context.getParams().getOutput();
    startMicros_ = monotonicMicros();
    char go = 'G';
    KJ_SYSCALL(write(startFd_, &go, 1), "start cell", cellId_);
    startFd_ = nullptr;

    auto& lowLevel = *state_.io.lowLevelProvider;
    auto relayOut = relay(lowLevel.wrapInputFd(kj::mv(stdoutFd_)), output,
                          ipc::OutputStream::STDOUT, stdoutCount_);
    auto relayErr = relay(lowLevel.wrapInputFd(kj::mv(stderrFd_)), output,
                          ipc::OutputStream::STDERR, stderrCount_);
    auto statusStream = lowLevel.wrapInputFd(kj::mv(statusFd_));
    auto statusRead = statusStream->tryRead(&rawStatus_, sizeof(rawStatus_), sizeof(rawStatus_))
                          .attach(kj::mv(statusStream))
                          .then([this](size_t n) {
                            statusComplete_ = n == sizeof(rawStatus_);
                            endMicros_ = monotonicMicros();
                          });
    kj::Promise<void> timeout = kj::NEVER_DONE;
    if (timeoutMs_ > 0) {
      timeout =
          state_.io.provider->getTimer().afterDelay(timeoutMs_ * kj::MILLISECONDS).then([this]() {
            spdlog::info("cell {}: timeout after {} ms; killing", cellId_, timeoutMs_);
            timedOut_ = true;
            signalInit(SIGKILL);
          });
    }
    auto all = kj::joinPromises(kj::arr(kj::mv(relayOut), kj::mv(relayErr), kj::mv(statusRead)))
                   .exclusiveJoin(
                       kj::mv(timeout).then([]() { return kj::Promise<void>(kj::NEVER_DONE); }));
    // The timeout branch never completes by itself; killing init makes the pipes close, which
    // completes the join above.
    running_ = kj::mv(all)
                   .then([this, output]() mutable {
                     finishedFulfiller_->fulfill();
                     return output.doneRequest().send().ignoreResult();
                   })
                   .catch_([this](kj::Exception&& e) {
                     spdlog::warn("cell {}: relay ended: {}", cellId_, e.getDescription().cStr());
                     if (finishedFulfiller_->isWaiting()) finishedFulfiller_->fulfill();
                   })
                   .eagerlyEvaluate(nullptr);
    return kj::READY_NOW;
  }

  kj::Promise<void> wait(WaitContext context) override {
    KJ_REQUIRE(started_, "cell not started");
    return finished_.addBranch().then([this, context]() mutable {
      auto status = context.getResults().initStatus();
      if (statusComplete_ && WIFEXITED(rawStatus_)) {
        status.setExitCode(WEXITSTATUS(rawStatus_));
      } else if (statusComplete_ && WIFSIGNALED(rawStatus_)) {
        status.setSignal(WTERMSIG(rawStatus_));
        status.setExitCode(128 + WTERMSIG(rawStatus_));
      } else {
        // init died before reporting: it was killed (timeout, destroy, or from outside).
        status.setSignal(SIGKILL);
        status.setExitCode(128 + SIGKILL);
      }
      status.setTimedOut(timedOut_);
      status.setReported(statusComplete_);
      status.setDurationMicros(endMicros_ > startMicros_ ? endMicros_ - startMicros_ : 0);
      status.setStdoutBytes(stdoutCount_.total);
      status.setStderrBytes(stderrCount_.total);
      status.setOutputTruncated(stdoutCount_.truncated || stderrCount_.truncated);
    });
  }

  kj::Promise<void> kill(KillContext context) override {
    signalInit(context.getParams().getSignal());
    return kj::READY_NOW;
  }

  kj::Promise<void> destroy(DestroyContext context) override {
    return teardown().then([context](std::vector<std::string> residue) mutable {
      auto list = context.getResults().initResidue(residue.size());
      for (size_t i = 0; i < residue.size(); ++i) list.set(i, residue[i]);
    });
  }

 private:
  void signalInit(int signal) {
    if (pidFd_.get() < 0) return;
    if (syscall(SYS_pidfd_send_signal, pidFd_.get(), signal, nullptr, 0) < 0 && errno != ESRCH) {
      spdlog::warn("cell {}: pidfd_send_signal({}): {}", cellId_, signal, strerror(errno));
    }
  }

  kj::Promise<std::vector<std::string>> teardown() {
    if (destroyed_) return std::vector<std::string>{};
    destroyed_ = true;
    startFd_ = nullptr;  // a cell that never started aborts instead of running
    signalInit(SIGKILL);
    pidFd_ = nullptr;
    std::string cellId = cellId_;
    AgentState& state = state_;
    return state_.launcher.destroy(cellId_, initPid_)
        .then([cellId, &state](std::vector<std::string> residue) {
          state.liveCells.erase(cellId);
          if (residue.empty()) {
            spdlog::info("cell {}: destroyed, no residue", cellId);
          } else {
            for (auto& r : residue) spdlog::error("cell {}: residue: {}", cellId, r);
          }
          return residue;
        });
  }

  kj::Promise<void> relay(kj::Own<kj::AsyncInputStream> input, ipc::OutputSink::Client sink,
                          ipc::OutputStream stream, OutputCounter& counter) {
    auto buffer = kj::heapArray<kj::byte>(64 * 1024);
    auto read = input->tryRead(buffer.begin(), 1, buffer.size());
    return read.then([this, input = kj::mv(input), sink, stream, &counter,
                      buffer = kj::mv(buffer)](size_t n) mutable -> kj::Promise<void> {
      if (n == 0) return kj::READY_NOW;
      counter.total += n;
      size_t forward = 0;
      if (counter.relayed < state_.maxOutputBytes) {
        forward = std::min<uint64_t>(n, state_.maxOutputBytes - counter.relayed);
      }
      if (forward < n) counter.truncated = true;
      kj::Promise<void> sent = kj::READY_NOW;
      if (forward > 0) {
        counter.relayed += forward;
        auto request = sink.writeRequest();
        request.setStream(stream);
        request.setData(buffer.slice(0, forward));
        sent = request.send();
      }
      return sent.then([this, input = kj::mv(input), sink, stream, &counter]() mutable {
        return relay(kj::mv(input), sink, stream, counter);
      });
    });
  }

  AgentState& state_;
  std::string cellId_;
  int initPid_;
  kj::AutoCloseFd pidFd_, stdoutFd_, stderrFd_, startFd_, statusFd_;
  uint64_t timeoutMs_;
  bool started_ = false;
  bool destroyed_ = false;
  bool timedOut_ = false;
  bool statusComplete_ = false;
  int rawStatus_ = 0;
  uint64_t startMicros_ = 0, endMicros_ = 0;
  OutputCounter stdoutCount_, stderrCount_;
  kj::ForkedPromise<void> finished_ = nullptr;
  kj::Own<kj::PromiseFulfiller<void>> finishedFulfiller_;
  // The relay and timeout; declared last so it is cancelled before the members it uses go.
  kj::Promise<void> running_ = kj::READY_NOW;
};

}  // namespace

kj::Promise<void> VmmAgentServer::createCell(CreateCellContext context) {
  auto request = context.getParams().getRequest();
  std::string cellId = request.getCellId();
  static const std::regex pattern("[a-z0-9][a-z0-9._-]{0,62}");
  KJ_REQUIRE(std::regex_match(cellId, pattern), "invalid cell id", cellId);
  KJ_REQUIRE(
      std::string(request.getBackend().cStr()) == "linux" || request.getBackend().size() == 0,
      "backend not available on this agent", request.getBackend());
  KJ_REQUIRE(request.getArgv().size() > 0, "argv must not be empty");
  KJ_REQUIRE(!state_.liveCells.count(cellId), "a cell with this id is already running", cellId);
  state_.liveCells.insert(cellId);
  uint64_t timeoutMs = request.getTimeoutMs();
  return state_.launcher.launch(request).then(
      [this, cellId, timeoutMs, context](LaunchedFds fds) mutable {
        spdlog::info("cell {}: created, init pid {}", cellId, fds.initPid);
        auto netns = kj::heap<NetworkNamespaceServer>(cellId, kj::mv(fds.netnsFd));
        auto results = context.getResults();
        results.setNetns(kj::mv(netns));
        results.setCell(kj::heap<CellServer>(state_, cellId, kj::mv(fds), timeoutMs));
      },
      [this, cellId](kj::Exception&& e) {
        state_.liveCells.erase(cellId);
        kj::throwFatalException(kj::mv(e));
      });
}

}  // namespace cellos::vmm
