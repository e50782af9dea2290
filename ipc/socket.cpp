#include "ipc/socket.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/debug.h>

namespace cellos::ipc {

bool PeerPolicy::allows(const PeerCredentials& peer) const {
  if (std::find(uids.begin(), uids.end(), peer.uid) != uids.end()) return true;
  if (std::find(gids.begin(), gids.end(), peer.gid) != gids.end()) return true;
  for (gid_t g : peer.groups) {
    if (std::find(gids.begin(), gids.end(), g) != gids.end()) return true;
  }
  return false;
}

std::string PeerPolicy::describe() const {
  std::string out = "uids {";
  for (size_t i = 0; i < uids.size(); ++i) out += (i ? "," : "") + std::to_string(uids[i]);
  out += "} gids {";
  for (size_t i = 0; i < gids.size(); ++i) out += (i ? "," : "") + std::to_string(gids[i]);
  return out + "}";
}

capnp::ReaderOptions LinkOptions::readerOptions() const {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = traversalLimitWords;
  options.nestingLimit = nestingLimit;
  return options;
}

namespace {

sockaddr_un unixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  KJ_REQUIRE(path.size() < sizeof(addr.sun_path), "socket path too long", path);
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

size_t connectionsWithinFdLimit(size_t reservedFds) {
  rlimit limit{};
  KJ_SYSCALL(getrlimit(RLIMIT_NOFILE, &limit));
  KJ_REQUIRE(limit.rlim_cur > reservedFds + 1,
             "RLIMIT_NOFILE leaves no descriptor for connections; raise it (LimitNOFILE=)",
             limit.rlim_cur, reservedFds);
  return limit.rlim_cur - reservedFds;
}

kj::AutoCloseFd listenUnix(const ListenOptions& options) {
  sockaddr_un addr = unixAddress(options.path);
  // Remove a socket left by a previous run, but never another kind of file: a config mistake
  // that points the socket at a regular file must not delete it.
  struct stat st {};
  if (lstat(options.path.c_str(), &st) == 0) {
    KJ_REQUIRE(S_ISSOCK(st.st_mode), "refusing to replace a non-socket file with a socket",
               options.path);
    KJ_SYSCALL(unlink(options.path.c_str()), options.path);
  }
  int raw;
  KJ_SYSCALL(raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  kj::AutoCloseFd fd(raw);
  // Bind under a restrictive umask so the socket never exists with looser permissions than
  // configured, not even between bind() and chmod().
  mode_t old = umask(0177);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int bindErrno = errno;
  umask(old);
  if (rc < 0) {
    KJ_FAIL_SYSCALL("bind", bindErrno, options.path);
  }
  if (options.owner || options.group) {
    KJ_SYSCALL(chown(options.path.c_str(), options.owner ? *options.owner : uid_t(-1),
                     options.group ? *options.group : gid_t(-1)),
               options.path);
  }
  KJ_SYSCALL(chmod(options.path.c_str(), options.mode), options.path);
  KJ_SYSCALL(listen(fd, 64), options.path);
  return fd;
}

kj::AutoCloseFd connectUnix(const std::string& path) {
  sockaddr_un addr = unixAddress(path);
  int raw;
  KJ_SYSCALL(raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  kj::AutoCloseFd fd(raw);
  KJ_SYSCALL(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), path);
  return fd;
}

PeerCredentials peerCredentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  KJ_SYSCALL(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len));
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  // Supplementary groups as they were when the peer connected (Linux >= 4.13).
  std::vector<gid_t> groups(64);
  socklen_t glen = groups.size() * sizeof(gid_t);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) < 0 && errno == ERANGE) {
    groups.resize(glen / sizeof(gid_t));
    KJ_SYSCALL(getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen));
  }
  groups.resize(glen / sizeof(gid_t));
  peer.groups = std::move(groups);
  return peer;
}

RpcLink::RpcLink(kj::LowLevelAsyncIoProvider& provider, kj::AutoCloseFd fd,
                 const LinkOptions& options, capnp::rpc::twoparty::Side side,
                 capnp::Capability::Client bootstrap)
    : stream_(provider.wrapUnixSocketFd(kj::mv(fd), kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC)),
      network_(*stream_, options.maxFdsPerMessage, side, options.readerOptions()),
      rpc_(capnp::makeRpcServer(network_, kj::mv(bootstrap))) {}

RpcLink::RpcLink(kj::LowLevelAsyncIoProvider& provider, kj::AutoCloseFd fd,
                 const LinkOptions& options,
                 capnp::BootstrapFactory<capnp::rpc::twoparty::VatId>& factory)
    : stream_(provider.wrapUnixSocketFd(kj::mv(fd), kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC)),
      network_(*stream_, options.maxFdsPerMessage, capnp::rpc::twoparty::Side::SERVER,
               options.readerOptions()),
      rpc_(capnp::makeRpcServer(network_, factory)) {}

namespace {

// Accepted connections handled before the loop lets everything else run: a flood of
// connections to refuse must not keep the served peers waiting.
constexpr int kAcceptBatch = 32;
// Refused connections kept for their peers to read the reason: how many, and how long.
constexpr size_t kMaxLingering = 32;
constexpr size_t kMaxLingeringPerUid = 4;
constexpr kj::Duration kLingerTime = 1 * kj::SECONDS;
// At most one refusal line per listener this often; the rest are counted into the next.
constexpr kj::Duration kRefusalLogInterval = 10 * kj::SECONDS;

// Tells a peer refused for a limit why, in the one form its RPC system reports as an error: an rpc
// Abort message (capnp/rpc.capnp), whose reason the peer's first call fails with. It goes into the
// fresh socket's empty send buffer without blocking, and nothing is read from the peer; a peer
// that has hung up already is simply not told.
void sendAbort(int fd, const std::string& reason) {
  capnp::MallocMessageBuilder message;
  auto exception = message.initRoot<capnp::rpc::Message>().initAbort();
  exception.setReason(reason);
  exception.setType(capnp::rpc::Exception::Type::OVERLOADED);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  iovec part{bytes.begin(), bytes.size()};
  msghdr header{};
  header.msg_iov = &part;
  header.msg_iovlen = 1;
  (void)sendmsg(fd, &header, MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace

// One served peer. It is also the link's bootstrap factory: the capability is made when the
// peer first asks for it (a later Bootstrap message gets the same one), which is how the
// listener knows the peer is not merely holding a descriptor.
class RpcListener::Connection final : public capnp::BootstrapFactory<capnp::rpc::twoparty::VatId> {
 public:
  Connection(RpcListener& listener, kj::AutoCloseFd fd, PeerCredentials peer)
      : listener_(listener),
        peer(std::move(peer)),
        link(*listener.io_.lowLevelProvider, kj::mv(fd), listener.options_, *this) {}

  capnp::Capability::Client createFor(capnp::rpc::twoparty::VatId::Reader) override {
    KJ_IF_MAYBE (made, bootstrap_) {
      return *made;
    }
    capnp::Capability::Client made = listener_.factory_(peer);
    bootstrap_ = made;
    return made;
  }
  bool bootstrapped() const { return bootstrap_ != nullptr; }

 private:
  RpcListener& listener_;
  kj::Maybe<capnp::Capability::Client> bootstrap_;

 public:
  const PeerCredentials peer;
  RpcLink link;
};

RpcListener::RpcListener(kj::AsyncIoContext& io, kj::AutoCloseFd listenFd, std::string name,
                         PeerPolicy policy, LinkOptions options, BootstrapFactory factory)
    : RpcListener(io, kj::mv(listenFd), std::move(name), std::move(policy), options,
                  ConnectionLimits{}, kj::mv(factory)) {}

RpcListener::RpcListener(kj::AsyncIoContext& io, kj::AutoCloseFd listenFd, std::string name,
                         PeerPolicy policy, LinkOptions options, ConnectionLimits limits,
                         BootstrapFactory factory)
    : io_(io),
      listenFd_(kj::mv(listenFd)),
      observer_(io.unixEventPort, listenFd_, kj::UnixEventPort::FdObserver::OBSERVE_READ),
      name_(std::move(name)),
      policy_(std::move(policy)),
      options_(options),
      limits_(limits),
      factory_(kj::mv(factory)),
      tasks_(errorHandler_) {
  KJ_REQUIRE(limits_.perUid > 0 && limits_.total > 0, "a listener must allow a connection", name_);
}

RpcListener::~RpcListener() = default;

kj::Promise<void> RpcListener::run() {
  return acceptOne();
}

kj::Promise<void> RpcListener::acceptOne() {
  auto& timer = io_.provider->getTimer();
  for (int accepted = 0; accepted < kAcceptBatch; ++accepted) {
    int raw = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (raw < 0) {
      int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) {
        return observer_.whenBecomesReadable().then([this]() { return acceptOne(); });
      }
      if (error == EINTR || error == ECONNABORTED) continue;
      if (error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM) {
        // Out of descriptors or memory (the limits keep connections below the fd limit, so
        // this is the daemon's own work): keep serving the existing peers and retry shortly,
        // never in a loop that spins.
        logRefusal(kj::str("accept: ", strerror(error), "; retrying in 100 ms").cStr());
        return timer.afterDelay(100 * kj::MILLISECONDS).then([this]() { return acceptOne(); });
      }
      KJ_FAIL_SYSCALL("accept4", error, name_);
    }
    admit(kj::AutoCloseFd(raw));
  }
  // More may be waiting (the observer is edge-triggered, so they must still be drained): let
  // the event loop poll and run everything else first, then go on.
  return timer.afterDelay(0 * kj::MILLISECONDS).then([this]() { return acceptOne(); });
}

void RpcListener::admit(kj::AutoCloseFd fd) {
  PeerCredentials peer;
  try {
    peer = peerCredentials(fd);
  } catch (const kj::Exception& e) {
    logRefusal("cannot read a peer's credentials; closed");
    return;
  }
  if (!policy_.allows(peer)) {
    logRefusal(fmt::format("refused peer pid {} uid {} gid {} (allowed: {})", peer.pid, peer.uid,
                           peer.gid, policy_.describe()));
    return;  // fd closes here; not one byte was read, none is written
  }
  auto open = openByUid_.find(peer.uid);
  size_t fromUid = open == openByUid_.end() ? 0 : open->second;
  std::string reason;
  if (connections_.size() >= limits_.total) {
    reason = fmt::format(
        "{} refused the connection: too many connections in all ({} open, at "
        "most {})",
        name_, connections_.size(), limits_.total);
  } else if (fromUid >= limits_.perUid) {
    reason = fmt::format(
        "{} refused the connection: too many connections from uid {} ({} open, "
        "at most {} per uid)",
        name_, peer.uid, fromUid, limits_.perUid);
  }
  if (!reason.empty()) {
    ++refusedForLimits_;
    sendAbort(fd, reason);
    shutdown(fd, SHUT_WR);  // the reason, then the end of the stream
    logRefusal(fmt::format(
        "refused pid {} uid {}: {} open from uid {} (at most {} per uid), {} "
        "in all (at most {})",
        peer.pid, peer.uid, fromUid, peer.uid, limits_.perUid, connections_.size(), limits_.total));
    linger(kj::mv(fd), peer.uid);
    return;
  }
  serve(kj::mv(fd), peer);
}

void RpcListener::linger(kj::AutoCloseFd fd, uid_t uid) {
  // Full: close this uid's oldest if it has its share, else the oldest of all.
  size_t fromUid = std::count_if(refused_.begin(), refused_.end(),
                                 [uid](const Refused& r) { return r.uid == uid; });
  if (fromUid >= kMaxLingeringPerUid) {
    refused_.erase(std::find_if(refused_.begin(), refused_.end(),
                                [uid](const Refused& r) { return r.uid == uid; }));
  } else if (refused_.size() >= kMaxLingering) {
    refused_.pop_front();
  }
  refused_.push_back({kj::mv(fd), uid, io_.provider->getTimer().now() + kLingerTime});
  if (!refusedSweepPending_) sweepRefused();
}

// Closes the refused connections whose time is up, and waits for the next one's.
void RpcListener::sweepRefused() {
  auto& timer = io_.provider->getTimer();
  while (!refused_.empty() && refused_.front().until <= timer.now()) refused_.pop_front();
  if (refused_.empty()) return;
  refusedSweepPending_ = true;
  tasks_.add(timer.atTime(refused_.front().until).then([this]() {
    refusedSweepPending_ = false;
    sweepRefused();
  }));
}

void RpcListener::serve(kj::AutoCloseFd fd, const PeerCredentials& peer) {
  spdlog::debug("{}: accepted pid {} uid {}", name_, peer.pid, peer.uid);
  auto connection = kj::heap<Connection>(*this, kj::mv(fd), peer);
  Connection* raw = connection.get();
  connections_.push_back(kj::mv(connection));
  ++openByUid_[peer.uid];
  // A peer that never asks for the bootstrap capability is closed after the timeout; one that
  // asked is served until it hangs up.
  auto silent =
      io_.provider->getTimer()
          .afterDelay(limits_.bootstrapTimeout)
          .then([this, raw]() -> kj::Promise<void> {
            if (raw->bootstrapped()) return kj::NEVER_DONE;
            logRefusal(fmt::format(
                "closed pid {} uid {}: no bootstrap request within "
                "{} ms",
                raw->peer.pid, raw->peer.uid, limits_.bootstrapTimeout / kj::MILLISECONDS));
            return kj::READY_NOW;
          });
  tasks_.add(raw->link.onDisconnect().exclusiveJoin(kj::mv(silent)).then([this, raw]() {
    spdlog::debug("{}: peer pid {} disconnected", name_, raw->peer.pid);
    drop(raw);
  }));
}

void RpcListener::drop(Connection* connection) {
  auto it =
      std::find_if(connections_.begin(), connections_.end(),
                   [connection](const kj::Own<Connection>& c) { return c.get() == connection; });
  if (it == connections_.end()) return;
  auto open = openByUid_.find(connection->peer.uid);
  if (open != openByUid_.end() && --open->second == 0) openByUid_.erase(open);
  // Destroying the link inside its own disconnect callback is not allowed; defer it.
  auto doomed = kj::mv(*it);
  connections_.erase(it);
  tasks_.add(kj::evalLater([doomed = kj::mv(doomed)]() mutable { doomed = nullptr; }));
}

// At most one line per kRefusalLogInterval: the first refusal after a quiet interval is logged
// at once; later ones are counted, and one line at the end of the interval says how many there
// were and what the last was.
void RpcListener::logRefusal(std::string line) {
  auto& timer = io_.provider->getTimer();
  kj::TimePoint now = timer.now();
  bool quiet = true;
  KJ_IF_MAYBE (last, lastRefusalLogged_) {
    quiet = now - *last >= kRefusalLogInterval;
  }
  if (quiet && refusalsNotLogged_ == 0) {
    spdlog::warn("{}: {}", name_, line);
    lastRefusalLogged_ = now;
    return;
  }
  ++refusalsNotLogged_;
  lastRefusalNotLogged_ = std::move(line);
  if (refusalSummaryPending_) return;
  refusalSummaryPending_ = true;
  kj::TimePoint due = now;
  KJ_IF_MAYBE (last, lastRefusalLogged_) {
    due = *last + kRefusalLogInterval;
  }
  tasks_.add(timer.atTime(due).then([this]() {
    refusalSummaryPending_ = false;
    spdlog::warn("{}: {} more refused or closed connections in the last {} s; the last: {}", name_,
                 refusalsNotLogged_, kRefusalLogInterval / kj::SECONDS, lastRefusalNotLogged_);
    refusalsNotLogged_ = 0;
    lastRefusalLogged_ = io_.provider->getTimer().now();
  }));
}

void RpcListener::ErrorHandler::taskFailed(kj::Exception&& exception) {
  spdlog::warn("{}: connection error: {}", listener_.name_, exception.getDescription().cStr());
}

}  // namespace cellos::ipc
