// End-to-end DNS: real `dig` in a real cell, the cell's DNS child forwarding to a real dnsmasq
// (or a deliberately hostile test responder) in the uplink namespace this test made. Covers the
// allowlist, query types, wildcards, TCP, the rebinding guard, an upstream that is down, answers
// that do not match, hostile packets, DNS-learned egress through nftables, and (issue 14) that
// the host is never a destination, through a wide cidr rule or a tenant resolver's answers.

#include "tests/e2e/cell_e2e.h"
#include "tests/e2e/uplink_host.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

// A program run inside the uplink test host's network namespace, output to `logPath`.
class NetnsProgram {
 public:
  NetnsProgram(const std::string& netnsPath, std::vector<std::string> argv,
               const std::string& logPath, const std::vector<std::string>& moreArgs = {}) {
    argv.insert(argv.end(), moreArgs.begin(), moreArgs.end());
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      int ns = open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) _exit(126);
      int log = open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~NetnsProgram() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  NetnsProgram(const NetnsProgram&) = delete;
  NetnsProgram& operator=(const NetnsProgram&) = delete;
  bool running() { return waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool waitForText(const std::string& path, const std::string& needle) {
  for (int i = 0; i < 100; ++i) {
    if (readAll(path).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// dnsmasq as the cell's declared resolver: a few fixed records, every query it sees logged.
class Dnsmasq {
 public:
  // `records`: more dnsmasq options (--host-record=...) beside the fixed ones.
  Dnsmasq(const UplinkHost& host, const std::string& dir, std::vector<std::string> records = {})
      : log_(dir + "/dnsmasq.log"),
        program_(host.serviceNetnsPath(),
                 {"/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                  "--no-resolv", "--no-hosts", "--pid-file=", "--user=root", "--bind-interfaces",
                  "--listen-address=" + host.address(), "--port=53", "--log-queries",
                  "--log-facility=" + log_, "--host-record=allowed.test," + host.address(),
                  "--host-record=other.test," + host.address(),
                  "--host-record=denied.test," + host.address(),
                  "--host-record=a.wild.test," + host.address(),
                  "--host-record=wild.test," + host.address(), "--host-record=loop.test,127.0.0.1",
                  "--txt-record=allowed.test,hello"},
                 dir + "/dnsmasq.out", bigRecords(std::move(records))) {
    if (!waitForText(log_, "started, version")) {
      throw std::runtime_error("dnsmasq did not start: " + readAll(dir + "/dnsmasq.out"));
    }
  }
  std::string queries() const { return readAll(log_); }

  // big.test has 40 A records: an answer of 700 bytes, over a plain UDP client's 512.
  static std::vector<std::string> bigRecords(std::vector<std::string> out = {}) {
    for (int i = 10; i < 50; ++i)
      out.push_back("--host-record=big.test,10.214.1." + std::to_string(i));
    return out;
  }

 private:
  std::string log_;
  NetnsProgram program_;
};

// Runs `dig` in the cell and prints "<label> <status> <answers...>". $DNS is the address the
// cell's resolv.conf names (the script's first line sets it).
const char* kDigFunction =
    "DNS=$(awk '/^nameserver/{print $2; exit}' /etc/resolv.conf)\n"
    "q() { label=$1; shift; echo \"$label $(dig +tries=1 +time=5 @$DNS \"$@\" | "
    "awk '/status:/{s=$6} /^[^;].*[ \\t]IN[ \\t]/{a=a\" \"$5} END{print s a}')\"; }\n";

// Connects from the cell: "ok:<greeting>" (a test host answered), "blocked" (nftables dropped
// the SYN: EPERM or no answer) or the failure.
const char* kConnect = R"(import socket, sys, errno
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(sys.argv[3], "ok:" + s.recv(16).decode().strip())
except socket.timeout:
    print(sys.argv[3], "blocked")
except OSError as e:
    print(sys.argv[3], "blocked" if e.errno == errno.EPERM else "err:" + str(e))
)";

// A second test host on the uplink namespace's loopback (10.214.0.2:8443) that no name resolves
// to: it reports every connection it accepts.
const char* kSecondHost = R"(import socket, subprocess
subprocess.run(["/usr/sbin/ip", "addr", "add", "10.214.0.2/32", "dev", "lo"], check=True)
s = socket.socket()
s.bind(("10.214.0.2", 8443))
s.listen(4)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    print("accepted", peer, flush=True)
    c.sendall(b"second\n")
    c.close()
)";

class Dns : public CellE2E {
 protected:
  std::string script(const std::string& body) { return std::string(kDigFunction) + body; }
  RunResult verify() { return runCellos({"verify", "--state-dir", stateDir_, events_}); }
  std::map<std::string, std::string> lines(const std::string& out) {
    std::map<std::string, std::string> result;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      auto space = line.find(' ');
      if (space != std::string::npos) result[line.substr(0, space)] = line.substr(space + 1);
    }
    return result;
  }
  std::vector<nlohmann::json> queries() { return eventData("observability.v1.dns_query"); }
};

const std::string kAuthority =
    "  authority:\n"
    "    egressRules:\n"
    "      - {host: allowed.test, port: 8443, protocol: tcp}\n"
    "    dnsAuthority:\n"
    "      hostnameAllowlist: [allowed.test, other.test, \"*.wild.test\", loop.test, big.test]\n"
    "      resolvers:\n"
    "        - {resolverId: upstream, endpoint: \"10.214.0.1:53\", protocol: do53-udp}\n";

// The forwarding and the DNS-learned egress sets, once per backend whose DNS path differs: a
// linux cell asks the helper on its loopback and its sockets meet the rules on output; a
// microvm guest asks the helper on its link's gateway and its packets meet the same rules,
// learned sets included, on the forward path.
class DnsBackends : public Dns, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    Dns::SetUp();
    if (IsSkipped()) return;
    if (auto why = missingBackend(GetParam()); !why.empty()) GTEST_SKIP() << why;
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, DnsBackends, ::testing::Values("linux", "microvm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST_P(DnsBackends, AllowedNamesResolveThroughTheUpstreamAndEverythingElseIsRefused) {
  UplinkHost host({8443}, {});
  Dnsmasq upstream(host, stateDir_);
  std::string second = stateDir_ + "/second.out";
  NetnsProgram secondHost(host.serviceNetnsPath(), {"/usr/bin/python3", "-c", kSecondHost}, second);
  ASSERT_TRUE(waitForText(second, "ready")) << readAll(second);
  // The connect probe rides inline: the cell sees nothing of this test's files.
  std::string connect = "python3 -c \"$CONNECT\"";
  std::string body = "CONNECT='" + std::string(kConnect) + "'\n" + connect +
                     " 10.214.0.1 8443 before\n"
                     "q allowed allowed.test A\n" +
                     connect + " 10.214.0.1 8443 after\n" + connect +
                     " 10.214.0.2 8443 unresolved\n"
                     "q denied denied.test A\n"
                     "q txt allowed.test TXT\n"
                     "q sub a.wild.test A\n"
                     "q apex wild.test A\n"
                     "q tcp +tcp other.test A\n"
                     "q rebind loop.test A\n"
                     "q case AlLoWeD.TeSt A\n"
                     "echo \"tc $(dig +noedns +ignore +tries=1 +time=5 @$DNS big.test A | "
                     "grep -c 'flags:.* tc')\"\n"
                     "q bigtcp +tcp big.test A\n";
  std::string placement = "  placement: {backend: " + GetParam() + "}\n";
  auto result = run("dns.yaml",
                    cellDocument("dns-forward", {"/bin/bash", "-c", script(body)}, "",
                                 placement + kAuthority, 120),
                    {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  EXPECT_EQ(got["before"], "blocked") << "the host rule's address is reachable before resolving";
  EXPECT_EQ(got["allowed"], "NOERROR, 10.214.0.1") << result.err;
  EXPECT_EQ(got["after"], "ok:ok") << "the resolved address of a host rule is not reachable";
  EXPECT_EQ(got["unresolved"], "blocked") << "an address nobody resolved is reachable";
  EXPECT_EQ(readAll(second).find("accepted"), std::string::npos) << readAll(second);
  EXPECT_EQ(got["denied"], "REFUSED,");
  EXPECT_EQ(got["txt"], "REFUSED,");
  EXPECT_EQ(got["sub"], "NOERROR, 10.214.0.1");
  EXPECT_EQ(got["apex"], "REFUSED,");
  EXPECT_EQ(got["tcp"], "NOERROR, 10.214.0.1");
  EXPECT_EQ(got["rebind"], "REFUSED,") << "an answer into loopback was relayed";
  EXPECT_EQ(got["case"], "NOERROR, 10.214.0.1");
  // The upstream truncated its UDP answer for a client without EDNS: relayed with TC. Over TCP
  // (dig's EDNS size, 1232) the whole answer arrives.
  EXPECT_EQ(got["tc"], "1");
  EXPECT_EQ(std::count(got["bigtcp"].begin(), got["bigtcp"].end(), ' '), 40) << got["bigtcp"];
  EXPECT_EQ(host.tcpAccepted(8443), 1);

  // The upstream saw the permitted names and never a refused one.
  std::string seen = upstream.queries();
  EXPECT_NE(seen.find("query[A] allowed.test"), std::string::npos) << seen;
  EXPECT_NE(seen.find("query[A] loop.test"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("denied.test"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("] wild.test from"), std::string::npos) << "the apex reached the upstream";
  EXPECT_EQ(seen.find("query[TXT]"), std::string::npos) << seen;

  std::map<std::string, nlohmann::json> byName;
  for (const auto& q : queries()) {
    byName[q["qname"].get<std::string>() + "/" + q["qtype"].get<std::string>() + "/" +
           q["transport"].get<std::string>()] = q;
  }
  auto allowed = byName["allowed.test/A/udp"];
  EXPECT_EQ(allowed["decision"], "permitted");
  EXPECT_EQ(allowed["reasonCode"], "allowlist_match");
  EXPECT_EQ(allowed["rcode"], 0);
  EXPECT_EQ(allowed["resolverId"], "upstream");
  EXPECT_TRUE(allowed["latencyMicros"].is_number());
  EXPECT_EQ(byName["denied.test/A/udp"]["reasonCode"], "not_in_allowlist");
  EXPECT_EQ(byName["denied.test/A/udp"]["rcode"], 5);
  EXPECT_EQ(byName["allowed.test/TXT/udp"]["reasonCode"], "qtype_not_allowed");
  EXPECT_EQ(byName["other.test/A/tcp"]["decision"], "permitted");
  EXPECT_EQ(byName["loop.test/A/udp"]["reasonCode"], "rebinding_guard");
  EXPECT_EQ(byName["loop.test/A/udp"]["rcode"], 5);
  EXPECT_TRUE(eventData("observability.v1.dns_audit_dropped").empty());
  EXPECT_EQ(verify().status, 0);
}

TEST_F(Dns, ADo53TcpResolverIsAskedOverTcpWhateverTheCellUses) {
  UplinkHost host({}, {});
  Dnsmasq upstream(host, stateDir_);
  std::string authority = kAuthority;
  authority.replace(authority.find("do53-udp"), 8, "do53-tcp");
  auto result = run("tcp.yaml",
                    cellDocument("dns-tcp",
                                 {"/bin/bash", "-c",
                                  script("q udp other.test A\nq tcp +tcp a.wild.test A\n"
                                         "echo \"tc $(dig +noedns +ignore +tries=1 +time=5 "
                                         "@127.0.0.1 big.test A | grep -c 'flags:.* tc')\"\n"
                                         "q big big.test A\n")},
                                 "", authority),
                    {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  EXPECT_EQ(got["udp"], "NOERROR, 10.214.0.1");
  EXPECT_EQ(got["tcp"], "NOERROR, 10.214.0.1");
  // The whole answer came over TCP; the child cut it for a client that takes 512 bytes (TC set,
  // question only), and relayed it whole to dig's EDNS size.
  EXPECT_EQ(got["tc"], "1");
  EXPECT_EQ(std::count(got["big"].begin(), got["big"].end(), ' '), 40) << got["big"];
  // The cell's nftables admit only TCP to this resolver: an answer proves the child used it.
  std::map<std::string, nlohmann::json> flows;
  for (const auto& flow : eventData("observability.v1.network_flow_decision")) {
    flows[flow["ruleId"]] = flow;
  }
  std::string rule = flows["resolver:upstream"]["rule"];
  EXPECT_EQ(rule.rfind("ip daddr 10.214.0.1 tcp dport 53 meta skuid ", 0), 0u) << rule;
  EXPECT_GE(flows["resolver:upstream"]["packets"].get<int>(), 2);
}

TEST_F(Dns, AnUpstreamThatIsDownGivesServfail) {
  UplinkHost host({}, {});  // nothing listens on port 53
  auto result = run("down.yaml",
                    cellDocument("dns-down", {"/bin/bash", "-c", script("q down allowed.test A\n")},
                                 "", kAuthority),
                    {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(lines(result.out)["down"], "SERVFAIL,");
  auto all = queries();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["reasonCode"], "upstream_timeout");
  EXPECT_EQ(all[0]["rcode"], 2);
}

// A hostile upstream: for each query it first sends a forged answer from another address,
// then answers with the wrong id, then for the wrong name, and only then the right answer.
const char* kSpoofer = R"(import socket, struct, subprocess
subprocess.run(["/usr/sbin/ip", "addr", "add", "10.214.0.9/32", "dev", "lo"], check=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.214.0.1", 53))
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
other.bind(("10.214.0.9", 53))
print("ready", flush=True)
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
def answer(qid, qname, addr):
    head = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    q = name(qname) + struct.pack(">HH", 1, 1)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes(addr)
    return head + q + rr
while True:
    data, peer = s.recvfrom(4096)
    qid = struct.unpack(">H", data[:2])[0]
    qname = "allowed.test"
    print("query", peer, flush=True)
    other.sendto(answer(qid, qname, [10, 214, 0, 66]), peer)
    s.sendto(answer(qid ^ 1, qname, [10, 214, 0, 67]), peer)
    s.sendto(answer(qid, "other.test", [10, 214, 0, 68]), peer)
    s.sendto(answer(qid, qname, [10, 214, 0, 1]), peer)
)";

TEST_F(Dns, AnswersThatDoNotMatchTheQuestionOrComeFromElsewhereAreIgnored) {
  UplinkHost host({}, {});
  std::string out = stateDir_ + "/spoofer.out";
  NetnsProgram spoofer(host.serviceNetnsPath(), {"/usr/bin/python3", "-c", kSpoofer}, out);
  ASSERT_TRUE(waitForText(out, "ready")) << readAll(out);
  auto result = run("spoof.yaml",
                    cellDocument("dns-spoof", {"/bin/bash", "-c", script("q a allowed.test A\n")},
                                 "", kAuthority),
                    {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(lines(result.out)["a"], "NOERROR, 10.214.0.1") << readAll(out);
  EXPECT_NE(readAll(out).find("query"), std::string::npos) << "the upstream saw no query";
}

// Hostile packets replayed at a running child, which must keep serving: a compression loop, a
// name running past the end, counts far beyond the packet, a pointer into the header, a label
// longer than the packet, a response, and a TCP message cut short.
const char* kHostile = R"(import socket, struct, time
def header(qd, an=0, ns=0, ar=0, flags=0x0100, qid=0x4242):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)
good = header(1) + b"\x07allowed\x04test\x00\x00\x01\x00\x01"
packets = [
    header(1) + b"\xc0\x0c\x00\x01\x00\x01",
    header(1) + b"\x03abc\xc0\x0c\x00\x01\x00\x01",
    header(1) + b"\x07allow",
    header(65535, 65535, 65535, 65535) + b"\x07allowed\x04test\x00\x00\x01\x00\x01",
    header(1) + b"\xc0\x02\x00\x01\x00\x01",
    header(1) + b"\x3fabc\x00\x00\x01\x00\x01",
    header(1, flags=0x8180) + b"\x07allowed\x04test\x00\x00\x01\x00\x01",
    b"\x00",
    b"",
    header(1) + b"\x07allowed\x04test\x00\x00\x01\x00\x01" + b"\x00" * 3000,
]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for p in packets * 20:
    u.sendto(p, ("127.0.0.1", 53))
t = socket.create_connection(("127.0.0.1", 53))
t.sendall(struct.pack(">H", 300) + good)
t.close()
u.settimeout(2)
for attempt in range(5):  # the burst may have filled the socket's buffer: ask again
    u.sendto(good, ("127.0.0.1", 53))
    try:
        data = u.recv(4096)
    except socket.timeout:
        continue
    if data[:2] == b"\x42\x42":
        print("serving", "rcode=%d" % (data[3] & 15), "answers=%d" % struct.unpack(">H", data[6:8]))
        break
else:
    print("not serving")
)";

TEST_F(Dns, HostilePacketsDoNotStopTheChild) {
  UplinkHost host({}, {});
  Dnsmasq upstream(host, stateDir_);
  auto result =
      run("hostile.yaml",
          cellDocument("dns-hostile", {"/usr/bin/python3", "-c", kHostile}, "", kAuthority),
          {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(result.out, "serving rcode=0 answers=1\n");
  // Each hostile datagram the child read is one malformed_query event (the kernel may drop
  // some of a burst before the child reads them, and a full audit queue counts what it drops).
  size_t malformed = 0;
  for (const auto& q : queries()) {
    if (q["reasonCode"] == "malformed_query") {
      ++malformed;
      EXPECT_EQ(q["decision"], "dropped");
      EXPECT_EQ(q["rcode"], -1);
    }
  }
  EXPECT_GE(malformed, 1u);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: the host is never a destination. The uplink namespace stands for the host: a
// service listening on all of its addresses (each cell's uplink end, uplink0 as the host's
// eth0, its lo's 10.216.0.1 and 127.0.0.1) must see no connection from a cell, whatever the
// cell's rules say, while the test host behind it (10.214.0.1) stays reachable.

// The cell's default gateway (its uplink end, on the host) from /proc/net/route.
const char* kGateway =
    "GW=$(python3 -c \"import socket, struct\n"
    "for line in open('/proc/net/route').readlines()[1:]:\n"
    "    f = line.split()\n"
    "    if f[1] == '00000000': print(socket.inet_ntoa(struct.pack('<I', int(f[2], 16))))\")\n";

// The host's own service (UplinkHost's hostTcpPorts) listens on port 7000 of every address of
// the uplink namespace; the test host (10.214.0.1) on port 7000 too.
class HostDestinations : public Dns {
 protected:
  std::string connectBody(const std::string& probes) {
    return "CONNECT='" + std::string(kConnect) + "'\n" + kGateway + probes;
  }
  std::map<std::string, nlohmann::json> flows() {
    std::map<std::string, nlohmann::json> out;
    for (const auto& flow : eventData("observability.v1.network_flow_decision")) {
      out[flow["ruleId"]] = flow;
    }
    return out;
  }
  std::map<std::string, nlohmann::json> queriesByName() {
    std::map<std::string, nlohmann::json> out;
    for (const auto& q : queries()) {
      out[q["qname"].get<std::string>() + "/" + q["qtype"].get<std::string>()] = q;
    }
    return out;
  }
};

TEST_F(HostDestinations, AWideCidrRuleReachesNoAddressOfTheHostButStillTheTestHost) {
  UplinkHost host({7000}, {}, "10.214.0.1", {7000});
  std::string c = "python3 -c \"$CONNECT\"";
  std::string body = connectBody(
      c + " \"$GW\" 7000 uplinkEnd\n" + c + " " + UplinkHost::kUplinkLinkAddress +
      " 7000 hostEth0\n" + c + " " + UplinkHost::kUplinkLoAddress + " 7000 hostLo\n" + c +
      " 127.0.0.1 7000 loopback\n" + c + " 10.214.0.1 7000 control\n" + "echo \"gateway $GW\"\n");
  const std::string authority =
      "  authority:\n"
      "    egressRules:\n"
      "      - {cidr: 0.0.0.0/0, port: 7000, protocol: tcp}\n";
  auto result =
      run("wide.yaml", cellDocument("host-wide", {"/bin/bash", "-c", body}, "", authority),
          {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  ASSERT_EQ(got["gateway"].rfind("10.213.", 0), 0u) << result.out;
  EXPECT_EQ(got["uplinkEnd"], "blocked") << "the cell's uplink end (the host) answered";
  EXPECT_EQ(got["hostEth0"], "blocked") << "another interface of the host answered";
  EXPECT_EQ(got["hostLo"], "blocked") << "an address on the host's lo answered";
  // 127.0.0.1 is the cell's own lo (route_localnet is off, and the cell cannot route loopback
  // out): nothing listens there, and the host's 127.0.0.1 is never reached.
  EXPECT_NE(got["loopback"].find("err:"), std::string::npos) << got["loopback"];
  EXPECT_EQ(host.hostTcpAccepted(7000), 0) << "a service on the host saw a cell's connection";
  // The same rule reaches the test host behind the host: the test can fail.
  EXPECT_EQ(got["control"], "ok:ok");
  EXPECT_EQ(host.tcpAccepted(7000), 1);
  auto counted = flows();
  EXPECT_EQ(counted["host-destination:v4"]["verdict"], "drop");
  EXPECT_GE(counted["host-destination:v4"]["packets"].get<int>(), 3)
      << "the three SYNs to the host were dropped by the host-destination rule";
  EXPECT_EQ(counted["host-destination:v4"]["rule"], "ip daddr @host_v4");
}

// The tenant's own resolver answers allowed names with the host's addresses: each answer is
// refused (host_destination), nothing is learned, and the cell cannot connect.
const std::vector<std::string> kHostRecords = {
    std::string("--host-record=svc.test,") + UplinkHost::kUplinkLinkAddress,  // the host's eth0
    "--host-record=peer.test,10.213.255.1",  // another cell's uplink end: the pool
    std::string("--host-record=mapped.test,::ffff:") + UplinkHost::kUplinkLinkAddress,
    "--host-record=nat64.test,64:ff9b::7f00:1",  // NAT64 form of 127.0.0.1
    "--host-record=ok.test,10.214.0.1"};         // the test host: the control

const std::string kHostRules =
    "  authority:\n"
    "    egressRules:\n"
    "      - {host: svc.test, port: 7000, protocol: tcp}\n"
    "      - {host: peer.test, port: 7000, protocol: tcp}\n"
    "      - {host: mapped.test, port: 7000, protocol: tcp}\n"
    "      - {host: ok.test, port: 7000, protocol: tcp}\n"
    "    dnsAuthority:\n"
    "      hostnameAllowlist: [svc.test, peer.test, mapped.test, nat64.test, ok.test]\n"
    "      allowedQueryTypes: [A, AAAA]\n"
    "      resolvers:\n"
    "        - {resolverId: tenant, endpoint: \"10.214.0.1:53\", protocol: do53-udp}\n";

TEST_F(HostDestinations, ATenantResolverCannotPointAHostRuleAtTheHost) {
  UplinkHost host({7000}, {}, "10.214.0.1", {7000});
  Dnsmasq tenant(host, stateDir_, kHostRecords);
  std::string c = "python3 -c \"$CONNECT\"";
  std::string body = connectBody("q svc svc.test A\n" + c + " " + UplinkHost::kUplinkLinkAddress +
                                 " 7000 svcConnect\n" +
                                 "q peer peer.test A\n"
                                 "q mapped mapped.test AAAA\n"
                                 "q nat64 nat64.test AAAA\n"
                                 "q ok ok.test A\n" +
                                 c + " 10.214.0.1 7000 okConnect\n");
  auto result = run("tenant.yaml",
                    cellDocument("host-dns", {"/bin/bash", "-c", script(body)}, "", kHostRules),
                    {"--uplink-netns", host.netnsPath()});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  EXPECT_EQ(got["svc"], "REFUSED,") << "an answer naming the host's address was relayed";
  EXPECT_EQ(got["svcConnect"], "blocked");
  EXPECT_EQ(got["peer"], "REFUSED,") << "an answer into the address pool was relayed";
  EXPECT_EQ(got["mapped"], "REFUSED,") << "the IPv4-mapped form of a host address was relayed";
  EXPECT_EQ(got["nat64"], "REFUSED,") << "the NAT64 form of loopback was relayed";
  EXPECT_EQ(host.hostTcpAccepted(7000), 0) << "a service on the host saw a cell's connection";
  // The same resolver's answer for the test host is relayed and reachable: the test can fail.
  EXPECT_EQ(got["ok"], "NOERROR, 10.214.0.1");
  EXPECT_EQ(got["okConnect"], "ok:ok");
  EXPECT_EQ(host.tcpAccepted(7000), 1);
  // The resolver did answer (it was asked), and the refusal says why.
  EXPECT_NE(tenant.queries().find("query[A] svc.test"), std::string::npos) << tenant.queries();
  auto byName = queriesByName();
  EXPECT_EQ(byName["svc.test/A"]["reasonCode"], "host_destination");
  EXPECT_EQ(byName["svc.test/A"]["decision"], "refused");
  EXPECT_EQ(byName["svc.test/A"]["rcode"], 5);
  EXPECT_EQ(byName["peer.test/A"]["reasonCode"], "host_destination");
  EXPECT_EQ(byName["mapped.test/AAAA"]["reasonCode"], "host_destination");
  EXPECT_EQ(byName["nat64.test/AAAA"]["reasonCode"], "rebinding_guard");
  EXPECT_EQ(byName["ok.test/A"]["reasonCode"], "allowlist_match");
  EXPECT_EQ(verify().status, 0);
}

// The host policy opens one host destination, deliberately: that address resolves and connects;
// every other address of the host stays closed.
TEST_F(HostDestinations, TheHostPolicyOpensOneHostDestinationAndNoOther) {
  UplinkHost host({7000}, {}, "10.214.0.1", {7000});
  Dnsmasq tenant(host, stateDir_, kHostRecords);
  std::string policy = writeDocument("policy.yaml", std::string("allowHostDestinations: [") +
                                                        UplinkHost::kUplinkLinkAddress + "/32]\n");
  std::string c = "python3 -c \"$CONNECT\"";
  std::string body = connectBody("q svc svc.test A\n" + c + " " + UplinkHost::kUplinkLinkAddress +
                                 " 7000 svcConnect\n" + "q peer peer.test A\n" + c + " " +
                                 UplinkHost::kUplinkLoAddress + " 7000 hostLo\n");
  auto result = run("opened.yaml",
                    cellDocument("host-open", {"/bin/bash", "-c", script(body)}, "", kHostRules),
                    {"--uplink-netns", host.netnsPath(), "--policy", policy});
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  EXPECT_EQ(got["svc"], std::string("NOERROR, ") + UplinkHost::kUplinkLinkAddress);
  EXPECT_EQ(got["svcConnect"], "ok:ok") << "the address the policy opened is not reachable";
  EXPECT_EQ(got["peer"], "REFUSED,") << "the policy opened more than it lists";
  EXPECT_EQ(got["hostLo"], "blocked");
  EXPECT_EQ(host.hostTcpAccepted(7000), 1);
  EXPECT_EQ(host.tcpAccepted(7000), 0);
  auto byName = queriesByName();
  EXPECT_EQ(byName["svc.test/A"]["reasonCode"], "allowlist_match");
  EXPECT_EQ(byName["peer.test/A"]["reasonCode"], "host_destination");
  EXPECT_EQ(flows()["host-destination:v4"]["rule"],
            "ip daddr @host_v4 ip daddr != @host_allowed_v4");
}

// An address the host gains while a cell runs is closed to the cell from then on: the launcher
// hears of the change (netlink) and rewrites the running cell's host set. The cell probes
// 10.217.0.1:7001 (nothing there yet: unreachable), tells the test host it did, and probes on;
// the test then puts 10.217.0.1 on the host's lo. Only the host-destination drop can turn the
// cell's probe into "blocked": its rule `cidr: 0.0.0.0/0, port: 7001` accepts everything else.
const char* kGainedAddressProbe = R"(import socket, errno, time
def tcp(address, port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((address, port))
        return "ok"
    except socket.timeout:
        return "blocked"
    except OSError as e:
        return "blocked" if e.errno == errno.EPERM else "err:" + errno.errorcode.get(e.errno, "?")
print("first", tcp("10.217.0.1", 7001), flush=True)
print("signal", tcp("10.214.0.1", 7000), flush=True)
last = None
for i in range(150):  # bounded: at most 15 s
    r = tcp("10.217.0.1", 7001)
    if r != last:
        print("probe", r, flush=True)
        last = r
    if r == "blocked":
        break
    time.sleep(0.1)
)";

TEST_F(HostDestinations, AnAddressTheHostGainsWhileACellRunsIsClosedToItAtOnce) {
  UplinkHost host({7000}, {});
  const std::string authority =
      "  authority:\n"
      "    egressRules:\n"
      "      - {cidr: 0.0.0.0/0, port: 7001, protocol: tcp}\n"
      "      - {cidr: 10.214.0.0/24, port: 7000, protocol: tcp}\n";
  RunResult result{-1, "", ""};
  std::thread cell([&]() {
    result = run(
        "gained.yaml",
        cellDocument("host-gains", {"/usr/bin/python3", "-c", kGainedAddressProbe}, "", authority),
        {"--uplink-netns", host.netnsPath()});
  });
  // The cell made its first probe: now the host gains the address (bounded wait).
  for (int i = 0; i < 200 && host.tcpAccepted(7000) == 0; ++i) std::this_thread::sleep_for(50ms);
  bool signalled = host.tcpAccepted(7000) == 1;
  std::optional<NetnsProgram> add;
  if (signalled) {
    add.emplace(
        host.netnsPath(),
        std::vector<std::string>{"/usr/sbin/ip", "addr", "add", "10.217.0.1/32", "dev", "lo"},
        stateDir_ + "/ip.out");
  }
  cell.join();
  ASSERT_TRUE(signalled) << result.out << result.err;
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  auto got = lines(result.out);
  EXPECT_EQ(got["first"].rfind("err:", 0), 0u) << "10.217.0.1 was not new: " << got["first"];
  EXPECT_EQ(got["signal"], "ok");
  EXPECT_NE(result.out.find("probe blocked"), std::string::npos)
      << "the address the host gained stayed open to the running cell:\n"
      << result.out;
  EXPECT_EQ(result.out.find("probe ok"), std::string::npos) << result.out;
  EXPECT_GE(flows()["host-destination:v4"]["packets"].get<int>(), 1);
}

}  // namespace
}  // namespace cellos::testing
