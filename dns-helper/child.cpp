#include "dns-helper/child.h"

#include "core/dns_policy.h"
#include "core/dns_wire.h"
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include <kj/debug.h>

namespace cellos::dns {

namespace {

constexpr size_t kMaxTcpClients = 16;
constexpr int kTcpIdleMillis = 10'000;
constexpr size_t kMaxChannelMessage = 64 * 1024;

uint64_t nowMicros(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

struct Config {
  core::DnsPolicyRules rules;
  std::string bindAddress;
  uid_t uid;
  gid_t gid;
  uint64_t memoryLimitBytes;
};

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
  rlimit memory{config.memoryLimitBytes, config.memoryLimitBytes};
  if (config.memoryLimitBytes > 0) {
    KJ_SYSCALL(setrlimit(RLIMIT_AS, &memory));
  }
  rlimit noFiles{64, 64};
  KJ_SYSCALL(setrlimit(RLIMIT_NOFILE, &noFiles));
  rlimit noCore{0, 0};
  KJ_SYSCALL(setrlimit(RLIMIT_CORE, &noCore));
  privsep::becomeUnprivileged(privsep::Account{"cellos-dns", config.uid, config.gid});
  // setresuid() cleared the parent-death signal; re-arm it so a dead spawner ends us.
  KJ_SYSCALL(prctl(PR_SET_PDEATHSIG, SIGKILL));
  KJ_SYSCALL(prctl(PR_SET_DUMPABLE, 0));
  privsep::setNoNewPrivs();
  privsep::installSeccomp(kDnsChildProfile);
}

class Child {
 public:
  Child(Config config, int udp, int tcp) : config_(std::move(config)), udp_(udp), tcp_(tcp) {}

  void sendReady() {
    capnp::MallocMessageBuilder message;
    message.initRoot<ipc::DnsChildMessage>().setReady(getpid());
    send(message, /*mayDrop=*/false);
  }

  int serve() {
    for (;;) {
      std::vector<pollfd> fds = {{kChildChannelFd, POLLIN, 0}, {udp_, POLLIN, 0}};
      if (clients_.size() < kMaxTcpClients) fds.push_back({tcp_, POLLIN, 0});
      size_t firstClient = fds.size();
      for (auto& c : clients_) fds.push_back({c.fd, POLLIN, 0});
      int rc = poll(fds.data(), fds.size(), 1000);
      if (rc < 0 && errno != EINTR) return 1;
      if (fds[0].revents) return 0;  // spawner closed the channel (or wrote): stop
      if (fds[1].revents & POLLIN) serveUdp();
      if (firstClient == 3 && (fds[2].revents & POLLIN)) acceptTcp();
      uint64_t now = nowMicros(CLOCK_MONOTONIC);
      for (size_t i = firstClient; i < fds.size(); ++i) {
        if (fds[i].revents) readTcp(clients_[i - firstClient]);
      }
      std::erase_if(clients_, [now](const TcpClient& c) {
        bool idle = now - c.lastActiveMicros > uint64_t(kTcpIdleMillis) * 1000;
        if (c.closed || idle) close(c.fd);
        return c.closed || idle;
      });
    }
  }

 private:
  struct TcpClient {
    int fd;
    std::vector<uint8_t> buffer;
    uint64_t lastActiveMicros;
    bool closed = false;
  };

  // Answers one query; returns the response to send (empty: send nothing).
  std::vector<uint8_t> answer(std::span<const uint8_t> packet, const char* transport) {
    uint64_t arrived = nowMicros(CLOCK_MONOTONIC);
    uint64_t wallMicros = nowMicros(CLOCK_REALTIME);
    auto parsed = core::parseQuery(packet);
    if (std::holds_alternative<core::DnsParseError>(parsed)) {
      // A malformed packet gets no answer (nothing to echo safely) but is recorded.
      record("", 0, transport, "dropped", "malformed_query", -1, arrived, wallMicros);
      return {};
    }
    auto& query = std::get<core::DnsQuery>(parsed);
    auto verdict = core::decideQuery(config_.rules, query.question);
    // Forwarding to the cell's declared resolver is not part of this version: a permitted
    // query fails upstream (SERVFAIL) instead of being answered with made-up data.
    core::DnsRcode rcode = verdict.decision == core::DnsDecision::kPermitted
                               ? core::DnsRcode::kServFail
                               : core::DnsRcode::kRefused;
    std::string_view reason =
        verdict.decision == core::DnsDecision::kPermitted ? "upstream_failure" : verdict.reasonCode;
    auto response = core::buildErrorResponse(query, packet, rcode);
    record(query.question.name, query.question.qtype, transport,
           std::string(core::decisionName(verdict.decision)), reason, int(rcode), arrived,
           wallMicros);
    return response;
  }

  void serveUdp() {
    for (int budget = 0; budget < 64; ++budget) {
      uint8_t packet[4096];
      sockaddr_storage from{};
      socklen_t fromLen = sizeof(from);
      ssize_t n = recvfrom(udp_, packet, sizeof(packet), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &fromLen);
      if (n < 0) return;
      auto response = answer(std::span<const uint8_t>(packet, n), "udp");
      if (!response.empty()) {
        sendto(udp_, response.data(), response.size(), MSG_DONTWAIT,
               reinterpret_cast<sockaddr*>(&from), fromLen);
      }
    }
  }

  void acceptTcp() {
    int fd = accept4(tcp_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) clients_.push_back({fd, {}, nowMicros(CLOCK_MONOTONIC)});
  }

  void readTcp(TcpClient& client) {
    uint8_t chunk[4096];
    ssize_t n = recv(client.fd, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) client.closed = true;
      return;
    }
    client.lastActiveMicros = nowMicros(CLOCK_MONOTONIC);
    client.buffer.insert(client.buffer.end(), chunk, chunk + n);
    // RFC 1035 4.2.2: each message is preceded by a two-byte length.
    while (client.buffer.size() >= 2) {
      size_t length = (size_t(client.buffer[0]) << 8) | client.buffer[1];
      if (client.buffer.size() < 2 + length) break;
      auto response = answer(std::span<const uint8_t>(client.buffer.data() + 2, length), "tcp");
      client.buffer.erase(client.buffer.begin(), client.buffer.begin() + 2 + length);
      if (response.empty()) {
        client.closed = true;
        return;
      }
      uint8_t prefix[2] = {uint8_t(response.size() >> 8), uint8_t(response.size())};
      iovec iov[2] = {{prefix, 2}, {response.data(), response.size()}};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = 2;
      if (sendmsg(client.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) client.closed = true;
    }
    if (client.buffer.size() > 2 + 65535) client.closed = true;
  }

  void record(const std::string& qname, uint16_t qtype, const char* transport,
              const std::string& decision, std::string_view reason, int rcode,
              uint64_t arrivedMonotonic, uint64_t wallMicros) {
    capnp::MallocMessageBuilder message;
    auto query = message.initRoot<ipc::DnsChildMessage>().initQuery();
    query.setQname(qname);
    query.setQtype(qtype);
    query.setTransport(transport);
    query.setDecision(decision);
    query.setReasonCode(std::string(reason));
    query.setRcode(rcode);
    query.setLatencyMicros(nowMicros(CLOCK_MONOTONIC) - arrivedMonotonic);
    query.setUnixMicros(wallMicros);
    send(message, /*mayDrop=*/true);
  }

  // One datagram per message. An audit record must never block an answer: when the channel is
  // full the record is counted as dropped (the spawner reports the count).
  void send(capnp::MessageBuilder& message, bool mayDrop) {
    auto words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    ssize_t n = ::send(kChildChannelFd, bytes.begin(), bytes.size(),
                       MSG_NOSIGNAL | (mayDrop ? MSG_DONTWAIT : 0));
    if (n < 0) ++dropped_;
  }

  Config config_;
  int udp_, tcp_;
  std::vector<TcpClient> clients_;
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
