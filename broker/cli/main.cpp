// cellos: the command-line client.

#include "broker/cli/commands.h"
#include "broker/cli/doctor.h"
#include "broker/cli/keys.h"
#include "broker/cli/messages.h"
#include "privsep/daemon.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include <kj/exception.h>

int main(int argc, char** argv) {
  using namespace cellos::cli;
  CLI::App app{
      "cellos: run untrusted work in cells with narrow, typed authority and a signed record of "
      "every step.\n\nExit status of `run` and `submit --wait`: the cell's own exit code; 128+n "
      "when the cell was killed by signal n (137 for a cancelled run); 2 for an invalid "
      "document or a usage error; 125 when the runner itself failed (also when the run failed "
      "in destroy, or the broker cannot be reached). `ps`, `logs`, `cancel`: 0; 1 when there is "
      "nothing to act on (no such run, a finished run to cancel); 2 usage; 125 when the runner "
      "failed."};
  app.set_version_flag("--version", std::string("cellos ") + cellos::privsep::kVersion);
  app.require_subcommand(1);

  RunOptions run;
  auto* runCmd = app.add_subcommand(
      "run",
      "run one cell in embedded mode (as root): starts the broker, VM launcher, DNS helper and "
      "event signer as children, runs the cell, streams its output, writes the signed event "
      "log, and stops them all");
  runCmd->add_option("FILE", run.file, "cell document (YAML or JSON)")->required();
  runCmd->add_option("--events", run.eventsPath,
                     "event log (default <state-dir>/events/events.jsonl)");
  runCmd->add_option("--backend", run.backend,
                     "linux, gvisor or microvm: where a document that names no backend runs "
                     "(instead of the host policy's defaultBackend, within its "
                     "allowedBackends); a document that names another backend is a usage "
                     "error (firecracker: not yet)");
  runCmd->add_option("--policy", run.policyPath,
                     "host policy file (YAML or JSON, see docs/spec.md): the broker refuses a "
                     "document that asks for more, listing every violation; exit 2");
  runCmd->add_option("--state-dir", run.stateDir, "signer keys and default event log")
      ->capture_default_str();
  runCmd->add_option("--log-level", run.logLevel, "daemon log level")->capture_default_str();
  runCmd->add_option("--redact", run.redact,
                     "a data field to replace with \"[redacted]\" in every event before it is "
                     "signed (repeatable), e.g. argv");
  runCmd->add_option("--events-max-bytes", run.eventsMaxBytes,
                     "rotate the event log before it grows past this size (0: never); the chain "
                     "continues across files");
  runCmd->add_option("--nats-url", run.natsUrl,
                     "after the run, publish every event and signed checkpoint not yet "
                     "delivered to this NATS JetStream server (nats://HOST:PORT; streams "
                     "CELLOS_EVENTS and CELLOS_CHECKPOINTS) with cellos-event-forwarder; the "
                     "exit status stays the cell's");
  runCmd
      ->add_option("--nats-timeout", run.natsTimeout,
                   "seconds the publishing may wait for an unreachable server")
      ->capture_default_str();
  runCmd->add_option("--uplink-netns", run.uplinkNetns,
                     "network namespace holding the uplink ends of the cell's veth pair (the "
                     "VM launcher's --uplink-netns; default: the host's)");

  std::vector<std::string> validateFiles;
  auto* validateCmd = app.add_subcommand(
      "validate",
      "check cell documents: exit 0 if all are valid, 2 with every violation otherwise");
  validateCmd->add_option("FILE", validateFiles, "cell documents")->required();

  VerifyOptions verify;
  auto* verifyCmd = app.add_subcommand(
      "verify",
      "check a signed event log: every signature and digest, sequence contiguity and the "
      "cellosprev chain; names the first bad line; exit 1 on any failure");
  verifyCmd->add_option("PATH", verify.files, "event log files, in order")->required();
  verifyCmd->add_option("--keys", verify.keysetPath,
                        "trusted public keys: a keyset, a PEM file (SubjectPublicKeyInfo blocks, "
                        "each under a \"keyid: \" line) or a JWK / JWK Set (default "
                        "<state-dir>/signer/keyset.json)");
  verifyCmd->add_option("--state-dir", verify.stateDir)->capture_default_str();
  verifyCmd->add_option("--dead-letter", verify.deadLetterDir,
                        "dead-letter directory whose signed events fill their place in the "
                        "chain (default: <log>.dead-letter beside the log, when present)");
  verifyCmd->add_flag("--no-chain", verify.noChain,
                      "verify signatures only (events from other producers)");
  verifyCmd->add_option("--checkpoint", verify.checkpointPath,
                        "signed checkpoints (default none; the broker writes <log>.checkpoints): "
                        "the log must hold exactly the tree each commits to, and each must be "
                        "consistent with the one before");
  verifyCmd->add_option("--prove", verify.proveSequence,
                        "with --checkpoint: print the inclusion proof of the event with this "
                        "sequence under the latest checkpoint covering it (JSON)");

  KeysOptions keysOptions;
  auto* keysCmd = app.add_subcommand(
      "keys",
      "print the signer's public keys with their keyids, as PEM (SubjectPublicKeyInfo, what "
      "`openssl pkeyutl -verify -pubin` reads), a JWK Set (RFC 8037 Ed25519, RFC 7518 P-256) or "
      "a keyset");
  keysCmd->add_option("--keys", keysOptions.keysPath,
                      "read these keys instead (any form `verify --keys` takes; default "
                      "<state-dir>/signer/keyset.json)");
  keysCmd->add_option("--state-dir", keysOptions.stateDir)->capture_default_str();
  keysCmd->add_option("--format", keysOptions.format, "pem, jwk or keyset")
      ->check(CLI::IsMember({"pem", "jwk", "keyset"}))
      ->capture_default_str();

  // Host-service mode: a broker running as a daemon (systemd units in packaging/).
  ServiceOptions service;
  std::string submitFile, runId;
  bool submitWait = false;
  auto* submitCmd = app.add_subcommand(
      "submit",
      "submit a cell document to the host's broker: prints the run id; with --wait streams the "
      "output and exits with the cell's status like `run`");
  submitCmd->add_option("FILE", submitFile, "cell document (YAML or JSON)")->required();
  submitCmd->add_flag("--wait", submitWait, "follow the run to its end");
  auto* psCmd = app.add_subcommand("ps", "list your runs (root: every run), newest first");
  auto* logsCmd =
      app.add_subcommand("logs", "print a run's signed events (JSON lines) from the event log");
  logsCmd->add_option("RUN", runId, "run id (from submit or ps)")->required();
  auto* cancelCmd = app.add_subcommand(
      "cancel",
      "cancel a queued or running run (its outcome becomes cancelled); exit 1 when it had "
      "already finished");
  cancelCmd->add_option("RUN", runId, "run id")->required();
  for (auto* command : {submitCmd, psCmd, logsCmd, cancelCmd}) {
    command->add_option("--socket", service.socket, "the broker's socket")->capture_default_str();
  }

  DoctorOptions doctor;
  auto* doctorCmd = app.add_subcommand(
      "doctor",
      "check this host for what cellos needs (kernel features, cgroups, runsc, /dev/kvm, the "
      "microvm backend's QEMU, guest kernel and accelerator, accounts, sockets, key "
      "permissions, units) and say how to fix what is missing; exit 1 when something fails");
  doctorCmd->add_option("--run-dir", doctor.runDir, "where the services' sockets are")
      ->capture_default_str();
  doctorCmd->add_option("--state-dir", doctor.stateDir, "signer keys and event log")
      ->capture_default_str();
  doctorCmd
      ->add_option("--vm-dir", doctor.vmDir,
                   "the microvm backend's guest kernels (<dir>/kernel) and the VM launcher's "
                   "image cache with its accelerator answer (<dir>/images)")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    // Every usage error is exit 2 (CLI11's own codes, 105..109, are not what --help promises).
    std::string command = "cellos";
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      command += " " + sub->get_name();
    }
    std::string message = e.what();
    if (app.get_subcommands().empty() && argc > 1) {
      // CLI11 says only "A subcommand is required" for `cellos nope` and `cellos --nope`.
      std::string first = argv[1];
      message = (first[0] == '-' ? "unknown option " : "unknown command ") + first + " (commands:";
      for (const CLI::App* sub : app.get_subcommands({})) message += " " + sub->get_name();
      message += ")";
    }
    std::cerr << "cellos: " << message << "\nRun `" << command << " --help` for usage.\n";
    return kExitUsage;
  }
  try {
    if (*runCmd) return runCommand(run);
    if (*validateCmd) return validateCommand(validateFiles);
    if (*verifyCmd) return verifyCommand(verify);
    if (*keysCmd) return keysCommand(keysOptions);
    if (*doctorCmd) return doctorCommand(doctor);
    if (*submitCmd) return submitCommand(service, submitFile, submitWait);
    if (*psCmd) return psCommand(service);
    if (*logsCmd) return logsCommand(service, runId);
    if (*cancelCmd) return cancelCommand(service, runId);
  } catch (const kj::Exception& e) {
    std::cerr << "cellos: " << plainMessage(e) << "\n";
    return kExitRunnerFailed;
  } catch (const std::exception& e) {
    std::cerr << "cellos: " << plainMessage(e.what()) << "\n";
    return kExitRunnerFailed;
  }
  return kExitUsage;
}
