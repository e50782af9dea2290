#pragma once
// The RPC half of cellos-vmm-agent: the VmmAgent interface the broker calls, the Cell
// capability each createCell returns, and the relay of a workload's output.

#include "ipc/vmm.capnp.h"

#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/io.h>

#include <set>
#include <string>
#include <vector>

namespace cellos::vmm {

// What createCell gets back from the launcher: the cell's init pid and its fds.
struct LaunchedFds {
  int initPid = 0;
  kj::AutoCloseFd pidFd, netnsFd, stdoutFd, stderrFd, startFd, statusFd;
};

// Talks to the launcher half over the private socketpair, one request at a time.
class LauncherLink {
 public:
  explicit LauncherLink(kj::Own<kj::AsyncCapabilityStream> stream) : stream_(kj::mv(stream)) {}
  kj::Promise<LaunchedFds> launch(ipc::CellRequest::Reader request);
  kj::Promise<std::vector<std::string>> destroy(const std::string& cellId, int initPid);

 private:
  // Runs `request` after every earlier one has finished, so replies cannot interleave.
  template <typename T>
  kj::Promise<T> serialized(kj::Function<kj::Promise<T>()> request);
  kj::Promise<kj::Own<capnp::MessageReader>> exchange(capnp::MessageBuilder& request,
                                                      kj::ArrayPtr<kj::AutoCloseFd> fdSpace);

  kj::Own<kj::AsyncCapabilityStream> stream_;
  kj::Promise<void> tail_ = kj::READY_NOW;
};

// State shared by every connection: the launcher, the cells that exist, background teardown.
class AgentState : private kj::TaskSet::ErrorHandler {
 public:
  AgentState(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> launcher)
      : io(io), launcher(kj::mv(launcher)), tasks(*this) {}
  kj::AsyncIoContext& io;
  LauncherLink launcher;
  std::set<std::string> liveCells;
  kj::TaskSet tasks;

  // Output beyond this many bytes per stream is drained but not relayed.
  uint64_t maxOutputBytes = 64ull << 20;

 private:
  void taskFailed(kj::Exception&& exception) override;
};

class VmmAgentServer final : public ipc::VmmAgent::Server {
 public:
  explicit VmmAgentServer(AgentState& state) : state_(state) {}
  kj::Promise<void> createCell(CreateCellContext context) override;

 private:
  AgentState& state_;
};

}  // namespace cellos::vmm
