#pragma once
// Talking to a running broker over its socket: what `cellos run` (embedded) and the
// host-service commands (`submit`, `ps`, `logs`, `cancel`) share.

#include <string>

#include <kj/io.h>

namespace kj {
class Exception;
}

namespace cellos::cli {

// Connects to the broker's socket; throws BrokerUnreachable (broker/cli/messages.h) with what
// to check when it cannot.
kj::AutoCloseFd connectToBroker(const std::string& socket);

// A failed call to the broker as one line for a person (a lost connection says so).
std::string brokerFailure(const kj::Exception& e);

// The exit status of a finished run as `cellos run` and `submit --wait` return it: 125 when the
// runner failed (no status, or any phase but export failed: a run that fails in destroy is not
// a success whatever the command returned), else the command's own status (128+n for signal n).
// The broker's `ps` EXIT column follows the same rule (broker_server.cpp, shellStatus).
struct RunStatusFacts {
  bool hasStatus;
  int exitCode, signal;
  std::string outcome, failedPhase;
};
int runExitStatus(const RunStatusFacts& facts);

// Submits `document` (read from `file`, for messages) to the broker at `socket`. A refused
// document prints every violation and returns 2. With `wait`, streams the cell's output to our
// stdout/stderr, turns Ctrl-C/SIGTERM into a cancel (and keeps waiting for teardown), and
// returns the cell's exit status (128+n for signal n, 125 when the runner failed). Without
// `wait`, detaches the run, prints its id and returns 0. A non-empty `backend` is where a
// document that names no backend runs (`cellos run --backend`). SIGINT and SIGTERM must have been
// captured (kj::UnixEventPort::captureSignal) before the call when `wait` is set.
int submitToBroker(const std::string& socket, const std::string& file, const std::string& document,
                   bool wait, const std::string& backend = "");

}  // namespace cellos::cli
