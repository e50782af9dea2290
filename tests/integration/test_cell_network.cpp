// A cell's network scope for real: a veth pair from a real cell to an uplink namespace this test
// made (with a test host in it), the nftables ruleset, its counters and its removal; the
// host-wide slot leases and the launcher's cell records. Needs root. All traffic goes to the
// test host inside the namespace this test created (testing.md).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "tests/e2e/uplink_host.h"
#include "vmm-agent/backends/linux/linux_cell.h"
#include "vmm-agent/launcher/cell_records.h"
#include "vmm-agent/launcher/network_scope.h"
#include "vmm-agent/launcher/slot_lease.h"

namespace cellos::vmm {
namespace {

using namespace std::chrono_literals;
using cellos::testing::UplinkHost;

constexpr uint32_t kDnsUid = 60123;    // stands in for cellos-dns
constexpr uint32_t kOtherUid = 60124;  // any other sender

std::string readAllFrom(int fd, std::chrono::milliseconds timeout) {
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EAGAIN) {
      break;
    }
  }
  return text;
}

// Sends one UDP datagram to the test host from inside `netnsFd` as `uid`, in a forked child.
// Returns 0 or the errno of sendto.
int sendUdpAs(int netnsFd, uint32_t uid, const std::string& address, uint16_t port) {
  int result[2];
  if (pipe(result) < 0) return -1;
  pid_t child = fork();
  if (child == 0) {
    int error = 0;
    if (setns(netnsFd, CLONE_NEWNET) < 0 || setresgid(uid, uid, uid) < 0 ||
        setresuid(uid, uid, uid) < 0) {
      error = 1000 + errno;
    } else {
      int sock = socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(port);
      inet_pton(AF_INET, address.c_str(), &to.sin_addr);
      if (sendto(sock, "q", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) error = errno;
    }
    ssize_t ignored = write(result[1], &error, sizeof error);
    (void)ignored;
    _exit(0);
  }
  close(result[1]);
  int error = -1;
  if (read(result[0], &error, sizeof error) != sizeof error) error = -1;
  close(result[0]);
  waitpid(child, nullptr, 0);
  return error;
}

class CellNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces, veth, nftables";
    signal(SIGPIPE, SIG_IGN);
    host_ =
        std::make_unique<UplinkHost>(std::vector<uint16_t>{8080, 8081}, std::vector<uint16_t>{53});
    home_ = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    uplinkFd_ = open(host_->netnsPath().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(home_, 0);
    ASSERT_GE(uplinkFd_, 0);
    uplink_ = UplinkNamespace{uplinkFd_, home_};
    char dir[] = "/tmp/cellos-net-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    cellDir_ = dir;
    cellId_ = "net" + std::to_string(getpid()) + "-" + std::to_string(counter_++);
    iface_ = "cellos-t" + std::to_string(counter_);
  }

  void TearDown() override {
    if (launched_) {
      for (Fd* fd : {&cell_.pidFd, &cell_.netnsFd, &cell_.stdoutFd, &cell_.stderrFd, &cell_.startFd,
                     &cell_.statusFd}) {
        fd->reset();
      }
    }
    if (netns_ >= 0) {
      EXPECT_EQ(removeCellNetwork(uplink_, netns_, iface_), std::vector<std::string>{});
      close(netns_);
    }
    if (launched_) {
      EXPECT_EQ(destroyCell(cellId_, cell_.initPid), std::vector<std::string>{});
    }
    if (host_) {
      std::vector<std::string> names = host_->interfaces();
      EXPECT_EQ(names, (std::vector<std::string>{"lo", "uplink0"})) << "a veth end survived";
    }
    if (!cellDir_.empty()) rmdir(cellDir_.c_str());
    if (uplinkFd_ >= 0) close(uplinkFd_);
    if (home_ >= 0) close(home_);
  }

  // A real cell running `script` under python3, its network scoped by `plan`, not started yet.
  void launch(const std::string& script, core::NftPlan plan) {
    CellLaunch l;
    l.cellId = cellId_;
    l.argv = {"/usr/bin/python3", "-c", script};
    l.cellDir = cellDir_;
    l.ids = CellIdRange{0x61000000u + static_cast<uint32_t>(counter_) * 65536u, 65536};
    cell_ = launchCell(l);
    launched_ = true;
    netns_ = fcntl(cell_.netnsFd.get(), F_DUPFD_CLOEXEC, 3);
    addresses_ = core::CellAddressPair{0x0ad5fe00, 0x0ad5fe01, 0x0ad5fe02};  // 10.213.254.0/30
    createCellLink(uplink_, netns_, iface_, addresses_);
    applyCellRuleset(uplink_, netns_, plan);
  }

  std::string runToEnd() {
    char go = 1;
    EXPECT_EQ(write(cell_.startFd.get(), &go, 1), 1);
    std::string out = readAllFrom(cell_.stdoutFd.get(), 15000ms);
    readAllFrom(cell_.statusFd.get(), 2000ms);
    return out;
  }

  static core::NftPlan plan() {
    core::NftPlan p;
    p.dnsUid = kDnsUid;
    p.egress.push_back({std::nullopt, "10.214.0.0/24", 8080, "tcp"});
    p.resolvers.push_back({"upstream", "10.214.0.1", 53, "do53-udp"});
    return p;
  }

  std::map<std::string, core::NftCounter> counters() {
    std::map<std::string, core::NftCounter> byId;
    for (auto& c : readCellCounters(uplink_, netns_)) byId[c.id] = c;
    return byId;
  }

  static inline int counter_ = 0;
  std::unique_ptr<UplinkHost> host_;
  int home_ = -1, uplinkFd_ = -1, netns_ = -1;
  UplinkNamespace uplink_;
  std::string cellDir_, cellId_, iface_;
  LaunchedCell cell_{};
  bool launched_ = false;
  core::CellAddressPair addresses_;
};

const char* kProbe = R"(import socket, errno
def tcp(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("10.214.0.1", port))
        return "ok:" + s.recv(16).decode().strip()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "err:" + errno.errorcode.get(e.errno, str(e.errno))
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", ("10.214.0.1", port))
        return "sent"
    except OSError as e:
        return "err:" + errno.errorcode.get(e.errno, str(e.errno))
print("8080", tcp(8080))
print("8081", tcp(8081))
print("53", udp(53))
)";

TEST_F(CellNetworkTest, CellReachesOnlyTheRuledPortAndTheCountersSaySo) {
  launch(kProbe, plan());
  std::string out = runToEnd();
  // A dropped SYN is retransmitted until the client gives up (1 s here), or refused with EPERM:
  // either way nothing may reach the host.
  EXPECT_TRUE(out == "8080 ok:ok\n8081 timeout\n53 err:EPERM\n" ||
              out == "8080 ok:ok\n8081 err:EPERM\n53 err:EPERM\n")
      << out;
  EXPECT_EQ(host_->tcpAccepted(8080), 1);
  EXPECT_EQ(host_->tcpAccepted(8081), 0) << "a port no rule allows was reached";
  EXPECT_EQ(host_->udpReceived(53), 0) << "the workload reached the resolver directly";
  auto byId = counters();
  ASSERT_TRUE(byId.count("egress[0]"));
  EXPECT_GE(byId["egress[0]"].packets, 1u);
  EXPECT_EQ(byId["egress[0]"].verdict, "accept");
  EXPECT_GE(byId["default-drop"].packets, 2u) << "the 8081 SYN and the datagram";
  EXPECT_EQ(byId["default-drop"].verdict, "drop");
  EXPECT_EQ(byId["resolver:upstream"].packets, 0u);
  EXPECT_GE(byId["established"].packets, 1u) << "the rest of the 8080 connection";
}

TEST_F(CellNetworkTest, OnlyTheDnsHelpersUidReachesADeclaredResolver) {
  launch("print('idle')", plan());
  EXPECT_EQ(sendUdpAs(netns_, kOtherUid, "10.214.0.1", 53), EPERM);
  EXPECT_EQ(sendUdpAs(netns_, kDnsUid, "10.214.0.1", 53), 0);
  int received = 0;
  for (int i = 0; i < 100 && received == 0; ++i) {
    received = host_->udpReceived(53);
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(received, 1);
  EXPECT_EQ(counters()["resolver:upstream"].packets, 1u);
  runToEnd();
}

TEST_F(CellNetworkTest, TheCellSideIsAddressedAndRoutedViaTheUplinkEnd) {
  launch(
      "print(open('/proc/net/route').read())\nprint(open('/proc/net/"
      "fib_trie').read().count('10.213.254.2'))",
      plan());
  std::string out = runToEnd();
  // Default route (destination 0) via 10.213.254.1 (little-endian hex 01FED50A) on eth0.
  EXPECT_NE(out.find("eth0\t00000000\t01FED50A"), std::string::npos) << out;
  auto names = host_->interfaces();
  EXPECT_NE(std::find(names.begin(), names.end(), iface_), names.end());
}

TEST_F(CellNetworkTest, TeardownRemovesTheVethAndTheTableAndIsIdempotent) {
  launch("print('x')", plan());
  runToEnd();
  EXPECT_TRUE(cellTableExists(uplink_, netns_));
  EXPECT_TRUE(interfaceExists(uplink_, uplinkFd_, iface_));
  EXPECT_EQ(removeCellNetwork(uplink_, netns_, iface_), std::vector<std::string>{});
  EXPECT_FALSE(cellTableExists(uplink_, netns_));
  EXPECT_FALSE(interfaceExists(uplink_, uplinkFd_, iface_));
  EXPECT_FALSE(interfaceExists(uplink_, netns_, "eth0")) << "the pair goes as one";
  EXPECT_EQ(removeCellNetwork(uplink_, netns_, iface_), std::vector<std::string>{});
}

TEST_F(CellNetworkTest, ALeftoverVethOfTheSameSlotIsReplaced) {
  // A crashed launcher's uplink end with this slot's name (its far end here is in the uplink
  // namespace too) must not block the slot's next cell: it is deleted, pair and all.
  createCellLink(uplink_, uplinkFd_, iface_,
                 core::CellAddressPair{0x0ad5fd00, 0x0ad5fd01, 0x0ad5fd02});
  ASSERT_TRUE(interfaceExists(uplink_, uplinkFd_, iface_));
  launch(kProbe, plan());
  EXPECT_EQ(runToEnd().substr(0, 11), "8080 ok:ok\n");
}

TEST(SlotLease, SlotsAreExclusiveAndFreedWhenTheHolderDies) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (runs with the launcher's privileges)";
  char tmpl[] = "/tmp/cellos-leases-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    SlotLease a = SlotLease::acquire(dir, "pool", 3);
    SlotLease b = SlotLease::acquire(dir, "pool", 3);
    EXPECT_EQ(a.slot(), 0u);
    EXPECT_EQ(b.slot(), 1u);
    EXPECT_FALSE(SlotLease::tryAcquire(dir, "pool", 0).has_value());
    SlotLease c = SlotLease::acquire(dir, "pool", 3);
    EXPECT_THROW(SlotLease::acquire(dir, "pool", 3), std::runtime_error);
    b.release();
    EXPECT_EQ(SlotLease::acquire(dir, "pool", 3).slot(), 1u);
    EXPECT_EQ(SlotLease::acquire(dir, "other", 3).slot(), 0u) << "pools are independent";
  }
  // A holder that dies without releasing (kill -9) frees its slot at once.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t holder = fork();
  if (holder == 0) {
    SlotLease lease = SlotLease::acquire(dir, "pool", 1);
    ssize_t ignored = write(ready[1], "x", 1);
    (void)ignored;
    pause();
    _exit(0);
  }
  char byte;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  EXPECT_FALSE(SlotLease::tryAcquire(dir, "pool", 0).has_value());
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  EXPECT_TRUE(SlotLease::tryAcquire(dir, "pool", 0).has_value());
  std::filesystem::remove_all(dir);
}

TEST(CellRecords, OnlyRecordsOfDeadLaunchersAreClaimed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (runs with the launcher's privileges)";
  char tmpl[] = "/tmp/cellos-records-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  CellRecord record;
  record.cellId = "rec-1";
  record.cellDir = "/run/x/cells/rec-1";
  record.uplinkInterface = "cellos7";
  record.uplinkNetnsIno = 42;
  record.idBase = 0x70070000;
  record.idSize = 65536;
  record.cellAddress = "10.213.0.30";
  {
    CellRecordFile live = CellRecordFile::create(dir, record);
    EXPECT_THROW(CellRecordFile::create(dir, record), std::system_error) << "one record per cell";
    EXPECT_TRUE(claimOrphanedRecords(dir).empty()) << "a live launcher's record was claimed";
  }  // the holder is gone, the file stays
  auto orphans = claimOrphanedRecords(dir);
  ASSERT_EQ(orphans.size(), 1u);
  EXPECT_EQ(orphans[0].record.cellId, "rec-1");
  EXPECT_EQ(orphans[0].record.uplinkInterface, "cellos7");
  EXPECT_EQ(orphans[0].record.uplinkNetnsIno, 42u);
  EXPECT_EQ(orphans[0].record.idBase, 0x70070000u);
  EXPECT_EQ(orphans[0].record.cellAddress, "10.213.0.30");
  close(orphans[0].lockFd);
  {
    CellRecordFile again = [&] {
      std::filesystem::remove(cellRecordPath(dir, "rec-1"));
      return CellRecordFile::create(dir, record);
    }();
    again.remove();
  }
  EXPECT_FALSE(std::filesystem::exists(cellRecordPath(dir, "rec-1")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cellos::vmm
