#pragma once
// What the CLI prints when something failed: one line a person can act on, never the source
// text, assertion or stack of an exception (the daemons log those in full).

#include <stdexcept>
#include <string>

namespace kj {
class Exception;
}

namespace cellos::cli {

// `text` (an exception's description, a run's error as the broker reports it) as one plain
// line: without Cap'n Proto's "remote exception: " framing, KJ's "file.cpp:182: failed: " and
// "expected <condition>; " prefixes, a trailing "stack: <addresses>" and any further lines.
// "launcher.cpp:182: failed: expected !cells.count(id); a cell with this id is live\nstack: 7f.."
// becomes "a cell with this id is live".
std::string plainMessage(std::string text);
std::string plainMessage(const kj::Exception& e);

// The broker's socket could not be connected to; what() is the whole message, e.g. "cannot reach
// the broker at /run/cellos/broker.sock: permission denied (is this user in group cellos?)".
class BrokerUnreachable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Why connect(2) to the broker's socket failed, for a person: the errno as text plus what to
// check ("permission denied (is this user in group cellos?)").
std::string unreachableReason(int error);

}  // namespace cellos::cli
