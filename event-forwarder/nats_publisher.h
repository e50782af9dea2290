#pragma once
// Publishing signed events and checkpoints to NATS JetStream with libnats: one connection that
// libnats keeps re-establishing in the background (exponential backoff with jitter, for ever),
// each stream created when missing, and each message published synchronously with a
// Nats-Msg-Id (the event's id, the checkpoint's digest), so a retry after a lost
// acknowledgement is de-duplicated by the server.

#include <nats/nats.h>

#include <set>
#include <string>

namespace cellos::forwarder {

// A JetStream stream: its name and the one subject filter it is created with.
struct StreamSpec {
  const char* name;
  const char* subjects;
};

enum class PublishResult {
  kStored,    // the stream acknowledged it (or already had it: a de-duplicated retry)
  kRetry,     // NATS is unreachable or did not answer: try the same event again later
  kRejected,  // the stream refuses this event for good (e.g. larger than its limit)
};

class NatsPublisher {
 public:
  // `url`: nats://<numeric address>:<port> (see main.cpp: names are resolved before seccomp).
  // Starts connecting in the background; never fails because NATS is down.
  explicit NatsPublisher(const std::string& url);
  ~NatsPublisher();
  NatsPublisher(const NatsPublisher&) = delete;
  NatsPublisher& operator=(const NatsPublisher&) = delete;

  // Publishes `payload` (an event's JSON line, a checkpoint's note) on `subject`, which must be
  // one of `stream`'s subjects. `why` says what went wrong.
  PublishResult publish(const StreamSpec& stream, const std::string& subject,
                        const std::string& payload, const std::string& msgId, std::string* why);

  bool connected() const;

 private:
  bool ensureStream(const StreamSpec& stream, std::string* why);

  natsOptions* options_ = nullptr;
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
  std::set<std::string> readyStreams_;  // known to exist
};

}  // namespace cellos::forwarder
