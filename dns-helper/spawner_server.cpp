#include "dns-helper/spawner_server.h"

#include "dns-helper/child.h"
#include "dns-helper/child_channel.h"
#include "privsep/daemon.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::dns {

namespace {

constexpr size_t kMaxQueuedRecords = 4096;
constexpr size_t kMaxBatch = 256;
constexpr size_t kMaxLearnsInFlight = 64;
constexpr auto kLearnTimeout = 2 * kj::SECONDS;

// Starts a child in a fresh address space (exec of our own binary): nothing of the spawner's
// memory — other cells' policies, its RPC state — is visible to the process that will read the
// cell's packets.
pid_t spawnChild(const SpawnerConfig& config, int netnsFd, int channelFd) {
  pid_t pid;
  KJ_SYSCALL(pid = fork());
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls until exec.
  int netns = fcntl(netnsFd, F_DUPFD, 10);
  int channel = fcntl(channelFd, F_DUPFD, 10);
  int exe = fcntl(config.selfExeFd, F_DUPFD, 10);
  if (netns < 0 || channel < 0 || exe < 0 || dup2(netns, kChildNetnsFd) < 0 ||
      dup2(channel, kChildChannelFd) < 0) {
    _exit(125);
  }
  // dup2 leaves 3 and 4 open across exec; close everything else but the binary's fd, which
  // is marked CLOEXEC so exec itself closes it.
  for (int fd = 5; fd < 1024; ++fd) {
    if (fd != exe) close(fd);
  }
  fcntl(exe, F_SETFD, FD_CLOEXEC);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const char* argv[] = {"cellos-dns-helper", "child", nullptr};
  const char* envp[] = {nullptr};
  syscall(SYS_execveat, exe, "", argv, envp, AT_EMPTY_PATH);
  _exit(126);
}

// One cell's resolver: owns the child (through its channel) and relays its audit records.
class DnsProxyServer final : public ipc::DnsProxy::Server, private kj::TaskSet::ErrorHandler {
 public:
  DnsProxyServer(SpawnerState& state, pid_t pid, kj::AutoCloseFd channel,
                 ipc::DnsAuditSink::Client audit, ipc::DnsEgressSink::Client egress)
      : state_(state),
        pid_(pid),
        channel_(kj::mv(channel)),
        observer_(state.io.unixEventPort, channel_, kj::UnixEventPort::FdObserver::OBSERVE_READ),
        audit_(kj::mv(audit)),
        egress_(kj::mv(egress)),
        learnTasks_(*this) {}

  ~DnsProxyServer() noexcept(false) { stopChild(); }

  // Waits for the child's `ready` (or failure) message.
  kj::Promise<void> waitReady() {
    return observer_.whenBecomesReadable().then([this]() -> kj::Promise<void> {
      std::optional<ChildMessage> message = receive();
      if (!message) {
        if (!closed_) return waitReady();
        return KJ_EXCEPTION(FAILED, "DNS child exited before it was ready");
      }
      if (message->kind == ChildMessage::Kind::kFailed) {
        return KJ_EXCEPTION(FAILED, "DNS child failed", message->failure);
      }
      if (message->kind != ChildMessage::Kind::kReady) {
        return waitReady();  // nothing else may precede ready; ignore
      }
      spdlog::info("DNS child {} serving", message->readyPid);
      relaying_ = relayLoop().eagerlyEvaluate([this](kj::Exception&& e) {
        spdlog::warn("DNS child {}: relay ended: {}", pid_, e.getDescription().cStr());
      });
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> info(InfoContext context) override {
    context.getResults().setPid(pid_);
    return kj::READY_NOW;
  }

  // The broker destroys the cell before it stops the cell's resolver, so every query the
  // child answered is already recorded in the channel: deliver all of it, then close.
  kj::Promise<void> stop(StopContext context) override {
    if (stopped_) return kj::READY_NOW;
    relaying_ = nullptr;
    drainChannel();
    flush();
    auto paf = kj::newPromiseAndFulfiller<void>();
    flushed_ = kj::mv(paf.fulfiller);
    notifyIfFlushed();
    return paf.promise.then([this]() { stopChild(); });
  }

 private:
  // Reads one datagram from the child (child_channel.h); nullopt when none is waiting, at end of
  // stream, or for a malformed message (the child is untrusted: a bad message ends the
  // relationship, it does not crash us). `closed_` tells the last two from the first.
  std::optional<ChildMessage> receive() {
    auto buffer = kj::heapArray<kj::byte>(kMaxChannelMessage);
    ssize_t n = recv(channel_, buffer.begin(), buffer.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return std::nullopt;
    if (n <= 0) {
      closed_ = true;
      return std::nullopt;
    }
    std::string why;
    std::optional<ChildMessage> message =
        readChildMessage(buffer.slice(0, static_cast<size_t>(n)), &why);
    if (!message) {
      spdlog::warn("DNS child {}: malformed message: {}", pid_, why);
      closed_ = true;
    }
    return message;
  }

  kj::Promise<void> relayLoop() {
    return observer_.whenBecomesReadable().then([this]() -> kj::Promise<void> {
      drainChannel();
      flush();
      if (closed_) return kj::READY_NOW;
      return relayLoop();
    });
  }

  // Moves every record waiting in the channel into the bounded queue (overflow is counted).
  void drainChannel() {
    while (!closed_) {
      std::optional<ChildMessage> message = receive();
      if (!message) break;
      take(*message);
    }
  }

  void take(ChildMessage& message) {
    if (message.kind == ChildMessage::Kind::kLearn) {
      learn(message.learnToken, kj::mv(message.learnAddresses));
    } else if (message.kind == ChildMessage::Kind::kRecords) {
      dropped_ += message.droppedBefore;
      for (auto& record : message.records) {
        if (queue_.size() >= kMaxQueuedRecords) {
          ++dropped_;
        } else {
          queue_.push_back(kj::mv(record));
        }
      }
    }
  }

  // The child holds an answer until the addresses it names are in the cell's nftables sets:
  // pass the request to the broker (which has the launcher add them) and tell the child how it
  // went. At most kMaxLearnsInFlight at once; the child times out on its own, too.
  void learn(uint64_t token, kj::Array<capnp::word> addresses) {
    if (learnsInFlight_ >= kMaxLearnsInFlight) {
      replyLearn(token, false);
      return;
    }
    ++learnsInFlight_;
    auto call = egress_.learnRequest();
    capnp::FlatArrayMessageReader reader(addresses);
    call.setAddresses(reader.getRoot<ipc::DnsLearnedAddresses>());
    auto timeout =
        state_.io.provider->getTimer().afterDelay(kLearnTimeout).then([]() -> kj::Promise<void> {
          return KJ_EXCEPTION(FAILED, "learn timed out");
        });
    learnTasks_.add(call.send()
                        .ignoreResult()
                        .exclusiveJoin(kj::mv(timeout))
                        .then([this, token]() { replyLearn(token, true); },
                              [this, token](kj::Exception&& e) {
                                spdlog::warn("DNS child {}: learning addresses failed: {}", pid_,
                                             e.getDescription().cStr());
                                replyLearn(token, false);
                              })
                        .then([this]() { --learnsInFlight_; }));
  }

  void replyLearn(uint64_t token, bool ok) {
    if (stopped_) return;
    std::vector<kj::byte> message = learnResultMessage({token, ok});
    // Non-blocking: a child that does not read its channel times the query out itself.
    ::send(channel_, message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  void taskFailed(kj::Exception&& exception) override {
    spdlog::warn("DNS child {}: {}", pid_, exception.getDescription().cStr());
  }

  void notifyIfFlushed() {
    if (flushed_.get() != nullptr && !sending_ && queue_.empty() && dropped_ == 0) {
      flushed_->fulfill();
      flushed_ = nullptr;
    }
  }

  // Sends queued records to the broker, one batch in flight at a time.
  void flush() {
    if (sending_ || (queue_.empty() && dropped_ == 0)) return;
    size_t count = std::min(queue_.size(), kMaxBatch);
    auto request = audit_.recordRequest();
    auto records = request.initRecords(count);
    for (size_t i = 0; i < count; ++i) {
      capnp::FlatArrayMessageReader reader(queue_[i]);
      records.setWithCaveats(i, reader.getRoot<ipc::DnsQueryRecord>());
    }
    request.setDropped(dropped_);
    dropped_ = 0;
    queue_.erase(queue_.begin(), queue_.begin() + count);
    sending_ = true;
    sendTask_ = request.send()
                    .then(
                        [this]() {
                          sending_ = false;
                          flush();
                          notifyIfFlushed();
                        },
                        [this](kj::Exception&& e) {
                          sending_ = false;
                          spdlog::warn("DNS child {}: audit sink failed: {}", pid_,
                                       e.getDescription().cStr());
                          queue_.clear();  // the broker is gone: nobody to deliver to
                          dropped_ = 0;
                          notifyIfFlushed();
                        })
                    .eagerlyEvaluate(nullptr);
  }

  void stopChild() {
    if (stopped_) return;
    stopped_ = true;
    // Shutting the channel down tells the child to exit (it polls the channel); it runs as
    // another uid, so we do not signal it. PDEATHSIG covers a dying spawner.
    relaying_ = nullptr;
    shutdown(channel_, SHUT_RDWR);
  }

  SpawnerState& state_;
  pid_t pid_;
  kj::AutoCloseFd channel_;
  kj::UnixEventPort::FdObserver observer_;
  ipc::DnsAuditSink::Client audit_;
  ipc::DnsEgressSink::Client egress_;
  kj::TaskSet learnTasks_;
  size_t learnsInFlight_ = 0;
  std::vector<kj::Array<capnp::word>> queue_;
  uint64_t dropped_ = 0;
  bool sending_ = false;
  bool closed_ = false;
  bool stopped_ = false;
  kj::Own<kj::PromiseFulfiller<void>> flushed_;  // set while stop() waits for delivery
  kj::Promise<void> sendTask_ = kj::READY_NOW;
  kj::Promise<void> relaying_ = kj::READY_NOW;
};

}  // namespace

void SpawnerState::taskFailed(kj::Exception&& exception) {
  spdlog::warn("{}", exception.getDescription().cStr());
}

kj::Promise<void> DnsHelperServer::startProxy(StartProxyContext context) {
  auto params = context.getParams();
  auto netns = params.getNetns();
  return netns.getFd().then([this, context](kj::Maybe<int> maybeFd) mutable -> kj::Promise<void> {
    int netnsFd = KJ_REQUIRE_NONNULL(maybeFd, "netns capability carries no fd");
    auto params = context.getParams();
    auto policy = params.getPolicy();

    int pair[2];
    KJ_SYSCALL(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair));
    kj::AutoCloseFd ours(pair[0]), theirs(pair[1]);

    capnp::MallocMessageBuilder configMessage;
    auto config = configMessage.initRoot<ipc::DnsChildConfig>();
    config.setPolicy(policy);
    config.setUid(state_.config.childUid);
    config.setGid(state_.config.childGid);
    config.setMemoryLimitBytes(state_.config.childMemoryBytes);
    auto ranges = config.initGuardedRanges(unsigned(state_.config.guardedRanges.size()));
    for (size_t i = 0; i < state_.config.guardedRanges.size(); ++i) {
      ranges.set(unsigned(i), state_.config.guardedRanges[i]);
    }
    auto words = capnp::messageToFlatArray(configMessage);
    KJ_REQUIRE(words.asBytes().size() <= kMaxChannelMessage, "DNS policy too large");

    pid_t pid = spawnChild(state_.config, netnsFd, theirs);
    theirs = nullptr;
    auto childPid = kj::heap<kj::Maybe<pid_t>>(pid);
    state_.tasks.add(state_.io.unixEventPort.onChildExit(*childPid)
                         .then([pid](int status) {
                           if (WIFEXITED(status)) {
                             spdlog::info("DNS child {} exited with {}", pid, WEXITSTATUS(status));
                           } else {
                             spdlog::warn("DNS child {} killed by signal {}", pid,
                                          WTERMSIG(status));
                           }
                         })
                         .attach(kj::mv(childPid)));
    KJ_SYSCALL(send(ours, words.asBytes().begin(), words.asBytes().size(), MSG_NOSIGNAL),
               "sending the DNS child its configuration");

    auto proxy =
        kj::heap<DnsProxyServer>(state_, pid, kj::mv(ours), params.getAudit(), params.getEgress());
    auto ready = proxy->waitReady();
    auto timeout =
        state_.io.provider->getTimer().afterDelay(10 * kj::SECONDS).then([]() -> kj::Promise<void> {
          return KJ_EXCEPTION(FAILED, "DNS child not ready within 10 s");
        });
    return ready.exclusiveJoin(kj::mv(timeout)).then([context, proxy = kj::mv(proxy)]() mutable {
      context.getResults().setProxy(kj::mv(proxy));
    });
  });
}

}  // namespace cellos::dns
