// ipc::PeerPolicy and ipc::RpcListener for real: a listener in this process on a socket in a
// temp directory, peers in forked children that connect under other identities. SO_PEERCRED
// and SO_PEERGROUPS describe the peer as it was at connect(), so a child switches identity
// first and connects second.
//
// The refusal tests are sequenced so that "not one byte was read" is something the kernel
// reports rather than something we infer: the child writes a well-formed RPC Bootstrap message
// while the listener is not yet accepting, and only then does the listener run. A Unix socket
// closed with unread data in its receive queue makes the peer's next read fail with
// ECONNRESET (net/unix/af_unix.c, unix_release_sock); a server that had read the message and
// then hung up would give a plain EOF instead.

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include "ipc/signer.capnp.h"
#include "ipc/socket.h"
#include "tests/integration/rpc_frames.h"

namespace cellos::ipc {
namespace {

using namespace std::chrono_literals;
using cellos::testing::abortReason;
using cellos::testing::answersBootstrap;
using cellos::testing::bootstrapMessageBytes;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
// Groups no account on a test machine is expected to use; they only need to be distinct.
constexpr gid_t kTestGroup = 47211;
constexpr gid_t kOtherTestGroup = 47212;
// A uid no account is expected to use, for a second peer beside `nobody`.
constexpr uid_t kOtherUid = 47213;

// ---------------------------------------------------------------------------------------------
// PeerPolicy::allows, pure.

PeerCredentials peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  return PeerCredentials{1234, uid, gid, std::move(groups)};
}

TEST(PeerPolicy, EmptyPolicyAllowsNobodyNotEvenRoot) {
  PeerPolicy empty;
  EXPECT_FALSE(empty.allows(peer(0, 0)));
  EXPECT_FALSE(empty.allows(peer(0, 0, {0})));
  EXPECT_FALSE(empty.allows(peer(1000, 1000, {27, 100})));
  EXPECT_FALSE(empty.allows(peer(kNobody, kNogroup)));
}

TEST(PeerPolicy, AllowsAListedUidWhateverItsGroups) {
  PeerPolicy policy{{1000}, {}};
  EXPECT_TRUE(policy.allows(peer(1000, 1000)));
  EXPECT_TRUE(policy.allows(peer(1000, 5, {6, 7})));
  EXPECT_FALSE(policy.allows(peer(1001, 1001)));
  // A uid list is not a gid list: gid 1000 is not uid 1000.
  EXPECT_FALSE(policy.allows(peer(1001, 1000, {1000})));
  EXPECT_FALSE(policy.allows(peer(0, 0)));
}

TEST(PeerPolicy, AllowsAListedPrimaryGid) {
  PeerPolicy policy{{}, {50}};
  EXPECT_TRUE(policy.allows(peer(7, 50)));
  // A gid list is not a uid list: uid 50 is not gid 50.
  EXPECT_FALSE(policy.allows(peer(50, 7)));
  EXPECT_FALSE(policy.allows(peer(7, 51)));
}

TEST(PeerPolicy, AllowsAListedSupplementaryGroup) {
  PeerPolicy policy{{}, {50}};
  EXPECT_TRUE(policy.allows(peer(7, 8, {9, 50})));
  EXPECT_TRUE(policy.allows(peer(7, 8, {50})));
  EXPECT_FALSE(policy.allows(peer(7, 8, {9, 49, 51})));
  EXPECT_FALSE(policy.allows(peer(7, 8, {})));
}

TEST(PeerPolicy, AnyListedIdIsEnough) {
  PeerPolicy policy{{0, 999}, {50, 60}};
  EXPECT_TRUE(policy.allows(peer(0, 1)));
  EXPECT_TRUE(policy.allows(peer(999, 1)));
  EXPECT_TRUE(policy.allows(peer(5, 60)));
  EXPECT_TRUE(policy.allows(peer(5, 6, {60})));
  EXPECT_FALSE(policy.allows(peer(5, 6, {7})));
}

TEST(PeerPolicy, DescribeNamesEveryId) {
  EXPECT_EQ(PeerPolicy({{0, 999}, {50}}).describe(), "uids {0,999} gids {50}");
  EXPECT_EQ(PeerPolicy().describe(), "uids {} gids {}");
}

// ---------------------------------------------------------------------------------------------
// A peer in a child process.

// Who a child becomes before it connects.
struct Identity {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};

// What a peer saw. Plain data: a child sends it to the test through a pipe.
struct PeerReport {
  int setupErrno = 0;    // switching identity failed
  int connectErrno = 0;  // connect() failed
  int writeErrno = 0;    // sending our message failed
  int readErrno = 0;     // the first failing read (ECONNRESET: closed with our bytes unread)
  bool eof = false;      // read() returned 0
  bool timedOut = false;
  size_t bytesReceived = 0;
  bool bootstrapAnswered = false;  // a whole rpc Return for question 0 arrived
  bool closedUnread() const { return readErrno == ECONNRESET && bytesReceived == 0; }
};

// Connects to `path`, sends `message`, writes one byte to `writtenFd` (so the test knows the
// message is queued at the server), then reads until the server closes, answers the bootstrap,
// or `timeout` passes.
PeerReport talk(const std::string& path, const std::string& message, int writtenFd,
                std::chrono::milliseconds timeout) {
  PeerReport report;
  auto notify = [&] {
    char w = 'w';
    (void)!write(writtenFd, &w, 1);
  };
  // A raw connect() rather than connectUnix(): the errno is part of the report.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    report.connectErrno = errno;
    if (fd >= 0) close(fd);
    notify();
    return report;
  }
  if (send(fd, message.data(), message.size(), MSG_NOSIGNAL) != ssize_t(message.size())) {
    report.writeErrno = errno;
  }
  notify();
  std::string received;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, left.count()) == 0) {
      report.timedOut = true;
      break;
    }
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      report.readErrno = errno;
      break;
    }
    if (n == 0) {
      report.eof = true;
      break;
    }
    received.append(buffer, n);
    report.bytesReceived = received.size();
    if (auto answered = answersBootstrap(received)) {
      report.bootstrapAnswered = *answered;
      break;
    }
  }
  close(fd);
  return report;
}

// Waits (bounded) for `pid` to exit and returns its wait status; kills it if it hangs.
int reap(pid_t pid) {
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ADD_FAILURE() << "peer process " << pid << " did not exit";
      return status;
    }
    std::this_thread::sleep_for(5ms);
  }
  return status;
}

// ---------------------------------------------------------------------------------------------
// RpcListener, in process.

// keyset() answers a fixed string; sign() keeps Cap'n Proto's default answer (UNIMPLEMENTED).
class TestSigner final : public EventSigner::Server {
 public:
  kj::Promise<void> keyset(KeysetContext context) override {
    context.getResults().setJson(kTestKeyset);
    return kj::READY_NOW;
  }
  static constexpr const char* kTestKeyset = "{\"test:1\":\"AAAA\"}";
};

class RpcListenerTest : public ::testing::Test {
 protected:
  // kj::Own members make the implicit destructor noexcept(false); gtest's is noexcept.
  ~RpcListenerTest() noexcept override {}

  void SetUp() override {
    char dir[] = "/tmp/cellos-ipc-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr) << strerror(errno);
    dir_ = dir;
    // Peers of any uid must reach the socket: the listener's policy, not file modes, decides.
    ASSERT_EQ(chmod(dir_.c_str(), 0711), 0) << strerror(errno);
    socketPath_ = dir_ + "/test.sock";
  }

  void TearDown() override {
    listener_ = nullptr;
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void listen(PeerPolicy policy, ConnectionLimits limits = {}) {
    auto fd = listenUnix({socketPath_, 0666, std::nullopt, std::nullopt});
    listener_ = kj::heap<RpcListener>(
        io_, kj::mv(fd), "test.sock", std::move(policy), LinkOptions{}, limits,
        [this](const PeerCredentials& credentials) -> capnp::Capability::Client {
          ++bootstraps_;
          lastPeer_ = credentials;
          return kj::heap<TestSigner>();
        });
  }

  // Runs a peer as `identity` (nullopt: as ourselves) that sends a Bootstrap message; the
  // listener starts accepting only once that message is queued at the server.
  PeerReport runPeer(std::optional<Identity> identity) {
    const std::string message = bootstrapMessageBytes();
    int pipeFds[2];
    KJ_SYSCALL(pipe2(pipeFds, O_CLOEXEC));
    kj::AutoCloseFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
    pid_t pid = fork();
    KJ_ASSERT(pid >= 0, "fork", strerror(errno));
    if (pid == 0) {
      PeerReport report;
      if (identity && (setgroups(identity->groups.size(), identity->groups.data()) < 0 ||
                       setresgid(identity->gid, identity->gid, identity->gid) < 0 ||
                       setresuid(identity->uid, identity->uid, identity->uid) < 0)) {
        report.setupErrno = errno;
        char w = 'w';
        (void)!write(writeEnd, &w, 1);
      } else {
        report = talk(socketPath_, message, writeEnd, 5000ms);
      }
      (void)!write(writeEnd, &report, sizeof(report));
      _exit(0);
    }
    writeEnd = nullptr;

    // The message is in the server's receive queue before the listener accepts anything.
    pollfd p{readEnd, POLLIN, 0};
    char written = 0;
    EXPECT_EQ(poll(&p, 1, 5000), 1) << "peer never reported its write";
    EXPECT_EQ(read(readEnd, &written, 1), 1);

    auto serving = listener_->run().eagerlyEvaluate(
        [](kj::Exception&& e) { ADD_FAILURE() << "listener: " << e.getDescription().cStr(); });
    PeerReport report;
    auto input = io_.lowLevelProvider->wrapInputFd(readEnd.get());
    size_t got =
        io_.provider->getTimer()
            .timeoutAfter(10 * kj::SECONDS, input->tryRead(&report, sizeof(report), sizeof(report)))
            .wait(io_.waitScope);
    EXPECT_EQ(got, sizeof(report)) << "peer died without a report";
    int status = reap(pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    // Let the listener notice the peer's hang-up (bounded), so connectionCount() is settled.
    waitUntil([&] { return listener_->connectionCount() == 0; }, 2 * kj::SECONDS);
    return report;
  }

  // Runs the event loop until `done` or `limit` passes; returns whether `done` held.
  bool waitUntil(kj::Function<bool()> done, kj::Duration limit) {
    auto& timer = io_.provider->getTimer();
    auto deadline = timer.now() + limit;
    while (!done()) {
      if (timer.now() >= deadline) return false;
      timer.afterDelay(5 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    return true;
  }

  // One keyset() call from this process over a fresh connection.
  std::string callKeysetInProcess() {
    RpcLink link(*io_.lowLevelProvider, connectUnix(socketPath_), LinkOptions{},
                 capnp::rpc::twoparty::Side::CLIENT, nullptr);
    auto signer = link.bootstrap<EventSigner>();
    auto serving = listener_->run().eagerlyEvaluate(
        [](kj::Exception&& e) { ADD_FAILURE() << "listener: " << e.getDescription().cStr(); });
    auto response = withTimeout(io_.provider->getTimer(), 10 * kj::SECONDS, "keyset",
                                signer.keysetRequest().send())
                        .wait(io_.waitScope);
    return response.getJson().cStr();
  }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  std::string dir_;
  std::string socketPath_;
  int bootstraps_ = 0;
  PeerCredentials lastPeer_;
  kj::Own<RpcListener> listener_;
};

bool runningAsRoot() {
  return geteuid() == 0;
}

TEST_F(RpcListenerTest, ServesAnAllowedPeerAndReportsItsCredentials) {
  listen(PeerPolicy{{getuid()}, {}});
  EXPECT_EQ(callKeysetInProcess(), TestSigner::kTestKeyset);
  EXPECT_EQ(bootstraps_, 1);
  EXPECT_EQ(lastPeer_.pid, getpid());
  EXPECT_EQ(lastPeer_.uid, getuid());
  EXPECT_EQ(lastPeer_.gid, getgid());
}

TEST_F(RpcListenerTest, EmptyPolicyClosesTheConnectionWithoutReadingIt) {
  listen(PeerPolicy{});
  PeerReport report = runPeer(std::nullopt);  // ourselves, root or not
  EXPECT_EQ(report.connectErrno, 0) << strerror(report.connectErrno);
  EXPECT_EQ(report.writeErrno, 0) << strerror(report.writeErrno);
  EXPECT_TRUE(report.closedUnread())
      << "readErrno " << report.readErrno << " eof " << report.eof << " bytes "
      << report.bytesReceived << " timedOut " << report.timedOut;
  EXPECT_EQ(bootstraps_, 0);
  EXPECT_EQ(listener_->connectionCount(), 0u);
}

TEST_F(RpcListenerTest, RefusesAnUnlistedUidBeforeReadingAnyByteAndKeepsServing) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  listen(PeerPolicy{{0}, {}});
  PeerReport report = runPeer(Identity{kNobody, kNogroup, {}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_EQ(report.connectErrno, 0) << strerror(report.connectErrno);
  EXPECT_EQ(report.writeErrno, 0) << strerror(report.writeErrno);
  EXPECT_TRUE(report.closedUnread())
      << "readErrno " << report.readErrno << " eof " << report.eof << " bytes "
      << report.bytesReceived << " timedOut " << report.timedOut;
  EXPECT_FALSE(report.bootstrapAnswered);
  EXPECT_EQ(bootstraps_, 0) << "a bootstrap was built for a refused peer";
  EXPECT_EQ(listener_->connectionCount(), 0u);

  // The refusal cost the listener nothing: the next (allowed) peer is served.
  EXPECT_EQ(callKeysetInProcess(), TestSigner::kTestKeyset);
  EXPECT_EQ(bootstraps_, 1);
  EXPECT_EQ(lastPeer_.uid, 0u);
}

TEST_F(RpcListenerTest, AnswersTheSameBytesFromAListedUid) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  // The control for the refusal tests: the message they send is one a listener answers.
  listen(PeerPolicy{{kNobody}, {}});
  PeerReport report = runPeer(Identity{kNobody, kNogroup, {}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_TRUE(report.bootstrapAnswered)
      << "bytes " << report.bytesReceived << " readErrno " << report.readErrno << " eof "
      << report.eof << " timedOut " << report.timedOut;
  EXPECT_EQ(bootstraps_, 1);
  EXPECT_EQ(lastPeer_.uid, kNobody);
  EXPECT_EQ(lastPeer_.gid, kNogroup);
  EXPECT_EQ(listener_->connectionCount(), 0u) << "the peer's hang-up was not noticed";
}

TEST_F(RpcListenerTest, AllowsAPeerByPrimaryGid) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  listen(PeerPolicy{{}, {kTestGroup}});
  PeerReport report = runPeer(Identity{kNobody, kTestGroup, {}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_TRUE(report.bootstrapAnswered) << "bytes " << report.bytesReceived;
  EXPECT_EQ(bootstraps_, 1);
  EXPECT_EQ(lastPeer_.uid, kNobody);
  EXPECT_EQ(lastPeer_.gid, kTestGroup);
}

TEST_F(RpcListenerTest, AllowsAPeerBySupplementaryGroup) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  listen(PeerPolicy{{}, {kTestGroup}});
  PeerReport report = runPeer(Identity{kNobody, kNogroup, {kOtherTestGroup, kTestGroup}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_TRUE(report.bootstrapAnswered) << "bytes " << report.bytesReceived;
  EXPECT_EQ(bootstraps_, 1);
  EXPECT_EQ(lastPeer_.gid, kNogroup);
  // SO_PEERGROUPS: the groups the peer held at connect().
  EXPECT_NE(std::find(lastPeer_.groups.begin(), lastPeer_.groups.end(), kTestGroup),
            lastPeer_.groups.end());
  EXPECT_NE(std::find(lastPeer_.groups.begin(), lastPeer_.groups.end(), kOtherTestGroup),
            lastPeer_.groups.end());
}

TEST_F(RpcListenerTest, RefusesAPeerWhoseGroupsAreAllUnlisted) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  listen(PeerPolicy{{0}, {kTestGroup}});
  PeerReport report = runPeer(Identity{kNobody, kNogroup, {kOtherTestGroup}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_TRUE(report.closedUnread()) << "readErrno " << report.readErrno << " eof " << report.eof
                                     << " bytes " << report.bytesReceived;
  EXPECT_EQ(bootstraps_, 0);
}

TEST_F(RpcListenerTest, GroupsDroppedBeforeConnectDoNotCount) {
  if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as another uid)";
  // The test process (root) may itself hold kTestGroup-like groups; the child clears all of
  // them, so only what it holds at connect() may matter.
  listen(PeerPolicy{{}, {0}});
  PeerReport report = runPeer(Identity{kNobody, kNogroup, {}});
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_TRUE(report.closedUnread()) << "bytes " << report.bytesReceived;
  EXPECT_EQ(bootstraps_, 0);
}

// ---------------------------------------------------------------------------------------------
// Connection limits: a flood of connections from one uid, many uids, silent and garbage peers.

enum class FloodSends { kBootstrap, kNothing, kGarbage };

// What a flooding peer saw on its connections. Plain data, sent through a pipe.
struct FloodReport {
  int setupErrno = 0;
  int connectErrno = 0;  // the first connect() that failed
  unsigned connected = 0;
  unsigned answered = 0;  // the bootstrap was answered: served
  unsigned refused = 0;   // an rpc Abort came first
  unsigned closed = 0;    // closed (EOF, reset, or an Abort that is no refusal)
  unsigned pending = 0;   // nothing came before the deadline
  char reason[256] = {};  // the first Abort's reason
};

// A peer process that holds many connections: started with start(), its report read with
// report() (running the test's event loop meanwhile, so the listener serves it), and its
// connections kept open until release().
class Flood {
 public:
  Flood(kj::AsyncIoContext& io, std::string path, Identity identity, unsigned count,
        FloodSends sends, std::chrono::milliseconds wait)
      : io_(io) {
    int report[2], release[2];
    KJ_SYSCALL(pipe2(report, O_CLOEXEC));
    KJ_SYSCALL(pipe2(release, O_CLOEXEC));
    pid_ = fork();
    KJ_ASSERT(pid_ >= 0, "fork", strerror(errno));
    if (pid_ == 0) {
      // Only our two pipe ends: another flood's release pipe must not stay open in us.
      if (dup2(report[1], 3) < 0 || dup2(release[0], 4) < 0) _exit(1);
      syscall(SYS_close_range, 5, ~0U, 0);
      FloodReport result = run(path, identity, count, sends, wait);
      (void)!write(3, &result, sizeof(result));
      pollfd p{4, POLLIN, 0};
      poll(&p, 1, 60000);  // hold every connection until the test is done with them
      _exit(0);
    }
    close(report[1]);
    close(release[0]);
    reportFd_ = kj::AutoCloseFd(report[0]);
    releaseFd_ = kj::AutoCloseFd(release[1]);
  }
  ~Flood() { release(); }

  FloodReport report() {
    FloodReport result;
    auto input = io_.lowLevelProvider->wrapInputFd(reportFd_.get());
    size_t got =
        io_.provider->getTimer()
            .timeoutAfter(60 * kj::SECONDS, input->tryRead(&result, sizeof(result), sizeof(result)))
            .wait(io_.waitScope);
    EXPECT_EQ(got, sizeof(result)) << "the flooding peer died without a report";
    return result;
  }

  void release() {
    if (pid_ <= 0) return;
    releaseFd_ = nullptr;
    reportFd_ = nullptr;
    int status = reap(pid_);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pid_ = -1;
  }

 private:
  static FloodReport run(const std::string& path, const Identity& identity, unsigned count,
                         FloodSends sends, std::chrono::milliseconds wait) {
    FloodReport report;
    if (setgroups(identity.groups.size(), identity.groups.data()) < 0 ||
        setresgid(identity.gid, identity.gid, identity.gid) < 0 ||
        setresuid(identity.uid, identity.uid, identity.uid) < 0) {
      report.setupErrno = errno;
      return report;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    const std::string bootstrap = bootstrapMessageBytes();
    const std::string garbage(64, '\xff');  // a segment count no reader accepts
    std::vector<int> fds;
    for (unsigned i = 0; i < count; ++i) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
        report.connectErrno = errno;
        if (fd >= 0) close(fd);
        break;
      }
      ++report.connected;
      const std::string& message = sends == FloodSends::kBootstrap ? bootstrap : garbage;
      if (sends != FloodSends::kNothing)
        (void)send(fd, message.data(), message.size(), MSG_NOSIGNAL);
      fds.push_back(fd);
    }
    // Each connection's first answer, within `wait` for all of them together.
    auto deadline = std::chrono::steady_clock::now() + wait;
    for (int fd : fds) {
      std::string received;
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, left.count()) == 0) {
          ++report.pending;
          break;
        }
        char buffer[4096];
        ssize_t n = read(fd, buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ++report.closed;
          break;
        }
        received.append(buffer, n);
        if (auto reason = abortReason(received); reason && !reason->empty()) {
          // A refusal for a limit says so; any other Abort (an unreadable frame, the server
          // closing the link) is the connection ending.
          if (reason->find("refused the connection") == std::string::npos) {
            ++report.closed;
          } else if (report.refused++ == 0) {
            strncpy(report.reason, reason->c_str(), sizeof(report.reason) - 1);
          }
          break;
        }
        if (auto answered = answersBootstrap(received)) {
          report.answered += *answered;
          break;
        }
      }
    }
    return report;  // the fds stay open until the process exits
  }

  kj::AsyncIoContext& io_;
  pid_t pid_ = -1;
  kj::AutoCloseFd reportFd_, releaseFd_;
};

class RpcListenerLimitsTest : public RpcListenerTest {
 protected:
  ~RpcListenerLimitsTest() noexcept override {}

  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "needs root (to connect as other uids)";
    RpcListenerTest::SetUp();
  }
  void TearDown() override {
    serving_ = nullptr;  // before the listener it waits on
    RpcListenerTest::TearDown();
  }

  void serve(PeerPolicy policy, ConnectionLimits limits) {
    listen(std::move(policy), limits);
    serving_ = listener_->run().eagerlyEvaluate(
        [](kj::Exception&& e) { ADD_FAILURE() << "listener: " << e.getDescription().cStr(); });
  }

  // One keyset() call from this process (root) while the listener serves; its error if it fails.
  std::string keysetOrError() {
    RpcLink link(*io_.lowLevelProvider, connectUnix(socketPath_), LinkOptions{},
                 capnp::rpc::twoparty::Side::CLIENT, nullptr);
    auto signer = link.bootstrap<EventSigner>();
    try {
      auto response = withTimeout(io_.provider->getTimer(), 10 * kj::SECONDS, "keyset",
                                  signer.keysetRequest().send())
                          .wait(io_.waitScope);
      return response.getJson().cStr();
    } catch (const kj::Exception& e) {
      return std::string("error: ") + e.getDescription().cStr();
    }
  }

  static size_t openFds() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
      ++n;
    return n;
  }

  kj::Promise<void> serving_ = nullptr;
};

const Identity kNobodyPeer{kNobody, kNogroup, {}};
const Identity kOtherPeer{kOtherUid, kNogroup, {}};

TEST_F(RpcListenerLimitsTest, AFloodFromOneUidIsRefusedAtItsCapWhileAnotherUidCompletesAnRpc) {
  serve(PeerPolicy{{0, kNobody}, {}}, {.perUid = 8, .total = 64});
  Flood flood(io_, socketPath_, kNobodyPeer, 40, FloodSends::kBootstrap, 10000ms);
  FloodReport report = flood.report();
  ASSERT_EQ(report.setupErrno, 0) << strerror(report.setupErrno);
  EXPECT_EQ(report.connectErrno, 0) << strerror(report.connectErrno);
  EXPECT_EQ(report.connected, 40u);
  EXPECT_EQ(report.answered, 8u) << "served beyond the per-uid cap";
  EXPECT_EQ(report.refused, 32u);
  EXPECT_EQ(report.closed + report.pending, 0u);
  EXPECT_STREQ(report.reason,
               "test.sock refused the connection: too many connections from uid 65534 (8 open, "
               "at most 8 per uid)");
  EXPECT_EQ(listener_->connectionCount(), 8u);
  EXPECT_EQ(listener_->refusedForLimits(), 32u);
  // The refused connections stay open only briefly, a few per uid, for their peers to read why.
  EXPECT_LE(listener_->lingeringCount(), 4u);
  EXPECT_TRUE(waitUntil([&] { return listener_->lingeringCount() == 0; }, 5 * kj::SECONDS));

  // Meanwhile another uid (root, this process) is served as if nothing happened.
  EXPECT_EQ(keysetOrError(), TestSigner::kTestKeyset);
  flood.release();
  EXPECT_TRUE(waitUntil([&] { return listener_->connectionCount() == 0; }, 5 * kj::SECONDS));
}

TEST_F(RpcListenerLimitsTest, TheGlobalCapHoldsAcrossUidsAndTheRefusedClientIsToldWhy) {
  serve(PeerPolicy{{0, kNobody, kOtherUid}, {}}, {.perUid = 6, .total = 10});
  Flood first(io_, socketPath_, kNobodyPeer, 6, FloodSends::kBootstrap, 10000ms);
  FloodReport a = first.report();
  ASSERT_EQ(a.setupErrno, 0) << strerror(a.setupErrno);
  EXPECT_EQ(a.answered, 6u);
  Flood second(io_, socketPath_, kOtherPeer, 6, FloodSends::kBootstrap, 10000ms);
  FloodReport b = second.report();
  ASSERT_EQ(b.setupErrno, 0) << strerror(b.setupErrno);
  EXPECT_EQ(b.answered, 4u) << "served beyond the global cap";
  EXPECT_EQ(b.refused, 2u);
  EXPECT_STREQ(b.reason,
               "test.sock refused the connection: too many connections in all (10 open, at most "
               "10)");
  EXPECT_EQ(listener_->connectionCount(), 10u);

  // A client refused at the cap learns why from its first call: what `cellos` prints.
  std::string refused = keysetOrError();
  EXPECT_NE(refused.find("test.sock refused the connection: too many connections in all"),
            std::string::npos)
      << refused;
  first.release();
  EXPECT_TRUE(waitUntil([&] { return listener_->connectionCount() == 4; }, 5 * kj::SECONDS));
  EXPECT_EQ(keysetOrError(), TestSigner::kTestKeyset);
}

TEST_F(RpcListenerLimitsTest, SilentAndGarbageConnectionsAreClosedAndLeaveNoDescriptorBehind) {
  serve(PeerPolicy{{0, kNobody}, {}},
        {.perUid = 4, .total = 16, .bootstrapTimeout = 300 * kj::MILLISECONDS});
  size_t fdsBefore = openFds();
  // Twelve silent connections: four are held until the bootstrap timeout closes them, the rest
  // are refused at the per-uid cap at once.
  Flood silent(io_, socketPath_, kNobodyPeer, 12, FloodSends::kNothing, 10000ms);
  FloodReport s = silent.report();
  ASSERT_EQ(s.setupErrno, 0) << strerror(s.setupErrno);
  EXPECT_EQ(s.connected, 12u);
  EXPECT_EQ(s.refused, 8u);
  EXPECT_EQ(s.closed, 4u) << "a silent connection was kept past the bootstrap timeout";
  EXPECT_EQ(s.pending, 0u);
  // Garbage: each connection is closed as soon as its first frame is unreadable.
  Flood garbage(io_, socketPath_, kNobodyPeer, 4, FloodSends::kGarbage, 10000ms);
  FloodReport g = garbage.report();
  EXPECT_EQ(g.closed, 4u);
  EXPECT_EQ(g.answered + g.pending, 0u);
  EXPECT_TRUE(waitUntil([&] { return listener_->connectionCount() == 0; }, 5 * kj::SECONDS));
  silent.release();
  garbage.release();
  // Every descriptor they took is back.
  EXPECT_TRUE(waitUntil([&] { return openFds() == fdsBefore; }, 5 * kj::SECONDS))
      << openFds() << " open, " << fdsBefore << " before";
  EXPECT_EQ(keysetOrError(), TestSigner::kTestKeyset);
}

TEST_F(RpcListenerLimitsTest, RefusalsAreLoggedOncePerIntervalNamingTheUidAndTheCounts) {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto capture = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_st>(log));
  spdlog::set_default_logger(capture);
  serve(PeerPolicy{{0, kNobody}, {}}, {.perUid = 2, .total = 64});
  Flood flood(io_, socketPath_, kNobodyPeer, 200, FloodSends::kBootstrap, 10000ms);
  FloodReport report = flood.report();
  spdlog::set_default_logger(previous);
  EXPECT_EQ(report.refused, 198u);
  std::string text = log.str();
  size_t lines = std::count(text.begin(), text.end(), '\n');
  EXPECT_EQ(lines, 1u) << "198 refusals within one interval must give one line:\n" << text;
  EXPECT_NE(text.find("test.sock: refused pid "), std::string::npos) << text;
  EXPECT_NE(text.find("uid 65534: 2 open from uid 65534 (at most 2 per uid), 2 in all (at most "
                      "64)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace cellos::ipc
