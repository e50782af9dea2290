// Issue 17: the `cellos` binary's exit codes and messages where no daemon is involved: every
// usage error is exit 2 with a pointer to --help, an unreachable broker is exit 125 with what to
// check, for every command that talks to it. (Runs the real binary; starts nothing.)

#include "tests/e2e/cellos_process.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace cellos::testing {
namespace {

struct Usage {
  std::vector<std::string> args;
  std::string message;  // CLI11's
  std::string help;     // the command whose --help is suggested
};

TEST(CliUsage, EveryParseErrorExitsTwoWithCli11sMessageAndAPointerToHelp) {
  for (const Usage& u : std::vector<Usage>{
           {{}, "A subcommand is required", "cellos"},
           {{"nope"},
            "unknown command nope (commands: run validate verify keys submit ps logs cancel "
            "doctor)",
            "cellos"},
           {{"--nope"},
            "unknown option --nope (commands: run validate verify keys submit ps logs cancel "
            "doctor)",
            "cellos"},
           {{"ps", "--bogus"}, "The following argument was not expected: --bogus", "cellos ps"},
           {{"ps", "extra"}, "The following argument was not expected: extra", "cellos ps"},
           {{"run"}, "FILE is required", "cellos run"},
           {{"submit"}, "FILE is required", "cellos submit"},
           {{"cancel"}, "RUN is required", "cellos cancel"},
           {{"logs"}, "RUN is required", "cellos logs"},
           {{"keys", "--format", "x"}, "--format: x not in {pem,jwk,keyset}", "cellos keys"},
           {{"run", "a.yaml", "--nats-timeout", "abc"},
            "Could not convert: --nats-timeout = abc",
            "cellos run"},
           {{"verify", "log", "--prove"}, "--prove: 1 required UINT missing", "cellos verify"},
       }) {
    auto result = runCellos(u.args);
    std::string shown = u.args.empty() ? "(none)" : u.args[0];
    EXPECT_EQ(result.status, 2) << shown << ": " << result.err;
    EXPECT_EQ(result.err, "cellos: " + u.message + "\nRun `" + u.help + " --help` for usage.\n")
        << shown;
    EXPECT_EQ(result.out, "");
  }
}

TEST(CliUsage, HelpAndVersionExitZeroAndHelpStatesTheExitCodes) {
  auto help = runCellos({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("125 when the runner itself failed"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("2 for an invalid document or a usage error"), std::string::npos);
  EXPECT_EQ(runCellos({"run", "--help"}).status, 0);
  EXPECT_EQ(runCellos({"--version"}).status, 0);
}

// A socket path in a fresh directory, with a Unix socket bound there (listening or not).
class Socket {
 public:
  explicit Socket(bool listening) : dir_(makeTempDir()), path_(dir_ + "/broker.sock") {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
        << strerror(errno);
    if (listening) {
      EXPECT_EQ(listen(fd_, 8), 0);
    }
  }
  ~Socket() {
    close(fd_);
    std::filesystem::remove_all(dir_);
  }
  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
  int fd_ = -1;
};

const std::vector<std::vector<std::string>> kServiceCommands = {
    {"ps"}, {"logs", "RUN"}, {"cancel", "RUN"}, {"submit", "DOC"}, {"submit", "--wait", "DOC"}};

// `args` with "DOC" replaced by a valid document in `dir` and the socket option added.
std::vector<std::string> serviceArgs(std::vector<std::string> args, const std::string& dir,
                                     const std::string& socket) {
  for (auto& a : args) {
    if (a != "DOC") continue;
    a = dir + "/doc.yaml";
    writeFile(a,
              "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: unreachable\n  "
              "lifetime: {ttlSeconds: 60}\n  run: {argv: [/bin/true]}\n");
  }
  args.push_back("--socket=" + socket);
  return args;
}

TEST(CliUsage, AMissingOrDeafBrokerIs125ForEveryCommandWithWhatToCheck) {
  std::string dir = makeTempDir();
  for (const auto& command : kServiceCommands) {
    std::string missing = dir + "/none.sock";
    auto result = runCellos(serviceArgs(command, dir, missing));
    EXPECT_EQ(result.status, 125) << command[0] << ": " << result.err;
    EXPECT_EQ(result.err, "cellos " + command[0] + ": cannot reach the broker at " + missing +
                              ": no such socket (is cellos-broker running? `systemctl status "
                              "cellos-broker`)\n");
  }
  Socket deaf(/*listening=*/false);
  for (const auto& command : kServiceCommands) {
    auto result = runCellos(serviceArgs(command, dir, deaf.path()));
    EXPECT_EQ(result.status, 125) << command[0] << ": " << result.err;
    EXPECT_EQ(result.err, "cellos " + command[0] + ": cannot reach the broker at " + deaf.path() +
                              ": connection refused (is cellos-broker running? `systemctl status "
                              "cellos-broker`)\n");
  }
  std::filesystem::remove_all(dir);
}

// Runs `cellos args` as uid/gid 65534 (no supplementary groups): exit status, stderr.
RunResult runAsNobody(std::vector<std::string> args) {
  return runCellosPrepared(
      std::move(args),
      [] {
        return setgroups(0, nullptr) == 0 && setresgid(65534, 65534, 65534) == 0 &&
               setresuid(65534, 65534, 65534) == 0;
      },
      Capture::kStderr);
}

TEST(CliUsage, ASocketThisUserMayNotOpenSaysToCheckGroupCellos) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: runs the client as another user";
  Socket broker(/*listening=*/true);
  // As the broker's socket is for a user outside group cellos: root's, mode 0660.
  ASSERT_EQ(chmod(broker.dir().c_str(), 0755), 0);
  ASSERT_EQ(chmod(broker.path().c_str(), 0660), 0);
  std::string docs = makeTempDir();
  ASSERT_EQ(chmod(docs.c_str(), 0755), 0);
  for (const auto& command : kServiceCommands) {
    auto args = serviceArgs(command, docs, broker.path());
    if (command[0] == "submit") chmod((docs + "/doc.yaml").c_str(), 0644);
    auto result = runAsNobody(args);
    EXPECT_EQ(result.status, 125) << command[0] << ": " << result.err;
    EXPECT_EQ(result.err, "cellos " + command[0] + ": cannot reach the broker at " + broker.path() +
                              ": permission denied (is this user in group cellos?)\n");
  }
  std::filesystem::remove_all(docs);
}

// `cellos run` of a gvisor cell on a host without runsc: seen from a private mount namespace in
// which /usr/bin is an empty tmpfs (the host's own mounts are untouched). Exit status, stderr.
RunResult runWithoutUsrBin(std::vector<std::string> args) {
  return runCellosPrepared(
      std::move(args),
      [] {
        return unshare(CLONE_NEWNS) == 0 &&
               mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
               mount("tmpfs", "/usr/bin", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") == 0;
      },
      Capture::kStderr);
}

TEST(CliUsage, AGvisorCellWithoutRunscSaysTheBackendIsUnavailableBeforeAnythingStarts) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: a private mount namespace";
  std::string dir = makeTempDir();
  std::string named = dir + "/named.yaml", unnamed = dir + "/unnamed.yaml";
  std::string cell =
      "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: no-runsc\n  lifetime: "
      "{ttlSeconds: 60}\n  run: {argv: [/bin/true]}\n";
  writeFile(unnamed, cell);
  writeFile(named, cell + "  placement: {backend: gvisor}\n");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"run", named, "--state-dir", dir + "/state"},
           {"run", unnamed, "--backend", "gvisor", "--state-dir", dir + "/state"}}) {
    auto result = runWithoutUsrBin(args);
    EXPECT_EQ(result.status, 125) << result.err;
    EXPECT_EQ(result.err,
              "cellos run: gvisor backend unavailable: runsc is not installed (/usr/bin/runsc: No "
              "such file or directory; `apt-get install runsc`, or see `cellos doctor`)\n");
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/state")) << "nothing may start without runsc";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cellos::testing
