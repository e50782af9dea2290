#pragma once
// The DnsHelper RPC interface (the spawner half of cellos-dns-helper): for each cell it starts
// a child that enters the cell's network namespace and serves its DNS, and relays that child's
// audit records to the broker.

#include "ipc/dns.capnp.h"

#include <kj/async-io.h>

#include <string>
#include <vector>

namespace cellos::dns {

struct SpawnerConfig {
  int selfExeFd;                // O_PATH fd of our own binary, for fexecve of children
  uint32_t childUid, childGid;  // cellos-dns
  uint64_t childMemoryBytes = 64ull << 20;
  std::vector<std::string> guardedRanges;  // operator's extra rebinding-guard ranges (CIDR)
};

class SpawnerState : private kj::TaskSet::ErrorHandler {
 public:
  SpawnerState(kj::AsyncIoContext& io, SpawnerConfig config)
      : io(io), config(config), tasks(*this) {}
  kj::AsyncIoContext& io;
  SpawnerConfig config;
  kj::TaskSet tasks;  // reaping children

 private:
  void taskFailed(kj::Exception&& exception) override;
};

class DnsHelperServer final : public ipc::DnsHelper::Server {
 public:
  explicit DnsHelperServer(SpawnerState& state) : state_(state) {}
  kj::Promise<void> startProxy(StartProxyContext context) override;

 private:
  SpawnerState& state_;
};

}  // namespace cellos::dns
