#include "broker/cli/commands.h"
#include "broker/cli/embedded.h"
#include "core/host_policy.h"
#include "core/spec.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
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

// Checks the host policy file before anything starts, so a mistake in it is a usage error with
// every problem listed, not a broker that fails to start. True when it is valid.
bool hostPolicyUsable(const std::string& path) {
  std::string bytes;
  try {
    // Same bound and reading as a document: the parser refuses an oversized file itself.
    bytes = readDocumentFile(path);
  } catch (const std::exception& e) {
    std::cerr << "cellos run: host policy " << e.what() << "\n";
    return false;
  }
  auto parsed = core::parseHostPolicy(bytes);
  if (parsed.policy) return true;
  std::cerr << path << ": invalid host policy\n";
  for (const auto& v : parsed.violations) std::cerr << "  " << core::formatViolation(v) << "\n";
  return false;
}

int exitStatusOf(ipc::RunResult::Reader result) {
  if (!result.getHasStatus()) return kExitRunnerFailed;
  auto status = result.getStatus();
  if (status.getSignal() != 0) return 128 + status.getSignal();
  return status.getExitCode();
}

int submitAndWait(const std::string& socket, const std::string& file, const std::string& document) {
  auto io = kj::setupAsyncIo();
  ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(socket), {.maxFdsPerMessage = 0},
                    capnp::rpc::twoparty::Side::CLIENT, nullptr);
  auto broker = link.bootstrap<ipc::Broker>();
  auto request = broker.submitRequest();
  request.setDocument(
      kj::arrayPtr(reinterpret_cast<const capnp::byte*>(document.data()), document.size()));
  request.setOutput(kj::heap<TerminalSink>());
  auto response = request.send().wait(io.waitScope);
  if (response.getViolations().size() > 0) {
    // Refused at admission (the host policy): every violation, as for an invalid document.
    std::cerr << file << ": refused at admission\n";
    for (auto v : response.getViolations()) std::cerr << "  " << v.cStr() << "\n";
    return kExitUsage;
  }
  auto run = response.getRun();
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

}  // namespace

int runCommand(const RunOptions& options) {
  std::string document;
  try {
    document = readDocumentFile(options.file);
  } catch (const std::exception& e) {
    std::cerr << "cellos run: " << e.what() << "\n";
    return kExitUsage;
  }
  // Refuse an invalid document before anything is created.
  auto parsed = core::parseCellDocument(document);
  if (!parsed.document) {
    std::cerr << options.file << ": invalid\n";
    for (const auto& v : parsed.violations) std::cerr << "  " << core::formatViolation(v) << "\n";
    return kExitUsage;
  }
  std::string backend = !options.backend.empty()
                            ? options.backend
                            : parsed.document->spec.placement.backend.value_or("linux");
  if (backend != "linux") {
    std::cerr << "cellos run: backend " << backend
              << " is not available in this version (only linux)\n";
    return kExitUsage;
  }
  if (!options.policyPath.empty() && !hostPolicyUsable(options.policyPath)) return kExitUsage;
  if (geteuid() != 0) {
    std::cerr << "cellos run: embedded mode starts the VM launcher and the DNS helper, which "
                 "need root; run it as root (or use `cellos submit` against a host service)\n";
    return kExitUsage;
  }

  // Signals go into the event loop from here on (before any thread or daemon exists).
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  signal(SIGPIPE, SIG_IGN);

  // Absolute: the broker must find the file whatever its working directory.
  std::string policyPath =
      options.policyPath.empty() ? "" : std::filesystem::absolute(options.policyPath).string();
  EmbeddedSystem system({options.stateDir, options.eventsPath, "", options.logLevel, policyPath});
  int status;
  try {
    system.start();
    status = submitAndWait(system.brokerSocket(), options.file, document);
  } catch (const kj::Exception& e) {
    std::cerr << "cellos run: " << e.getDescription().cStr() << "\n";
    status = kExitRunnerFailed;
  } catch (const std::exception& e) {
    std::cerr << "cellos run: " << e.what() << "\n";
    status = kExitRunnerFailed;
  }
  system.stop();
  std::cerr << "cellos: events written to " << system.eventsPath() << "\n";
  return status;
}

}  // namespace cellos::cli
