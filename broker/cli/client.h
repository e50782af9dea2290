#pragma once
// Talking to a running broker over its socket: what `cellos run` (embedded) and the
// host-service commands (`submit`, `ps`, `logs`, `cancel`) share.

#include <string>

namespace cellos::cli {

// Submits `document` (read from `file`, for messages) to the broker at `socket`. A refused
// document prints every violation and returns 2. With `wait`, streams the cell's output to our
// stdout/stderr, turns Ctrl-C/SIGTERM into a cancel (and keeps waiting for teardown), and
// returns the cell's exit status (128+n for signal n, 125 when the runner failed). Without
// `wait`, detaches the run, prints its id and returns 0. SIGINT and SIGTERM must have been
// captured (kj::UnixEventPort::captureSignal) before the call when `wait` is set.
int submitToBroker(const std::string& socket, const std::string& file, const std::string& document,
                   bool wait);

}  // namespace cellos::cli
