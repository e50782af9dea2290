#pragma once
// The `cellos` subcommands. Each returns the process exit status.

#include <string>
#include <vector>

namespace cellos::cli {

// Exit statuses of `run` besides the cell's own (same convention as `docker run`).
inline constexpr int kExitUsage = 2;           // invalid document or usage error
inline constexpr int kExitRunnerFailed = 125;  // the runner itself failed

struct RunOptions {
  std::string file;
  std::string eventsPath;
  std::string backend;
  std::string policyPath;  // host policy the broker enforces at admission; empty: none
  std::string stateDir = "/var/lib/cellos";
  std::string logLevel = "warn";
};
int runCommand(const RunOptions& options);

int validateCommand(const std::vector<std::string>& files);

struct VerifyOptions {
  std::vector<std::string> files;
  std::string keysetPath;  // default <stateDir>/signer/keyset.json
  std::string stateDir = "/var/lib/cellos";
  bool noChain = false;
};
int verifyCommand(const VerifyOptions& options);

// Reads a document file (at most 1 MiB + 1 byte, so the parser can refuse an oversized one
// with its own message). Throws with the path and reason.
std::string readDocumentFile(const std::string& path);

}  // namespace cellos::cli
