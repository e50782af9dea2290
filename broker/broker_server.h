#pragma once
// The broker's client API (broker.sock): submit a document, follow and cancel its run.

#include "broker/cell_run.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <map>
#include <memory>

namespace cellos::broker {

class BrokerState : private kj::TaskSet::ErrorHandler {
 public:
  explicit BrokerState(BrokerContext& context) : context(context), tasks(*this) {}
  BrokerContext& context;
  kj::TaskSet tasks;

 private:
  void taskFailed(kj::Exception&& exception) override;
};

class BrokerServer final : public ipc::Broker::Server {
 public:
  BrokerServer(BrokerState& state, ipc::PeerCredentials peer) : state_(state), peer_(peer) {}
  kj::Promise<void> submit(SubmitContext context) override;

 private:
  BrokerState& state_;
  ipc::PeerCredentials peer_;
};

}  // namespace cellos::broker
