#pragma once
// Plumbing every cellos daemon shares: logging to stderr, readiness, stray fds, the version.

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/function.h>

#include <functional>
#include <string>
#include <vector>

namespace cellos::privsep {

inline constexpr const char* kVersion = "0.1.0";

// Logs to stderr as "<time> <process>[<pid>] <level>: <message>". `level` is one of spdlog's
// names (trace, debug, info, warn, error). Unknown level -> throws.
void setupLogging(const std::string& process, const std::string& level);

// Closes every fd except 0, 1, 2 and `keep`, so nothing a parent leaked (a terminal, another
// cell's socket) survives into a privileged daemon.
void closeStrayFds(const std::vector<int>& keep);

// Tells whoever started us that setup is complete (sockets bound, privileges dropped) by
// writing one byte to `fd` and closing it. A negative fd means nobody is waiting.
void signalReady(int fd);

// Must run before kj::setupAsyncIo(): routes SIGTERM and SIGINT into the event loop, and
// ignores SIGPIPE (a peer closing a socket is an error value, not a reason to die).
void captureShutdownSignals();

// Resolves when SIGTERM or SIGINT arrives (after captureShutdownSignals()).
kj::Promise<int> shutdownRequested(kj::UnixEventPort& port);

// The serving phase every RPC daemon ends its setup with, once its listener exists and its
// seccomp filter is in place: tells whoever started it that it serves (signalReady(readyFd)),
// logs "serving on <serving>", only then calls `listen` (the listener's run(), which accepts at
// once), and runs the event loop until
// - SIGTERM or SIGINT arrives: logged, exit status 0;
// - `lost` resolves with an exit status: something the daemon cannot work without went away (a
//   helper link broke), which `lost` logs itself;
// - the listener fails: its exception is thrown, for runDaemon() to report.
// The losing branches are cancelled first; then `finish` runs with the exit status, for what must
// complete before the daemon exits (the broker's last checkpoint, the agent's cell teardown), and
// the status is returned.
int serveUntilShutdown(
    kj::AsyncIoContext& io, int readyFd, const std::string& serving,
    kj::Function<kj::Promise<void>()> listen, kj::Promise<int> lost = kj::NEVER_DONE,
    kj::Function<void(int status)> finish = [](int) {});

}  // namespace cellos::privsep

namespace CLI {
class App;
}

namespace cellos::privsep {

// Options every daemon takes. Each also reads them from its --config file (CLI11's INI/TOML
// format: `socket = "/run/cellos/broker.sock"`); command-line flags win.
struct CommonOptions {
  std::string configFile;
  std::string logLevel = "info";
  std::string socketPath;
  std::string user;
  int readyFd = -1;
};

// Runs a daemon's body after setting up logging as `process`: an exception that escapes it
// (a failed setup step, a bad configuration) becomes one critical log line and exit status 1.
int runDaemon(const std::string& process, const std::string& logLevel,
              const std::function<int()>& body);

// Registers --config, --log-level, --socket, --user, --ready-fd and --version on `app`, with
// the daemon's defaults already filled into `options`.
void addCommonOptions(CLI::App& app, CommonOptions& options, const std::string& defaultConfig);

}  // namespace cellos::privsep
