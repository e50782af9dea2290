// The four daemons' sockets against hostile local peers, for real: cli::EmbeddedSystem starts
// cellos-event-signer, cellos-vmm-agent, cellos-dns-helper and cellos-broker from the build's
// bin directory (as `cellos run` does), and each test talks to their sockets with raw bytes.
//
//  - A peer whose uid is on no allowlist is refused before any message is read: it gets a
//    closed connection and no reply, where root sending the very same bytes gets an answer.
//  - Broken framing (the 8 bytes ff ff ff ff 00 00 00 00, absurd segment counts and sizes,
//    random bytes) costs the sender its own connection and nothing else: the daemon closes it
//    promptly, stays alive, and answers the next, well-formed client.
//
// Every case needs root (EmbeddedSystem starts the daemons as root, and peers switch uid).

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include "broker/cli/embedded.h"
#include "ipc/broker.capnp.h"
#include "ipc/dns.capnp.h"
#include "ipc/signer.capnp.h"
#include "ipc/socket.h"
#include "ipc/vmm.capnp.h"
#include "tests/integration/rpc_frames.h"

namespace cellos {
namespace {

using namespace std::chrono_literals;
using testing::answersBootstrap;
using testing::bootstrapMessageBytes;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
// A uid no account is expected to use: a would-be member of group cellos.
constexpr uid_t kMemberUid = 47213;
// How long a daemon may take to hang up on a peer it refuses or cannot parse.
constexpr auto kCloseWithin = 5000ms;

enum class Daemon { kSigner, kVmmAgent, kDnsHelper, kBroker };
const Daemon kAllDaemons[] = {Daemon::kSigner, Daemon::kVmmAgent, Daemon::kDnsHelper,
                              Daemon::kBroker};

const char* socketName(Daemon d) {
  switch (d) {
    case Daemon::kSigner:
      return "signer.sock";
    case Daemon::kVmmAgent:
      return "vmm.sock";
    case Daemon::kDnsHelper:
      return "dns.sock";
    case Daemon::kBroker:
      return "broker.sock";
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Raw peers.

// What a peer saw. Plain data: a child sends it to the test through a pipe.
struct Exchange {
  int setupErrno = 0;    // switching identity failed
  int connectErrno = 0;  // connect() failed
  int writeErrno = 0;    // sending our bytes failed (EPIPE: the server had already closed)
  int readErrno = 0;     // the failing read (ECONNRESET: closed with some of our bytes unread)
  bool eof = false;      // read() returned 0
  bool timedOut = false;
  size_t bytesReceived = 0;
  bool bootstrapAnswered = false;  // a whole rpc Return for question 0 arrived
  // The server hung up on us (with or without having read what we sent).
  bool closed() const { return eof || readErrno == ECONNRESET; }
};

std::string describe(const Exchange& e) {
  return "setupErrno=" + std::to_string(e.setupErrno) +
         " connectErrno=" + std::to_string(e.connectErrno) +
         " writeErrno=" + std::to_string(e.writeErrno) +
         " readErrno=" + std::to_string(e.readErrno) + " eof=" + std::to_string(e.eof) +
         " timedOut=" + std::to_string(e.timedOut) +
         " bytesReceived=" + std::to_string(e.bytesReceived) +
         " bootstrapAnswered=" + std::to_string(e.bootstrapAnswered);
}

struct SendOptions {
  bool shutdownWrite = false;    // half-close after sending: "that is all you get"
  bool stopAtBootstrap = false;  // stop reading once the bootstrap is answered
};

// Connects to `path`, sends `bytes`, and reads (discarding) until the server closes, the
// bootstrap is answered (when asked to stop there), or `timeout` passes.
Exchange exchange(const std::string& path, const std::string& bytes, SendOptions options,
                  std::chrono::milliseconds timeout) {
  Exchange report;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    report.connectErrno = errno;
    if (fd >= 0) close(fd);
    return report;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      report.writeErrno = errno;
      break;
    }
    sent += n;
  }
  if (options.shutdownWrite && report.writeErrno == 0) shutdown(fd, SHUT_WR);
  std::string received;
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
    if (options.stopAtBootstrap) {
      if (auto answered = answersBootstrap(received)) {
        report.bootstrapAnswered = *answered;
        break;
      }
    }
  }
  close(fd);
  return report;
}

// Runs exchange() in a child that first becomes `uid`/`gid` with no supplementary groups.
Exchange exchangeAs(uid_t uid, gid_t gid, const std::string& path, const std::string& bytes,
                    SendOptions options, std::chrono::milliseconds timeout) {
  int pipeFds[2];
  KJ_SYSCALL(pipe2(pipeFds, O_CLOEXEC));
  kj::AutoCloseFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  pid_t pid = fork();
  KJ_ASSERT(pid >= 0, "fork", strerror(errno));
  if (pid == 0) {
    Exchange report;
    if (setgroups(0, nullptr) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
      report.setupErrno = errno;
    } else {
      report = exchange(path, bytes, options, timeout);
    }
    (void)!write(writeEnd, &report, sizeof(report));
    _exit(0);
  }
  writeEnd = nullptr;
  Exchange report;
  pollfd p{readEnd, POLLIN, 0};
  int waitMs = int(timeout.count()) + 5000;
  bool got = poll(&p, 1, waitMs) == 1 && read(readEnd, &report, sizeof(report)) == sizeof(report);
  int status = 0;
  if (!got) kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  EXPECT_TRUE(got) << "peer process gave no report";
  return report;
}

// Frame headers and junk a hostile local peer might send instead of a message.
std::string le32(uint32_t v) {
  return std::string{char(v & 0xff), char((v >> 8) & 0xff), char((v >> 16) & 0xff),
                     char((v >> 24) & 0xff)};
}
// The acceptance case: a segment count field of 0xffffffff (which wraps to 0 segments) and a
// first segment size of 0.
const std::string kBadHeader("\xff\xff\xff\xff\x00\x00\x00\x00", 8);

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 generator(seed);  // fixed seed: a failure reproduces
  std::string out(n, '\0');
  for (auto& c : out) c = char(generator() & 0xff);
  return out;
}

struct Garbage {
  const char* name;
  std::string bytes;
  // Whether the server must hang up on its own; otherwise we half-close after sending (a
  // frame that is incomplete, or well-framed junk the RPC layer may just answer).
  bool serverMustClose;
};

// A well-formed RPC Abort: legal for any allowed client to send, and it ends the connection.
std::string abortMessageBytes() {
  capnp::MallocMessageBuilder message;
  message.initRoot<capnp::rpc::Message>().initAbort().setReason("test client gives up");
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

std::vector<Garbage> garbagePatterns() {
  std::string randomFrame = le32(0) + le32(64) + randomBytes(64 * 8, 7);
  return {
      {"ff ff ff ff 00 00 00 00", kBadHeader, true},
      {"2^31 segments", le32(0x7fffffff) + le32(1), true},
      {"512 segments", le32(511) + std::string(512 * 4 + 4, '\x01'), true},
      {"segment of 2^31 words", le32(0) + le32(0x80000000u) + std::string(64, '\0'), true},
      {"segment of 2^32-1 words", le32(0) + le32(0xffffffffu), true},
      {"random bytes", randomBytes(4096, 1), false},
      {"random message body", randomFrame, false},
      {"truncated frame", le32(0) + le32(16) + std::string(24, '\0'), false},
      {"rpc Abort", abortMessageBytes(), true},
  };
}

// "running", or how the daemon `pid` ended. Peeks with WNOWAIT: the daemons are our children,
// and reaping them is EmbeddedSystem's job (kill(pid, 0) alone would also succeed on a zombie).
std::string daemonState(pid_t pid) {
  siginfo_t info{};
  if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
    return std::string("waitid: ") + strerror(errno);
  }
  if (info.si_pid == 0) return "running";
  if (info.si_code == CLD_EXITED) return "exited with status " + std::to_string(info.si_status);
  std::string how =
      "killed by signal " + std::to_string(info.si_status) + " (" + strsignal(info.si_status) + ")";
  if (info.si_status == SIGSYS) how += ": a seccomp profile refused a syscall (see dmesg)";
  return how;
}

// How many fds `pid` holds open (we are root, so /proc/<pid>/fd of any user is readable).
size_t openFds(pid_t pid) {
  std::error_code error;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", error);
  if (error) return 0;
  return std::distance(it, std::filesystem::directory_iterator());
}

// Restores a path's mode when it goes out of scope.
class ModeRestorer {
 public:
  explicit ModeRestorer(std::string path) : path_(std::move(path)) {
    struct stat st {};
    KJ_SYSCALL(stat(path_.c_str(), &st), path_);
    mode_ = st.st_mode & 07777;
  }
  ~ModeRestorer() { chmod(path_.c_str(), mode_); }
  mode_t mode() const { return mode_; }

 private:
  std::string path_;
  mode_t mode_;
};

// A network namespace capability implemented here, with no fd attached.
class FdlessNetworkNamespace final : public ipc::NetworkNamespace::Server {
 public:
  kj::Promise<void> id(IdContext context) override {
    context.getResults().setCellId("fdless");
    return kj::READY_NOW;
  }
};

// ---------------------------------------------------------------------------------------------

class DaemonSocketsTest : public ::testing::Test {
 protected:
  // kj::Own members make the implicit destructor noexcept(false); gtest's is noexcept.
  ~DaemonSocketsTest() noexcept override {}

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    const char* build = getenv("CELLOS_BUILD_DIR");
    ASSERT_NE(build, nullptr) << "CELLOS_BUILD_DIR is not set (ctest sets it)";
    char dir[] = "/tmp/cellos-sockets-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr) << strerror(errno);
    stateDir_ = dir;
    system_ = std::make_unique<cli::EmbeddedSystem>(cli::EmbeddedOptions{
        .stateDir = stateDir_, .binDir = std::string(build) + "/bin", .logLevel = "warn"});
    ASSERT_NO_THROW(system_->start());
    ASSERT_EQ(system_->pids().size(), 4u);
  }

  void TearDown() override {
    if (system_) system_->stop();
    system_.reset();
    if (!stateDir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(stateDir_, ignored);
    }
  }

  std::string socketPath(Daemon d) const { return system_->runtimeDir() + "/" + socketName(d); }

  // Adds a failure for each daemon that is no longer running; true when all four are.
  bool checkAllDaemonsRunning() {
    const char* names[] = {"cellos-event-signer", "cellos-vmm-agent", "cellos-dns-helper",
                           "cellos-broker"};
    auto pids = system_->pids();
    EXPECT_EQ(pids.size(), 4u);
    bool all = pids.size() == 4;
    for (size_t i = 0; i < pids.size() && i < 4; ++i) {
      std::string state = daemonState(pids[i]);
      EXPECT_EQ(state, "running") << names[i] << " (pid " << pids[i] << ")";
      all = all && state == "running";
    }
    return all;
  }

  // A well-formed client makes one real call to `d` and gets a reply. Some calls are wrong on
  // purpose (nothing is created): what matters is that an answer comes back.
  void expectServes(Daemon d) {
    try {
      callOnce(d);
    } catch (const kj::Exception& e) {
      auto pids = system_->pids();
      size_t index = static_cast<size_t>(d);  // Daemon is in start order, as pids() is
      ADD_FAILURE() << socketName(d) << ": no answer: " << e.getDescription().cStr()
                    << "; the daemon is "
                    << (index < pids.size() ? daemonState(pids[index]) : "unknown");
    }
  }

  void callOnce(Daemon d) {
    using capnp::rpc::twoparty::Side;
    ipc::LinkOptions options{.maxFdsPerMessage = 0};
    ipc::RpcLink link(*io_.lowLevelProvider, ipc::connectUnix(socketPath(d)), options, Side::CLIENT,
                      nullptr);
    auto& timer = io_.provider->getTimer();
    const auto limit = 10 * kj::SECONDS;
    switch (d) {
      case Daemon::kSigner: {
        auto signer = link.bootstrap<ipc::EventSigner>();
        auto reply = ipc::withTimeout(timer, limit, "keyset", signer.keysetRequest().send())
                         .wait(io_.waitScope);
        EXPECT_NE(std::string(reply.getJson().cStr()).find("ed25519:"), std::string::npos)
            << reply.getJson().cStr();
        break;
      }
      case Daemon::kBroker: {
        auto broker = link.bootstrap<ipc::Broker>();
        auto request = broker.submitRequest();
        const std::string document = "apiVersion: [this is not\n a cell document";
        request.setDocument(
            kj::arrayPtr(reinterpret_cast<const capnp::byte*>(document.data()), document.size()));
        auto reply = ipc::withTimeout(timer, limit, "submit", request.send()).wait(io_.waitScope);
        EXPECT_GT(reply.getViolations().size(), 0u);
        EXPECT_FALSE(reply.hasRun());
        break;
      }
      case Daemon::kVmmAgent: {
        auto agent = link.bootstrap<ipc::VmmAgent>();
        auto request = agent.createCellRequest();
        auto cell = request.initRequest();
        cell.setCellId("../x");
        cell.setBackend(ipc::Backend::LINUX);
        cell.initArgv(1).set(0, "/bin/true");
        std::string error =
            callError(ipc::withTimeout(timer, limit, "createCell", request.send()).ignoreResult());
        EXPECT_NE(error.find("invalid cell id"), std::string::npos) << "error: " << error;
        break;
      }
      case Daemon::kDnsHelper: {
        auto helper = link.bootstrap<ipc::DnsHelper>();
        auto request = helper.startProxyRequest();
        request.setNetns(kj::heap<FdlessNetworkNamespace>());
        auto policy = request.initPolicy();
        policy.setCellId("fdless");
        policy.setBindAddress("127.0.0.1");
        std::string error =
            callError(ipc::withTimeout(timer, limit, "startProxy", request.send()).ignoreResult());
        EXPECT_NE(error.find("no fd"), std::string::npos) << "error: " << error;
        break;
      }
    }
  }

  // Waits for a call that must fail and returns its error ("" when it succeeded).
  std::string callError(kj::Promise<void> call) {
    try {
      call.wait(io_.waitScope);
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
    return "";
  }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  std::string stateDir_;
  std::unique_ptr<cli::EmbeddedSystem> system_;
};

// ---------------------------------------------------------------------------------------------
// Acceptance: a peer whose uid is not on the allowlist is refused before any message is read.

TEST_F(DaemonSocketsTest, RuntimeDirectoryKeepsOutOtherUsers) {
  struct stat st {};
  ASSERT_EQ(stat(system_->runtimeDir().c_str(), &st), 0) << strerror(errno);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  // 0710: the group bits are the ACL's mask; the one named entry lets the broker search it.
  EXPECT_EQ(st.st_mode & 07777, 0710u);
  EXPECT_GT(getxattr(system_->runtimeDir().c_str(), "system.posix_acl_access", nullptr, 0), 0)
      << strerror(errno);
  group* cellos = getgrnam("cellos");
  ASSERT_NE(cellos, nullptr);
  // Neither a stranger nor a member of group cellos (a client of the host service) gets in.
  for (gid_t gid : {kNogroup, cellos->gr_gid}) {
    for (Daemon d : kAllDaemons) {
      Exchange e =
          exchangeAs(kMemberUid, gid, socketPath(d), bootstrapMessageBytes(), {}, kCloseWithin);
      ASSERT_EQ(e.setupErrno, 0) << strerror(e.setupErrno);
      EXPECT_EQ(e.connectErrno, EACCES) << socketName(d) << " gid " << gid << ": " << describe(e);
      EXPECT_EQ(e.bytesReceived, 0u) << socketName(d);
    }
  }
  // The broker's own account does (it connects to the helpers), as the control.
  passwd* broker = getpwnam("cellos");
  ASSERT_NE(broker, nullptr);
  Exchange e = exchangeAs(broker->pw_uid, broker->pw_gid, socketPath(Daemon::kSigner),
                          bootstrapMessageBytes(), {.stopAtBootstrap = true}, kCloseWithin);
  EXPECT_TRUE(e.bootstrapAnswered) << describe(e);
  checkAllDaemonsRunning();
}

TEST_F(DaemonSocketsTest, UnlistedUidThatReachesTheSocketIsRefused) {
  // Open the file modes so `nobody` can connect() at all: what remains between it and the
  // daemon is the listener's SO_PEERCRED check.
  ModeRestorer dirMode(system_->runtimeDir());
  ASSERT_EQ(chmod(system_->runtimeDir().c_str(), dirMode.mode() | 0001), 0);
  const std::string bootstrap = bootstrapMessageBytes();
  for (Daemon d : kAllDaemons) {
    SCOPED_TRACE(socketName(d));
    ModeRestorer socketMode(socketPath(d));
    ASSERT_EQ(chmod(socketPath(d).c_str(), socketMode.mode() | 0006), 0);

    Exchange refused = exchangeAs(kNobody, kNogroup, socketPath(d), bootstrap,
                                  {.stopAtBootstrap = true}, kCloseWithin);
    ASSERT_EQ(refused.setupErrno, 0) << strerror(refused.setupErrno);
    EXPECT_EQ(refused.connectErrno, 0) << describe(refused);
    EXPECT_TRUE(refused.closed()) << describe(refused);
    EXPECT_FALSE(refused.timedOut) << describe(refused);
    EXPECT_EQ(refused.bytesReceived, 0u) << describe(refused);

    // The control: the same bytes from root (on every allowlist) are answered.
    Exchange allowed = exchange(socketPath(d), bootstrap, {.stopAtBootstrap = true}, kCloseWithin);
    EXPECT_TRUE(allowed.bootstrapAnswered) << describe(allowed);
  }
  checkAllDaemonsRunning();
  for (Daemon d : kAllDaemons) expectServes(d);
}

// ---------------------------------------------------------------------------------------------
// Acceptance: ff ff ff ff 00 00 00 00 gets a clean disconnect, and the server goes on serving.

class BadHeaderTest : public DaemonSocketsTest, public ::testing::WithParamInterface<Daemon> {};

TEST_P(BadHeaderTest, ClosesTheConnectionAndServesTheNextClient) {
  Daemon d = GetParam();
  Exchange e = exchange(socketPath(d), kBadHeader, {}, kCloseWithin);
  EXPECT_EQ(e.connectErrno, 0) << describe(e);
  EXPECT_EQ(e.writeErrno, 0) << describe(e);
  EXPECT_TRUE(e.closed()) << "not closed within 5 s: " << describe(e);
  ASSERT_TRUE(checkAllDaemonsRunning());
  expectServes(d);
  EXPECT_TRUE(checkAllDaemonsRunning());
}

INSTANTIATE_TEST_SUITE_P(EveryDaemon, BadHeaderTest, ::testing::ValuesIn(kAllDaemons),
                         [](const ::testing::TestParamInfo<Daemon>& info) -> std::string {
                           switch (info.param) {
                             case Daemon::kSigner:
                               return "Signer";
                             case Daemon::kVmmAgent:
                               return "VmmAgent";
                             case Daemon::kDnsHelper:
                               return "DnsHelper";
                             case Daemon::kBroker:
                               return "Broker";
                           }
                           return "Unknown";
                         });

TEST_F(DaemonSocketsTest, GarbageFramesNeverTakeADaemonDown) {
  for (Daemon d : kAllDaemons) {
    for (const Garbage& garbage : garbagePatterns()) {
      SCOPED_TRACE(std::string(socketName(d)) + " <- " + garbage.name);
      Exchange e = exchange(socketPath(d), garbage.bytes,
                            {.shutdownWrite = !garbage.serverMustClose}, kCloseWithin);
      EXPECT_EQ(e.connectErrno, 0) << describe(e);
      EXPECT_TRUE(e.closed()) << describe(e);
      ASSERT_TRUE(checkAllDaemonsRunning());
    }
    expectServes(d);
  }
  EXPECT_TRUE(checkAllDaemonsRunning());
}

TEST_F(DaemonSocketsTest, ManyBadClientsInARowLeaveTheBrokerAsItWas) {
  pid_t broker = system_->pids().at(static_cast<size_t>(Daemon::kBroker));
  size_t fdsBefore = openFds(broker);
  ASSERT_GT(fdsBefore, 0u);
  // Bounded: 200 connections, each closed by the broker, then one good client.
  for (int i = 0; i < 200; ++i) {
    Exchange e = exchange(socketPath(Daemon::kBroker), kBadHeader, {}, kCloseWithin);
    ASSERT_TRUE(e.closed()) << "connection " << i << ": " << describe(e);
  }
  ASSERT_TRUE(checkAllDaemonsRunning());
  // Every dropped connection gives its fd back. The close may trail the peer's EOF by a turn
  // of the broker's event loop (the connection is destroyed after its disconnect callback), so
  // wait for it, bounded.
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (openFds(broker) > fdsBefore && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_LE(openFds(broker), fdsBefore);
  expectServes(Daemon::kBroker);
  EXPECT_TRUE(checkAllDaemonsRunning());
}

}  // namespace
}  // namespace cellos
