// cellos-broker: the only coordinator. It reads cell documents from clients, and asks the VM
// launcher, the DNS helper and the event signer to do the privileged parts.
//
// Privilege story, top to bottom:
//   1. start as root (embedded mode) or as cellos (service mode); close inherited fds; read
//      the host policy (a bad one stops start-up before anything is created);
//   2. open the event log for append and its directory (rotation), the dead-letter directory
//      and the export root (creating them, owned by cellos), and bind broker.sock (owner cellos,
//      group cellos, 0660) — the only steps that may need root; afterwards the broker only creates
//      new files under those directory fds (openat O_CREAT|O_EXCL, see seccomp_profile.cpp);
//   3. become cellos with no capabilities, set no_new_privs;
//   4. connect to the three helpers (their listeners check that we are cellos), and read the
//      fd limit that bounds our clients' connections;
//   5. install the broker's seccomp profile; only then read a client's document.

#include "broker/artifact_export.h"
#include "broker/broker_server.h"
#include "broker/cell_run.h"
#include "broker/event_log.h"
#include "broker/jsonl_log.h"
#include "broker/run_journal.h"
#include "broker/seccomp_profile.h"
#include "broker/secret_broker.h"
#include "core/host_policy.h"
#include "core/uuid.h"
#include "eventlog/dead_letter.h"
#include "eventlog/format.h"
#include "ipc/socket.h"
#include "privsep/credentials.h"
#include "privsep/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <tuple>

#include <kj/debug.h>

namespace {

using namespace cellos;

struct Options {
  privsep::CommonOptions common{.socketPath = "/run/cellos/broker.sock", .user = "cellos"};
  std::string clientGroup = "cellos";
  std::string vmmSocket = "/run/cellos/vmm.sock";
  std::string dnsSocket = "/run/cellos/dns.sock";
  std::string signerSocket = "/run/cellos/signer.sock";
  std::string eventsPath = "/var/lib/cellos/events/events.jsonl";
  std::string hostId;
  std::string policyPath;                 // empty: no host policy beyond the document's own rules
  uint64_t eventsMaxBytes = 0;            // 0: never rotate the event log
  std::string deadLetterDir;              // empty: <events>.dead-letter
  std::vector<std::string> redactFields;  // data members replaced before signing
  uint64_t testHoldSignedBatch = 0;       // crash tests only (hidden option)
  int connectTimeoutSeconds = 10;
  size_t maxConcurrent = 4;
  std::string runJournalDir;  // default <events>.runs
  std::string exportRoot = "/var/lib/cellos/exports";
  uint64_t exportMaxBytes = 256ull << 20;
  std::string testFaultPhase;     // fault-injection tests only (hidden)
  std::string testHoldPhase;      // peer-death tests only (hidden)
  bool enableTestFaults = false;  // required for testFaultPhase and testHoldPhase (hidden)
  std::string secretSource = "env";
  std::string secretsDir;
  size_t maxConnectionsPerUid = ipc::ConnectionLimits{}.perUid;
  size_t maxConnections = 0;  // 0: the fd limit minus what the broker keeps for itself
};

// Descriptors the broker keeps for its own work: the log, its directories and the secret files
// (opened at start), the three helpers' links, and per running cell its network namespace, the
// artifact being exported and its copy, with room to spare.
constexpr size_t kReservedFds = 64;
constexpr size_t kReservedFdsPerRunningCell = 16;

std::string readHostId() {
  std::ifstream in("/etc/machine-id");
  std::string id;
  std::getline(in, id);
  return id.empty() ? "unknown-host" : id;
}

// The host policy, read while files may still be opened (the seccomp profile allows no open).
// Throws one line naming the file and every problem in it.
core::HostPolicy readHostPolicy(const std::string& path) {
  if (path.empty()) return {};
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("host policy " + path + ": cannot open: " + strerror(errno));
  std::string bytes(core::kMaxHostPolicyBytes + 1, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (in.bad()) {
    throw std::runtime_error("host policy " + path + ": cannot read: " + strerror(errno));
  }
  bytes.resize(static_cast<size_t>(in.gcount()));
  core::HostPolicyParseResult parsed = core::parseHostPolicy(bytes);
  if (parsed.policy) return *parsed.policy;
  std::string problems;
  for (const auto& v : parsed.violations) {
    problems += (problems.empty() ? "" : "; ") + core::formatViolation(v);
  }
  throw std::runtime_error("host policy " + path + " is invalid: " + problems);
}

// Helpers may still be starting (service mode without strict ordering): retry for a while.
// All three are connected together, in one attempt, so that no helper holds a connection of
// ours that stays silent while we wait for another (its listener closes a connection that has
// not asked for the bootstrap within ipc::ConnectionLimits::bootstrapTimeout).
struct HelperFds {
  kj::AutoCloseFd signer, vmm, dns;
};
HelperFds connectHelpers(const Options& options) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(options.connectTimeoutSeconds);
  for (;;) {
    try {
      HelperFds fds;
      fds.signer = ipc::connectUnix(options.signerSocket);
      fds.vmm = ipc::connectUnix(options.vmmSocket);
      fds.dns = ipc::connectUnix(options.dnsSocket);
      return fds;
    } catch (const kj::Exception& e) {
      if (std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

int serve(const Options& options) {
  privsep::closeStrayFds({options.common.readyFd});
  auto account = privsep::lookupAccount(options.common.user);
  auto clientGroup = privsep::lookupGroup(options.clientGroup);
  std::string hostId = options.hostId.empty() ? readHostId() : options.hostId;
  const core::HostPolicy hostPolicy = readHostPolicy(options.policyPath);

  // The log and the dead-letter directory are opened now and kept; a crash's unterminated
  // last line goes to the dead letters before anything new is written.
  broker::JsonlLog eventLog(options.eventsPath, options.eventsMaxBytes, account.uid, account.gid);
  eventlog::DeadLetterDirectory deadLetters(
      options.deadLetterDir.empty() ? eventlog::defaultDeadLetterPath(options.eventsPath)
                                    : options.deadLetterDir,
      account.uid, account.gid);
  if (auto partial = eventLog.takePartialTail()) deadLetters.writePartialLine(*partial);
  // Runs in flight, so a restarted broker can close the event streams a crash left open.
  broker::RunJournal journal(
      options.runJournalDir.empty() ? options.eventsPath + ".runs" : options.runJournalDir,
      account.uid, account.gid);
  // Artifacts arrive as fds the VM launcher opened; they are copied under this directory.
  broker::ArtifactExporter exporter(options.exportRoot, options.exportMaxBytes, account.uid,
                                    account.gid);
  // Secret files are opened now (seccomp allows no open later); values are read per run.
  const broker::SecretBroker secrets(options.secretSource, options.secretsDir);
  // A file-size limit (RLIMIT_FSIZE) makes a log write fail, which sends the batch to the dead
  // letters; it must not kill the broker instead.
  signal(SIGXFSZ, SIG_IGN);
  auto listenFd = ipc::listenUnix(
      {options.common.socketPath, 0660, account.uid, clientGroup.value_or(account.gid)});

  if (geteuid() == 0) privsep::becomeUnprivileged(account);
  KJ_REQUIRE(geteuid() == account.uid, "not running as the broker user", options.common.user);
  privsep::setNoNewPrivs();
  eventLog.checkRotationPossible();

  auto [signerFd, vmmFd, dnsFd] = connectHelpers(options);
  // Clients' connections: per uid and in all, below the fd limit (read now: seccomp allows no
  // getrlimit later).
  ipc::ConnectionLimits clientLimits{
      .perUid = options.maxConnectionsPerUid,
      .total = options.maxConnections != 0
                   ? options.maxConnections
                   : ipc::connectionsWithinFdLimit(kReservedFds + kReservedFdsPerRunningCell *
                                                                      options.maxConcurrent)};

  privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  auto& lowLevel = *io.lowLevelProvider;
  using capnp::rpc::twoparty::Side;
  // Per link: how many fds may cross it per message. The cell's network namespace comes from
  // the VM launcher (more trusted than we are) and goes on to the DNS helper; the signer link
  // carries none.
  ipc::RpcLink signerLink(lowLevel, kj::mv(signerFd), {.maxFdsPerMessage = 0}, Side::CLIENT,
                          nullptr);
  ipc::RpcLink vmmLink(lowLevel, kj::mv(vmmFd), {.maxFdsPerMessage = 1}, Side::CLIENT, nullptr);
  ipc::RpcLink dnsLink(lowLevel, kj::mv(dnsFd), {.maxFdsPerMessage = 1}, Side::CLIENT, nullptr);

  broker::EventLog events(signerLink.bootstrap<ipc::EventSigner>(), eventLog, deadLetters,
                          {hostId, options.redactFields, options.testHoldSignedBatch});
  broker::BrokerContext context{io.provider->getTimer(),
                                hostId,
                                vmmLink.bootstrap<ipc::VmmAgent>(),
                                dnsLink.bootstrap<ipc::DnsHelper>(),
                                events,
                                hostPolicy};
  context.exporter = &exporter;
  context.faultPhase = options.testFaultPhase;
  context.holdPhase = options.testHoldPhase;
  context.secrets = &secrets;
  broker::BrokerState state(context, options.maxConcurrent, &journal);

  // OpenSSL loads its configuration file on first use (event ids come from RAND_bytes): use it
  // once now, while files may still be opened.
  core::newUuidV7();
  // Events a predecessor had signed but not written are declared before anything else.
  events.resume().wait(io.waitScope);
  // Runs a predecessor admitted but never finished end with destroyed/failed/forced.
  broker::closeInterruptedRuns(journal, events, hostId).wait(io.waitScope);
  // Every file and directory from here on (log files, dead letters, exports) gets exactly the
  // mode it is created with (0640 / 0750), whatever umask we were started with; the filter
  // leaves no fchmod.
  umask(027);
  privsep::installSeccomp(broker::kBrokerProfile);

  // Clients: root and members of the client group. They never send fds.
  ipc::PeerPolicy policy{{0, account.uid}, {}};
  if (clientGroup) policy.gids.push_back(*clientGroup);
  ipc::RpcListener listener(io, kj::mv(listenFd), "broker.sock", policy,
                            ipc::LinkOptions{.maxFdsPerMessage = 0, .traversalLimitWords = 1 << 18},
                            clientLimits,
                            [&](const ipc::PeerCredentials& peer) -> capnp::Capability::Client {
                              return kj::heap<broker::BrokerServer>(state, peer);
                            });
  // A helper that goes away takes our ability to run cells with it: stop, loudly, rather than
  // accept documents we cannot run.
  auto helperLost =
      signerLink.onDisconnect()
          .then([]() { return std::string("event signer"); })
          .exclusiveJoin(vmmLink.onDisconnect().then([]() { return std::string("vmm-agent"); }))
          .exclusiveJoin(dnsLink.onDisconnect().then([]() { return std::string("dns-helper"); }))
          .then([](std::string who) {
            spdlog::critical("lost the connection to the {}; exiting", who);
            return 125;
          });
  return privsep::serveUntilShutdown(
      io, options.common.readyFd, options.common.socketPath + "; events to " + options.eventsPath,
      [&]() { return listener.run(); }, kj::mv(helperLost),
      [&](int status) {
        // A last checkpoint over everything written, so a witness holds the log's final size.
        if (status != 0) return;
        events.finish()
            .exclusiveJoin(io.provider->getTimer().afterDelay(5 * kj::SECONDS))
            .wait(io.waitScope);
      });
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "cellos-broker: accepts cell documents from clients on its socket, validates them, and "
      "runs each cell through admission, network scope, secrets, start, run, export, destroy "
      "and revoke, with a signed event for every step, by asking cellos-vmm-agent, "
      "cellos-dns-helper and cellos-event-signer. Holds no privilege itself."};
  privsep::addCommonOptions(app, options.common, "/etc/cellos/broker.conf");
  app.add_option("--client-group", options.clientGroup, "group whose members may submit cells")
      ->capture_default_str();
  app.add_option("--vmm-socket", options.vmmSocket)->capture_default_str();
  app.add_option("--dns-socket", options.dnsSocket)->capture_default_str();
  app.add_option("--signer-socket", options.signerSocket)->capture_default_str();
  app.add_option("--events", options.eventsPath, "signed event log (JSONL, appended)")
      ->capture_default_str();
  app.add_option("--events-max-bytes", options.eventsMaxBytes,
                 "rotate the event log before it grows past this size (0: never); rotated "
                 "files are <events>.<last sequence>, and the chain continues across them")
      ->capture_default_str();
  app.add_option("--dead-letter-dir", options.deadLetterDir,
                 "where events the log cannot take go, one file each (default "
                 "<events>.dead-letter)");
  app.add_option("--redact", options.redactFields,
                 "a data field to replace with \"[redacted]\" in every event before it is "
                 "signed (repeatable), e.g. argv");
  app.add_option("--test-hold-signed-batch", options.testHoldSignedBatch,
                 "crash tests: never write the N-th signed batch")
      ->group("");  // hidden
  app.add_option("--host-id", options.hostId,
                 "host id in event sources (default: /etc/machine-id)");
  app.add_option("--policy", options.policyPath,
                 "host policy file (YAML or JSON): caps and grants enforced at admission");
  app.add_option("--run-journal", options.runJournalDir,
                 "directory recording runs in flight (default <events>.runs)");
  app.add_option("--max-concurrent", options.maxConcurrent,
                 "cells running at once; further submissions wait in a queue")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--export-root", options.exportRoot,
                 "local export target: artifacts go to <root>/<cellId>/<runId>/<name>")
      ->capture_default_str();
  app.add_option("--export-max-bytes", options.exportMaxBytes,
                 "largest artifact exported; a bigger one fails with export.v2.failed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--secret-source", options.secretSource,
                 "where secret values come from: env (CELLOS_SECRET_<NAME> in this process's "
                 "environment), dir (--secrets-dir, one file per secret) or systemd-credentials "
                 "($CREDENTIALS_DIRECTORY)")
      ->capture_default_str()
      ->check(CLI::IsMember({"env", "dir", "systemd-credentials"}));
  app.add_option(
      "--secrets-dir", options.secretsDir,
      "with --secret-source=dir: the directory, one regular file per secret, named "
      "as the secret; files are opened at start-up (restart to add one), values read per "
      "run");
  app.add_option("--max-connections-per-uid", options.maxConnectionsPerUid,
                 "connections one user may hold open to the socket at once (each `cellos "
                 "submit --wait` holds one for its run); a further one is refused with "
                 "\"broker.sock refused the connection: too many connections from uid N\"")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-connections", options.maxConnections,
                 "connections from all users together (0: the soft RLIMIT_NOFILE minus 64, and "
                 "16 per --max-concurrent cell, kept for the broker's own files)")
      ->capture_default_str();
  app.add_option("--connect-timeout", options.connectTimeoutSeconds,
                 "seconds to wait for the helpers' sockets at start")
      ->capture_default_str();
  // Testing seams, hidden from --help (docs/operations.md, "Fault injection").
  const std::vector<std::string> phases = {"admission", "network_scope", "secrets", "run",
                                           "export",    "destroy",       "revoke"};
  app.add_option("--test-fault-phase", options.testFaultPhase,
                 "fault-injection tests: every run fails in this phase (needs "
                 "--enable-test-faults)")
      ->check(CLI::IsMember(phases))
      ->group("");
  app.add_option("--test-hold-phase", options.testHoldPhase,
                 "peer-death tests: every run stops for good in this phase, its helper call in "
                 "flight (needs --enable-test-faults)")
      ->check(CLI::IsMember(phases))
      ->group("");
  app.add_flag("--enable-test-faults", options.enableTestFaults,
               "allow --test-fault-phase and --test-hold-phase (a broker for tests, never for "
               "real cells)")
      ->group("");  // hidden
  CLI11_PARSE(app, argc, argv);
  for (const auto& [option, value, effect] :
       {std::tuple{"--test-fault-phase", &options.testFaultPhase, "makes every run fail"},
        std::tuple{"--test-hold-phase", &options.testHoldPhase, "stops every run"}}) {
    if (!value->empty() && !options.enableTestFaults) {
      fprintf(stderr,
              "cellos-broker: %s %s and is for tests only; it needs --enable-test-faults as "
              "well\n",
              option, effect);
      return 2;
    }
  }
  return privsep::runDaemon("cellos-broker", options.common.logLevel,
                            [&]() { return serve(options); });
}
