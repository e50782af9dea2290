#include "ipc/socket.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

struct RpcListener::Connection {
  Connection(kj::LowLevelAsyncIoProvider& provider, kj::AutoCloseFd fd, const LinkOptions& options,
             capnp::Capability::Client bootstrap, PeerCredentials peer)
      : link(provider, kj::mv(fd), options, capnp::rpc::twoparty::Side::SERVER, kj::mv(bootstrap)),
        peer(std::move(peer)) {}
  RpcLink link;
  PeerCredentials peer;
};

RpcListener::RpcListener(kj::AsyncIoContext& io, kj::AutoCloseFd listenFd, std::string name,
                         PeerPolicy policy, LinkOptions options, BootstrapFactory factory)
    : io_(io),
      listenFd_(kj::mv(listenFd)),
      observer_(io.unixEventPort, listenFd_, kj::UnixEventPort::FdObserver::OBSERVE_READ),
      name_(std::move(name)),
      policy_(std::move(policy)),
      options_(options),
      factory_(kj::mv(factory)),
      tasks_(errorHandler_) {}

RpcListener::~RpcListener() = default;

kj::Promise<void> RpcListener::run() {
  return acceptOne();
}

kj::Promise<void> RpcListener::acceptOne() {
  for (;;) {
    int raw = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (raw < 0) {
      int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) break;
      if (error == EINTR || error == ECONNABORTED) continue;
      if (error == EMFILE || error == ENFILE) {
        // Out of fds: keep serving existing peers and retry shortly instead of spinning.
        spdlog::warn("{}: accept: {}; retrying", name_, strerror(error));
        return io_.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).then([this]() {
          return acceptOne();
        });
      }
      KJ_FAIL_SYSCALL("accept4", error, name_);
    }
    kj::AutoCloseFd fd(raw);
    PeerCredentials peer;
    try {
      peer = peerCredentials(fd);
    } catch (const kj::Exception& e) {
      spdlog::warn("{}: cannot read peer credentials; closing", name_);
      continue;
    }
    if (!policy_.allows(peer)) {
      spdlog::warn("{}: refused peer pid {} uid {} gid {} (allowed: {})", name_, peer.pid, peer.uid,
                   peer.gid, policy_.describe());
      continue;  // fd closes here; not one byte was read
    }
    serve(kj::mv(fd), peer);
  }
  return observer_.whenBecomesReadable().then([this]() { return acceptOne(); });
}

void RpcListener::serve(kj::AutoCloseFd fd, const PeerCredentials& peer) {
  spdlog::debug("{}: accepted pid {} uid {}", name_, peer.pid, peer.uid);
  auto connection =
      kj::heap<Connection>(*io_.lowLevelProvider, kj::mv(fd), options_, factory_(peer), peer);
  Connection* raw = connection.get();
  connections_.push_back(kj::mv(connection));
  tasks_.add(raw->link.onDisconnect().then([this, raw]() {
    spdlog::debug("{}: peer pid {} disconnected", name_, raw->peer.pid);
    auto it = std::find_if(connections_.begin(), connections_.end(),
                           [raw](const kj::Own<Connection>& c) { return c.get() == raw; });
    if (it != connections_.end()) {
      // Destroying the link inside its own disconnect callback is not allowed; defer it.
      auto doomed = kj::mv(*it);
      connections_.erase(it);
      tasks_.add(kj::evalLater([doomed = kj::mv(doomed)]() mutable { doomed = nullptr; }));
    }
  }));
}

void RpcListener::ErrorHandler::taskFailed(kj::Exception&& exception) {
  spdlog::warn("{}: connection error: {}", listener_.name_, exception.getDescription().cStr());
}

}  // namespace cellos::ipc
