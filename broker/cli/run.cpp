#include "broker/cli/client.h"
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
#include <optional>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::cli {

namespace {

// Checks the host policy file before anything starts, so a mistake in it is a usage error with
// every problem listed, not a broker that fails to start. True when it is valid.
std::optional<core::HostPolicy> usableHostPolicy(const std::string& path) {
  std::string bytes;
  try {
    // Same bound and reading as a document: the parser refuses an oversized file itself.
    bytes = readDocumentFile(path);
  } catch (const std::exception& e) {
    std::cerr << "cellos run: host policy " << e.what() << "\n";
    return std::nullopt;
  }
  auto parsed = core::parseHostPolicy(bytes);
  if (parsed.policy) return parsed.policy;
  std::cerr << path << ": invalid host policy\n";
  for (const auto& v : parsed.violations) std::cerr << "  " << core::formatViolation(v) << "\n";
  return std::nullopt;
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
  core::HostPolicy policy;
  if (!options.policyPath.empty()) {
    auto usable = usableHostPolicy(options.policyPath);
    if (!usable) return kExitUsage;
    policy = *usable;
  }
  // What the cell will run on: the document's backend, else the host policy's default, else
  // linux. --backend states it and must agree (it does not override either).
  std::string named =
      parsed.document->spec.placement.backend.value_or(policy.defaultBackend.value_or("linux"));
  std::string backend = !options.backend.empty() ? options.backend : named;
  if (!core::isBuiltBackend(backend)) {
    std::cerr << "cellos run: backend " << backend
              << " is not available in this version (linux, gvisor and microvm are)\n";
    return kExitUsage;
  }
  if (backend != named) {
    std::cerr << "cellos run: --backend " << backend << " but the cell would run on " << named
              << " (spec.placement.backend, else the host policy's defaultBackend, else linux)\n";
    return kExitUsage;
  }
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
  std::vector<std::string> brokerArgs;
  for (const auto& field : options.redact) brokerArgs.push_back("--redact=" + field);
  if (options.eventsMaxBytes > 0) {
    brokerArgs.push_back("--events-max-bytes=" + std::to_string(options.eventsMaxBytes));
  }
  EmbeddedSystem system({options.stateDir, options.eventsPath, "", options.logLevel, policyPath,
                         options.uplinkNetns, brokerArgs});
  int status;
  try {
    system.start();
    status = submitToBroker(system.brokerSocket(), options.file, document, /*wait=*/true);
  } catch (const kj::Exception& e) {
    std::cerr << "cellos run: " << e.getDescription().cStr() << "\n";
    status = kExitRunnerFailed;
  } catch (const std::exception& e) {
    std::cerr << "cellos run: " << e.what() << "\n";
    status = kExitRunnerFailed;
  }
  system.stop();
  std::cerr << "cellos: events written to " << system.eventsPath() << "\n";
  if (!options.natsUrl.empty()) {
    // The cell's status stays the exit status: an unreachable server loses nothing (the events
    // are in the log and the next publish resumes from the forwarder's cursor).
    int published = system.publishToNats(options.natsUrl, options.natsTimeout);
    if (published == 0) {
      std::cerr << "cellos: events published to " << options.natsUrl << "\n";
    } else {
      std::cerr << "cellos: events NOT all published to " << options.natsUrl
                << " (forwarder status " << published
                << "); they stay in the log and the next `cellos run --nats-url` resumes\n";
    }
  }
  return status;
}

}  // namespace cellos::cli
