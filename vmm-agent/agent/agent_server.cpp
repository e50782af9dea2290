#include "vmm-agent/agent/agent_server.h"

#include "core/cell_id.h"
#include "ipc/socket.h"

#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include <kj/debug.h>

namespace cellos::vmm {

namespace {

constexpr size_t kLaunchedFdCount = 6;

// A secret bundle larger than this is refused; the cell's secrets tmpfs holds 1 MiB.
constexpr size_t kMaxBundleBytes = 2 << 20;

uint64_t monotonicMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `count` units as a kj::Duration, capped at the longest one a timer can wait for instead of
// wrapping: the broker validates every document's durations, but the agent does not trust the
// broker's arithmetic (a wrapped ttl killed a cell at once).
kj::Duration saturatingDuration(uint64_t count, kj::Duration unit) {
  constexpr int64_t kMaxNanos = int64_t(100) * 365 * 24 * 3600 * 1'000'000'000;  // 100 years
  int64_t unitNanos = unit / kj::NANOSECONDS;
  if (count >= uint64_t(kMaxNanos / unitNanos)) return kMaxNanos * kj::NANOSECONDS;
  return int64_t(count) * unit;
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
  auto turn = kj::newPromiseAndFulfiller<void>();
  auto previous = kj::mv(tail_);
  tail_ = kj::mv(turn.promise);
  auto answer = kj::newPromiseAndFulfiller<T>();
  auto* fulfiller = answer.fulfiller.get();
  // Fulfilling an answer nobody waits for any more is a no-op.
  exchanges_.add(
      previous
          .then([this, request = kj::mv(request)]() mutable -> kj::Promise<T> {
            KJ_IF_MAYBE (why, broken_.why) {
              return kj::cp(*why);
            }
            return request();
          })
          .then([fulfiller](T&& value) { fulfiller->fulfill(kj::mv(value)); },
                [fulfiller](kj::Exception&& e) { fulfiller->reject(kj::mv(e)); })
          .attach(kj::mv(answer.fulfiller),
                  kj::defer([next = kj::mv(turn.fulfiller)]() mutable { next->fulfill(); })));
  return kj::mv(answer.promise);
}

void LauncherLink::taskFailed(kj::Exception&& exception) {
  spdlog::error("launcher exchange failed: {}", exception.getDescription().cStr());
}

kj::Promise<kj::Own<capnp::MessageReader>> LauncherLink::exchange(
    capnp::MessageBuilder& request, kj::ArrayPtr<kj::AutoCloseFd> fdSpace) {
  return capnp::writeMessage(*stream_, nullptr, request)
      .then([this, fdSpace]() {
        return capnp::readMessage(*stream_, fdSpace, launcherReaderOptions())
            .then([fdSpace](capnp::MessageReaderAndFds result) {
              KJ_REQUIRE(result.fds.size() == 0 || result.fds.begin() == fdSpace.begin());
              return kj::mv(result.reader);
            });
      })
      .catch_([this](kj::Exception&& e) -> kj::Own<capnp::MessageReader> {
        // Writing or reading failed part-way (a dead launcher, a reply too large to read whose
        // body is still on the socket): the stream is out of step for good.
        if (broken_.why == nullptr) {
          spdlog::critical("the link to the launcher broke: {}", e.getDescription().cStr());
          broken_.why = kj::cp(e);
          stream_->shutdownWrite();
          broken_.fulfiller->fulfill();
        }
        kj::throwFatalException(kj::mv(e));
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
          KJ_REQUIRE(reply.isLaunchedCell(), "unexpected launcher reply");
          for (auto& fd : fds) KJ_REQUIRE(fd.get() >= 0, "launcher sent too few fds");
          auto launched = reply.getLaunchedCell();
          LaunchedFds out;
          out.initPid = launched.getInitPid();
          auto network = launched.getNetwork();
          out.network = CellNetworkInfo{network.getUplinkInterface(), network.getUplinkAddress(),
                                        network.getCellAddress(),     network.getNftApplied(),
                                        network.getNftRuleCount(),    {},
                                        network.getDnsBindAddress()};
          for (auto range : network.getHostDestinations()) {
            out.network.hostDestinations.emplace_back(range.cStr());
          }
          for (auto timing : launched.getTimings()) {
            out.timings.emplace_back(timing.getName(), timing.getMicros());
          }
          for (auto fact : launched.getGuestBoot()) {
            out.guestBoot.emplace_back(fact.getName(), fact.getValue());
          }
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

kj::Promise<CellReportData> LauncherLink::inspect(const std::string& cellId) {
  auto message = kj::heap<capnp::MallocMessageBuilder>();
  message->initRoot<ipc::LauncherRequest>().setInspect(cellId);
  return serialized<CellReportData>([this, message = kj::mv(message)]() mutable {
    auto promise = exchange(*message, nullptr);
    return promise
        .then([](kj::Own<capnp::MessageReader> reader) {
          auto reply = reader->getRoot<ipc::LauncherReply>();
          if (reply.isFailed()) {
            return kj::Promise<CellReportData>(
                KJ_EXCEPTION(FAILED, "cell inspection failed", reply.getFailed()));
          }
          KJ_REQUIRE(reply.isInspected(), "unexpected launcher reply");
          auto report = reply.getInspected();
          CellReportData out;
          out.oomKilled = report.getOomKilled();
          out.oomKillCount = report.getOomKillCount();
          out.cpuUsageMicros = report.getCpuUsageMicros();
          for (auto flow : report.getFlows()) {
            out.flows.push_back({flow.getRuleId(), flow.getRule(), flow.getVerdict(),
                                 flow.getPackets(), flow.getBytes()});
          }
          return kj::Promise<CellReportData>(kj::mv(out));
        })
        .attach(kj::mv(message));
  });
}

kj::Promise<ArtifactFd> LauncherLink::openArtifact(const std::string& cellId,
                                                   const std::string& path, uint64_t maxBytes) {
  auto message = kj::heap<capnp::MallocMessageBuilder>();
  auto request = message->initRoot<ipc::LauncherRequest>().initOpenArtifact();
  request.setCellId(cellId);
  request.setPath(path);
  request.setMaxBytes(maxBytes);
  return serialized<ArtifactFd>([this, message = kj::mv(message)]() mutable {
    auto fds = kj::heapArray<kj::AutoCloseFd>(1);
    auto promise = exchange(*message, fds);
    return promise
        .then([fds = kj::mv(fds)](kj::Own<capnp::MessageReader> reader) mutable {
          auto reply = reader->getRoot<ipc::LauncherReply>();
          if (reply.isFailed()) {
            return kj::Promise<ArtifactFd>(
                KJ_EXCEPTION(FAILED, "opening an artifact failed", reply.getFailed()));
          }
          KJ_REQUIRE(reply.isArtifact(), "unexpected launcher reply");
          auto opened = reply.getArtifact();
          ArtifactFd out;
          out.bytes = opened.getBytes();
          out.refused = opened.getRefused();
          if (out.refused.empty()) {
            KJ_REQUIRE(fds[0].get() >= 0, "launcher sent no artifact fd");
            out.fd = kj::mv(fds[0]);
          }
          return kj::Promise<ArtifactFd>(kj::mv(out));
        })
        .attach(kj::mv(message));
  });
}

namespace {

// A message builder that holds secret values: every segment is overwritten when it goes.
struct WipedMessage {
  capnp::MallocMessageBuilder builder;
  ~WipedMessage() {
    for (auto segment : builder.getSegmentsForOutput()) {
      explicit_bzero(const_cast<capnp::word*>(segment.begin()),
                     segment.size() * sizeof(capnp::word));
    }
  }
};

// Bytes that held secret values: overwritten when they go.
struct WipedWords {
  explicit WipedWords(size_t count) : words(kj::heapArray<capnp::word>(count)) {}
  ~WipedWords() { explicit_bzero(words.begin(), words.size() * sizeof(capnp::word)); }
  kj::Array<capnp::word> words;
};

}  // namespace

kj::Promise<std::vector<std::string>> LauncherLink::deliverSecrets(
    const std::string& cellId, ipc::SecretBundle::Reader bundle) {
  auto message = kj::heap<WipedMessage>();
  auto request = message->builder.initRoot<ipc::LauncherRequest>().initDeliverSecrets();
  request.setCellId(cellId);
  request.setBundle(bundle);
  return serialized<std::vector<std::string>>([this, message = kj::mv(message)]() mutable {
    auto promise = exchange(message->builder, nullptr);
    return promise
        .then([](kj::Own<capnp::MessageReader> reader) {
          auto reply = reader->getRoot<ipc::LauncherReply>();
          if (reply.isFailed()) {
            return kj::Promise<std::vector<std::string>>(
                KJ_EXCEPTION(FAILED, "delivering secrets failed", reply.getFailed()));
          }
          KJ_REQUIRE(reply.isSecretsDelivered(), "unexpected launcher reply");
          std::vector<std::string> names;
          for (auto name : reply.getSecretsDelivered()) names.emplace_back(name.cStr());
          return kj::Promise<std::vector<std::string>>(kj::mv(names));
        })
        .attach(kj::mv(message));
  });
}

kj::Promise<void> LauncherLink::allowEgress(const std::string& cellId,
                                            ipc::EgressAddresses::Reader addresses) {
  auto message = kj::heap<capnp::MallocMessageBuilder>();
  auto request = message->initRoot<ipc::LauncherRequest>().initAllowEgress();
  request.setCellId(cellId);
  request.setAddresses(addresses);
  return serialized<bool>([this, message = kj::mv(message)]() mutable {
           auto promise = exchange(*message, nullptr);
           return promise
               .then([](kj::Own<capnp::MessageReader> reader) {
                 auto reply = reader->getRoot<ipc::LauncherReply>();
                 if (reply.isFailed()) {
                   return kj::Promise<bool>(
                       KJ_EXCEPTION(FAILED, "allowing egress failed", reply.getFailed()));
                 }
                 KJ_REQUIRE(reply.isEgressAllowed(), "unexpected launcher reply");
                 return kj::Promise<bool>(true);
               })
               .attach(kj::mv(message));
         })
      .ignoreResult();
}

void AgentState::taskFailed(kj::Exception&& exception) {
  spdlog::error("background task failed: {}", exception.getDescription().cStr());
}

kj::Promise<void> AgentState::shutDown(kj::Duration limit) {
  shuttingDown_ = true;
  // Copy first: abandon() does not erase, but a teardown that completes at once could.
  std::vector<CellAbandoner*> alive;
  for (auto& [id, cell] : cells) alive.push_back(cell);
  for (CellAbandoner* cell : alive) cell->abandon();
  return tasks.onEmpty()
      .exclusiveJoin(io.provider->getTimer().afterDelay(limit).then([this]() {
        spdlog::error(
            "cell teardown did not finish in time ({} cells); leaving it to the next "
            "start",
            liveCells.size());
      }))
      .then([this]() { close(); });
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

// The clocks of one cell: the command's timeout (SIGTERM to every process of the cell, then
// SIGKILL once the grace period has passed) and the cell's ttl (SIGKILL, counted from
// createCell, whether or not the command has started).
struct CellDeadlines {
  uint64_t timeoutMs = 0;     // 0: none
  uint32_t graceSeconds = 5;  // between SIGTERM and SIGKILL
  uint64_t ttlSeconds = 0;    // 0: none
};

class CellServer final : public ipc::Cell::Server, public CellAbandoner {
 public:
  CellServer(kj::Own<AgentState> state, std::string cellId, LaunchedFds fds,
             CellDeadlines deadlines)
      : state_(kj::mv(state)),
        cellId_(std::move(cellId)),
        initPid_(fds.initPid),
        pidFd_(kj::mv(fds.pidFd)),
        stdoutFd_(kj::mv(fds.stdoutFd)),
        stderrFd_(kj::mv(fds.stderrFd)),
        startFd_(kj::mv(fds.startFd)),
        statusFd_(kj::mv(fds.statusFd)),
        deadlines_(deadlines) {
    serial = state_->nextSerial++;
    state_->cells[cellId_] = this;
    auto paf = kj::newPromiseAndFulfiller<void>();
    finished_ = paf.promise.fork();
    finishedFulfiller_ = kj::mv(paf.fulfiller);
    if (deadlines_.ttlSeconds > 0) {
      ttl_ = state_->io.provider->getTimer()
                 .afterDelay(saturatingDuration(deadlines_.ttlSeconds, kj::SECONDS))
                 .then([this]() {
                   spdlog::info("cell {}: ttl of {} s reached; killing", cellId_,
                                deadlines_.ttlSeconds);
                   timedOut_ = true;
                   signalInit(SIGKILL);
                 })
                 .eagerlyEvaluate(nullptr);
    }
    // Launched while the agent was stopping: nobody will use it. Its teardown joins the tasks
    // shutDown() is waiting for.
    if (state_->shuttingDown()) {
      spdlog::info("cell {}: launched while the agent stops; tearing down", cellId_);
      teardown();
    }
  }

  ~CellServer() noexcept(false) {
    auto entry = state_->cells.find(cellId_);
    if (entry != state_->cells.end() && entry->second == this) state_->cells.erase(entry);
    if (destroyed_) return;
    if (state_->closed()) {
      // Released by the RPC system after the agent stopped (see AgentState): no new work in an
      // event loop that is going away. The cell's processes die now; its cgroup, interfaces and
      // record are the next start's reaper's.
      spdlog::warn("cell {}: released after shutdown; killed, the next start reaps it", cellId_);
      signalInit(SIGKILL);
      return;
    }
    // The broker dropped the cell (or disconnected): destroy it in the background.
    spdlog::info("cell {}: released without destroy; tearing down", cellId_);
    teardown();
  }

  // The connection that created the cell is gone: tear it down now, even if a call in flight
  // still holds the capability (it will find the cell destroyed).
  void abandon() override {
    if (destroyed_) return;
    spdlog::info("cell {}: its broker connection closed; tearing down", cellId_);
    teardown();
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

    auto& lowLevel = *state_->io.lowLevelProvider;
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
    if (deadlines_.timeoutMs > 0) {
      auto& timer = state_->io.provider->getTimer();
      timeout =
          timer.afterDelay(saturatingDuration(deadlines_.timeoutMs, kj::MILLISECONDS))
              .then([this, &timer]() {
                spdlog::info("cell {}: timeout after {} ms; SIGTERM, SIGKILL in {} s", cellId_,
                             deadlines_.timeoutMs, deadlines_.graceSeconds);
                timedOut_ = true;
                // The cell's init passes SIGTERM on to every other process of the cell.
                signalInit(SIGTERM);
                return timer.afterDelay(saturatingDuration(deadlines_.graceSeconds, kj::SECONDS))
                    .then([this]() {
                      spdlog::info("cell {}: grace period over; killing", cellId_);
                      signalInit(SIGKILL);
                    });
              });
    }
    auto all = kj::joinPromises(kj::arr(kj::mv(relayOut), kj::mv(relayErr), kj::mv(statusRead)))
                   .exclusiveJoin(
                       kj::mv(timeout).then([]() { return kj::Promise<void>(kj::NEVER_DONE); }));
    // The timeout branch never completes by itself; the workload ending (or killing init) makes
    // the pipes close, which completes the join above. Then the launcher reads what the cell
    // left: OOM kills, cpu time, the nftables counters.
    running_ = kj::mv(all)
                   .then([this]() {
                     return state_->launcher.inspect(cellId_).then(
                         [this](CellReportData report) { report_ = kj::mv(report); },
                         [this](kj::Exception&& e) {
                           spdlog::warn("cell {}: cannot read its report: {}", cellId_,
                                        e.getDescription().cStr());
                         });
                   })
                   .then([this, output]() mutable {
                     ended_ = true;
                     finishedFulfiller_->fulfill();
                     return output.doneRequest().send().ignoreResult();
                   })
                   .catch_([this](kj::Exception&& e) {
                     spdlog::warn("cell {}: relay ended: {}", cellId_, e.getDescription().cStr());
                     ended_ = true;
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
      auto report = context.getResults().initReport();
      report.setOomKilled(report_.oomKilled);
      report.setOomKillCount(report_.oomKillCount);
      report.setCpuUsageMicros(report_.cpuUsageMicros);
      auto flows = report.initFlows(report_.flows.size());
      for (size_t i = 0; i < report_.flows.size(); ++i) {
        flows[i].setRuleId(report_.flows[i].ruleId);
        flows[i].setRule(report_.flows[i].rule);
        flows[i].setVerdict(report_.flows[i].verdict);
        flows[i].setPackets(report_.flows[i].packets);
        flows[i].setBytes(report_.flows[i].bytes);
      }
    });
  }

  kj::Promise<void> kill(KillContext context) override {
    signalInit(context.getParams().getSignal());
    return kj::READY_NOW;
  }

  kj::Promise<void> openArtifact(OpenArtifactContext context) override {
    KJ_REQUIRE(!destroyed_, "cell destroyed");
    // While the workload runs it could still change what the path names.
    KJ_REQUIRE(!started_ || ended_, "the cell's workload is still running");
    auto params = context.getParams();
    return state_->launcher.openArtifact(cellId_, params.getPath(), params.getMaxBytes())
        .then([context](ArtifactFd opened) mutable {
          auto results = context.getResults();
          results.setBytes(opened.bytes);
          results.setRefused(opened.refused);
          if (opened.fd.get() >= 0) {
            // The read-only fd the launcher opened: the broker reads the file without ever
            // naming a path in the cell.
            results.setFile(kj::heap<ipc::FdCapability<ipc::ArtifactFile>>(kj::mv(opened.fd)));
          }
        });
  }

  kj::Promise<void> deliverSecrets(DeliverSecretsContext context) override {
    KJ_REQUIRE(!destroyed_, "cell destroyed");
    KJ_REQUIRE(!started_, "secrets are delivered before the workload starts");
    auto bundle = context.getParams().getBundle();
    return bundle.getFd().then([this, context, bundle](kj::Maybe<int> maybeFd) mutable {
      int fd = -1;
      KJ_IF_MAYBE (received, maybeFd) {
        fd = *received;
      }
      KJ_REQUIRE(fd >= 0, "the secret bundle came without a file descriptor");
      // Only a memfd can be sealed: the bytes cannot change while we read them, and a read
      // cannot block (the broker is less trusted than this process).
      int seals = fcntl(fd, F_GET_SEALS);
      constexpr int kRequired = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
      KJ_REQUIRE(seals >= 0 && (seals & kRequired) == kRequired,
                 "the secret bundle is not a sealed memfd");
      auto buffer = kj::heap<WipedWords>(kMaxBundleBytes / sizeof(capnp::word));
      auto bytes = buffer->words.asBytes();
      size_t got = 0;
      for (;;) {
        // pread from offset 0: the broker's writes left the shared file offset at the end.
        ssize_t n = pread(fd, bytes.begin() + got, bytes.size() - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        KJ_REQUIRE(n >= 0, "reading the secret bundle failed", strerror(errno));
        if (n == 0) break;
        got += static_cast<size_t>(n);
        KJ_REQUIRE(got < bytes.size(), "the secret bundle is too large");
      }
      KJ_REQUIRE(got % sizeof(capnp::word) == 0, "the secret bundle is not a message");
      capnp::ReaderOptions options;
      options.traversalLimitInWords = kMaxBundleBytes / sizeof(capnp::word);
      options.nestingLimit = 8;
      capnp::FlatArrayMessageReader reader(buffer->words.slice(0, got / sizeof(capnp::word)),
                                           options);
      auto parsed = reader.getRoot<ipc::SecretBundle>();
      std::string delivery = parsed.getDelivery();
      KJ_REQUIRE(delivery == "env" || delivery == "file", "unknown secret delivery", delivery);
      return state_->launcher.deliverSecrets(cellId_, parsed)
          .attach(kj::mv(buffer))
          .then([context](std::vector<std::string> names) mutable {
            auto list = context.getResults().initNames(names.size());
            for (size_t i = 0; i < names.size(); ++i) list.set(i, names[i]);
          });
    });
  }

  kj::Promise<void> allowEgress(AllowEgressContext context) override {
    KJ_REQUIRE(!destroyed_, "cell destroyed");
    return state_->launcher.allowEgress(cellId_, context.getParams().getAddresses());
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

  // Destroys the cell, once: every caller (destroy(), the broker going away, the capability
  // being released) gets the same result. The work runs to its end in the state's task set,
  // whoever still waits for it: a destroy() call cancelled half-way by its broker's death must
  // not leave the cell counted as alive.
  kj::Promise<std::vector<std::string>> teardown() {
    KJ_IF_MAYBE (running, teardown_) {
      return running->addBranch();
    }
    if (state_->closed()) {
      // The event loop is going (or gone): no new work in it. The cell's processes die now; the
      // rest is the next start's reaper's.
      destroyed_ = true;
      signalInit(SIGKILL);
      pidFd_ = nullptr;
      return std::vector<std::string>{"left to the reaper: the agent was stopping"};
    }
    destroyed_ = true;
    startFd_ = nullptr;  // a cell that never started aborts instead of running
    signalInit(SIGKILL);
    pidFd_ = nullptr;
    std::string cellId = cellId_;
    // The promise outlives this capability, not the state: it is one of state->tasks, and
    // every other branch is held by this capability or by a destroy() call on it, which holds
    // the capability. (A reference here would let a finishing task free the TaskSet that is
    // running it.)
    AgentState* state = state_.get();
    auto done = state_->launcher.destroy(cellId_, initPid_)
                    .then([cellId, state](std::vector<std::string> residue) {
                      state->liveCells.erase(cellId);
                      if (residue.empty()) {
                        spdlog::info("cell {}: destroyed, no residue", cellId);
                      } else {
                        for (auto& r : residue) spdlog::error("cell {}: residue: {}", cellId, r);
                      }
                      return residue;
                    })
                    .fork();
    state_->tasks.add(done.addBranch().ignoreResult());
    auto branch = done.addBranch();
    teardown_ = kj::mv(done);
    return branch;
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
      if (counter.relayed < state_->maxOutputBytes) {
        forward = std::min<uint64_t>(n, state_->maxOutputBytes - counter.relayed);
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

  kj::Own<AgentState> state_;
  std::string cellId_;
  int initPid_;
  kj::AutoCloseFd pidFd_, stdoutFd_, stderrFd_, startFd_, statusFd_;
  CellDeadlines deadlines_;
  CellReportData report_;
  bool started_ = false;
  bool destroyed_ = false;
  bool ended_ = false;  // the workload has exited and its output is relayed
  bool timedOut_ = false;
  bool statusComplete_ = false;
  int rawStatus_ = 0;
  uint64_t startMicros_ = 0, endMicros_ = 0;
  OutputCounter stdoutCount_, stderrCount_;
  kj::ForkedPromise<void> finished_ = nullptr;
  kj::Maybe<kj::ForkedPromise<std::vector<std::string>>> teardown_;
  kj::Own<kj::PromiseFulfiller<void>> finishedFulfiller_;
  // The relay, timeout and ttl; declared last so they are cancelled before the members they use go.
  kj::Promise<void> running_ = kj::READY_NOW;
  kj::Promise<void> ttl_ = kj::READY_NOW;
};

// A launched cell as capabilities: copyable, so one launch can be awaited by the call that asked
// for it and by the agent's own task that makes sure it finishes.
struct CreatedCell {
  ipc::Cell::Client cell = nullptr;
  ipc::NetworkNamespace::Client netns = nullptr;
  CellNetworkInfo network;
  std::vector<std::pair<std::string, uint64_t>> timings;
  std::vector<std::pair<std::string, std::string>> guestBoot;
  uint64_t serial = 0;  // the CellServer's (CellAbandoner::serial)
};

}  // namespace

VmmAgentServer::~VmmAgentServer() noexcept(false) {
  for (const auto& [id, serial] : cells_) {
    auto it = state_->cells.find(id);
    if (it != state_->cells.end() && it->second->serial == serial) it->second->abandon();
  }
}

kj::Promise<void> VmmAgentServer::createCell(CreateCellContext context) {
  auto request = context.getParams().getRequest();
  std::string cellId = request.getCellId();
  KJ_REQUIRE(core::isValidCellId(cellId), "invalid cell id", cellId);
  // The backend is the launcher's to check (launcher/backend_table.h): it knows which this
  // host runs. Named here only for the log.
  std::string backend = kj::str(request.getBackend()).cStr();
  KJ_REQUIRE(request.getArgv().size() > 0, "argv must not be empty");
  KJ_REQUIRE(!state_->liveCells.count(cellId), "a cell with this id is already running", cellId);
  KJ_REQUIRE(!state_->shuttingDown(), "the agent is stopping");
  state_->liveCells.insert(cellId);
  // Until the launch is under way, a throw (copying the request can fail on the broker's
  // data) must not leave the id counted as running.
  KJ_ON_SCOPE_FAILURE(state_->liveCells.erase(cellId));
  CellDeadlines deadlines{request.getTimeoutMs(), request.getGracefulShutdownSeconds(),
                          request.getTtlSeconds()};
  // Launching runs to its end whatever happens to this call: if the broker dies half-way, the
  // cell it asked for still becomes a capability, which nobody then holds, and releasing it
  // tears the cell down (~CellServer). Cancelling instead would leave a built cell that no
  // capability owns.
  AgentState* state = state_.get();  // outlived by the task below, which is one of its tasks
  auto created =
      state_->launcher.launch(request)
          .then(
              [state, cellId, backend, deadlines](LaunchedFds fds) {
                spdlog::info("cell {}: created ({}), init pid {}, address {}", cellId, backend,
                             fds.initPid, fds.network.cellAddress);
                CreatedCell out;
                out.network = fds.network;
                out.timings = fds.timings;
                out.guestBoot = fds.guestBoot;
                out.netns = kj::heap<NetworkNamespaceServer>(cellId, kj::mv(fds.netnsFd));
                auto server =
                    kj::heap<CellServer>(kj::addRef(*state), cellId, kj::mv(fds), deadlines);
                out.serial = server->serial;
                out.cell = kj::mv(server);
                return out;
              },
              [state, cellId](kj::Exception&& e) -> CreatedCell {
                state->liveCells.erase(cellId);
                kj::throwFatalException(kj::mv(e));
              })
          .fork();
  state_->tasks.add(created.addBranch().ignoreResult().catch_([](kj::Exception&&) {
    // The caller's branch reports the failure.
  }));
  return created.addBranch().then([this, cellId, context](CreatedCell cell) mutable {
    auto results = context.getResults();
    auto network = results.initNetwork();
    network.setUplinkInterface(cell.network.uplinkInterface);
    network.setUplinkAddress(cell.network.uplinkAddress);
    network.setCellAddress(cell.network.cellAddress);
    network.setNftApplied(cell.network.nftApplied);
    network.setNftRuleCount(cell.network.nftRuleCount);
    network.setDnsBindAddress(cell.network.dnsBindAddress);
    auto hostList = network.initHostDestinations(cell.network.hostDestinations.size());
    for (size_t i = 0; i < cell.network.hostDestinations.size(); ++i) {
      hostList.set(i, cell.network.hostDestinations[i]);
    }
    auto timings = results.initTimings(cell.timings.size());
    for (size_t i = 0; i < cell.timings.size(); ++i) {
      timings[i].setName(cell.timings[i].first);
      timings[i].setMicros(cell.timings[i].second);
    }
    auto facts = results.initGuestBoot(cell.guestBoot.size());
    for (size_t i = 0; i < cell.guestBoot.size(); ++i) {
      facts[i].setName(cell.guestBoot[i].first);
      facts[i].setValue(cell.guestBoot[i].second);
    }
    results.setNetns(kj::mv(cell.netns));
    results.setCell(kj::mv(cell.cell));
    // The call holds this server, so the connection is still there: its cells are ours to
    // abandon when it goes.
    cells_.emplace_back(cellId, cell.serial);
  });
}

}  // namespace cellos::vmm
