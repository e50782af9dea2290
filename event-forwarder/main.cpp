// cellos-event-forwarder: feeds the signed event log to NATS JetStream.
//
// The broker writes every event to its JSONL log and never waits for NATS; this process follows
// the log (through rotation) and publishes each event, in order, to the stream CELLOS_EVENTS on
// cellos.events.<host>.<cellId>.<phase> with Nats-Msg-Id = the event id. Its cursor (the last
// sequence the stream acknowledged) is kept durably, so while NATS is down events wait in the
// log, and once it is back each is delivered — none lost, and none twice (a retry after a lost
// acknowledgement is de-duplicated by the server on the message id). An event the stream
// refuses for good goes to the dead-letter directory. The signed checkpoints beside the log
// (<log>.checkpoints) go to the stream CELLOS_CHECKPOINTS on cellos.checkpoints.<origin>, each
// note as written, once (its cursor is a byte offset in that append-only file, and its message
// id the note's digest), so a copy of the tree heads leaves the host within seconds of each
// being written. Running NATS publishing here rather than
// in the broker keeps libnats' threads and sockets out of the broker's seccomp profile (see
// docs/security.md).
//
// Privilege story, top to bottom:
//   1. start as root (or as cellos); close inherited fds; resolve the NATS host name (NSS opens
//      files and libraries, so it happens now, once);
//   2. open the log's directory, the dead-letter directory and our state directory;
//   3. become cellos (the log's owner) with no capabilities, set no_new_privs;
//   4. start libnats (its threads) and connect in the background;
//   5. install the forwarder's seccomp profile; only then read the log.

#include "core/checkpoint.h"
#include "core/verifiability.h"
#include "event-forwarder/checkpoint_tail.h"
#include "event-forwarder/log_tail.h"
#include "event-forwarder/nats_publisher.h"
#include "event-forwarder/nats_subject.h"
#include "event-forwarder/seccomp_profile.h"
#include "eventlog/dead_letter.h"
#include "eventlog/format.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"
#include "privsep/seccomp.h"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <thread>

#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace {

using namespace cellos;

struct Options {
  privsep::CommonOptions common{.socketPath = "", .user = "cellos"};
  std::string eventsPath = "/var/lib/cellos/events/events.jsonl";
  std::string natsUrl = "nats://127.0.0.1:4222";
  std::string stateDir = "/var/lib/cellos/forwarder";
  std::string deadLetterDir;  // default <events>.dead-letter
  // Drain mode (`cellos run --nats-url`): publish what the log holds past the cursor, then exit
  // instead of following it; give up after drainTimeout seconds of an unreachable server.
  bool drain = false;
  unsigned drainTimeout = 30;
};

// Exit status of a drain that ran out of time: the undelivered events stay in the log, and the
// cursor says where the next drain or the service resumes.
constexpr int kExitUndelivered = 3;

std::atomic<bool> stopping = false;

void onStopSignal(int) {
  stopping = true;
}

// nats://host:port -> nats://<numeric address>:port, resolved now: after seccomp nothing may
// open /etc/hosts or load an NSS module.
std::string resolveUrl(const std::string& url) {
  const std::string scheme = "nats://";
  KJ_REQUIRE(url.rfind(scheme, 0) == 0, "--nats-url must look like nats://HOST:PORT", url);
  std::string rest = url.substr(scheme.size());
  auto colon = rest.rfind(':');
  KJ_REQUIRE(colon != std::string::npos && rest.find('@') == std::string::npos,
             "--nats-url must look like nats://HOST:PORT (no credentials)", url);
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  KJ_REQUIRE(rc == 0, "cannot resolve the NATS host", host, gai_strerror(rc));
  char address[NI_MAXHOST];
  rc = getnameinfo(result->ai_addr, result->ai_addrlen, address, sizeof(address), nullptr, 0,
                   NI_NUMERICHOST);
  bool v6 = result->ai_family == AF_INET6;
  freeaddrinfo(result);
  KJ_REQUIRE(rc == 0, "cannot resolve the NATS host", host, gai_strerror(rc));
  return scheme + (v6 ? "[" + std::string(address) + "]" : std::string(address)) + ":" + port;
}

int openDirectory(const std::string& path, const privsep::Account& owner, mode_t mode) {
  if (mkdir(path.c_str(), mode) == 0 && geteuid() == 0) {
    KJ_SYSCALL(chown(path.c_str(), owner.uid, owner.gid), path);
  }
  int fd;
  KJ_SYSCALL(fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), path);
  return fd;
}

// The cursor: the sequence of the last event the stream acknowledged (or that went to the dead
// letters), and the offset in the checkpoint file after the last note CELLOS_CHECKPOINTS
// acknowledged; replaced atomically (temp file, fsync, rename, fsync directory).
class Cursor {
 public:
  explicit Cursor(int dirFd) : dirFd_(dirFd) {
    int fd = openat(dirFd_, kName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    close(fd);
    auto json = nlohmann::json::parse(std::string(buffer, n > 0 ? n : 0), nullptr, false);
    if (!json.is_object()) return;
    if (json.contains("sequence") && json["sequence"].is_string()) {
      sequence_ = core::parseSequence(json["sequence"].get<std::string>());
    }
    // A cursor from before checkpoints were forwarded has none: they are published from the
    // file's start (once each, by their digest).
    if (json.contains("checkpointOffset") && json["checkpointOffset"].is_number_unsigned()) {
      checkpointOffset_ = json["checkpointOffset"].get<uint64_t>();
    }
  }
  const std::optional<uint64_t>& sequence() const { return sequence_; }
  uint64_t checkpointOffset() const { return checkpointOffset_; }
  void advance(uint64_t sequence) {
    sequence_ = sequence;
    ++unsaved_;
  }
  void advanceCheckpoints(uint64_t offset) {
    checkpointOffset_ = offset;
    ++unsaved_;
  }
  void saveIfDirty() {
    if (unsaved_ == 0) return;
    nlohmann::json record{{"checkpointOffset", checkpointOffset_}};
    if (sequence_) record["sequence"] = core::formatSequence(*sequence_);
    std::string text = record.dump();
    std::string tmp = std::string(kName) + ".tmp";
    unlinkat(dirFd_, tmp.c_str(), 0);
    int fd;
    KJ_SYSCALL(fd = openat(dirFd_, tmp.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600),
               tmp);
    KJ_DEFER(close(fd));
    KJ_SYSCALL(write(fd, text.data(), text.size()), tmp);
    KJ_SYSCALL(fsync(fd), tmp);
    KJ_SYSCALL(renameat(dirFd_, tmp.c_str(), dirFd_, kName), tmp);
    KJ_SYSCALL(fsync(dirFd_), kName);
    unsaved_ = 0;
  }

 private:
  static constexpr const char* kName = "nats-cursor.json";
  int dirFd_;
  std::optional<uint64_t> sequence_;
  uint64_t checkpointOffset_ = 0;
  uint64_t unsaved_ = 0;
};

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  auto account = privsep::lookupAccount(options.common.user);
  std::string url = resolveUrl(options.natsUrl);

  auto slash = options.eventsPath.rfind('/');
  std::string logDir = slash == std::string::npos ? "." : options.eventsPath.substr(0, slash);
  std::string logName =
      slash == std::string::npos ? options.eventsPath : options.eventsPath.substr(slash + 1);
  int logDirFd;
  KJ_SYSCALL(logDirFd = open(logDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), logDir);
  eventlog::DeadLetterDirectory deadLetters(
      options.deadLetterDir.empty() ? eventlog::defaultDeadLetterPath(options.eventsPath)
                                    : options.deadLetterDir,
      account.uid, account.gid);
  int stateFd = openDirectory(options.stateDir, account, 0700);

  if (geteuid() == 0) privsep::becomeUnprivileged(account);
  KJ_REQUIRE(geteuid() == account.uid, "not running as the forwarder's user", options.common.user);
  privsep::setNoNewPrivs();

  Cursor cursor(stateFd);
  struct sigaction stop {};
  stop.sa_handler = onStopSignal;
  sigaction(SIGTERM, &stop, nullptr);
  sigaction(SIGINT, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);
  KJ_REQUIRE(nats_Open(-1) == NATS_OK, "cannot initialise libnats");
  forwarder::NatsPublisher publisher(url);
  forwarder::LogTail tail(logDirFd, logName, cursor.sequence());
  const std::string checkpointName = logName + ".checkpoints";
  forwarder::CheckpointTail checkpoints(logDirFd, checkpointName, cursor.checkpointOffset());
  privsep::installSeccomp(forwarder::kForwarderProfile);

  privsep::signalReady(options.common.readyFd);
  spdlog::info("forwarding {} to {} (stream {}), after sequence {}; its checkpoints to stream {}",
               options.eventsPath, url, forwarder::kStreamName,
               cursor.sequence() ? std::to_string(*cursor.sequence()) : "(none)",
               forwarder::kCheckpointStreamName);
  using namespace std::chrono_literals;
  auto backoff = 100ms;
  const auto drainDeadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(options.drainTimeout);

  // Publishes one message until the stream has it (kStored) or refuses it for good
  // (kRejected, *why says why), retrying with backoff while NATS is away; kStopped on SIGTERM,
  // kTimedOut when a drain runs out of time.
  enum class Delivery { kStored, kRejected, kStopped, kTimedOut };
  auto deliver = [&](const forwarder::StreamSpec& stream, const std::string& subject,
                     const std::string& payload, const std::string& msgId, const std::string& what,
                     std::string* why) {
    for (;;) {
      auto result = publisher.publish(stream, subject, payload, msgId, why);
      if (result == forwarder::PublishResult::kStored) {
        backoff = 100ms;
        return Delivery::kStored;
      }
      if (result == forwarder::PublishResult::kRejected) return Delivery::kRejected;
      if (stopping) return Delivery::kStopped;
      cursor.saveIfDirty();
      if (options.drain && std::chrono::steady_clock::now() >= drainDeadline) {
        spdlog::error(
            "{} and the ones after it not delivered in {} s: {}; they stay on disk and the next "
            "drain resumes there",
            what, options.drainTimeout, *why);
        return Delivery::kTimedOut;
      }
      spdlog::warn("{} not delivered yet: {}; retrying in {} ms", what, *why, backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  };

  // Every whole note the checkpoint file holds past the cursor, in file order, each on
  // cellos.checkpoints.<origin>. Checkpoints are few (one per interval), so the cursor is saved
  // after each. Returns false when a drain ran out of time.
  uint64_t checkpointsDelivered = 0;
  auto forwardCheckpoints = [&]() {
    while (!stopping) {
      auto note = checkpoints.next();
      if (!note) return true;
      std::string error;
      auto parsed = core::parseSignedNotes(note->text, &error);
      std::string what = checkpointName + " note ending at byte " + std::to_string(note->endOffset);
      if (!parsed || parsed->size() != 1) {
        spdlog::error("{} is not a signed note ({}): not published", what, error);
      } else {
        auto result = deliver(forwarder::StreamSpec{forwarder::kCheckpointStreamName,
                                                    forwarder::kCheckpointStreamSubjects},
                              forwarder::checkpointSubjectFor(note->text), note->text,
                              forwarder::checkpointMessageId(note->text), what, &error);
        if (result == Delivery::kStopped) return true;
        if (result == Delivery::kTimedOut) return false;
        if (result == Delivery::kRejected) {
          spdlog::error("{} refused by JetStream for good: {}; it stays in the file", what, error);
        } else {
          ++checkpointsDelivered;
        }
      }
      cursor.advanceCheckpoints(note->endOffset);
      cursor.saveIfDirty();
    }
    return true;
  };

  uint64_t delivered = 0;
  // While events keep coming the log is never idle: checkpoints are then looked at every second,
  // so a copy of each leaves the host within seconds under any load.
  auto lastCheckpointLook = std::chrono::steady_clock::now() - 1h;
  while (!stopping) {
    auto line = tail.next();
    auto now = std::chrono::steady_clock::now();
    if (!line || now - lastCheckpointLook >= 1s) {
      lastCheckpointLook = now;
      if (!forwardCheckpoints()) return kExitUndelivered;
    }
    if (!line) {
      cursor.saveIfDirty();
      if (options.drain) {
        spdlog::info("drained: {} events and {} checkpoints published", delivered,
                     checkpointsDelivered);
        return 0;
      }
      std::this_thread::sleep_for(100ms);
      continue;
    }
    auto event = nlohmann::json::parse(*line, nullptr, false);
    std::optional<uint64_t> sequence;
    if (event.is_object() && event.contains("sequence") && event["sequence"].is_string()) {
      sequence = core::parseSequence(event["sequence"].get<std::string>());
    }
    if (!sequence || !event.contains("id") || !event["id"].is_string()) {
      spdlog::error("skipping a log line that is not a signed event: {:.80}", *line);
      continue;
    }
    if (cursor.sequence() && *sequence <= *cursor.sequence()) continue;  // delivered before
    std::string id = event["id"].get<std::string>();
    std::string why;
    auto result = deliver(forwarder::StreamSpec{forwarder::kStreamName, forwarder::kStreamSubjects},
                          forwarder::subjectFor(event), *line, id,
                          "event " + id + " (sequence " + std::to_string(*sequence) + ")", &why);
    if (result == Delivery::kStopped) break;
    if (result == Delivery::kTimedOut) return kExitUndelivered;
    if (result == Delivery::kRejected) {
      deadLetters.writeEvent(event, "nats", "JetStream refused it: " + why);
    }
    cursor.advance(*sequence);
    ++delivered;
    if (cursor.sequence() && *cursor.sequence() % 64 == 0) cursor.saveIfDirty();
  }
  cursor.saveIfDirty();
  spdlog::info("stopping");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "cellos-event-forwarder: follows the signed event log and publishes every event to NATS "
      "JetStream (stream CELLOS_EVENTS, subject cellos.events.<host>.<cellId>.<phase>, "
      "Nats-Msg-Id = event id), exactly once, in order, resuming where it stopped; and every "
      "signed checkpoint of <events>.checkpoints to stream CELLOS_CHECKPOINTS (subject "
      "cellos.checkpoints.<origin>, Nats-Msg-Id = checkpoint-<SHA-256 of the note>)."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/event-forwarder.conf");
  app.add_option("--events", options.eventsPath, "the broker's event log")->capture_default_str();
  app.add_option("--nats-url", options.natsUrl, "nats://HOST:PORT")->capture_default_str();
  app.add_option("--state-dir", options.stateDir, "where the delivery cursor is kept")
      ->capture_default_str();
  app.add_option("--dead-letter-dir", options.deadLetterDir,
                 "where events the stream refuses go (default <events>.dead-letter)");
  app.add_flag("--drain", options.drain,
               "publish the events not yet delivered, then exit (0) instead of following the log; "
               "exit 3 if the server stays unreachable for --drain-timeout seconds (the events "
               "stay in the log, and the next run resumes from the cursor)");
  app.add_option("--drain-timeout", options.drainTimeout, "seconds, with --drain")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return privsep::runDaemon("cellos-event-forwarder", options.common.logLevel,
                            [&]() { return serve(options); });
}
