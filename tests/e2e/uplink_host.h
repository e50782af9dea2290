#pragma once
// A test host in a network namespace the test itself made, standing in for the VM launcher's
// uplink (testing.md: test traffic goes only to loopback or to such hosts). A child process
// unshares a network namespace, puts the test host's address on its loopback, listens on the
// given TCP and UDP ports, and reports every connection and datagram that reaches it. The VM
// launcher is pointed at netnsPath() (--uplink-netns), so cells' veth pairs end there and
// nothing touches the host's own network namespace.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cellos::testing {

class UplinkHost {
 public:
  // Throws std::runtime_error when the namespace or a listener cannot be set up.
  UplinkHost(std::vector<uint16_t> tcpPorts, std::vector<uint16_t> udpPorts,
             std::string address = "10.214.0.1");
  ~UplinkHost();  // kills the child; the namespace goes with it
  UplinkHost(const UplinkHost&) = delete;
  UplinkHost& operator=(const UplinkHost&) = delete;

  // /proc/<child>/ns/net: valid while this object lives.
  std::string netnsPath() const;
  const std::string& address() const { return address_; }
  // Connections accepted / datagrams received on `port` so far.
  int tcpAccepted(uint16_t port);
  int udpReceived(uint16_t port);
  // Interface names in the namespace (from /proc/<child>/net/dev).
  std::vector<std::string> interfaces() const;

 private:
  void drain();
  pid_t pid_ = -1;
  int reports_ = -1;
  std::string address_;
  std::string pending_;
  std::map<std::string, int> counts_;  // "T8080" / "U53" -> count
};

}  // namespace cellos::testing
