// privsep::serveUntilShutdown(), the serving tail of the four kj daemons (broker, event-signer,
// vmm-agent, dns-helper): ready before the listener runs, then a signal, a lost peer or a failed
// listener ends it, and the finishing step sees the exit status.

#include "privsep/daemon.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <optional>
#include <stdexcept>
#include <string>

#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/exception.h>

namespace {

using cellos::privsep::serveUntilShutdown;

// The read end of a readiness pipe; what the daemon wrote to it so far ("" while nothing).
struct ReadyPipe {
  int readEnd = -1;
  int writeEnd = -1;
  ReadyPipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2");
    readEnd = fds[0];
    writeEnd = fds[1];
  }
  ~ReadyPipe() { close(readEnd); }
  std::string written() const {
    char buffer[8];
    ssize_t n = read(readEnd, buffer, sizeof(buffer));
    return n > 0 ? std::string(buffer, n) : "";
  }
};

TEST(ServeUntilShutdown, SignalsReadyBeforeListeningAndEndsWithStatusZeroOnSigterm) {
  cellos::privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  ReadyPipe ready;
  std::string readyWhenListening;
  std::optional<int> finished;
  int status = serveUntilShutdown(
      io, ready.writeEnd, "a test socket",
      [&]() -> kj::Promise<void> {
        readyWhenListening = ready.written();
        kill(getpid(), SIGTERM);  // captured: arrives through the event loop, no handler runs
        return kj::NEVER_DONE;
      },
      kj::NEVER_DONE, [&](int code) { finished = code; });
  EXPECT_EQ(readyWhenListening, "R");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(finished, 0);
}

TEST(ServeUntilShutdown, ALostPeerEndsItWithThePeersStatusAndStillFinishes) {
  cellos::privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  std::optional<int> finished;
  int status = serveUntilShutdown(
      io, -1, "a test socket", []() -> kj::Promise<void> { return kj::NEVER_DONE; },
      io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).then([]() { return 125; }),
      [&](int code) { finished = code; });
  EXPECT_EQ(status, 125);
  EXPECT_EQ(finished, 125);
}

TEST(ServeUntilShutdown, AFailedListenerIsThrownWithoutFinishing) {
  cellos::privsep::captureShutdownSignals();
  auto io = kj::setupAsyncIo();
  bool finished = false;
  try {
    serveUntilShutdown(
        io, -1, "a test socket",
        []() -> kj::Promise<void> { return KJ_EXCEPTION(FAILED, "accept failed"); }, kj::NEVER_DONE,
        [&](int) { finished = true; });
    ADD_FAILURE() << "serveUntilShutdown returned";
  } catch (const kj::Exception& e) {
    EXPECT_EQ(std::string(e.getDescription().cStr()), "accept failed");
  }
  EXPECT_FALSE(finished);
}

}  // namespace
