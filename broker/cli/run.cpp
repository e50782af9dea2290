#include "broker/cli/client.h"
#include "broker/cli/commands.h"
#include "broker/cli/embedded.h"
#include "broker/cli/messages.h"
#include "core/host_policy.h"
#include "core/spec.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include <kj/async-unix.h>
#include <kj/debug.h>

namespace cellos::cli {

namespace {

// What is at `path` now, to tell whether a run wrote to it.
std::optional<std::pair<ino_t, off_t>> fileIdentity(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_ino, st.st_size);
}

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
  // What the cell will run on: --backend, which chooses it for a document that names none (as
  // docker's --runtime does; the broker still holds it to the host policy), else the document's
  // backend, else the host policy's default, else linux.
  const auto& documentBackend = parsed.document->spec.placement.backend;
  if (!options.backend.empty()) {
    if (documentBackend && *documentBackend != options.backend) {
      std::cerr << "cellos run: --backend " << options.backend << ", but " << options.file
                << " names backend " << *documentBackend
                << " (spec.placement.backend); drop one of them\n";
      return kExitUsage;
    }
    // The name is checked as the document's own field would be.
    auto chosen = core::chooseBackend(parsed, options.backend);
    if (!chosen.document) {
      for (const auto& v : chosen.violations) {
        std::cerr << "cellos run: --backend: " << v.message << "\n";
      }
      return kExitUsage;
    }
  }
  std::string backend = !options.backend.empty()
                            ? options.backend
                            : documentBackend.value_or(policy.defaultBackend.value_or("linux"));
  if (!core::isBuiltBackend(backend)) {
    std::cerr << "cellos run: backend " << backend
              << " is not available in this version (linux, gvisor and microvm are)\n";
    return kExitUsage;
  }
  // The VM launcher that embedded mode starts runs the backend's cells with its default host
  // program (gvisor: runsc).
  const core::BackendTraits& traits = *core::backendTraits(backend);
  std::string program(traits.hostProgram);
  if (!program.empty() && access(program.c_str(), X_OK) != 0) {
    std::cerr << "cellos run: " << backend
              << " backend unavailable: " << program.substr(program.rfind('/') + 1)
              << " is not installed (" << program << ": " << strerror(errno)
              << "; `apt-get install " << traits.hostPackage << "`, or see `cellos doctor`)\n";
    return kExitRunnerFailed;
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
  auto eventsBefore = fileIdentity(system.eventsPath());
  int status;
  try {
    system.start();
    status = submitToBroker(system.brokerSocket(), options.file, document, /*wait=*/true,
                            options.backend);
  } catch (const kj::Exception& e) {
    // One line here; the daemons' own logs (above) have the details.
    std::cerr << "cellos run: " << brokerFailure(e) << "\n";
    status = kExitRunnerFailed;
  } catch (const std::exception& e) {
    std::cerr << "cellos run: " << plainMessage(e.what()) << "\n";
    status = kExitRunnerFailed;
  }
  system.stop();
  // Only when this run wrote to the log (a daemon that failed to start wrote nothing).
  auto eventsAfter = fileIdentity(system.eventsPath());
  if (eventsAfter && eventsAfter != eventsBefore) {
    std::cerr << "cellos: events written to " << system.eventsPath() << "\n";
  }
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
