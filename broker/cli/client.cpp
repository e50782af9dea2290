#include "broker/cli/client.h"

#include "broker/cli/commands.h"
#include "broker/cli/messages.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

}  // namespace

int runExitStatus(const RunStatusFacts& facts) {
  if (!facts.hasStatus) return kExitRunnerFailed;
  // An export that failed is the command's (its artifact is missing or too big); docs/spec.md.
  if (facts.outcome == "failed" && facts.failedPhase != "export") return kExitRunnerFailed;
  if (facts.signal != 0) return 128 + facts.signal;
  return facts.exitCode;
}

kj::AutoCloseFd connectToBroker(const std::string& socket) {
  auto unreachable = [&](int error) {
    return BrokerUnreachable("cannot reach the broker at " + socket + ": " +
                             unreachableReason(error));
  };
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket.empty() || socket.size() >= sizeof(address.sun_path)) throw unreachable(ENAMETOOLONG);
  memcpy(address.sun_path, socket.data(), socket.size());
  kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw unreachable(errno);
  int rc;
  do {
    rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw unreachable(errno);
  return fd;
}

std::string brokerFailure(const kj::Exception& e) {
  // A broker that refuses a connection says why (an abort: "remote exception: broker.sock
  // refused the connection: ..."); a connection that just ended carries no reason of its own.
  std::string description = e.getDescription().cStr();
  if (e.getType() == kj::Exception::Type::DISCONNECTED &&
      description.find("remote exception: ") == std::string::npos) {
    return "lost the connection to the broker (is cellos-broker still running? `systemctl "
           "status cellos-broker`)";
  }
  return plainMessage(e);
}

int submitToBroker(const std::string& socket, const std::string& file, const std::string& document,
                   bool wait, const std::string& backend) {
  auto io = kj::setupAsyncIo();
  ipc::RpcLink link(*io.lowLevelProvider, connectToBroker(socket), {.maxFdsPerMessage = 0},
                    capnp::rpc::twoparty::Side::CLIENT, nullptr);
  auto broker = link.bootstrap<ipc::Broker>();
  auto request = broker.submitRequest();
  request.setDocument(
      kj::arrayPtr(reinterpret_cast<const capnp::byte*>(document.data()), document.size()));
  request.setOutput(kj::heap<TerminalSink>());
  request.setDetach(!wait);
  request.setBackend(backend);
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
  std::string name = outcome.getOutcome().cStr();
  if (name == "cancelled") {
    std::cerr << "cellos: the run was cancelled\n";
  } else if (name != "succeeded") {
    // The full error is in the broker's log; here one line without source text.
    std::cerr << "cellos: run failed in phase " << outcome.getFailedPhase().cStr() << ": "
              << plainMessage(outcome.getError().cStr()) << "\n";
  }
  if (outcome.getStatus().getTimedOut()) std::cerr << "cellos: the cell timed out\n";
  return runExitStatus({outcome.getHasStatus(), outcome.getStatus().getExitCode(),
                        outcome.getStatus().getSignal(), name, outcome.getFailedPhase().cStr()});
}

}  // namespace cellos::cli
