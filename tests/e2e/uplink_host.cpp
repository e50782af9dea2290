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

// The child: a fresh network namespace with lo up and the test host's address on it, then a
// poll loop that answers each TCP connection with "ok\n" and reports it.
[[noreturn]] void serve(int report, const std::string& address, const std::vector<uint16_t>& tcp,
                        const std::vector<uint16_t>& udp) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (unshare(CLONE_NEWNET) < 0) childFail(report, "unshare(CLONE_NEWNET)");
  pid_t ip = fork();
  if (ip == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl("/usr/sbin/ip", "ip", "addr", "add", (address + "/32").c_str(), "dev", "lo", nullptr);
    _exit(127);
  }
  int status = 0;
  if (ip < 0 || waitpid(ip, &status, 0) != ip || status != 0) childFail(report, "ip addr add");
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) childFail(report, "SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) childFail(report, "SIOCSIFFLAGS lo up");
  close(sock);
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
  for (;;) {
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      if (names[i][0] == 'T') {
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

}  // namespace

UplinkHost::UplinkHost(std::vector<uint16_t> tcpPorts, std::vector<uint16_t> udpPorts,
                       std::string address)
    : address_(std::move(address)) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    close(pipefd[0]);
    serve(pipefd[1], address_, tcpPorts, udpPorts);
  }
  close(pipefd[1]);
  reports_ = pipefd[0];
  // Wait (bounded) for "R" or an error line.
  std::string first;
  pollfd p{reports_, POLLIN, 0};
  char c;
  while (first.find('\n') == std::string::npos && poll(&p, 1, 5000) == 1 &&
         read(reports_, &c, 1) == 1) {
    first += c;
  }
  if (first != "R\n") {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    throw std::runtime_error("uplink test host failed to start: " + first);
  }
  fcntl(reports_, F_SETFL, O_NONBLOCK);
}

UplinkHost::~UplinkHost() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (reports_ >= 0) close(reports_);
}

std::string UplinkHost::netnsPath() const {
  return "/proc/" + std::to_string(pid_) + "/ns/net";
}

void UplinkHost::drain() {
  char buf[4096];
  ssize_t n;
  while ((n = read(reports_, buf, sizeof buf)) > 0) pending_.append(buf, static_cast<size_t>(n));
  size_t newline;
  while ((newline = pending_.find('\n')) != std::string::npos) {
    counts_[pending_.substr(0, newline)]++;
    pending_.erase(0, newline + 1);
  }
}

int UplinkHost::tcpAccepted(uint16_t port) {
  drain();
  return counts_["T" + std::to_string(port)];
}

int UplinkHost::udpReceived(uint16_t port) {
  drain();
  return counts_["U" + std::to_string(port)];
}

std::vector<std::string> UplinkHost::interfaces() const {
  std::vector<std::string> names;
  std::ifstream dev("/proc/" + std::to_string(pid_) + "/net/dev");
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
