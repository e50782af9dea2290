// Host-service mode: `cellos submit`, `ps`, `logs`, `cancel` against a running broker.

#include "broker/cli/client.h"
#include "broker/cli/commands.h"
#include "broker/cli/messages.h"
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
#include <optional>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::cli {

namespace {

// One connection to the broker for a single request.
struct BrokerConnection {
  explicit BrokerConnection(const std::string& socket)
      : io(kj::setupAsyncIo()),
        link(*io.lowLevelProvider, connectToBroker(socket), {.maxFdsPerMessage = 0},
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

// The exit status of `ps`, `logs` and `cancel` when the command was carried out but found
// nothing to act on: no such run (or not the caller's), a finished run to cancel, no events.
constexpr int kExitNothingToDo = 1;

// Runs `body`; the runner failing (the broker unreachable, refusing the connection, or gone
// mid-call) is one plain line and exit 125, as for `submit`.
int guarded(const char* command, const std::function<int()>& body) {
  try {
    return body();
  } catch (const BrokerUnreachable& e) {
    std::cerr << "cellos " << command << ": " << e.what() << "\n";
  } catch (const kj::Exception& e) {
    std::cerr << "cellos " << command << ": " << brokerFailure(e) << "\n";
  }
  return kExitRunnerFailed;
}

// The run `runId` as the caller may see it (the broker lists only the caller's own runs, every
// run for root, and open() answers for the same ones), or nullopt after printing "no run ID".
std::optional<ipc::RunSummary::Reader> visibleRun(const char* command,
                                                  capnp::Response<ipc::Broker::ListResults>& listed,
                                                  const std::string& runId) {
  for (auto run : listed.getRuns()) {
    if (run.getRunId() == runId) return run;
  }
  std::cerr << "cellos " << command << ": no run " << runId
            << " (`cellos ps` lists yours; finished runs are kept for a while)\n";
  return std::nullopt;
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
  return guarded("submit", [&]() { return submitToBroker(options.socket, file, document, wait); });
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
    // Asking for the run first: the broker only lists runs the caller may see.
    auto listed = connection.broker.listRequest().send().wait(waitScope);
    if (!visibleRun("logs", listed, runId)) return kExitNothingToDo;
    std::string path = connection.broker.eventLogRequest().send().wait(waitScope).getPath().cStr();
    std::ifstream in(path);
    if (!in) {
      std::cerr << "cellos logs: cannot read the event log " << path << ": " << strerror(errno)
                << " (members of group cellos may read it)\n";
      return kExitRunnerFailed;
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
    if (printed == 0) {
      // Older runs' events may be in a rotated file (events.jsonl.N) beside the log.
      std::cerr << "cellos logs: no events of run " << runId << " in " << path << "\n";
      return kExitNothingToDo;
    }
    return 0;
  });
}

int cancelCommand(const ServiceOptions& options, const std::string& runId) {
  return guarded("cancel", [&]() {
    BrokerConnection connection(options.socket);
    auto& waitScope = connection.io.waitScope;
    auto listed = connection.broker.listRequest().send().wait(waitScope);
    auto summary = visibleRun("cancel", listed, runId);
    if (!summary) return kExitNothingToDo;
    auto open = connection.broker.openRequest();
    open.setRunId(runId);
    auto cancelled = open.send().getRun().cancelRequest().send().wait(waitScope);
    if (cancelled.getAlreadyFinished()) {
      // What it ended as, now (the listing may predate its end).
      auto open = connection.broker.openRequest();
      open.setRunId(runId);
      auto response = open.send().getRun().summaryRequest().send().wait(waitScope);
      auto now = response.getSummary();
      std::cerr << "cellos cancel: run " << runId << " has already finished (outcome "
                << now.getOutcome().cStr() << ", exit " << now.getExitCode()
                << "): nothing to cancel\n";
      return kExitNothingToDo;
    }
    std::cerr << "cellos: cancel requested for " << runId << "\n";
    return 0;
  });
}

}  // namespace cellos::cli
