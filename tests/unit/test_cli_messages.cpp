// What the CLI prints when something failed (broker/cli/messages.h) and the exit status of a
// finished run (broker/cli/client.h): one plain line, the documented codes.

#include "broker/cli/client.h"
#include "broker/cli/messages.h"

#include <gtest/gtest.h>

#include <cerrno>

#include <kj/exception.h>

namespace cellos::cli {
namespace {

TEST(PlainMessage, DropsSourceTextTheFailedConditionAndTheStack) {
  // What issue 17 saw: the launcher's KJ_REQUIRE, as the broker reported it.
  EXPECT_EQ(plainMessage("remote exception: launcher.cpp:182: failed: expected "
                         "!launcher.cells.count(launch.cellId); a cell with this id is live\n"
                         "stack: 55d1a0c3e2f1 55d1a0c3e4a2 7f3b2c1d0e9f"),
            "a cell with this id is live");
  EXPECT_EQ(plainMessage("vmm-agent/launcher/launcher.cpp:182: failed: a cell with this id is "
                         "live stack: 55d1a0c3e2f1 7f3b2c1d0e9f"),
            "a cell with this id is live");
}

TEST(PlainMessage, KeepsTheReasonOfAFailedSystemCallAndItsArguments) {
  EXPECT_EQ(plainMessage("connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)): No "
                         "such file or directory; path = /run/cellos/broker.sock"),
            "connect: No such file or directory; path = /run/cellos/broker.sock");
  EXPECT_EQ(plainMessage("remote exception: remote exception: cgroup.cpp:40: failed: "
                         "mkdir(path.c_str(), 0755): Read-only file system; path = "
                         "/sys/fs/cgroup/memory/cellos"),
            "mkdir: Read-only file system; path = /sys/fs/cgroup/memory/cellos");
}

TEST(PlainMessage, LeavesPlainTextAsItIs) {
  for (const char* text :
       {"backend gvisor not available on this VM launcher (runsc was not executable at its "
        "start)",
        "residue after destroy: cgroup /sys/fs/cgroup/pids/cellos/c1 (Device or resource busy)",
        "spec.run.timeoutMs: expected an integer, got null; see docs/spec.md",
        "injected fault in phase destroy (--test-fault-phase)"}) {
    EXPECT_EQ(plainMessage(text), text);
  }
  EXPECT_EQ(plainMessage("std::exception: group cellos does not exist; run scripts/setup"),
            "group cellos does not exist; run scripts/setup");
}

TEST(PlainMessage, ABareFailedCheckSaysWhereTheDetailsAre) {
  EXPECT_EQ(plainMessage("broker_server.cpp:250: failed: expected record != nullptr"),
            "an internal check failed (the daemons' logs have the details)");
}

TEST(PlainMessage, OfAKjExceptionUsesItsDescriptionOnly) {
  kj::Exception e(kj::Exception::Type::FAILED, "launcher.cpp", 182,
                  kj::str("expected !cells.count(id); a cell with this id is live"));
  EXPECT_EQ(plainMessage(e), "a cell with this id is live");
}

TEST(BrokerFailure, ALostConnectionSaysSo) {
  kj::Exception e(kj::Exception::Type::DISCONNECTED, "async-io-unix.c++", 491,
                  kj::str("Peer disconnected."));
  EXPECT_EQ(brokerFailure(e),
            "lost the connection to the broker (is cellos-broker still running? `systemctl "
            "status cellos-broker`)");
  // A refusal is a disconnect with the broker's reason: that reason is the message.
  kj::Exception refused(kj::Exception::Type::DISCONNECTED, "rpc.c++", 100,
                        kj::str("remote exception: broker.sock refused the connection: too many "
                                "connections from uid 1000 (64 open, at most 64 per uid)"));
  EXPECT_EQ(brokerFailure(refused),
            "broker.sock refused the connection: too many connections from uid 1000 (64 open, at "
            "most 64 per uid)");
}

TEST(UnreachableReason, NamesWhatToCheck) {
  EXPECT_EQ(unreachableReason(EACCES), "permission denied (is this user in group cellos?)");
  EXPECT_EQ(unreachableReason(ENOENT),
            "no such socket (is cellos-broker running? `systemctl status cellos-broker`)");
  EXPECT_EQ(unreachableReason(ECONNREFUSED),
            "connection refused (is cellos-broker running? `systemctl status cellos-broker`)");
}

TEST(RunExitStatus, IsTheCommandsOwnUnlessTheRunnerFailed) {
  EXPECT_EQ(runExitStatus({true, 3, 0, "succeeded", ""}), 3);
  EXPECT_EQ(runExitStatus({true, 0, 9, "succeeded", ""}), 137);
  EXPECT_EQ(runExitStatus({true, 0, 9, "cancelled", ""}), 137);
  // A failed export is the command's (docs/spec.md): its status stays.
  EXPECT_EQ(runExitStatus({true, 4, 0, "failed", "export"}), 4);
  // The runner failed: no status, or a phase other than export failed, whatever the command
  // returned.
  EXPECT_EQ(runExitStatus({false, 0, 0, "failed", "network_scope"}), 125);
  EXPECT_EQ(runExitStatus({true, 0, 0, "failed", "destroy"}), 125);
  EXPECT_EQ(runExitStatus({true, 3, 0, "failed", "revoke"}), 125);
  EXPECT_EQ(runExitStatus({false, 0, 0, "cancelled", "admission"}), 125);
}

}  // namespace
}  // namespace cellos::cli
