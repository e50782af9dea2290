#pragma once
// Running a host tool from a test (systemd-analyze, cpack, dpkg, the cellos programs) and
// reading files, for the packaging tests. Header-only: each test executable includes it once.

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace cellos::testing_support {

struct CommandResult {
  int status = -1;     // exit status (128+n when killed by signal n, -1 when it did not run)
  std::string output;  // stdout and stderr, interleaved
};

// Runs `command` with /bin/sh -c, stdin from /dev/null, bounded by `timeoutSeconds` (coreutils
// timeout: a hung tool fails the test instead of hanging it).
inline CommandResult runCommand(const std::string& command, int timeoutSeconds = 300) {
  std::string line = "timeout --kill-after=10 " + std::to_string(timeoutSeconds) + " sh -c '";
  for (char c : command) {
    if (c == '\'') {
      line += "'\\''";
    } else {
      line += c;
    }
  }
  line += "' </dev/null 2>&1";
  CommandResult result;
  FILE* pipe = popen(line.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  int status = pclose(pipe);
  if (WIFEXITED(status)) {
    result.status = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.status = 128 + WTERMSIG(status);
  }
  return result;
}

inline std::string shellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

inline std::string readTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline std::string sourceDir() {
  const char* dir = getenv("CELLOS_SOURCE_DIR");
  return dir ? dir : CELLOS_TEST_SOURCE_DIR;
}

inline std::string buildDir() {
  const char* dir = getenv("CELLOS_BUILD_DIR");
  return dir ? dir : CELLOS_TEST_BUILD_DIR;
}

}  // namespace cellos::testing_support
