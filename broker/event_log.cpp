#include "broker/event_log.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <kj/debug.h>

namespace cellos::broker {

namespace {
constexpr size_t kMaxBatch = 512;
}

EventLog::EventLog(ipc::EventSigner::Client signer, int fd, std::string path)
    : signer_(kj::mv(signer)), fd_(fd), path_(std::move(path)) {}

kj::Promise<void> EventLog::append(nlohmann::json event) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  pending_.push_back({event.dump(), kj::mv(paf.fulfiller)});
  scheduleFlush();
  return kj::mv(paf.promise);
}

void EventLog::scheduleFlush() {
  if (flushing_) return;  // the running flush picks the new events up when it finishes
  flushing_ = true;
  // evalLater: let the current turn queue its other events so they share one batch.
  flushTask_ = kj::evalLater([this]() { return flushBatch(); }).eagerlyEvaluate(nullptr);
}

kj::Promise<void> EventLog::flushBatch() {
  if (pending_.empty()) {
    flushing_ = false;
    return kj::READY_NOW;
  }
  size_t count = std::min(pending_.size(), kMaxBatch);
  auto batch = std::make_shared<std::vector<Pending>>();
  for (size_t i = 0; i < count; ++i) batch->push_back(kj::mv(pending_[i]));
  pending_.erase(pending_.begin(), pending_.begin() + count);

  auto request = signer_.signRequest();
  auto list = request.initEvents(batch->size());
  for (size_t i = 0; i < batch->size(); ++i) {
    const std::string& json = (*batch)[i].json;
    list.set(i, kj::arrayPtr(reinterpret_cast<const capnp::byte*>(json.data()), json.size()));
  }
  return request.send()
      .then(
          [this, batch](capnp::Response<ipc::EventSigner::SignResults> response) {
            auto signedEvents = response.getSigned();
            KJ_REQUIRE(signedEvents.size() == batch->size(), "signer returned a different count");
            writeLines(signedEvents);
            for (auto& p : *batch) p.done->fulfill();
          },
          [batch](kj::Exception&& e) {
            spdlog::error("signing {} events failed: {}", batch->size(), e.getDescription().cStr());
            for (auto& p : *batch) p.done->reject(kj::cp(e));
          })
      .then([this]() { return flushBatch(); });
}

void EventLog::writeLines(capnp::List<capnp::Data>::Reader signedEvents) {
  std::string buffer;
  for (auto event : signedEvents) {
    buffer.append(reinterpret_cast<const char*>(event.begin()), event.size());
    buffer.push_back('\n');
  }
  size_t off = 0;
  while (off < buffer.size()) {
    ssize_t n;
    KJ_SYSCALL(n = write(fd_, buffer.data() + off, buffer.size() - off), path_);
    off += n;
  }
  KJ_SYSCALL(fsync(fd_), path_);
  written_ += signedEvents.size();
}

}  // namespace cellos::broker
