#pragma once
// A test host in a network namespace the test itself made, behind a stand-in for the VM
// launcher's uplink (testing.md: test traffic goes only to loopback or to such hosts). Two
// namespaces, each held by a child process:
//   uplink (netnsPath()): what the VM launcher is pointed at (--uplink-netns), so cells' veth
//     pairs end there and nothing touches the host's own network namespace. It stands for the
//     host: lo up with kUplinkLoAddress on it beside 127.0.0.1, and "uplink0" (the host's eth0)
//     with kUplinkLinkAddress, routing the test host's 10.214.0.0/16 to it (forwarding on, in
//     this namespace only). Every address here is the host's: no cell may reach it.
//   service (serviceNetnsPath()): the test host, a remote machine. Its address on its loopback,
//     listening on the given TCP and UDP ports; it reports every connection and datagram that
//     reaches it. Programs a test runs "on the test host" run here.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cellos::testing {

class UplinkHost {
 public:
  // The test host listens on `tcpPorts` and `udpPorts`; the host itself (the uplink namespace,
  // on all its addresses) on `hostTcpPorts`. Throws std::runtime_error when a namespace or a
  // listener cannot be set up.
  UplinkHost(std::vector<uint16_t> tcpPorts, std::vector<uint16_t> udpPorts,
             std::string address = "10.214.0.1", std::vector<uint16_t> hostTcpPorts = {});
  ~UplinkHost();  // kills the child; the namespace goes with it
  UplinkHost(const UplinkHost&) = delete;
  UplinkHost& operator=(const UplinkHost&) = delete;

  // The uplink namespace's addresses (beside each cell's uplink end and lo's 127.0.0.1).
  static constexpr const char* kUplinkLinkAddress = "10.215.0.1";  // on uplink0, "eth0"
  static constexpr const char* kUplinkLoAddress = "10.216.0.1";    // on the uplink's lo

  // The uplink namespace (/proc/<child>/ns/net): valid while this object lives.
  std::string netnsPath() const;
  // The test host's namespace, where its address lives.
  std::string serviceNetnsPath() const;
  const std::string& address() const { return address_; }
  // Connections accepted / datagrams received on `port` so far.
  int tcpAccepted(uint16_t port);
  int udpReceived(uint16_t port);
  // Connections the host's own service on `port` (hostTcpPorts) accepted so far.
  int hostTcpAccepted(uint16_t port);
  // Interface names in the uplink namespace (from /proc/<child>/net/dev).
  std::vector<std::string> interfaces() const;

 private:
  void drain();
  pid_t uplinkPid_ = -1;  // holds the uplink namespace
  pid_t pid_ = -1;        // the test host
  int reports_ = -1;
  int uplinkReports_ = -1;
  std::string address_;
  std::string pending_, uplinkPending_;
  std::map<std::string, int> counts_;  // "T8080" / "U53" -> count
};

}  // namespace cellos::testing
