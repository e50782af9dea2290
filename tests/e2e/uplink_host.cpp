#include "tests/e2e/uplink_host.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace cellos::testing {

namespace {

[[noreturn]] void childFail(int report, const std::string& what) {
  std::string line = "E " + what + ": " + strerror(errno) + "\n";
  ssize_t ignored = write(report, line.data(), line.size());
  (void)ignored;
  _exit(1);
}

int listenOn(const std::string& address, uint16_t port, int type) {
  int sock = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (sock < 0) return -1;
  int one = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
  if (bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return -1;
  if (type == SOCK_STREAM && listen(sock, 16) < 0) return -1;
  return sock;
}

// Runs `ip ARGS...` (or, with `netns`, `nsenter --net=NETNS ip ARGS...`); true on success.
bool ip(const std::string& netns, std::vector<std::string> args) {
  std::vector<std::string> argv;
  if (!netns.empty()) argv = {"/usr/bin/nsenter", "--net=" + netns};
  argv.push_back("/usr/sbin/ip");
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    std::vector<char*> raw;
    for (auto& a : argv) raw.push_back(a.data());
    raw.push_back(nullptr);
    execv(raw[0], raw.data());
    _exit(127);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && status == 0;
}

// Answers each TCP connection with "ok\n", reads each datagram, and reports each as its name
// ("T8080", "U53", "H7000") on `report`.
[[noreturn]] void serveLoop(int report, std::vector<pollfd>& fds,
                            const std::vector<std::string>& names) {
  for (;;) {
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      if (names[i][0] != 'U') {
        int conn = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        ssize_t ignored = write(conn, "ok\n", 3);
        (void)ignored;
        close(conn);
      } else {
        char buf[2048];
        if (recv(fds[i].fd, buf, sizeof buf, 0) < 0) continue;
      }
      std::string line = names[i] + "\n";
      if (write(report, line.data(), line.size()) < 0) _exit(0);
    }
  }
}

// The uplink namespace's child: holds the namespace until it is killed, serving the host's own
// services there (every address, port `hostTcp`), which no cell may reach.
[[noreturn]] void holdUplink(int report, const std::vector<uint16_t>& hostTcp) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (unshare(CLONE_NEWNET) < 0) childFail(report, "unshare(CLONE_NEWNET) for the uplink");
  std::vector<pollfd> fds;
  std::vector<std::string> names;
  for (uint16_t port : hostTcp) {
    int fd = listenOn("0.0.0.0", port, SOCK_STREAM);
    if (fd < 0) childFail(report, "listen tcp " + std::to_string(port) + " on the uplink");
    fds.push_back({fd, POLLIN, 0});
    names.push_back("H" + std::to_string(port));
  }
  if (write(report, "R\n", 2) != 2) _exit(1);
  if (fds.empty()) {
    for (;;) pause();
  }
  serveLoop(report, fds, names);
}

// Builds the uplink side (see the header): lo up with its extra address, uplink0 <-> svc0 to
// the test host's namespace (this process's), a route to the test host and forwarding.
void linkUplink(int report, const std::string& uplinkNetns, pid_t uplinkPid) {
  const std::string link = std::string(UplinkHost::kUplinkLinkAddress) + "/30";
  bool ok = ip("", {"link", "add", "svc0", "type", "veth", "peer", "name", "uplink0", "netns",
                    std::to_string(uplinkPid)}) &&
            ip("", {"addr", "add", "10.215.0.2/30", "dev", "svc0"}) &&
            ip("", {"link", "set", "svc0", "up"}) && ip(uplinkNetns, {"link", "set", "lo", "up"}) &&
            ip(uplinkNetns,
               {"addr", "add", std::string(UplinkHost::kUplinkLoAddress) + "/32", "dev", "lo"}) &&
            ip(uplinkNetns, {"addr", "add", link, "dev", "uplink0"}) &&
            ip(uplinkNetns, {"link", "set", "uplink0", "up"}) &&
            ip(uplinkNetns, {"route", "add", "10.214.0.0/16", "via", "10.215.0.2"}) &&
            ip("", {"route", "add", "default", "via", UplinkHost::kUplinkLinkAddress});
  if (!ok) childFail(report, "ip: linking the uplink namespace to the test host");
  // Forwarding between the cells' uplink ends and the test host, in the uplink namespace only
  // (net.ipv4.ip_forward is per namespace; the sysctl is opened from inside it).
  pid_t pid = fork();
  if (pid == 0) {
    int ns = open(uplinkNetns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) _exit(1);
    int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
    _exit(fd >= 0 && write(fd, "1\n", 2) == 2 ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0) {
    childFail(report, "ip_forward in the uplink namespace");
  }
}

// The test host's child: a fresh network namespace linked to the uplink, lo up and the test
// host's address on it, then a poll loop that answers each TCP connection with "ok\n" and
// reports it.
[[noreturn]] void serve(int report, const std::string& address, const std::vector<uint16_t>& tcp,
                        const std::vector<uint16_t>& udp, pid_t uplinkPid) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (unshare(CLONE_NEWNET) < 0) childFail(report, "unshare(CLONE_NEWNET)");
  if (!ip("", {"addr", "add", address + "/32", "dev", "lo"})) childFail(report, "ip addr add");
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) childFail(report, "SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) childFail(report, "SIOCSIFFLAGS lo up");
  close(sock);
  linkUplink(report, "/proc/" + std::to_string(uplinkPid) + "/ns/net", uplinkPid);
  std::vector<pollfd> fds;
  std::vector<std::string> names;
  for (uint16_t port : tcp) {
    int fd = listenOn(address, port, SOCK_STREAM);
    if (fd < 0) childFail(report, "listen tcp " + std::to_string(port));
    fds.push_back({fd, POLLIN, 0});
    names.push_back("T" + std::to_string(port));
  }
  for (uint16_t port : udp) {
    int fd = listenOn(address, port, SOCK_DGRAM);
    if (fd < 0) childFail(report, "bind udp " + std::to_string(port));
    fds.push_back({fd, POLLIN, 0});
    names.push_back("U" + std::to_string(port));
  }
  if (write(report, "R\n", 2) != 2) _exit(1);
  serveLoop(report, fds, names);
}

}  // namespace

namespace {

// Reads (bounded) the child's first line: "R" or an error line.
std::string firstLine(int fd) {
  std::string first;
  pollfd p{fd, POLLIN, 0};
  char c;
  while (first.find('\n') == std::string::npos && poll(&p, 1, 5000) == 1 && read(fd, &c, 1) == 1) {
    first += c;
  }
  return first;
}

void killAndReap(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

}  // namespace

UplinkHost::UplinkHost(std::vector<uint16_t> tcpPorts, std::vector<uint16_t> udpPorts,
                       std::string address, std::vector<uint16_t> hostTcpPorts)
    : address_(std::move(address)) {
  int uplinkPipe[2];
  if (pipe2(uplinkPipe, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
  uplinkPid_ = fork();
  if (uplinkPid_ < 0) throw std::runtime_error("fork");
  if (uplinkPid_ == 0) {
    close(uplinkPipe[0]);
    holdUplink(uplinkPipe[1], hostTcpPorts);
  }
  close(uplinkPipe[1]);
  uplinkReports_ = uplinkPipe[0];
  std::string first = firstLine(uplinkReports_);
  if (first != "R\n") {
    killAndReap(uplinkPid_);
    close(uplinkReports_);
    uplinkReports_ = -1;
    throw std::runtime_error("uplink namespace failed to start: " + first);
  }
  fcntl(uplinkReports_, F_SETFL, O_NONBLOCK);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    close(pipefd[0]);
    serve(pipefd[1], address_, tcpPorts, udpPorts, uplinkPid_);
  }
  close(pipefd[1]);
  reports_ = pipefd[0];
  first = firstLine(reports_);
  if (first != "R\n") {
    killAndReap(pid_);
    killAndReap(uplinkPid_);
    close(reports_);
    close(uplinkReports_);
    reports_ = uplinkReports_ = -1;
    throw std::runtime_error("uplink test host failed to start: " + first);
  }
  fcntl(reports_, F_SETFL, O_NONBLOCK);
}

UplinkHost::~UplinkHost() {
  killAndReap(pid_);  // the veth pair goes with the test host's namespace
  killAndReap(uplinkPid_);
  if (reports_ >= 0) close(reports_);
  if (uplinkReports_ >= 0) close(uplinkReports_);
}

std::string UplinkHost::netnsPath() const {
  return "/proc/" + std::to_string(uplinkPid_) + "/ns/net";
}

std::string UplinkHost::serviceNetnsPath() const {
  return "/proc/" + std::to_string(pid_) + "/ns/net";
}

void UplinkHost::drain() {
  char buf[4096];
  ssize_t n;
  for (auto [fd, pending] : {std::pair{reports_, &pending_}, {uplinkReports_, &uplinkPending_}}) {
    while ((n = read(fd, buf, sizeof buf)) > 0) pending->append(buf, static_cast<size_t>(n));
    size_t newline;
    while ((newline = pending->find('\n')) != std::string::npos) {
      counts_[pending->substr(0, newline)]++;
      pending->erase(0, newline + 1);
    }
  }
}

int UplinkHost::tcpAccepted(uint16_t port) {
  drain();
  return counts_["T" + std::to_string(port)];
}

int UplinkHost::hostTcpAccepted(uint16_t port) {
  drain();
  return counts_["H" + std::to_string(port)];
}

int UplinkHost::udpReceived(uint16_t port) {
  drain();
  return counts_["U" + std::to_string(port)];
}

std::vector<std::string> UplinkHost::interfaces() const {
  std::vector<std::string> names;
  std::ifstream dev("/proc/" + std::to_string(uplinkPid_) + "/net/dev");
  std::string line;
  while (std::getline(dev, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    names.push_back(name);
  }
  return names;
}

}  // namespace cellos::testing
