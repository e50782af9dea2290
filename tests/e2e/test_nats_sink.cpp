// End-to-end: the signed log delivered to NATS JetStream by cellos-event-forwarder, against a
// real nats-server the test starts on 127.0.0.1 (a free port), kills and restarts. While NATS is
// down the broker keeps writing the log; once it is back every event arrives — none lost, none
// twice, in log order — on cellos.events.<host>.<cellId>.<phase> in stream CELLOS_EVENTS, with
// Nats-Msg-Id = the event id. An event the stream refuses goes to the dead-letter directory.
// The signed checkpoints beside the log reach the stream CELLOS_CHECKPOINTS the same way, within
// seconds of each being written while the broker runs, and the copy that left the host catches a
// log whose tail was cut afterwards.

#include "core/checkpoint.h"
#include "tests/e2e/event_daemons.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kNatsServer = "/usr/sbin/nats-server";

uint16_t freePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

bool accepting(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

// A JetStream-enabled nats-server on 127.0.0.1:<port>, its store in a directory that survives
// restarts (as a real deployment's would).
class NatsServer {
 public:
  NatsServer(uint16_t port, std::string storeDir) : port_(port), storeDir_(std::move(storeDir)) {}
  ~NatsServer() { kill9(); }
  bool start() {
    pid_ = fork();
    if (pid_ == 0) {
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      std::string port = std::to_string(port_);
      execl(kNatsServer, kNatsServer, "-js", "-a", "127.0.0.1", "-p", port.c_str(), "-sd",
            storeDir_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!accepting(port_)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  }
  void kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

 private:
  uint16_t port_;
  std::string storeDir_;
  pid_t pid_ = -1;
};

struct StoredMessage {
  std::string subject, msgId, data;
};

// Reads a stream as a consumer would: every message, in stream order.
class StreamReader {
 public:
  explicit StreamReader(const std::string& url, std::string stream = "CELLOS_EVENTS")
      : stream_(std::move(stream)) {
    natsConnection_ConnectTo(&connection_, url.c_str());
    if (connection_) natsConnection_JetStream(&js_, connection_, nullptr);
  }
  ~StreamReader() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(connection_);
  }
  bool ok() const { return js_ != nullptr; }
  // nullopt: no such stream (yet).
  std::optional<uint64_t> count() {
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, js_, stream_.c_str(), nullptr, nullptr) != NATS_OK) {
      return std::nullopt;
    }
    uint64_t n = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    return n;
  }
  bool createWithMaxMessageSize(int32_t bytes) {
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    const char* subjects[] = {"cellos.events.>"};
    config.Name = "CELLOS_EVENTS";
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.MaxMsgSize = bytes;
    jsStreamInfo* info = nullptr;
    bool ok = js_AddStream(&info, js_, &config, nullptr, nullptr) == NATS_OK;
    jsStreamInfo_Destroy(info);
    return ok;
  }
  std::vector<StoredMessage> all() {
    std::vector<StoredMessage> out;
    auto n = count().value_or(0);
    for (uint64_t seq = 1; seq <= n; ++seq) {
      natsMsg* msg = nullptr;
      if (js_GetMsg(&msg, js_, stream_.c_str(), seq, nullptr, nullptr) != NATS_OK) continue;
      const char* id = nullptr;
      natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
      out.push_back({natsMsg_GetSubject(msg), id ? id : "",
                     std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg))});
      natsMsg_Destroy(msg);
    }
    return out;
  }

 private:
  std::string stream_;
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
};

// Waits (bounded) until the stream holds `n` messages.
bool waitForCount(const std::string& url, uint64_t n, std::chrono::seconds timeout,
                  const std::string& stream = "CELLOS_EVENTS") {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    StreamReader reader(url, stream);
    if (reader.ok() && reader.count() == n) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(200ms);
  }
}

std::vector<nlohmann::json> logEvents(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The checkpoint notes the broker wrote beside the log, one per element (each is one signed
// note: the text, the blank line, one signature line).
std::vector<std::string> fileNotes(const std::string& path) {
  std::vector<std::string> out;
  std::string text = readFile(path), current;
  std::istringstream in(text);
  bool signatures = false;
  for (std::string line; std::getline(in, line);) {
    if (signatures && line.rfind("\xE2\x80\x94 ", 0) != 0) {
      out.push_back(current);
      current.clear();
      signatures = false;
    }
    current += line + "\n";
    if (line.empty()) signatures = true;
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

// What a subscriber of CELLOS_CHECKPOINTS holds: each message one note of `file`, in order, on
// cellos.checkpoints.<origin>, keyed by the note's digest; their concatenation is the file.
void expectCheckpointCopy(const std::vector<StoredMessage>& stored, const std::string& file) {
  auto notes = fileNotes(file);
  ASSERT_FALSE(notes.empty()) << "no checkpoint in " << file;
  ASSERT_EQ(stored.size(), notes.size()) << "none lost, none twice";
  std::set<std::string> ids;
  for (size_t i = 0; i < stored.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(stored[i].data, notes[i]);
    std::string error;
    auto parsed = core::parseSignedNotes(stored[i].data, &error);
    ASSERT_TRUE(parsed) << error;
    EXPECT_EQ(parsed->size(), 1u);
    std::string origin = notes[i].substr(0, notes[i].find('\n'));
    EXPECT_EQ(stored[i].subject, "cellos.checkpoints." + origin);
    EXPECT_EQ(stored[i].msgId.rfind("checkpoint-", 0), 0u) << stored[i].msgId;
    ids.insert(stored[i].msgId);
  }
  EXPECT_EQ(ids.size(), stored.size());
}

std::string concatenated(const std::vector<StoredMessage>& stored) {
  std::string out;
  for (const auto& message : stored) out += message.data;
  return out;
}

std::vector<std::string> documents(const std::string& prefix, size_t count) {
  std::vector<std::string> out;
  for (size_t i = 0; i < count; ++i) out.push_back(rejectedDocument(prefix + std::to_string(i)));
  return out;
}

class NatsSink : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    if (access(kNatsServer, X_OK) != 0) {
      GTEST_SKIP() << "nats-server is not installed (scripts/setup installs it)";
    }
    char dir[] = "/tmp/cellos-nats.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    chmod(dir, 0755);
    nats_ = std::make_unique<NatsServer>(freePort(), dir_ + "/nats-store");
    daemons_ = std::make_unique<EventDaemons>(dir_);
  }
  void TearDown() override {
    daemons_.reset();
    nats_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void submit(const std::string& prefix, size_t count) {
    for (const auto& r : submitDocuments(daemons_->socket("broker"), documents(prefix, count))) {
      ASSERT_TRUE(r.delivered) << r.error;
    }
  }

  std::string dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<EventDaemons> daemons_;
};

TEST_F(NatsSink, EveryEventReachesJetStreamOnceAcrossANatsOutageAndAForwarderCrash) {
  ASSERT_TRUE(nats_->start());
  daemons_->startAll();
  daemons_->startForwarder(nats_->url());
  submit("up", 5);
  ASSERT_TRUE(waitForCount(nats_->url(), 5, 60s)) << daemons_->log("forwarder");

  // NATS goes away. The broker does not notice: the log takes every event.
  nats_->kill9();
  submit("down", 5);
  EXPECT_EQ(logEvents(daemons_->eventsPath()).size(), 10u);
  EXPECT_TRUE(daemons_->waitForLog("forwarder", "not delivered yet", 30s) ||
              daemons_->waitForLog("forwarder", "disconnected from NATS", 30s))
      << daemons_->log("forwarder");
  // The forwarder crashes too, and comes back while NATS is still down.
  daemons_->kill9("forwarder");
  daemons_->startForwarder(nats_->url());
  submit("still-down", 2);

  // NATS is back (same port, same store): the backlog arrives.
  ASSERT_TRUE(nats_->start());
  // One more event after the backlog: once it is stored, every retry before it is done.
  submit("after", 1);
  ASSERT_TRUE(waitForCount(nats_->url(), 13, 90s)) << daemons_->log("forwarder");
  daemons_->stopAll();

  auto events = logEvents(daemons_->eventsPath());
  ASSERT_EQ(events.size(), 13u);
  StreamReader reader(nats_->url());
  ASSERT_TRUE(reader.ok());
  auto stored = reader.all();
  ASSERT_EQ(stored.size(), 13u) << "none lost, none duplicated";
  std::set<std::string> ids;
  for (size_t i = 0; i < stored.size(); ++i) {
    SCOPED_TRACE(i);
    const auto& event = events[i];
    // In log order, exactly the line the broker wrote, keyed by the event id.
    EXPECT_EQ(stored[i].msgId, event["id"].get<std::string>());
    EXPECT_EQ(nlohmann::json::parse(stored[i].data), event);
    std::string cell = event["subject"].get<std::string>().substr(strlen("urn:cellos:cell:"));
    EXPECT_EQ(stored[i].subject, "cellos.events.evtest." + cell + ".admission");
    ids.insert(stored[i].msgId);
  }
  EXPECT_EQ(ids.size(), 13u);
  // The restarted forwarder found NATS down and kept trying (with backoff) until it was back.
  EXPECT_NE(daemons_->log("forwarder").find("info: connected to NATS"), std::string::npos)
      << daemons_->log("forwarder");
}

TEST_F(NatsSink, AnEventTheStreamRefusesGoesToTheDeadLetterDirectory) {
  ASSERT_TRUE(nats_->start());
  {
    StreamReader reader(nats_->url());
    ASSERT_TRUE(reader.ok());
    // Smaller than any signed event: the stream refuses each one for good.
    ASSERT_TRUE(reader.createWithMaxMessageSize(256));
  }
  daemons_->startAll();
  daemons_->startForwarder(nats_->url());
  submit("refused", 3);
  auto deadline = std::chrono::steady_clock::now() + 60s;
  auto countLetters = [&]() {
    size_t n = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(daemons_->deadLetterDir(), ec)) {
      std::ifstream in(entry.path());
      auto record = nlohmann::json::parse(in, nullptr, false);
      if (record.is_object() && record.value("sink", "") == "nats") ++n;
    }
    return n;
  };
  while (countLetters() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(countLetters(), 3u) << daemons_->log("forwarder");
  StreamReader reader(nats_->url());
  EXPECT_EQ(reader.count(), 0u);
  daemons_->stopAll();
  // The log itself is whole; the dead letters are copies the verifier does not need.
  auto ok =
      cellosVerify({"--keys", daemons_->signerDir() + "/keyset.json", daemons_->eventsPath()});
  EXPECT_EQ(ok.status, 0) << ok.out;
}

// `cellos run --nats-url`: embedded mode publishes the run's events after the cell ends. With
// the server down the cell's status is still the exit status and nothing is lost: the next run
// publishes the backlog with its own events, once each, in log order. --redact reaches the
// broker: the field is replaced before signing, in the log and in the stream alike.
TEST_F(NatsSink, CellosRunPublishesItsEventsAfterTheRunAndAnOutageLosesNothing) {
  std::string hello = std::string(CELLOS_TEST_SOURCE_DIR) + "/examples/hello.yaml";
  // Down: a short timeout is the point. Up: a long one, since a just-started server's JetStream
  // may take a moment before it stores anything (the drain retries until then).
  auto run = [&](int timeoutSeconds) {
    return runShell(binary("cellos") + " run --state-dir=" + dir_ +
                    " --redact=argv --nats-url=" + nats_->url() +
                    " --nats-timeout=" + std::to_string(timeoutSeconds) + " " + hello + " 2>&1");
  };

  auto down = run(2);
  EXPECT_EQ(down.status, 0) << down.out;  // the cell's own status
  EXPECT_NE(down.out.find("Hello from cell hello"), std::string::npos) << down.out;
  EXPECT_NE(down.out.find("events NOT all published"), std::string::npos) << down.out;
  size_t firstRun = logEvents(daemons_->eventsPath()).size();
  ASSERT_GT(firstRun, 5u);

  ASSERT_TRUE(nats_->start());
  auto up = run(60);
  EXPECT_EQ(up.status, 0) << up.out;
  EXPECT_NE(up.out.find("events published to " + nats_->url()), std::string::npos) << up.out;

  auto events = logEvents(daemons_->eventsPath());
  ASSERT_GT(events.size(), firstRun);
  StreamReader reader(nats_->url());
  ASSERT_TRUE(reader.ok());
  auto stored = reader.all();
  ASSERT_EQ(stored.size(), events.size()) << "both runs' events, none lost, none twice";
  bool sawRedacted = false;
  for (size_t i = 0; i < stored.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(stored[i].msgId, events[i]["id"].get<std::string>());
    EXPECT_EQ(nlohmann::json::parse(stored[i].data), events[i]);
    EXPECT_EQ(stored[i].data.find("/bin/sh"), std::string::npos) << "argv was to be redacted";
    if (stored[i].data.find("\"argv\":\"[redacted]\"") != std::string::npos) sawRedacted = true;
  }
  EXPECT_TRUE(sawRedacted);
  auto verify = cellosVerify({"--state-dir=" + dir_, daemons_->eventsPath()});
  EXPECT_EQ(verify.status, 0) << verify.out;

  // Both runs' checkpoints (the broker writes one as it stops) left with the events, and the
  // copy from the stream is checkpoint evidence for the log on its own.
  std::string checkpointFile = daemons_->eventsPath() + ".checkpoints";
  StreamReader checkpointReader(nats_->url(), "CELLOS_CHECKPOINTS");
  ASSERT_TRUE(checkpointReader.ok());
  auto copies = checkpointReader.all();
  expectCheckpointCopy(copies, checkpointFile);
  EXPECT_GE(copies.size(), 2u) << "one per run at least";
  std::string copy = dir_ + "/checkpoints-from-nats";
  std::ofstream(copy, std::ios::binary) << concatenated(copies);
  auto withCopy =
      cellosVerify({"--state-dir=" + dir_, "--checkpoint", copy, daemons_->eventsPath()});
  EXPECT_EQ(withCopy.status, 0) << withCopy.out;
  EXPECT_NE(withCopy.out.find("checkpoints verified"), std::string::npos) << withCopy.out;
}

// Service mode: each checkpoint reaches CELLOS_CHECKPOINTS while the broker runs (the signer
// makes one a second here), a NATS outage and a forwarder killed with -9 lose none and repeat
// none, and whoever holds the copy catches a log whose last lines were deleted later.
TEST_F(NatsSink, CheckpointsLeaveTheHostWhileTheBrokerRunsAndCatchACutTail) {
  ASSERT_TRUE(nats_->start());
  daemons_->startSigner({"--checkpoint-interval=1"});
  daemons_->startHelpers();
  daemons_->startBroker();
  daemons_->startForwarder(nats_->url());
  std::string checkpointFile = daemons_->eventsPath() + ".checkpoints";
  auto inStream = [&]() {
    StreamReader reader(nats_->url(), "CELLOS_CHECKPOINTS");
    return reader.ok() ? reader.count().value_or(0) : 0;
  };
  // Events go on being written (a checkpoint needs events since the last one) until a
  // checkpoint has reached the stream: the broker is running all the while.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  size_t round = 0;
  while (inStream() == 0 && std::chrono::steady_clock::now() < deadline) {
    submit("live" + std::to_string(round++) + "-", 1);
    std::this_thread::sleep_for(500ms);
  }
  ASSERT_GT(inStream(), 0u) << daemons_->log("forwarder") << daemons_->log("signer");
  EXPECT_TRUE(daemons_->running("broker"));

  // NATS goes away while checkpoints go on being written; the forwarder is killed and restarted
  // while it is down.
  nats_->kill9();
  size_t before = fileNotes(checkpointFile).size();
  deadline = std::chrono::steady_clock::now() + 60s;
  while (fileNotes(checkpointFile).size() < before + 2 &&
         std::chrono::steady_clock::now() < deadline) {
    submit("down" + std::to_string(round++) + "-", 1);
    std::this_thread::sleep_for(500ms);
  }
  ASSERT_GE(fileNotes(checkpointFile).size(), before + 2);
  daemons_->kill9("forwarder");
  daemons_->startForwarder(nats_->url());
  ASSERT_TRUE(nats_->start());
  submit("after", 2);
  // The broker stops (its last checkpoint is written as it does); the forwarder then catches up.
  daemons_->stop("broker");
  daemons_->stop("signer");
  size_t written = fileNotes(checkpointFile).size();
  ASSERT_TRUE(waitForCount(nats_->url(), written, 90s, "CELLOS_CHECKPOINTS"))
      << inStream() << " of " << written << "\n"
      << daemons_->log("forwarder");
  daemons_->stopAll();

  StreamReader reader(nats_->url(), "CELLOS_CHECKPOINTS");
  ASSERT_TRUE(reader.ok());
  auto copies = reader.all();
  expectCheckpointCopy(copies, checkpointFile);
  std::string copy = dir_ + "/checkpoints-from-nats";
  std::ofstream(copy, std::ios::binary) << concatenated(copies);
  std::string keys = daemons_->signerDir() + "/keyset.json";
  auto intact = cellosVerify({"--keys", keys, "--checkpoint", copy, daemons_->eventsPath()});
  EXPECT_EQ(intact.status, 0) << intact.out;

  // Whoever holds the host deletes the log's last two lines and its checkpoint file: the chain
  // alone still verifies, the copy that left the host does not.
  auto lines = logEvents(daemons_->eventsPath());
  ASSERT_GT(lines.size(), 2u);
  std::string text = readFile(daemons_->eventsPath());
  size_t cut = text.size() - 1;
  for (int i = 0; i < 2; ++i) cut = text.rfind('\n', cut - 1);
  std::ofstream(daemons_->eventsPath(), std::ios::binary | std::ios::trunc)
      << text.substr(0, cut + 1);
  std::filesystem::remove(checkpointFile);
  auto chainOnly = cellosVerify({"--keys", keys, daemons_->eventsPath()});
  EXPECT_EQ(chainOnly.status, 0) << chainOnly.out;
  auto cutTail = cellosVerify({"--keys", keys, "--checkpoint", copy, daemons_->eventsPath()});
  EXPECT_EQ(cutTail.status, 1) << cutTail.out;
  EXPECT_NE(cutTail.out.find("missing from the end of the log"), std::string::npos) << cutTail.out;
}

}  // namespace
}  // namespace cellos::testing
