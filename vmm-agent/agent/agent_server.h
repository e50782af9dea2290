#pragma once
// The RPC half of cellos-vmm-agent: the VmmAgent interface the broker calls, the Cell
// capability each createCell returns, and the relay of a workload's output.

#include "ipc/vmm.capnp.h"

#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/io.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace cellos::vmm {

// The network scope the launcher built for a cell (ipc::NetworkScope, as plain data).
struct CellNetworkInfo {
  std::string uplinkInterface, uplinkAddress, cellAddress;
  bool nftApplied = false;
  uint32_t nftRuleCount = 0;
  std::vector<std::string> hostDestinations;  // CIDR, passed on for the DNS child's refusal
  std::string dnsBindAddress;                 // where the DNS helper binds in the cell
};

// What createCell gets back from the launcher: the cell's init pid, its fds, its network scope
// and the launcher's setup timings.
struct LaunchedFds {
  int initPid = 0;
  kj::AutoCloseFd pidFd, netnsFd, stdoutFd, stderrFd, startFd, statusFd;
  CellNetworkInfo network;
  std::vector<std::pair<std::string, uint64_t>> timings;
  std::vector<std::pair<std::string, std::string>> guestBoot;  // a VM cell's (ipc BootFact)
};

// What the launcher read from a cell after its workload ended (ipc::CellReport, as plain data).
struct CellReportData {
  struct Flow {
    std::string ruleId, rule, verdict;
    uint64_t packets = 0, bytes = 0;
  };
  bool oomKilled = false;
  uint64_t oomKillCount = 0;
  uint64_t cpuUsageMicros = 0;
  std::vector<Flow> flows;
};

// One artifact the launcher opened (fd valid), or why it refused (fd -1, `refused` set).
struct ArtifactFd {
  kj::AutoCloseFd fd;
  uint64_t bytes = 0;
  std::string refused;
};

// Talks to the launcher half over the private socketpair, one request at a time. Each exchange
// (write a request, read its reply) runs to its end in the link's own task set, whatever
// happens to the caller: a caller that goes away mid-call (its broker died) only loses the
// answer. Cancelling an exchange half-way would leave the launcher's reply unread on the
// socket, and the next request would read it as its own.
class LauncherLink : private kj::TaskSet::ErrorHandler {
 public:
  explicit LauncherLink(kj::Own<kj::AsyncCapabilityStream> stream)
      : stream_(kj::mv(stream)), exchanges_(*this) {}
  kj::Promise<LaunchedFds> launch(ipc::CellRequest::Reader request);
  kj::Promise<std::vector<std::string>> destroy(const std::string& cellId, int initPid);
  kj::Promise<CellReportData> inspect(const std::string& cellId);
  kj::Promise<ArtifactFd> openArtifact(const std::string& cellId, const std::string& path,
                                       uint64_t maxBytes);
  // Sends a copy of `bundle` to be written into the cell's /run/secrets; the request message is
  // wiped once the exchange is over. Resolves to the names written.
  kj::Promise<std::vector<std::string>> deliverSecrets(const std::string& cellId,
                                                       ipc::SecretBundle::Reader bundle);
  kj::Promise<void> allowEgress(const std::string& cellId, ipc::EgressAddresses::Reader addresses);

  // Resolves when an exchange failed part-way (the launcher half died, or sent what we cannot
  // read): the stream is then out of step for good, so every later request fails at once and
  // the agent stops (a restart reaps what the launcher left).
  kj::Promise<void> onBroken() { return broken_.promise.addBranch(); }

 private:
  // Runs `request` after every earlier one has finished, so replies cannot interleave.
  template <typename T>
  kj::Promise<T> serialized(kj::Function<kj::Promise<T>()> request);
  kj::Promise<kj::Own<capnp::MessageReader>> exchange(capnp::MessageBuilder& request,
                                                      kj::ArrayPtr<kj::AutoCloseFd> fdSpace);

  void taskFailed(kj::Exception&& exception) override;

  kj::Own<kj::AsyncCapabilityStream> stream_;
  kj::Promise<void> tail_ = kj::READY_NOW;
  struct Broken {
    Broken() {
      auto paf = kj::newPromiseAndFulfiller<void>();
      promise = paf.promise.fork();
      fulfiller = kj::mv(paf.fulfiller);
    }
    kj::ForkedPromise<void> promise = nullptr;
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
    kj::Maybe<kj::Exception> why;
  } broken_;
  kj::TaskSet exchanges_;  // declared after stream_: cancelled before it goes
};

// A cell that can be torn down in the background, from outside its capability's lifetime.
class CellAbandoner {
 public:
  virtual void abandon() = 0;
  // Unique per cell for the agent's lifetime (cell ids repeat: one document, many runs).
  uint64_t serial = 0;

 protected:
  ~CellAbandoner() = default;
};

// State shared by every connection: the launcher, the cells that exist, background teardown.
//
// Reference-counted, and every capability that touches it (each VmmAgentServer, each Cell)
// holds a reference: Cap'n Proto decides when a capability is released, not we. A call that
// was in flight when the broker died can keep its Cell alive inside the RPC system's own
// detached promises until the event loop itself is destroyed, after serve() has returned; a
// plain reference to state on serve()'s stack was then written through after it was gone (a
// double free in a root process, at a moment the unprivileged broker chose). Now the state
// lives exactly as long as the last capability that can reach it.
class AgentState final : public kj::Refcounted, private kj::TaskSet::ErrorHandler {
 public:
  AgentState(kj::AsyncIoContext& io, kj::Own<kj::AsyncCapabilityStream> launcher)
      : io(io), launcher(kj::mv(launcher)), tasks(*this) {}
  kj::AsyncIoContext& io;
  LauncherLink launcher;
  std::set<std::string> liveCells;
  // Cells whose capability is still held somewhere, by id; a cell removes its own entry (not a
  // later cell's of the same id) when it goes.
  std::map<std::string, CellAbandoner*> cells;
  uint64_t nextSerial = 1;
  kj::TaskSet tasks;

  // Output beyond this many bytes per stream is drained but not relayed.
  uint64_t maxOutputBytes = 64ull << 20;

  // The agent stops serving: every cell still alive is torn down, whoever holds its capability,
  // and the teardowns get up to `limit` to finish. Resolves when they have (or the limit
  // passed); the state is closed from then on.
  kj::Promise<void> shutDown(kj::Duration limit);
  // From the first line of shutDown() on: no new cell is accepted, and one whose launch was
  // already under way is torn down as soon as it exists.
  bool shuttingDown() const { return shuttingDown_; }
  // Closes the state however serve() ends (also by an exception): see closed().
  void close() { closed_ = true; }

  // True once shutDown() has resolved: the event loop is about to go, so a cell released after
  // this must not start work in it (it kills its init and leaves the rest to the next start's
  // reaper).
  bool closed() const { return closed_; }

 private:
  void taskFailed(kj::Exception&& exception) override;
  bool shuttingDown_ = false;
  bool closed_ = false;
};

// One per broker connection. When the connection goes away (the broker exited or was killed),
// every cell created through it is torn down, whatever still refers to its capability: a call
// that was in flight (a pending wait()) must not keep an orphaned cell alive.
class VmmAgentServer final : public ipc::VmmAgent::Server {
 public:
  explicit VmmAgentServer(kj::Own<AgentState> state) : state_(kj::mv(state)) {}
  ~VmmAgentServer() noexcept(false);
  kj::Promise<void> createCell(CreateCellContext context) override;

 private:
  kj::Own<AgentState> state_;
  // Created through this connection: id and serial, so that a later cell of the same id made
  // through another connection is never abandoned with ours.
  std::vector<std::pair<std::string, uint64_t>> cells_;
};

}  // namespace cellos::vmm
