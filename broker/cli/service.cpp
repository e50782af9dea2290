// Host-service mode: `cellos submit`, `ps`, `logs`, `cancel` against a running broker.

#include "broker/cli/client.h"
#include "broker/cli/commands.h"
#include "core/clock.h"
#include "core/spec.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::cli {

namespace {

// One connection to the broker for a single request.
struct BrokerConnection {
  explicit BrokerConnection(const std::string& socket)
      : io(kj::setupAsyncIo()),
        link(*io.lowLevelProvider, ipc::connectUnix(socket), {.maxFdsPerMessage = 0},
             capnp::rpc::twoparty::Side::CLIENT, nullptr),
        broker(link.bootstrap<ipc::Broker>()) {}
  kj::AsyncIoContext io;
  ipc::RpcLink link;
  ipc::Broker::Client broker;
};

std::string age(uint64_t submittedMicros) {
  uint64_t now = core::unixMicrosNow();
  uint64_t seconds = now > submittedMicros ? (now - submittedMicros) / 1'000'000 : 0;
  if (seconds < 120) return std::to_string(seconds) + "s";
  if (seconds < 7200) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds / 3600) + "h";
}

// A broker error as the broker said it: without Cap'n Proto's "remote exception: " framing
// (also a refusal such as "broker.sock refused the connection: too many connections from uid
// N ...", which the broker sends instead of serving a connection over its limits).
std::string brokerError(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  if (auto at = text.find("remote exception: "); at != std::string::npos)
    text = text.substr(at + 18);
  return text;
}

// Runs `body`, turning a broker error (unknown run, socket missing) into one line and exit 1.
int guarded(const char* command, const std::function<int()>& body) {
  try {
    return body();
  } catch (const kj::Exception& e) {
    std::cerr << "cellos " << command << ": " << brokerError(e) << "\n";
    return 1;
  }
}

}  // namespace

int submitCommand(const ServiceOptions& options, const std::string& file, bool wait) {
  std::string document;
  try {
    document = readDocumentFile(file);
  } catch (const std::exception& e) {
    std::cerr << "cellos submit: " << e.what() << "\n";
    return kExitUsage;
  }
  auto parsed = core::parseCellDocument(document);
  if (!parsed.document) {
    std::cerr << file << ": invalid\n";
    for (const auto& v : parsed.violations) std::cerr << "  " << core::formatViolation(v) << "\n";
    return kExitUsage;
  }
  if (wait) {
    kj::UnixEventPort::captureSignal(SIGINT);
    kj::UnixEventPort::captureSignal(SIGTERM);
  }
  signal(SIGPIPE, SIG_IGN);
  try {
    return submitToBroker(options.socket, file, document, wait);
  } catch (const kj::Exception& e) {
    std::cerr << "cellos submit: " << brokerError(e) << "\n";
    return kExitRunnerFailed;
  }
}

int psCommand(const ServiceOptions& options) {
  return guarded("ps", [&]() {
    BrokerConnection connection(options.socket);
    auto response = connection.broker.listRequest().send().wait(connection.io.waitScope);
    printf("%-36s  %-24s  %-9s  %-10s  %5s  %s\n", "RUN", "CELL", "STATE", "OUTCOME", "EXIT",
           "AGE");
    for (auto run : response.getRuns()) {
      std::string exit = run.getHasStatus() ? std::to_string(run.getExitCode()) : "-";
      printf("%-36s  %-24s  %-9s  %-10s  %5s  %s\n", run.getRunId().cStr(),
             run.getCellId().cStr(), run.getState().cStr(),
             run.getOutcome().size() ? run.getOutcome().cStr() : "-", exit.c_str(),
             age(run.getSubmittedMicros()).c_str());
    }
    return 0;
  });
}

int logsCommand(const ServiceOptions& options, const std::string& runId) {
  return guarded("logs", [&]() {
    BrokerConnection connection(options.socket);
    auto& waitScope = connection.io.waitScope;
    // Asking for the run first: the broker only answers for runs the caller may see.
    auto open = connection.broker.openRequest();
    open.setRunId(runId);
    auto run = open.send().getRun();
    run.infoRequest().send().wait(waitScope);
    std::string path =
        connection.broker.eventLogRequest().send().wait(waitScope).getPath().cStr();
    std::ifstream in(path);
    if (!in) {
      std::cerr << "cellos logs: cannot read the event log " << path << ": " << strerror(errno)
                << " (members of group cellos may read it)\n";
      return 1;
    }
    std::string line;
    size_t printed = 0;
    while (std::getline(in, line)) {
      auto event = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!event.is_object()) continue;
      auto data = event.find("data");
      if (data == event.end() || !data->is_object()) continue;
      auto id = data->find("runId");
      if (id != data->end() && id->is_string() && *id == runId) {
        std::cout << line << "\n";
        ++printed;
      }
    }
    return printed > 0 ? 0 : 1;
  });
}

int cancelCommand(const ServiceOptions& options, const std::string& runId) {
  return guarded("cancel", [&]() {
    BrokerConnection connection(options.socket);
    auto open = connection.broker.openRequest();
    open.setRunId(runId);
    auto run = open.send().getRun();
    run.cancelRequest().send().wait(connection.io.waitScope);
    std::cerr << "cellos: cancel requested for " << runId << "\n";
    return 0;
  });
}

}  // namespace cellos::cli
