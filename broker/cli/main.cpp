// cellos: the command-line client.

#include "broker/cli/commands.h"
#include "privsep/daemon.h"

#include <CLI/CLI.hpp>
#include <iostream>

int main(int argc, char** argv) {
  using namespace cellos::cli;
  CLI::App app{
      "cellos: run untrusted work in cells with narrow, typed authority and a signed record of "
      "every step.\n\nExit status of `run`: the cell's own exit code; 128+n when the cell was "
      "killed by signal n; 2 for an invalid document or a usage error; 125 when the runner "
      "itself failed."};
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
  runCmd->add_option("--backend", run.backend, "linux (gvisor and firecracker: not yet)");
  runCmd->add_option("--policy", run.policyPath,
                     "host policy file (YAML or JSON, see docs/spec.md): the broker refuses a "
                     "document that asks for more, listing every violation; exit 2");
  runCmd->add_option("--state-dir", run.stateDir, "signer keys and default event log")
      ->capture_default_str();
  runCmd->add_option("--log-level", run.logLevel, "daemon log level")->capture_default_str();

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
                        "keyset JSON (default <state-dir>/signer/keyset.json)");
  verifyCmd->add_option("--state-dir", verify.stateDir)->capture_default_str();
  verifyCmd->add_flag("--no-chain", verify.noChain,
                      "verify signatures only (events from other producers)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*runCmd) return runCommand(run);
    if (*validateCmd) return validateCommand(validateFiles);
    if (*verifyCmd) return verifyCommand(verify);
  } catch (const std::exception& e) {
    std::cerr << "cellos: " << e.what() << "\n";
    return kExitRunnerFailed;
  }
  return kExitUsage;
}
