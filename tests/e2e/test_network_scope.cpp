// End-to-end network scope: `cellos run` with the VM launcher's uplink in a namespace this test
// made, holding a test host. The cell may reach the host only on the port its cidr rule allows,
// never a declared resolver directly (only its DNS child may), and the run reports every rule's
// counters.

#include "tests/e2e/cell_e2e.h"
#include "tests/e2e/uplink_host.h"

#include <map>

namespace cellos::testing {
namespace {

class NetworkScope : public CellE2E {};

const char* kProbe = R"(import socket, errno
def tcp(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("10.214.0.1", port))
        return "ok:" + s.recv(16).decode().strip()
    except socket.timeout:
        return "blocked"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + str(e.errno)
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", ("10.214.0.1", port))
        return "sent"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + str(e.errno)
def dns_helper():
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, ("127.0.0.1", 53))
    return "answered" if s.recv(512)[:2] == b"\x12\x34" else "garbled"
print("allowed", tcp(8080))
print("denied", tcp(8081))
print("resolver", udp(53))
print("helper", dns_helper())
print(open("/etc/resolv.conf").read().strip())
)";

TEST_F(NetworkScope, CellReachesTheTestHostOnlyWhereItsRuleAllows) {
  UplinkHost host({8080, 8081}, {53});
  std::string authority =
      "  authority:\n"
      "    egressRules:\n"
      "      - {cidr: 10.214.0.0/24, port: 8080, protocol: tcp}\n"
      "    dnsAuthority:\n"
      "      hostnameAllowlist: [example.com]\n"
      "      resolvers:\n"
      "        - {resolverId: upstream, endpoint: \"10.214.0.1:53\", protocol: do53-udp}\n";
  auto result =
      run("net.yaml", cellDocument("scoped", {"/usr/bin/python3", "-c", kProbe}, "", authority),
          {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(
      result.out,
      "allowed ok:ok\ndenied blocked\nresolver blocked\nhelper answered\nnameserver 127.0.0.1\n");
  EXPECT_EQ(host.tcpAccepted(8080), 1);
  EXPECT_EQ(host.tcpAccepted(8081), 0) << "a port no rule allows was reached";
  // One datagram: the DNS child forwarding the allowed name (the test host never answers, so
  // the cell gets SERVFAIL); the workload's own datagram to the resolver was dropped.
  EXPECT_EQ(host.udpReceived(53), 1) << "the workload reached a declared resolver directly";

  auto scoped = eventData("network.v1.scoped");
  ASSERT_EQ(scoped.size(), 1u);
  EXPECT_EQ(scoped[0]["nftApplied"], true);
  EXPECT_EQ(scoped[0]["egressRuleCount"], 1);
  std::string cell = scoped[0]["cellAddress"], uplink = scoped[0]["uplinkAddress"];
  EXPECT_EQ(cell.rfind("10.213.", 0), 0u) << cell;
  EXPECT_EQ(uplink.substr(0, uplink.rfind('.')), cell.substr(0, cell.rfind('.')));
  EXPECT_EQ(std::string(scoped[0]["uplinkInterface"]).rfind("cellos", 0), 0u);
  EXPECT_TRUE(scoped[0]["setupTimingsMicros"].contains("nftables"));

  std::map<std::string, nlohmann::json> flows;
  for (const auto& flow : eventData("observability.v1.network_flow_decision")) {
    flows[flow["ruleId"]] = flow;
  }
  ASSERT_TRUE(flows.count("egress[0]")) << "one event per rule";
  EXPECT_EQ(flows["egress[0]"]["verdict"], "accept");
  EXPECT_EQ(flows["egress[0]"]["rule"], "ip daddr 10.214.0.0/24 tcp dport 8080");
  EXPECT_GE(flows["egress[0]"]["packets"].get<int>(), 1);
  EXPECT_EQ(flows["resolver:upstream"]["packets"], 1) << "the DNS child's forwarded query";
  EXPECT_EQ(flows["default-drop"]["verdict"], "drop");
  EXPECT_GE(flows["default-drop"]["packets"].get<int>(), 2) << "the SYN to 8081 and the datagram";
  EXPECT_GE(flows["loopback"]["packets"].get<int>(), 1) << "the query to the DNS helper";
  EXPECT_EQ(flows.size(), 8u) << "5 output rules and 3 input rules";
  EXPECT_EQ(runCellos({"verify", "--state-dir", stateDir_, events_}).status, 0);

  auto names = host.interfaces();
  EXPECT_EQ(names, std::vector<std::string>{"lo"}) << "the cell's veth outlived it";
}

}  // namespace
}  // namespace cellos::testing
