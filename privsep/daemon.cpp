#include "privsep/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/details/os.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <stdexcept>

#include <kj/debug.h>

namespace cellos::privsep {

void setupLogging(const std::string& process, const std::string& level) {
  // glibc reads /etc/localtime on first use; do it now, before seccomp forbids opening files.
  tzset();
  auto logger = spdlog::stderr_logger_st(process);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %n[%P] %l: %v", spdlog::pattern_time_type::utc);
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    throw std::runtime_error("unknown log level " + level + " (use trace|debug|info|warn|error)");
  }
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  // spdlog reads the thread id on a thread's first log line and keeps it: read it now, so that
  // gettid is not needed under seccomp (every daemon is single-threaded, or starts its threads
  // with their own filters in mind).
  spdlog::details::os::thread_id();
}

void closeStrayFds(const std::vector<int>& keep) {
  std::vector<int> sorted = keep;
  sorted.push_back(2);
  std::sort(sorted.begin(), sorted.end());
  int next = 3;
  for (int fd : sorted) {
    if (fd < next) continue;
    if (fd > next) {
      KJ_SYSCALL(syscall(SYS_close_range, next, fd - 1, 0));
    }
    next = fd + 1;
  }
  KJ_SYSCALL(syscall(SYS_close_range, next, ~0U, 0));
}

void signalReady(int fd) {
  if (fd < 0) return;
  char byte = 'R';
  ssize_t n;
  KJ_SYSCALL(n = write(fd, &byte, 1), "ready fd");
  close(fd);
}

void captureShutdownSignals() {
  signal(SIGPIPE, SIG_IGN);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
}

kj::Promise<int> shutdownRequested(kj::UnixEventPort& port) {
  return port.onSignal(SIGTERM)
      .then([](siginfo_t) { return SIGTERM; })
      .exclusiveJoin(port.onSignal(SIGINT).then([](siginfo_t) { return SIGINT; }));
}

int serveUntilShutdown(kj::AsyncIoContext& io, int readyFd, const std::string& serving,
                       kj::Function<kj::Promise<void>()> listen, kj::Promise<int> lost,
                       kj::Function<void(int status)> finish) {
  signalReady(readyFd);
  spdlog::info("serving on {}", serving);
  // A listener only ever ends by rejection: it has no status of its own.
  int status = listen()
                   .then([]() { return 0; })
                   .exclusiveJoin(shutdownRequested(io.unixEventPort).then([](int signal) {
                     spdlog::info("shutting down on signal {}", signal);
                     return 0;
                   }))
                   .exclusiveJoin(kj::mv(lost))
                   .wait(io.waitScope);
  finish(status);
  return status;
}

}  // namespace cellos::privsep

#include <CLI/CLI.hpp>

namespace cellos::privsep {

int runDaemon(const std::string& process, const std::string& logLevel,
              const std::function<int()>& body) {
  try {
    setupLogging(process, logLevel);
    return body();
  } catch (const kj::Exception& e) {
    spdlog::critical("{}", e.getDescription().cStr());
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
  }
  return 1;
}

void addCommonOptions(CLI::App& app, CommonOptions& options, const std::string& defaultConfig) {
  app.set_version_flag("--version", std::string("cellos ") + kVersion);
  app.set_config("--config", defaultConfig,
                 "configuration file (key = value lines naming the long options)", false);
  app.add_option("--log-level", options.logLevel, "trace|debug|info|warn|error")
      ->capture_default_str();
  app.add_option("--socket", options.socketPath, "Unix socket to listen on")->capture_default_str();
  app.add_option("--user", options.user, "system user to switch to after setup")
      ->capture_default_str();
  app.add_option("--ready-fd", options.readyFd,
                 "write one byte to this inherited fd once serving (used by `cellos run`)");
}

}  // namespace cellos::privsep

#ifdef CELLOS_SANITIZER_RUNTIME
// Sanitizer builds only (test builds): the defaults every daemon's ASan/UBSan runtime starts
// with, whatever environment it was started in (`cellos run` starts daemons with an empty
// one). A daemon runs under its seccomp profile, so the runtime can neither stop the world for
// leak checking (clone, ptrace) nor start llvm-symbolizer (fork, exec): reports are written
// unsymbolized (`llvm-symbolizer --obj=<binary>` names the frames), and a report ends the
// process with status 1, which the tests see as an unclean exit. This object is linked only
// into programs that call runDaemon(): it is not pulled out of the archive otherwise.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=0:symbolize=0:color=never:abort_on_error=0:halt_on_error=1";
}
extern "C" const char* __ubsan_default_options() {
  return "symbolize=0:color=never:print_stacktrace=1:halt_on_error=1";
}
#endif
