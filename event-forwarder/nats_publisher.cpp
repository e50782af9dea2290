#include "event-forwarder/nats_publisher.h"

#include "event-forwarder/nats_subject.h"

#include <spdlog/spdlog.h>

#include <random>
#include <stdexcept>

namespace cellos::forwarder {

namespace {

constexpr int64_t kFirstDelayMs = 100;
constexpr int64_t kMaxDelayMs = 5000;
constexpr int64_t kAckWaitMs = 5000;

void check(natsStatus status, const char* what) {
  if (status != NATS_OK) {
    throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(status));
  }
}

// Reconnect delay: doubling from 100 ms up to 5 s, with up to 25% jitter so a fleet of
// forwarders does not reconnect in step after an outage.
int64_t reconnectDelay(natsConnection*, int attempts, void*) {
  static thread_local std::minstd_rand random(std::random_device{}());
  int64_t delay = kFirstDelayMs << std::min(attempts, 6);
  delay = std::min(delay, kMaxDelayMs);
  return delay + static_cast<int64_t>(random() % (delay / 4 + 1));
}

void onDisconnected(natsConnection*, void*) {
  spdlog::warn("disconnected from NATS; events wait in the log until it is back");
}
void onReconnected(natsConnection*, void*) {
  spdlog::info("reconnected to NATS");
}
void onConnected(natsConnection*, void*) {
  spdlog::info("connected to NATS");
}

}  // namespace

NatsPublisher::NatsPublisher(const std::string& url) {
  check(natsOptions_Create(&options_), "natsOptions_Create");
  check(natsOptions_SetURL(options_, url.c_str()), "natsOptions_SetURL");
  check(natsOptions_SetName(options_, "cellos-event-forwarder"), "natsOptions_SetName");
  check(natsOptions_SetMaxReconnect(options_, -1), "natsOptions_SetMaxReconnect");
  check(natsOptions_SetCustomReconnectDelay(options_, reconnectDelay, nullptr),
        "natsOptions_SetCustomReconnectDelay");
  check(natsOptions_SetTimeout(options_, 2000), "natsOptions_SetTimeout");
  check(natsOptions_SetDisconnectedCB(options_, onDisconnected, nullptr), "SetDisconnectedCB");
  check(natsOptions_SetReconnectedCB(options_, onReconnected, nullptr), "SetReconnectedCB");
  // NATS may be down when we start: keep trying in the background like a reconnect.
  check(natsOptions_SetRetryOnFailedConnect(options_, true, onConnected, nullptr),
        "SetRetryOnFailedConnect");
  natsStatus status = natsConnection_Connect(&connection_, options_);
  if (status != NATS_OK && status != NATS_NOT_YET_CONNECTED)
    check(status, "natsConnection_Connect");
  jsOptions jsOpts;
  check(jsOptions_Init(&jsOpts), "jsOptions_Init");
  jsOpts.Wait = kAckWaitMs;
  check(natsConnection_JetStream(&js_, connection_, &jsOpts), "natsConnection_JetStream");
}

NatsPublisher::~NatsPublisher() {
  jsCtx_Destroy(js_);
  natsConnection_Destroy(connection_);
  natsOptions_Destroy(options_);
}

bool NatsPublisher::connected() const {
  return natsConnection_Status(connection_) == NATS_CONN_STATUS_CONNECTED;
}

bool NatsPublisher::ensureStream(const StreamSpec& stream, std::string* why) {
  if (readyStreams_.count(stream.name)) return true;
  jsStreamInfo* info = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = js_GetStreamInfo(&info, js_, stream.name, nullptr, &error);
  if (status == NATS_OK) {
    jsStreamInfo_Destroy(info);
    readyStreams_.insert(stream.name);
    return true;
  }
  if (status == NATS_NOT_FOUND || error == JSStreamNotFoundErr) {
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    const char* subjects[] = {stream.subjects};
    config.Name = stream.name;
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    status = js_AddStream(&info, js_, &config, nullptr, &error);
    if (status == NATS_OK || error == JSStreamNameExistErr) {
      jsStreamInfo_Destroy(info);
      spdlog::info("created the JetStream stream {} ({})", stream.name, stream.subjects);
      readyStreams_.insert(stream.name);
      return true;
    }
  }
  *why = std::string("stream ") + stream.name + ": " + natsStatus_GetText(status) +
         (error ? " (JetStream error " + std::to_string(error) + ")" : "");
  return false;
}

PublishResult NatsPublisher::publish(const StreamSpec& stream, const std::string& subject,
                                     const std::string& payload, const std::string& msgId,
                                     std::string* why) {
  if (!connected()) {
    *why = "not connected to NATS";
    return PublishResult::kRetry;
  }
  if (!ensureStream(stream, why)) return PublishResult::kRetry;
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MsgId = msgId.c_str();
  options.MaxWait = kAckWaitMs;
  jsPubAck* ack = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = js_Publish(&ack, js_, subject.c_str(), payload.data(),
                                 static_cast<int>(payload.size()), &options, &error);
  if (status == NATS_OK) {
    if (ack->Duplicate) spdlog::debug("{} was already in the stream {}", msgId, stream.name);
    jsPubAck_Destroy(ack);
    return PublishResult::kStored;
  }
  *why = std::string(natsStatus_GetText(status)) +
         (error ? " (JetStream error " + std::to_string(error) + ")" : "");
  // Refusals that a retry cannot change: the event is too large for the server or the stream.
  if (status == NATS_MAX_PAYLOAD || error == JSStreamMessageExceedsMaximumErr) {
    return PublishResult::kRejected;
  }
  if (error == JSStreamNotFoundErr || status == NATS_NO_RESPONDERS) {
    readyStreams_.erase(stream.name);
  }
  return PublishResult::kRetry;
}

}  // namespace cellos::forwarder
