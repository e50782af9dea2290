#pragma once
// The one socket library every process uses: Unix-socket listeners that check their peer with
// SO_PEERCRED before a byte is read, connections, and Cap'n Proto two-party RPC links with
// explicit fd-passing and reader limits.

#include <sys/types.h>

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/function.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cellos::ipc {

// What the kernel says about the process on the other end of a connection, read at accept time.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
};

// Which peers a listener serves: a peer is allowed when its uid is listed, or its primary or a
// supplementary gid is listed. An empty policy allows nobody (fail closed).
struct PeerPolicy {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  bool allows(const PeerCredentials& peer) const;
  std::string describe() const;
};

// Limits for one kind of link. `maxFdsPerMessage` is the number of fds accepted from the peer per
// message: 0 unless the link carries fds. Cap'n Proto 0.9 also drops fds from *outgoing*
// messages on a link whose limit is 0 (OutgoingMessageImpl::setFds), so a side that sends an
// fd needs a limit of at least 1 too; keep it at exactly the number the protocol needs.
struct LinkOptions {
  unsigned maxFdsPerMessage = 0;
  uint64_t traversalLimitWords = 1 << 20;  // 8 MiB of message data per message
  int nestingLimit = 32;
  capnp::ReaderOptions readerOptions() const;
};

// How many connections a listener holds at once, and how long one may stay silent. A connection
// over a limit is accepted, told why in one Cap'n Proto Abort message (the peer's RPC system
// reports it as the error of its first call), and closed; not one byte of it is read. A
// connection that has not asked for the bootstrap capability within `bootstrapTimeout` is
// closed: every client of ours asks at once, and a silent one only holds a descriptor.
struct ConnectionLimits {
  size_t perUid = 64;  // open connections from one peer uid
  size_t total = 512;  // from all peers together: keep it below RLIMIT_NOFILE (see below)
  kj::Duration bootstrapTimeout = 10 * kj::SECONDS;
};

// A `total` for a process that keeps `reservedFds` descriptors for its own work (files, the
// helpers' links, what each running cell needs): the soft RLIMIT_NOFILE minus those. Reads the
// limit now (getrlimit), so call it before seccomp. Throws when the limit leaves nothing.
size_t connectionsWithinFdLimit(size_t reservedFds);

struct ListenOptions {
  std::string path;
  mode_t mode = 0600;
  std::optional<uid_t> owner;
  std::optional<gid_t> group;
};

// Creates a listening Unix stream socket at `options.path` (removing a stale socket file, never
// any other kind of file), with the given mode and owner. The fd is non-blocking and CLOEXEC.
kj::AutoCloseFd listenUnix(const ListenOptions& options);

// Connects to a Unix stream socket. Throws with the path and errno when it cannot.
kj::AutoCloseFd connectUnix(const std::string& path);

// Reads the peer's credentials of a connected Unix socket.
PeerCredentials peerCredentials(int fd);

// One established two-party RPC link over a connected Unix socket.
class RpcLink {
 public:
  // `bootstrap` is what this side offers the peer (null capability for a pure client).
  RpcLink(kj::LowLevelAsyncIoProvider& provider, kj::AutoCloseFd fd, const LinkOptions& options,
          capnp::rpc::twoparty::Side side, capnp::Capability::Client bootstrap);
  // A server side whose bootstrap capability `factory` makes when the peer asks for it (the
  // factory must outlive the link).
  RpcLink(kj::LowLevelAsyncIoProvider& provider, kj::AutoCloseFd fd, const LinkOptions& options,
          capnp::BootstrapFactory<capnp::rpc::twoparty::VatId>& factory);
  KJ_DISALLOW_COPY(RpcLink);

  // The peer's bootstrap capability (the server's main interface, when we are the client).
  template <typename T>
  typename T::Client bootstrap() {
    capnp::word scratch[4];
    memset(scratch, 0, sizeof(scratch));
    capnp::MallocMessageBuilder message(scratch);
    auto vatId = message.getRoot<capnp::rpc::twoparty::VatId>();
    vatId.setSide(network_.getSide() == capnp::rpc::twoparty::Side::CLIENT
                      ? capnp::rpc::twoparty::Side::SERVER
                      : capnp::rpc::twoparty::Side::CLIENT);
    return rpc_.bootstrap(vatId).castAs<T>();
  }

  kj::Promise<void> onDisconnect() { return network_.onDisconnect(); }

 private:
  kj::Own<kj::AsyncCapabilityStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
};

// Serves an interface on a listening socket: accepts, checks the peer against the policy
// before any byte of the connection is read, and serves each accepted peer its own bootstrap
// capability (so a server can scope what a peer sees). A refused peer gets a log line and a
// closed socket; a peer that sends garbage only loses its own connection. Connections are
// bounded by `limits` (per peer uid and in all): a peer at its limit is refused with a reason
// while every other peer is still accepted. Refusals are logged at most once per 10 s per
// listener, with a count of those not logged, so a flood cannot flood the log.
class RpcListener {
 public:
  using BootstrapFactory = kj::Function<capnp::Capability::Client(const PeerCredentials&)>;

  RpcListener(kj::AsyncIoContext& io, kj::AutoCloseFd listenFd, std::string name, PeerPolicy policy,
              LinkOptions options, BootstrapFactory factory);
  RpcListener(kj::AsyncIoContext& io, kj::AutoCloseFd listenFd, std::string name, PeerPolicy policy,
              LinkOptions options, ConnectionLimits limits, BootstrapFactory factory);
  KJ_DISALLOW_COPY(RpcListener);
  ~RpcListener();

  // Accepts forever; the returned promise only resolves by rejection (a listener error).
  kj::Promise<void> run();

  size_t connectionCount() const { return connections_.size(); }
  // Connections refused for a limit since the listener started (not those the policy refused).
  uint64_t refusedForLimits() const { return refusedForLimits_; }
  // Refused connections still open for their peers to read why (at most 32, 4 per uid, for at
  // most 1 s).
  size_t lingeringCount() const { return refused_.size(); }

 private:
  class Connection;
  kj::Promise<void> acceptOne();
  void admit(kj::AutoCloseFd fd);
  void serve(kj::AutoCloseFd fd, const PeerCredentials& peer);
  void drop(Connection* connection);
  void logRefusal(std::string line);

  kj::AsyncIoContext& io_;
  kj::AutoCloseFd listenFd_;
  kj::UnixEventPort::FdObserver observer_;
  std::string name_;
  PeerPolicy policy_;
  LinkOptions options_;
  ConnectionLimits limits_;
  BootstrapFactory factory_;
  std::vector<kj::Own<Connection>> connections_;
  std::map<uid_t, size_t> openByUid_;
  uint64_t refusedForLimits_ = 0;
  // The refusal log's rate limit: when the last line went out, and what came since.
  kj::Maybe<kj::TimePoint> lastRefusalLogged_;
  uint64_t refusalsNotLogged_ = 0;
  std::string lastRefusalNotLogged_;
  bool refusalSummaryPending_ = false;
  // Connections refused for a limit, kept open (write side shut) for a moment after our Abort:
  // closed at once, the peer's first write (it writes before it reads) fails with EPIPE, and it
  // reports that instead of our reason. Bounded: the oldest is closed when the queue is full.
  // Bounded per uid too, so that one uid's flood cannot push out another's reason.
  struct Refused {
    kj::AutoCloseFd fd;
    uid_t uid;
    kj::TimePoint until;
  };
  std::deque<Refused> refused_;
  bool refusedSweepPending_ = false;
  void linger(kj::AutoCloseFd fd, uid_t uid);
  void sweepRefused();
  kj::TaskSet tasks_;
  class ErrorHandler : public kj::TaskSet::ErrorHandler {
   public:
    explicit ErrorHandler(RpcListener& listener) : listener_(listener) {}
    void taskFailed(kj::Exception&& exception) override;
    RpcListener& listener_;
  };
  ErrorHandler errorHandler_{*this};
};

// A capability that is a file descriptor and nothing else: the fd rides along with it
// (Capability::Server::getFd(), sent by SCM_RIGHTS on a link whose peer accepts fds), and closes
// with the last reference. For interfaces without methods: a sealed secret bundle, an exported
// artifact.
template <typename Interface>
class FdCapability final : public Interface::Server {
 public:
  explicit FdCapability(kj::AutoCloseFd fd) : fd_(kj::mv(fd)) {}
  kj::Maybe<int> getFd() override { return fd_.get(); }

 private:
  kj::AutoCloseFd fd_;
};

// Bounds a call: a peer that does not answer within `timeout` makes the promise reject with a
// message naming `what`, so a stuck helper cannot hang the broker.
template <typename T>
kj::Promise<T> withTimeout(kj::Timer& timer, kj::Duration timeout, kj::StringPtr what,
                           kj::Promise<T>&& promise) {
  return timer.timeoutAfter(timeout, kj::mv(promise))
      .catch_([what = kj::str(what)](kj::Exception&& e) -> kj::Promise<T> {
        if (e.getType() == kj::Exception::Type::OVERLOADED &&
            e.getDescription().startsWith("operation timed out")) {
          return KJ_EXCEPTION(DISCONNECTED, "timed out waiting for", what);
        }
        return kj::mv(e);
      });
}

}  // namespace cellos::ipc
