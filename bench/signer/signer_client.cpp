// The broker's side of signing, as fast as it can go: sends `events` CloudEvents to a running
// cellos-event-signer in batches of `batch`, with `depth` batches in flight (so round trips
// overlap signing), and prints "<events> events in <seconds> s: <rate> events/s".
// Used by bench/signer/run; the rate is through the whole RPC path: Cap'n Proto framing,
// the signer's JSON parsing, digests, signature, and the fsynced chain head per batch.
//
// With REPORT = 1 it also does what the broker does once a batch is durable: reports it written
// (the signer adds it to its checkpoint tree and answers a signed checkpoint when one is due),
// and prints how many checkpoints came back and the seconds between them.
//
// usage: cellos-bench-signer SOCKET EVENTS BATCH DEPTH [REPORT]

#include "ipc/signer.capnp.h"
#include "ipc/socket.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <kj/async-io.h>
#include <kj/debug.h>
#include <nlohmann/json.hpp>

namespace {

// An event shaped like the broker's lifecycle.started (about 600 bytes of JSON).
std::string event(size_t n) {
  return nlohmann::json{
      {"specversion", "1.0"},
      {"id", "0190a6e2-7c1d-7b3a-9f00-" + std::to_string(100000000000 + n)},
      {"source", "urn:cellos:host:bench"},
      {"type", "dev.cellos.events.cell.lifecycle.v1.started"},
      {"subject", "urn:cellos:cell:bench"},
      {"time", "2026-11-29T10:00:00.123456Z"},
      {"datacontenttype", "application/json"},
      {"data",
       {{"cellId", "bench"},
        {"specId", "bench"},
        {"runId", "0190a6e2-7c1d-7b3a-9f00-000000000001"},
        {"backend", "linux"},
        {"image", "host"},
        {"argv", {"/bin/sh", "-c", "echo hello from the benchmark"}},
        {"phaseTimingsMicros", {{"admission", 120}, {"network_scope", 5400}, {"secrets", 3}}}}}}
      .dump();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: %s SOCKET EVENTS BATCH DEPTH [REPORT]\n", argv[0]);
    return 2;
  }
  std::string socket = argv[1];
  size_t total = std::strtoull(argv[2], nullptr, 10);
  size_t batch = std::strtoull(argv[3], nullptr, 10);
  size_t depth = std::strtoull(argv[4], nullptr, 10);
  bool report = argc == 6 && std::string(argv[5]) == "1";
  auto io = kj::setupAsyncIo();
  cellos::ipc::RpcLink link(*io.lowLevelProvider, cellos::ipc::connectUnix(socket),
                            {.maxFdsPerMessage = 0, .traversalLimitWords = 64 << 20},
                            capnp::rpc::twoparty::Side::CLIENT, nullptr);
  auto signer = link.bootstrap<cellos::ipc::EventSigner>();
  // Prepared up front: the measurement is the signer's work, not this client's JSON.
  std::vector<std::string> events;
  for (size_t i = 0; i < batch; ++i) events.push_back(event(i));

  uint64_t base = signer.headRequest().send().wait(io.waitScope).getNextSequence();
  std::vector<double> checkpointTimes;
  auto start = std::chrono::steady_clock::now();
  size_t sent = 0, signedCount = 0;
  std::function<kj::Promise<void>()> next = [&]() -> kj::Promise<void> {
    if (sent >= total) return kj::READY_NOW;
    size_t count = std::min(batch, total - sent);
    sent += count;
    auto request = signer.signRequest();
    auto list = request.initEvents(count);
    for (size_t i = 0; i < count; ++i) {
      list.set(i, kj::arrayPtr(reinterpret_cast<const capnp::byte*>(events[i].data()),
                               events[i].size()));
    }
    return request.send().then([&](capnp::Response<cellos::ipc::EventSigner::SignResults> r)
                                   -> kj::Promise<void> {
      signedCount += r.getSigned().size();
      if (!report) return next();
      // Responses on one connection arrive in chain order: all up to here are signed.
      auto written = signer.writtenRequest();
      written.setThroughSequence(base + signedCount - 1);
      return written.send().then([&](capnp::Response<cellos::ipc::EventSigner::WrittenResults> w) {
        if (w.getCheckpoint().size() > 0) {
          checkpointTimes.push_back(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        return next();
      });
    });
  };
  start = std::chrono::steady_clock::now();
  kj::Vector<kj::Promise<void>> lanes;
  for (size_t i = 0; i < depth; ++i) lanes.add(next());
  kj::joinPromises(lanes.releaseAsArray()).wait(io.waitScope);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  KJ_REQUIRE(signedCount == total, signedCount, total);
  if (report) {
    double widest = 0;
    for (size_t i = 1; i < checkpointTimes.size(); ++i) {
      widest = std::max(widest, checkpointTimes[i] - checkpointTimes[i - 1]);
    }
    printf("checkpoints %zu, widest gap %.3f s; ", checkpointTimes.size(), widest);
  }
  printf("%zu events in %.3f s: %.1f events/s\n", total, seconds, total / seconds);
  return 0;
}
