#pragma once
// Publishing signed events to NATS JetStream with libnats: one connection that libnats keeps
// re-establishing in the background (exponential backoff with jitter, for ever), the stream
// CELLOS_EVENTS created when missing, and each event published synchronously with
// Nats-Msg-Id = its id, so a retry after a lost acknowledgement is de-duplicated by the server.

#include <nats/nats.h>

#include <string>

namespace cellos::forwarder {

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

  // Publishes `payload` (the event's JSON line) on `subject`. `why` says what went wrong.
  PublishResult publish(const std::string& subject, const std::string& payload,
                        const std::string& eventId, std::string* why);

  bool connected() const;

 private:
  bool ensureStream(std::string* why);

  natsOptions* options_ = nullptr;
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
  bool streamReady_ = false;
};

}  // namespace cellos::forwarder
