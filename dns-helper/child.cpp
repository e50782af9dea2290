#include "dns-helper/child.h"
#include "dns-helper/child_channel.h"

#include "core/dns_policy.h"
#include "core/dns_wire.h"
#include "core/host_destination.h"
#include "core/hostname.h"
#include "dns-helper/seccomp_profile.h"
#include "ipc/dns.capnp.h"
#include "privsep/credentials.h"
#include "privsep/seccomp.h"

#include <arpa/inet.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <memory>
#include <vector>

#include <kj/debug.h>

namespace cellos::dns {

namespace {

// Bounds of the event loop. Every buffer below is capped, so with these the child's memory is
// bounded whatever the cell sends (RLIMIT_AS is the backstop).
constexpr size_t kMaxTcpClients = 16;
constexpr int kTcpIdleMillis = 10'000;
constexpr size_t kMaxInFlight = 64;  // queries waiting for the upstream
constexpr size_t kMaxTcpClientOutput = 256 * 1024;
constexpr size_t kMaxUdpPacket = 4096;      // what the child reads or relays over UDP
constexpr size_t kMaxQueuedRecords = 1024;  // audit records waiting for the channel
constexpr uint32_t kDefaultUpstreamTimeoutMs = 2000;
constexpr int kLearnTimeoutMillis = 2000;  // spawner → broker → launcher nft update
constexpr uint32_t kMinLearnSeconds = 60;  // bounds of a learned address's set timeout
constexpr uint32_t kMaxLearnSeconds = 3600;
// Descriptors: stdio, channel, two listeners, clients, upstream sockets, some slack.
constexpr rlim_t kMaxFiles = 8 + kMaxTcpClients + kMaxInFlight + 8;

uint64_t nowMicros(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

struct Upstream {
  std::string resolverId;
  sockaddr_storage address{};
  socklen_t length = 0;
  bool tcp = false;
};

struct EgressHost {
  uint32_t ruleIndex;
  std::string pattern;
};

struct Config {
  core::DnsPolicyRules rules;
  std::string bindAddress;
  uid_t uid;
  gid_t gid;
  uint64_t memoryLimitBytes;
  std::optional<Upstream> upstream;
  uint32_t upstreamTimeoutMs = kDefaultUpstreamTimeoutMs;
  std::vector<core::DnsAddressRange> guarded;  // cell subnet + operator ranges
  // The VM launcher's host destinations and the host policy's exemptions from them
  // (core/host_destination.h): an answer pointing at the host is refused, never learned.
  std::vector<core::IpRange> hostDestinations = core::builtinHostDestinations();
  std::vector<core::IpRange> allowedHostDestinations;
  std::vector<EgressHost> egressHosts;
};

std::optional<Upstream> parseUpstream(ipc::DnsResolver::Reader resolver) {
  Upstream out;
  out.resolverId = resolver.getResolverId();
  out.tcp = resolver.getProtocol() == "do53-tcp";
  std::string address = resolver.getAddress();
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.address);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.address);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(resolver.getPort());
    out.length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(resolver.getPort());
    out.length = sizeof(sockaddr_in6);
  } else {
    return std::nullopt;
  }
  return out;
}

// The configuration is the first message on the channel, from the spawner (trusted).
Config readConfig() {
  std::vector<capnp::word> buffer(kMaxChannelMessage / sizeof(capnp::word));
  ssize_t n;
  KJ_SYSCALL(n = recv(kChildChannelFd, buffer.data(), kMaxChannelMessage, 0), "config");
  KJ_REQUIRE(n > 0 && n % sizeof(capnp::word) == 0, "bad config message", n);
  capnp::FlatArrayMessageReader reader(kj::arrayPtr(buffer.data(), n / sizeof(capnp::word)));
  auto config = reader.getRoot<ipc::DnsChildConfig>();
  Config out;
  auto policy = config.getPolicy();
  for (auto name : policy.getHostnameAllowlist()) out.rules.hostnameAllowlist.emplace_back(name);
  for (auto type : policy.getAllowedQueryTypes()) out.rules.allowedQueryTypes.push_back(type);
  out.bindAddress = policy.getBindAddress().size() ? policy.getBindAddress().cStr() : "127.0.0.1";
  out.uid = config.getUid();
  out.gid = config.getGid();
  out.memoryLimitBytes = config.getMemoryLimitBytes();
  if (policy.getResolvers().size() > 0) {
    out.upstream = parseUpstream(policy.getResolvers()[0]);
    KJ_REQUIRE(out.upstream != std::nullopt, "resolver address is not an IP literal");
  }
  if (policy.getUpstreamTimeoutMs() > 0) out.upstreamTimeoutMs = policy.getUpstreamTimeoutMs();
  std::vector<std::string> ranges;
  if (policy.getCellSubnet().size() > 0) ranges.emplace_back(policy.getCellSubnet());
  for (auto range : config.getGuardedRanges()) ranges.emplace_back(range);
  for (const auto& text : ranges) {
    auto range = core::parseAddressRange(text);
    KJ_REQUIRE(range != std::nullopt, "bad rebinding-guard range", text);
    out.guarded.push_back(*range);
  }
  for (auto host : policy.getEgressHosts()) {
    out.egressHosts.push_back({host.getRuleIndex(), host.getHost()});
  }
  auto texts = [](capnp::List<capnp::Text>::Reader list) {
    std::vector<std::string> out;
    for (auto item : list) out.emplace_back(item.cStr());
    return out;
  };
  if (policy.getHostDestinations().size() > 0) {
    out.hostDestinations = core::parseIpRanges(texts(policy.getHostDestinations()));
  }
  out.allowedHostDestinations = core::parseIpRanges(texts(policy.getAllowedHostDestinations()));
  return out;
}

// Enters the cell's network namespace. After this, every socket we open is the cell's: there
// is no way back to the host's network from this process.
void enterCellNetwork() {
  KJ_SYSCALL(setns(kChildNetnsFd, CLONE_NEWNET), "setns into the cell's network namespace");
  close(kChildNetnsFd);
}

int bindSocket(int type, const std::string& address) {
  int fd;
  KJ_SYSCALL(fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int one = 1;
  KJ_SYSCALL(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(53);
  KJ_REQUIRE(inet_pton(AF_INET, address.c_str(), &addr.sin_addr) == 1, "bad bind address", address);
  KJ_SYSCALL(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), address, "port 53");
  if (type == SOCK_STREAM) {
    KJ_SYSCALL(listen(fd, 16));
  }
  return fd;
}

// Gives up everything before the first packet: the uid, every capability, the ability to gain
// any back, and most syscalls. A bug in packet parsing then has nothing worth stealing.
void dropEverything(const Config& config) {
  // Not in sanitizer builds (test builds): ASan reserves terabytes of shadow address space at
  // start-up, and its allocator could not grow under either limit.
#ifndef CELLOS_SANITIZER_RUNTIME
  if (config.memoryLimitBytes > 0) {
    rlimit memory{config.memoryLimitBytes, config.memoryLimitBytes};
    KJ_SYSCALL(setrlimit(RLIMIT_AS, &memory));
    KJ_SYSCALL(setrlimit(RLIMIT_DATA, &memory));
  }
#endif
  rlimit files{kMaxFiles, kMaxFiles};
  KJ_SYSCALL(setrlimit(RLIMIT_NOFILE, &files));
  rlimit noCore{0, 0};
  KJ_SYSCALL(setrlimit(RLIMIT_CORE, &noCore));
  privsep::becomeUnprivileged(privsep::Account{"cellos-dns", config.uid, config.gid});
  // setresuid() cleared the parent-death signal; re-arm it so a dead spawner ends us.
  KJ_SYSCALL(prctl(PR_SET_PDEATHSIG, SIGKILL));
  KJ_SYSCALL(prctl(PR_SET_DUMPABLE, 0));
  privsep::setNoNewPrivs();
  privsep::installSeccomp(kDnsChildProfile);
}

bool sameEndpoint(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto& x = reinterpret_cast<const sockaddr_in&>(a);
    auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port && memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(in6_addr)) == 0;
  }
  return false;
}

// The largest UDP answer the client said it takes: 512, or its EDNS payload size (RFC 6891),
// capped at what the child relays.
size_t udpLimit(const core::DnsQuery& query, std::span<const uint8_t> packet) {
  return std::clamp<size_t>(core::ednsUdpSize(query, packet), 512, kMaxUdpPacket);
}

uint16_t randomId() {
  uint16_t id = 0;
  // getrandom of 2 bytes from an initialised pool never blocks or comes up short.
  if (getrandom(&id, sizeof(id), 0) != sizeof(id)) id = uint16_t(nowMicros(CLOCK_MONOTONIC));
  return id;
}

class Child {
 public:
  Child(Config config, int udp, int tcp) : config_(std::move(config)), udp_(udp), tcp_(tcp) {}

  void sendReady() {
    capnp::MallocMessageBuilder message;
    message.initRoot<ipc::DnsChildMessage>().setReady(getpid());
    send(message, Delivery::kWait);
  }

  int serve() {
    std::vector<pollfd> fds;
    std::vector<std::pair<int, uint64_t>> owners;  // per fd: 0 listener, 1 client, 2 pending
    for (;;) {
      fds.clear();
      owners.clear();
      bool full = pending_.size() >= kMaxInFlight;
      fds.push_back({kChildChannelFd, short(POLLIN | (audit_.empty() ? 0 : POLLOUT)), 0});
      owners.push_back({0, 0});
      // At the in-flight cap the child stops reading queries: the kernel's socket buffers queue
      // them (and drop the excess), the child's memory does not grow.
      if (!full) {
        fds.push_back({udp_, POLLIN, 0});
        owners.push_back({0, 1});
        if (clients_.size() < kMaxTcpClients) {
          fds.push_back({tcp_, POLLIN, 0});
          owners.push_back({0, 2});
        }
      }
      for (auto& c : clients_) {
        short events = short((full || c.eof ? 0 : POLLIN) | (c.output.empty() ? 0 : POLLOUT));
        fds.push_back({c.fd, events, 0});
        owners.push_back({1, c.serial});
      }
      for (auto& p : pending_) {
        if (p->fd < 0) continue;
        short events = POLLIN;
        if (p->upstreamTcp && p->sent < p->out.size()) events = POLLOUT;
        fds.push_back({p->fd, events, 0});
        owners.push_back({2, p->serial});
      }
      int rc = poll(fds.data(), fds.size(), nextTimeoutMillis());
      if (rc < 0 && errno != EINTR) return 1;
      if (rc > 0) {
        for (size_t i = 0; i < fds.size(); ++i) {
          if (fds[i].revents == 0) continue;
          auto [kind, id] = owners[i];
          if (kind == 0 && id == 0) {
            // The spawner closed the channel: stop.
            if ((fds[i].revents & ~POLLOUT) && !readChannel()) return 0;
          } else if (kind == 0 && id == 1) {
            serveUdp();
          } else if (kind == 0 && id == 2) {
            acceptTcp();
          } else if (kind == 1) {
            if (auto* c = client(id)) serviceClient(*c, fds[i].revents);
          } else if (auto* p = pendingBySerial(id)) {
            serviceUpstream(*p, fds[i].revents);
          }
        }
      }
      expire();
      flushAudit();
      std::erase_if(pending_, [](const std::unique_ptr<Pending>& p) { return p->done; });
      for (auto& c : clients_) {
        if (!c.closed && c.buffer.size() >= 2) takeTcpQueries(c);
      }
      std::erase_if(pending_, [](const std::unique_ptr<Pending>& p) { return p->done; });
      uint64_t now = nowMicros(CLOCK_MONOTONIC);
      std::erase_if(clients_, [this, now](const TcpClient& c) {
        bool idle = now - c.lastActiveMicros > uint64_t(kTcpIdleMillis) * 1000;
        // RFC 7766 6.2.4: a client that half-closed still gets the answers it asked for.
        bool finished = c.eof && c.output.empty() && !awaitsAnswers(c.serial);
        if (c.closed || idle || finished) close(c.fd);
        return c.closed || idle || finished;
      });
    }
  }

 private:
  struct TcpClient {
    int fd;
    uint64_t serial;
    std::vector<uint8_t> buffer;  // request bytes not yet a whole message
    std::vector<uint8_t> output;  // answers the socket did not take yet
    uint64_t lastActiveMicros;
    bool closed = false;
    bool eof = false;  // the client shut down its side: answer what it asked, then close
  };

  // One permitted query on its way to the upstream and back.
  struct Pending {
    uint64_t serial;
    const char* transport;
    sockaddr_storage client{};  // UDP client
    socklen_t clientLength = 0;
    uint64_t clientSerial = 0;  // TCP client (0: UDP)
    std::vector<uint8_t> packet;
    core::DnsQuery query;
    size_t udpLimit = 512;
    int fd = -1;
    bool upstreamTcp = false;
    uint16_t upstreamId = 0;
    std::vector<uint8_t> out;  // what goes upstream (with the TCP length prefix)
    size_t sent = 0;
    std::vector<uint8_t> in;  // TCP answer bytes so far
    uint64_t arrived, wall, deadline;
    std::vector<uint8_t> held;  // the answer, held while its addresses are learned
    uint64_t learnToken = 0;
    bool done = false;
  };

  int nextTimeoutMillis() const {
    uint64_t now = nowMicros(CLOCK_MONOTONIC), next = now + 1'000'000;
    for (const auto& p : pending_) next = std::min(next, p->deadline);
    return next <= now ? 0 : int((next - now + 999) / 1000);
  }

  TcpClient* client(uint64_t serial) {
    for (auto& c : clients_) {
      if (c.serial == serial && !c.closed) return &c;
    }
    return nullptr;
  }

  Pending* pendingBySerial(uint64_t serial) {
    for (auto& p : pending_) {
      if (p->serial == serial && !p->done) return p.get();
    }
    return nullptr;
  }

  // Reads what the spawner sent: learn results. False when the channel is closed.
  bool readChannel() {
    for (;;) {
      uint8_t buffer[256];
      ssize_t n = recv(kChildChannelFd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
      if (n <= 0) return false;
      // The spawner is trusted: a garbled message means something broke.
      std::optional<LearnResult> result =
          readLearnResult(kj::arrayPtr(buffer, static_cast<size_t>(n)));
      if (!result) return false;
      for (auto& p : pending_) {
        if (!p->done && p->learnToken == result->token && !p->held.empty()) {
          if (result->learned) {
            release(*p, std::move(p->held), "permitted", "allowlist_match");
          } else {
            fail(*p, "upstream_failure");
          }
        }
      }
    }
  }

  // Decides one query. A refused or malformed one is answered (or dropped) here; a permitted
  // one goes upstream and is answered when the upstream replies or its timeout passes.
  void handleQuery(std::span<const uint8_t> packet, const char* transport,
                   const sockaddr_storage* from, socklen_t fromLength, uint64_t clientSerial) {
    uint64_t arrived = nowMicros(CLOCK_MONOTONIC);
    uint64_t wallMicros = nowMicros(CLOCK_REALTIME);
    auto parsed = core::parseQuery(packet);
    if (std::holds_alternative<core::DnsParseError>(parsed)) {
      // A malformed packet gets no answer (nothing to echo safely) but is recorded.
      record("", 0, transport, "dropped", "malformed_query", -1, arrived, wallMicros);
      if (clientSerial != 0) {
        if (auto* c = client(clientSerial)) c->closed = true;
      }
      return;
    }
    auto pending = std::make_unique<Pending>();
    pending->serial = ++serials_;
    pending->transport = transport;
    if (from != nullptr) {
      pending->client = *from;
      pending->clientLength = fromLength;
    }
    pending->clientSerial = clientSerial;
    pending->packet.assign(packet.begin(), packet.end());
    pending->query = std::get<core::DnsQuery>(parsed);
    pending->udpLimit = udpLimit(pending->query, packet);
    pending->arrived = arrived;
    pending->wall = wallMicros;
    pending->deadline = arrived + uint64_t(config_.upstreamTimeoutMs) * 1000;
    Pending& p = *pending;
    pending_.push_back(std::move(pending));

    auto verdict = core::decideQuery(config_.rules, p.query.question);
    if (verdict.decision != core::DnsDecision::kPermitted) {
      // The upstream never sees a refused name.
      answerLocally(p, core::DnsRcode::kRefused, core::decisionName(verdict.decision),
                    verdict.reasonCode);
      return;
    }
    if (!config_.upstream) {
      answerLocally(p, core::DnsRcode::kServFail, "permitted", "upstream_failure");
      return;
    }
    startUpstream(p);
  }

  // Sends the query upstream from a fresh socket: a kernel-chosen random source port and a
  // fresh random id, so an off-path attacker has to guess both.
  void startUpstream(Pending& p) {
    const Upstream& upstream = *config_.upstream;
    p.upstreamTcp = upstream.tcp;
    p.upstreamId = randomId();
    std::vector<uint8_t> query = p.packet;
    core::setPacketId(query, p.upstreamId);
    if (p.upstreamTcp) {
      p.out = {uint8_t(query.size() >> 8), uint8_t(query.size())};
      p.out.insert(p.out.end(), query.begin(), query.end());
    } else {
      p.out = std::move(query);
    }
    int type = p.upstreamTcp ? SOCK_STREAM : SOCK_DGRAM;
    p.fd = socket(upstream.address.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p.fd < 0) return fail(p, "upstream_failure");
    auto* address = reinterpret_cast<const sockaddr*>(&upstream.address);
    if (p.upstreamTcp) {
      if (connect(p.fd, address, upstream.length) < 0 && errno != EINPROGRESS) {
        return fail(p, "upstream_failure");
      }
      return;  // the query is written once the connection is up (POLLOUT)
    }
    // Not connect()ed: every datagram reaching the port is read and its source compared with
    // the resolver's, so nothing from elsewhere is ever taken for the answer.
    if (sendto(p.fd, p.out.data(), p.out.size(), MSG_DONTWAIT, address, upstream.length) < 0) {
      return fail(p, "upstream_failure");
    }
    p.sent = p.out.size();
  }

  void serviceUpstream(Pending& p, short revents) {
    if (p.upstreamTcp) {
      if (p.sent < p.out.size()) {
        ssize_t n =
            ::send(p.fd, p.out.data() + p.sent, p.out.size() - p.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
          if (errno != EAGAIN && errno != EINTR) fail(p, "upstream_failure");
          return;
        }
        p.sent += size_t(n);
        return;
      }
      uint8_t chunk[4096];
      ssize_t n = recv(p.fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (n <= 0) return fail(p, "upstream_failure");
      if (p.in.size() + size_t(n) > 2 + 65535) return fail(p, "upstream_failure");
      p.in.insert(p.in.end(), chunk, chunk + n);
      while (p.in.size() >= 2) {
        size_t length = size_t(p.in[0]) << 8 | p.in[1];
        if (p.in.size() < 2 + length) return;
        std::vector<uint8_t> answer(p.in.begin() + 2, p.in.begin() + 2 + length);
        p.in.erase(p.in.begin(), p.in.begin() + 2 + length);
        if (accept(p, std::move(answer))) return;
      }
      return;
    }
    (void)revents;
    for (int budget = 0; budget < 16 && !p.done; ++budget) {
      std::vector<uint8_t> answer(kMaxUdpPacket);
      sockaddr_storage from{};
      socklen_t fromLength = sizeof(from);
      ssize_t n = recvfrom(p.fd, answer.data(), answer.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &fromLength);
      if (n < 0) return;
      if (!sameEndpoint(from, config_.upstream->address)) continue;  // spoofed: dropped
      answer.resize(size_t(n));
      accept(p, std::move(answer));
    }
  }

  // Takes an upstream answer for p if it is one: it parses and matches the question (id, name,
  // type, class). Anything else is dropped and the query keeps waiting. True when taken.
  bool accept(Pending& p, std::vector<uint8_t> answer) {
    auto parsed = core::parseResponse(answer);
    auto* response = std::get_if<core::DnsResponse>(&parsed);
    if (response == nullptr) return false;
    const auto& question = p.query.question;
    if (response->id != p.upstreamId || response->question.name != question.name ||
        response->question.qtype != question.qtype ||
        response->question.qclass != question.qclass) {
      return false;
    }
    closeUpstream(p);
    // Rebinding guard: an answer pointing into loopback, link-local, the cell's own subnet or
    // an operator's private range is refused as a whole (not stripped: a partial answer would
    // hide from the cell that something was withheld).
    auto v4 = core::ipv4Answers(*response);
    auto v6 = core::ipv6Answers(*response);
    for (const auto& a : v4) {
      if (core::rebindingGuarded(a, config_.guarded)) {
        answerLocally(p, core::DnsRcode::kRefused, "refused", "rebinding_guard");
        return true;
      }
    }
    for (const auto& a : v6) {
      if (core::rebindingGuarded(a, config_.guarded)) {
        answerLocally(p, core::DnsRcode::kRefused, "refused", "rebinding_guard");
        return true;
      }
    }
    // The host is never a destination: an answer naming one of the host's own addresses, the
    // address pool or an IPv4-embedding IPv6 form is refused as a whole too, under its own
    // reason (the host policy may open such an address; it never opens the guard above).
    auto atHost = [&](std::span<const uint8_t> a) {
      return core::isHostDestination(a, config_.hostDestinations, config_.allowedHostDestinations);
    };
    if (std::any_of(v4.begin(), v4.end(), atHost) || std::any_of(v6.begin(), v6.end(), atHost)) {
      answerLocally(p, core::DnsRcode::kRefused, "refused", "host_destination");
      return true;
    }
    if (!v4.empty() || !v6.empty()) {
      for (const auto& host : config_.egressHosts) {
        if (!core::hostnameMatches(host.pattern, question.name)) continue;
        return learn(p, host.ruleIndex, *response, v4, v6, std::move(answer));
      }
    }
    release(p, std::move(answer), "permitted", "allowlist_match");
    return true;
  }

  // Asks the spawner to add the answer's addresses to the rule's nftables sets and holds the
  // answer until it says they are in: the cell must not get an address it cannot yet reach,
  // nor reach one before it resolved it.
  bool learn(Pending& p, uint32_t ruleIndex, const core::DnsResponse& response,
             const std::vector<std::array<uint8_t, 4>>& v4,
             const std::vector<std::array<uint8_t, 16>>& v6, std::vector<uint8_t> answer) {
    uint32_t ttl = kMaxLearnSeconds;
    for (const auto& r : response.answers) {
      if (r.type == core::kDnsTypeA || r.type == core::kDnsTypeAaaa ||
          r.type == core::kDnsTypeCname) {
        ttl = std::min(ttl, r.ttl);
      }
    }
    capnp::MallocMessageBuilder message;
    auto request = message.initRoot<ipc::DnsChildMessage>().initLearn();
    p.learnToken = ++learnTokens_;
    request.setToken(p.learnToken);
    auto addresses = request.initAddresses();
    addresses.setRuleIndex(ruleIndex);
    addresses.setQname(p.query.question.name);
    addresses.setTimeoutSeconds(std::clamp(ttl, kMinLearnSeconds, kMaxLearnSeconds));
    auto list4 = addresses.initIpv4(unsigned(v4.size()));
    for (size_t i = 0; i < v4.size(); ++i) list4.set(unsigned(i), kj::arrayPtr(v4[i].data(), 4));
    auto list6 = addresses.initIpv6(unsigned(v6.size()));
    for (size_t i = 0; i < v6.size(); ++i) list6.set(unsigned(i), kj::arrayPtr(v6[i].data(), 16));
    p.held = std::move(answer);
    p.deadline = nowMicros(CLOCK_MONOTONIC) + uint64_t(kLearnTimeoutMillis) * 1000;
    // Never blocks: a channel too full to take the request fails the query instead.
    if (!send(message, Delivery::kNoWait)) fail(p, "upstream_failure");
    return true;
  }

  // Sends the upstream's answer to the client under the client's id.
  void release(Pending& p, std::vector<uint8_t> answer, std::string_view decision,
               std::string_view reason) {
    core::setPacketId(answer, p.query.id);
    int rcode = answer.size() > 3 ? (answer[3] & 0x0f) : -1;
    if (p.clientSerial == 0 && answer.size() > p.udpLimit) {
      // Too big for the client's UDP: the question alone with TC set, so it retries over TCP.
      answer = core::buildErrorResponse(p.query, p.packet, core::DnsRcode(rcode));
      answer[2] |= uint8_t(core::kDnsFlagTc >> 8);
    }
    deliver(p, answer);
    record(p.query.question.name, p.query.question.qtype, p.transport, std::string(decision),
           reason, rcode, p.arrived, p.wall);
    finish(p);
  }

  void answerLocally(Pending& p, core::DnsRcode rcode, std::string_view decision,
                     std::string_view reason) {
    auto response = core::buildErrorResponse(p.query, p.packet, rcode);
    deliver(p, response);
    record(p.query.question.name, p.query.question.qtype, p.transport, std::string(decision),
           reason, int(rcode), p.arrived, p.wall);
    finish(p);
  }

  void fail(Pending& p, std::string_view reason) {
    answerLocally(p, core::DnsRcode::kServFail, "permitted", reason);
  }

  void closeUpstream(Pending& p) {
    if (p.fd >= 0) close(p.fd);
    p.fd = -1;
  }

  void finish(Pending& p) {
    closeUpstream(p);
    p.held.clear();
    p.done = true;
  }

  void expire() {
    uint64_t now = nowMicros(CLOCK_MONOTONIC);
    for (auto& p : pending_) {
      if (p->done || now < p->deadline) continue;
      fail(*p, p->held.empty() ? "upstream_timeout" : "upstream_failure");
    }
  }

  void deliver(Pending& p, const std::vector<uint8_t>& response) {
    if (p.clientSerial == 0) {
      sendto(udp_, response.data(), response.size(), MSG_DONTWAIT,
             reinterpret_cast<const sockaddr*>(&p.client), p.clientLength);
      return;
    }
    TcpClient* c = client(p.clientSerial);
    if (c == nullptr) return;  // the client went away meanwhile
    if (c->output.size() + 2 + response.size() > kMaxTcpClientOutput) {
      c->closed = true;  // it does not read its answers: stop serving it
      return;
    }
    c->output.push_back(uint8_t(response.size() >> 8));
    c->output.push_back(uint8_t(response.size()));
    c->output.insert(c->output.end(), response.begin(), response.end());
    flushClient(*c);
  }

  void flushClient(TcpClient& c) {
    while (!c.output.empty()) {
      ssize_t n = ::send(c.fd, c.output.data(), c.output.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) c.closed = true;
        return;
      }
      c.output.erase(c.output.begin(), c.output.begin() + n);
    }
  }

  void serveUdp() {
    for (int budget = 0; budget < 64 && pending_.size() < kMaxInFlight; ++budget) {
      uint8_t packet[kMaxUdpPacket];
      sockaddr_storage from{};
      socklen_t fromLen = sizeof(from);
      ssize_t n = recvfrom(udp_, packet, sizeof(packet), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &fromLen);
      if (n < 0) return;
      handleQuery(std::span<const uint8_t>(packet, size_t(n)), "udp", &from, fromLen, 0);
    }
  }

  void acceptTcp() {
    int fd = accept4(tcp_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) clients_.push_back({fd, ++serials_, {}, {}, nowMicros(CLOCK_MONOTONIC)});
  }

  void serviceClient(TcpClient& c, short revents) {
    if (revents & POLLOUT) flushClient(c);
    if (revents & (POLLIN | POLLHUP | POLLERR)) readTcp(c);
  }

  bool awaitsAnswers(uint64_t clientSerial) const {
    for (const auto& p : pending_) {
      if (!p->done && p->clientSerial == clientSerial) return true;
    }
    return false;
  }

  void readTcp(TcpClient& client) {
    if (client.eof) {
      client.closed = true;  // hung up or failed after its half-close: nobody to answer
      return;
    }
    uint8_t chunk[4096];
    ssize_t n = recv(client.fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n == 0) {
      client.eof = true;
      return;
    }
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) client.closed = true;
      return;
    }
    client.lastActiveMicros = nowMicros(CLOCK_MONOTONIC);
    client.buffer.insert(client.buffer.end(), chunk, chunk + n);
    takeTcpQueries(client);
  }

  // Handles the whole messages a client has sent, as far as the in-flight cap allows; the rest
  // waits in its (bounded) buffer for the next loop.
  void takeTcpQueries(TcpClient& client) {
    uint64_t serial = client.serial;
    // RFC 1035 4.2.2: each message is preceded by a two-byte length.
    while (client.buffer.size() >= 2 && !client.closed && pending_.size() < kMaxInFlight) {
      size_t length = (size_t(client.buffer[0]) << 8) | client.buffer[1];
      if (client.buffer.size() < 2 + length) break;
      std::vector<uint8_t> message(client.buffer.begin() + 2, client.buffer.begin() + 2 + length);
      client.buffer.erase(client.buffer.begin(), client.buffer.begin() + 2 + length);
      handleQuery(message, "tcp", nullptr, 0, serial);
    }
    if (client.buffer.size() > 2 + 65535) client.closed = true;
  }

  // Queues one audit record. Records leave in batches at the end of each loop iteration
  // (flushAudit); the queue is bounded, and what does not fit is counted, never waited for.
  void record(const std::string& qname, uint16_t qtype, const char* transport,
              const std::string& decision, std::string_view reason, int rcode,
              uint64_t arrivedMonotonic, uint64_t wallMicros) {
    if (audit_.size() >= kMaxQueuedRecords) {
      ++dropped_;
      return;
    }
    audit_.push_back({qname, qtype, transport, decision, std::string(reason), rcode,
                      nowMicros(CLOCK_MONOTONIC) - arrivedMonotonic, wallMicros});
  }

  // Sends queued records, kMaxChannelRecords to a datagram, until the channel is full. The count of
  // records dropped since the last delivered batch rides on the next one.
  void flushAudit() {
    while (!audit_.empty()) {
      size_t count = std::min(audit_.size(), kMaxChannelRecords);
      capnp::MallocMessageBuilder message;
      auto batch = message.initRoot<ipc::DnsChildMessage>().initBatch(unsigned(count));
      for (size_t i = 0; i < count; ++i) {
        const AuditRecord& r = audit_[i];
        auto query = batch[unsigned(i)];
        query.setQname(r.qname);
        query.setQtype(r.qtype);
        query.setTransport(r.transport);
        query.setDecision(r.decision);
        query.setReasonCode(r.reason);
        query.setRcode(r.rcode);
        if (config_.upstream && r.decision == "permitted") {
          query.setResolverId(config_.upstream->resolverId);
        }
        query.setLatencyMicros(r.latencyMicros);
        query.setUnixMicros(r.unixMicros);
      }
      batch[0].setDroppedBefore(dropped_);
      if (!send(message, Delivery::kNoWait)) return;  // full: retry when it drains (POLLOUT)
      dropped_ = 0;
      audit_.erase(audit_.begin(), audit_.begin() + long(count));
    }
  }

  // One datagram per message. Only `ready` may wait; nothing on the answer path does.
  enum class Delivery { kWait, kNoWait };
  bool send(capnp::MessageBuilder& message, Delivery delivery) {
    auto words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    ssize_t n = ::send(kChildChannelFd, bytes.begin(), bytes.size(),
                       MSG_NOSIGNAL | (delivery == Delivery::kWait ? 0 : MSG_DONTWAIT));
    return n >= 0;
  }

  Config config_;
  int udp_, tcp_;
  std::list<TcpClient> clients_;
  std::vector<std::unique_ptr<Pending>> pending_;
  struct AuditRecord {
    std::string qname;
    uint16_t qtype;
    const char* transport;
    std::string decision, reason;
    int rcode;
    uint64_t latencyMicros, unixMicros;
  };
  std::vector<AuditRecord> audit_;
  uint64_t serials_ = 0;
  uint64_t learnTokens_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace

int runChild() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  Config config = readConfig();
  enterCellNetwork();
  int udp = bindSocket(SOCK_DGRAM, config.bindAddress);
  int tcp = bindSocket(SOCK_STREAM, config.bindAddress);
  dropEverything(config);
  Child child(std::move(config), udp, tcp);
  child.sendReady();
  return child.serve();
}

}  // namespace cellos::dns
