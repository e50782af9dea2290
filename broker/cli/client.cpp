#include "broker/cli/client.h"

#include "broker/cli/commands.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <signal.h>
#include <unistd.h>

#include <iostream>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::cli {

namespace {

// Writes the cell's output to our own stdout/stderr as it arrives.
class TerminalSink final : public ipc::OutputSink::Server {
 public:
  kj::Promise<void> write(WriteContext context) override {
    auto params = context.getParams();
    int fd = params.getStream() == ipc::OutputStream::STDERR ? 2 : 1;
    auto data = params.getData();
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.begin() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        break;  // our own stdout is gone (closed pipe): drop the rest, keep the run going
      }
      off += n;
    }
    return kj::READY_NOW;
  }
  kj::Promise<void> done(DoneContext) override { return kj::READY_NOW; }
};

int exitStatusOf(ipc::RunResult::Reader result) {
  if (!result.getHasStatus()) return kExitRunnerFailed;
  auto status = result.getStatus();
  if (status.getSignal() != 0) return 128 + status.getSignal();
  return status.getExitCode();
}

}  // namespace

int submitToBroker(const std::string& socket, const std::string& file, const std::string& document,
                   bool wait) {
  auto io = kj::setupAsyncIo();
  ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(socket), {.maxFdsPerMessage = 0},
                    capnp::rpc::twoparty::Side::CLIENT, nullptr);
  auto broker = link.bootstrap<ipc::Broker>();
  auto request = broker.submitRequest();
  request.setDocument(
      kj::arrayPtr(reinterpret_cast<const capnp::byte*>(document.data()), document.size()));
  request.setOutput(kj::heap<TerminalSink>());
  request.setDetach(!wait);
  auto response = request.send().wait(io.waitScope);
  if (response.getViolations().size() > 0) {
    // Refused at admission (the host policy): every violation, as for an invalid document.
    std::cerr << file << ": refused at admission\n";
    for (auto v : response.getViolations()) std::cerr << "  " << v.cStr() << "\n";
    return kExitUsage;
  }
  auto run = response.getRun();
  if (!wait) {
    auto info = run.infoRequest().send().wait(io.waitScope);
    std::cout << info.getRunId().cStr() << "\n";
    return 0;
  }
  // Ctrl-C / SIGTERM: cancel the run, then keep waiting so teardown finishes and the log ends
  // with lifecycle.destroyed.
  auto interrupted = io.unixEventPort.onSignal(SIGINT)
                         .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
                         .then([run](siginfo_t) mutable {
                           std::cerr << "cellos: interrupted; cancelling the cell\n";
                           return run.cancelRequest().send().ignoreResult();
                         })
                         .eagerlyEvaluate(nullptr);
  auto result = run.waitRequest().send().wait(io.waitScope);
  auto outcome = result.getResult();
  if (!outcome.getHasStatus() || outcome.getOutcome() != "succeeded") {
    std::cerr << "cellos: run failed in phase " << outcome.getFailedPhase().cStr() << ": "
              << outcome.getError().cStr() << "\n";
  }
  if (outcome.getStatus().getTimedOut()) std::cerr << "cellos: the cell timed out\n";
  return exitStatusOf(outcome);
}


}  // namespace cellos::cli
