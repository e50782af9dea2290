// bench/lifecycle: submit-to-destroyed latency and cells/s of /bin/true cells in host-service
// mode (the daemons started once, every cell through the broker's socket as `cellos submit`
// sends it), against bwrap running /bin/true at the same concurrency in the same run.
//
//   cellos-bench-lifecycle [--cells N] [--levels 1,2,4,8] [--rounds R]    (as root)
//
// For each concurrency level C, N cells are pushed through with C in flight (a new submission
// as soon as one finishes); then N bwrap sandboxes the same way. Rounds alternate ours/peer.
// Reported per level: cells/s (N / wall time) and the p50/p99 of the per-cell latency (submit
// call to the Run.wait() answer, which comes after lifecycle.destroyed is signed and written),
// medians over the rounds, and the ratio of cells/s to bwrap's. Every cell must succeed: a
// failed one aborts the bench, since a fast failure is not a figure.

#include "broker/cli/embedded.h"
#include "ipc/broker.capnp.h"
#include "ipc/socket.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <kj/async-unix.h>
#include <kj/debug.h>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace cellos;

struct Sample {
  double cellsPerSecond = 0;
  double p50Ms = 0, p99Ms = 0;
};

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

Sample summarise(const std::vector<double>& latenciesMs, size_t cells, Clock::duration wall) {
  Sample s;
  s.cellsPerSecond = static_cast<double>(cells) / std::chrono::duration<double>(wall).count();
  s.p50Ms = percentile(latenciesMs, 0.50);
  s.p99Ms = percentile(latenciesMs, 0.99);
  return s;
}

class DiscardSink final : public ipc::OutputSink::Server {
 public:
  kj::Promise<void> write(WriteContext) override { return kj::READY_NOW; }
  kj::Promise<void> done(DoneContext) override { return kj::READY_NOW; }
};

std::string document(const std::string& cellId) {
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + cellId +
         "\n  lifetime:\n    ttlSeconds: 60\n  run:\n    argv: [\"/bin/true\"]\n";
}

// Our side: `cells` submissions through one broker connection with `concurrency` in flight.
class Submitter {
 public:
  Submitter(kj::AsyncIoContext& io, ipc::Broker::Client broker)
      : io_(io), broker_(kj::mv(broker)) {}

  Sample run(size_t cells, size_t concurrency, const std::string& tag) {
    latencies_.clear();
    next_ = 0;
    cells_ = cells;
    tag_ = tag;
    auto start = Clock::now();
    kj::Vector<kj::Promise<void>> lanes;
    for (size_t i = 0; i < concurrency; ++i) lanes.add(lane());
    kj::joinPromises(lanes.releaseAsArray()).wait(io_.waitScope);
    return summarise(latencies_, cells, Clock::now() - start);
  }

 private:
  kj::Promise<void> lane() {
    if (next_ >= cells_) return kj::READY_NOW;
    std::string cellId = tag_ + "-" + std::to_string(next_++);
    std::string doc = document(cellId);
    auto request = broker_.submitRequest();
    request.setDocument(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(doc.data()), doc.size()));
    request.setOutput(kj::heap<DiscardSink>());
    request.setDetach(false);
    auto submitted = Clock::now();
    return request.send()
        .then([cellId](auto response) {
          KJ_REQUIRE(response.getViolations().size() == 0, "cell refused", cellId,
                     response.getViolations()[0]);
          auto run = response.getRun();
          return run.waitRequest().send().attach(kj::mv(run));
        })
        .then([this, cellId, submitted](auto response) -> kj::Promise<void> {
          auto result = response.getResult();
          KJ_REQUIRE(result.getOutcome() == "succeeded", "cell failed", cellId,
                     result.getFailedPhase(), result.getError());
          latencies_.push_back(
              std::chrono::duration<double, std::milli>(Clock::now() - submitted).count());
          return lane();
        });
  }

  kj::AsyncIoContext& io_;
  ipc::Broker::Client broker_;
  std::vector<double> latencies_;
  size_t next_ = 0, cells_ = 0;
  std::string tag_;
};

// The peer: bwrap with its own namespaces (no network, no user mapping beyond its default)
// running /bin/true, `concurrency` at a time.
Sample runBwrap(size_t cells, size_t concurrency) {
  std::vector<std::string> args = {"bwrap",       "--unshare-all", "--die-with-parent",
                                   "--ro-bind",   "/usr",          "/usr",
                                   "--ro-bind",   "/etc",          "/etc",
                                   "--symlink",   "usr/bin",       "/bin",
                                   "--symlink",   "usr/lib",       "/lib",
                                   "--symlink",   "usr/lib64",     "/lib64",
                                   "--proc",      "/proc",         "--dev",
                                   "/dev",        "/bin/true"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::map<pid_t, Clock::time_point> inFlight;
  std::vector<double> latencies;
  size_t started = 0;
  auto start = Clock::now();
  while (latencies.size() < cells) {
    while (inFlight.size() < concurrency && started < cells) {
      pid_t pid;
      int rc = posix_spawnp(&pid, "bwrap", nullptr, nullptr, argv.data(), environ);
      KJ_REQUIRE(rc == 0, "cannot start bwrap", strerror(rc));
      inFlight[pid] = Clock::now();
      ++started;
    }
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    KJ_REQUIRE(pid > 0, "waitpid", strerror(errno));
    auto it = inFlight.find(pid);
    if (it == inFlight.end()) continue;
    KJ_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bwrap /bin/true failed", status);
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - it->second).count());
    inFlight.erase(it);
  }
  return summarise(latencies, cells, Clock::now() - start);
}

std::vector<size_t> parseLevels(const std::string& text) {
  std::vector<size_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoul(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t cells = 40;
  size_t rounds = 3;
  std::vector<size_t> levels = {1, 2, 4, 8};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--cells") {
      cells = std::stoul(value());
    } else if (arg == "--rounds") {
      rounds = std::stoul(value());
    } else if (arg == "--levels") {
      levels = parseLevels(value());
    } else {
      std::cerr << "usage: cellos-bench-lifecycle [--cells N] [--levels 1,2,4,8] [--rounds R]\n"
                   "  host-service cells of /bin/true vs bwrap /bin/true (run as root)\n";
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (geteuid() != 0) {
    std::cerr << "cellos-bench-lifecycle: run as root (it starts the cellos daemons)\n";
    return 2;
  }
  size_t maxLevel = *std::max_element(levels.begin(), levels.end());

  char dir[] = "/tmp/cellos-bench-lifecycle.XXXXXX";
  KJ_REQUIRE(mkdtemp(dir) != nullptr);
  std::string stateDir = dir;
  int status = 0;
  {
    cli::EmbeddedOptions options;
    options.stateDir = stateDir;
    options.logLevel = "warn";
    options.brokerArgs = {"--max-concurrent=" + std::to_string(maxLevel)};
    cli::EmbeddedSystem system(options);
    try {
      system.start();
      auto io = kj::setupAsyncIo();
      ipc::RpcLink link(*io.lowLevelProvider, ipc::connectUnix(system.brokerSocket()),
                        {.maxFdsPerMessage = 0}, capnp::rpc::twoparty::Side::CLIENT, nullptr);
      Submitter submitter(io, link.bootstrap<ipc::Broker>());
      // Warm-up: first cells pay for page cache and the signer's first key use.
      submitter.run(std::min<size_t>(cells, 5), 1, "warm");
      runBwrap(std::min<size_t>(cells, 5), 1);

      std::printf("%-5s %-6s %12s %10s %10s %12s %10s %10s %8s\n", "conc", "round",
                  "cellos c/s", "p50 ms", "p99 ms", "bwrap c/s", "p50 ms", "p99 ms", "ratio");
      for (size_t level : levels) {
        std::vector<double> ourRate, ourP50, ourP99, peerRate, peerP50, peerP99;
        for (size_t round = 1; round <= rounds; ++round) {
          Sample ours = submitter.run(cells, level,
                                      "b" + std::to_string(level) + "-" + std::to_string(round));
          Sample peer = runBwrap(cells, level);
          std::printf("%-5zu %-6zu %12.1f %10.1f %10.1f %12.1f %10.1f %10.1f %8.3f\n", level,
                      round, ours.cellsPerSecond, ours.p50Ms, ours.p99Ms, peer.cellsPerSecond,
                      peer.p50Ms, peer.p99Ms, ours.cellsPerSecond / peer.cellsPerSecond);
          ourRate.push_back(ours.cellsPerSecond);
          ourP50.push_back(ours.p50Ms);
          ourP99.push_back(ours.p99Ms);
          peerRate.push_back(peer.cellsPerSecond);
          peerP50.push_back(peer.p50Ms);
          peerP99.push_back(peer.p99Ms);
        }
        std::printf("%-5zu %-6s %12.1f %10.1f %10.1f %12.1f %10.1f %10.1f %8.3f\n", level,
                    "median", median(ourRate), median(ourP50), median(ourP99), median(peerRate),
                    median(peerP50), median(peerP99), median(ourRate) / median(peerRate));
        std::fflush(stdout);
      }
    } catch (const kj::Exception& e) {
      std::cerr << "cellos-bench-lifecycle: " << e.getDescription().cStr() << "\n";
      status = 1;
    } catch (const std::exception& e) {
      std::cerr << "cellos-bench-lifecycle: " << e.what() << "\n";
      status = 1;
    }
    system.stop();
  }
  std::error_code ignored;
  std::filesystem::remove_all(stateDir, ignored);
  return status;
}
