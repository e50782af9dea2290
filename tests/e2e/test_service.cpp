// Host-service mode: a running broker and `cellos submit / ps / logs / cancel` against it, as
// an operator's users would use them. The daemons are started the way `cellos run` starts them
// (cli::EmbeddedSystem) but stay up across commands.

#include "broker/cli/embedded.h"
#include "tests/e2e/cellos_process.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

std::string cell(const std::string& id, const std::string& script) {
  nlohmann::json argv = {"/bin/sh", "-c", script};
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
         "\n  lifetime: {ttlSeconds: 120}\n  run:\n    argv: " + argv.dump() + "\n";
}

struct PsRow {
  std::string runId, cellId, state, outcome, exit;
};

std::vector<PsRow> parsePs(const std::string& out) {
  std::vector<PsRow> rows;
  std::istringstream in(out);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    PsRow row;
    fields >> row.runId >> row.cellId >> row.state >> row.outcome >> row.exit;
    if (!row.runId.empty()) rows.push_back(row);
  }
  return rows;
}

class HostService : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    stateDir_ = makeTempDir();
    cli::EmbeddedOptions options;
    options.stateDir = stateDir_;
    options.binDir = binDir();
    options.brokerArgs = {"--max-concurrent=4"};
    system_ = std::make_unique<cli::EmbeddedSystem>(options);
    system_->start();
    socket_ = system_->brokerSocket();
  }
  void TearDown() override {
    if (system_) system_->stop();
    if (!stateDir_.empty()) std::filesystem::remove_all(stateDir_);
  }

  std::string document(const std::string& name, const std::string& yaml) {
    std::string path = stateDir_ + "/" + name + ".yaml";
    writeFile(path, yaml);
    return path;
  }
  RunResult cellos(std::vector<std::string> args) {
    args.push_back("--socket=" + socket_);
    return runCellos(args);
  }
  std::vector<PsRow> ps() { return parsePs(cellos({"ps"}).out); }
  // Polls `cellos ps` until every listed run has finished (bounded); returns the last rows.
  std::vector<PsRow> waitAllFinished(std::chrono::seconds limit, size_t* maxRunning = nullptr) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    std::vector<PsRow> rows;
    for (;;) {
      rows = ps();
      size_t running = 0, finished = 0;
      for (const auto& r : rows) {
        running += r.state == "running";
        finished += r.state == "finished";
      }
      if (maxRunning) *maxRunning = std::max(*maxRunning, running);
      if (finished == rows.size() || std::chrono::steady_clock::now() > deadline) return rows;
      std::this_thread::sleep_for(100ms);
    }
  }

  std::string stateDir_, socket_;
  std::unique_ptr<cli::EmbeddedSystem> system_;
};

TEST_F(HostService, SubmitPrintsARunIdAndPsAndLogsFollowIt) {
  auto submitted = cellos({"submit", document("hello", cell("svc-hello", "echo hi"))});
  ASSERT_EQ(submitted.status, 0) << submitted.err;
  std::string runId = submitted.out.substr(0, submitted.out.find('\n'));
  ASSERT_EQ(runId.size(), 36u) << submitted.out;

  auto rows = waitAllFinished(30s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].runId, runId);
  EXPECT_EQ(rows[0].cellId, "svc-hello");
  EXPECT_EQ(rows[0].state, "finished");
  EXPECT_EQ(rows[0].outcome, "succeeded");
  EXPECT_EQ(rows[0].exit, "0");

  auto logs = cellos({"logs", runId});
  ASSERT_EQ(logs.status, 0) << logs.err;
  std::vector<std::string> types;
  std::istringstream in(logs.out);
  std::string line;
  while (std::getline(in, line)) {
    auto event = nlohmann::json::parse(line);
    EXPECT_EQ(event["data"]["runId"], runId);
    types.push_back(event["type"]);
  }
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.front(), "dev.cellos.events.cell.admission.v1.accepted");
  EXPECT_EQ(types.back(), "dev.cellos.events.cell.lifecycle.v1.destroyed");
}

TEST_F(HostService, SubmitWaitStreamsOutputAndExitsWithTheCellsStatus) {
  auto result =
      cellos({"submit", "--wait", document("three", cell("svc-three", "echo out; exit 3"))});
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_EQ(result.out, "out\n");
}

TEST_F(HostService, AnInvalidDocumentIsRefusedByTheClientWithExitTwo) {
  auto result = cellos({"submit", document("bad", "apiVersion: cellos.io/v1\nkind: Nope\n")});
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("kind"), std::string::npos) << result.err;
  EXPECT_TRUE(ps().empty());
}

TEST_F(HostService, CancelFromAnotherCommandStopsTheCellAndItsEventsEndForced) {
  // One user follows the run (`submit --wait`); another command cancels it by id.
  CellosProcess follower({"submit", "--wait",
                          document("long", cell("svc-long", "echo ready; sleep 1000")),
                          "--socket=" + socket_});
  ASSERT_TRUE(follower.waitForStdout("ready", 30s)) << follower.err();
  auto rows = ps();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].state, "running");
  std::string runId = rows[0].runId;
  auto cancelled = cellos({"cancel", runId});
  EXPECT_EQ(cancelled.status, 0) << cancelled.err;
  EXPECT_EQ(follower.wait(30s), 137) << follower.err();  // the cell died of SIGKILL
  rows = waitAllFinished(30s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].exit, "137");
  auto logs = cellos({"logs", runId});
  std::string last = logs.out.substr(logs.out.rfind('\n', logs.out.size() - 2) + 1);
  auto destroyed = nlohmann::json::parse(last);
  EXPECT_EQ(destroyed["type"], "dev.cellos.events.cell.lifecycle.v1.destroyed");
  EXPECT_EQ(destroyed["data"]["terminalState"], "forced");
  EXPECT_EQ(cellos({"cancel", "no-such-run"}).status, 1);
}

TEST_F(HostService, ADetachedRunsOutputDoesNotStallIt) {
  // 1 MiB of output with nobody listening: the run must still finish cleanly with exit 0.
  auto submitted = cellos(
      {"submit", document("noisy", cell("svc-noisy", "head -c 1048576 /dev/zero; echo done"))});
  ASSERT_EQ(submitted.status, 0) << submitted.err;
  auto rows = waitAllFinished(30s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].outcome, "succeeded");
  EXPECT_EQ(rows[0].exit, "0");
}

TEST_F(HostService, TwentyCellsAtOnceWithALimitOfFourAllCompleteWithVerifiableEvents) {
  std::vector<std::unique_ptr<CellosProcess>> submits;
  for (int i = 0; i < 20; ++i) {
    std::string id = "svc-many-" + std::to_string(i);
    submits.push_back(std::make_unique<CellosProcess>(std::vector<std::string>{
        "submit", document(id, cell(id, "echo " + id + "; sleep 0.2")), "--socket=" + socket_}));
  }
  std::set<std::string> runIds;
  for (auto& s : submits) {
    ASSERT_EQ(s->wait(60s), 0) << s->err();
    runIds.insert(s->out().substr(0, 36));
  }
  EXPECT_EQ(runIds.size(), 20u);
  size_t maxRunning = 0;
  auto rows = waitAllFinished(120s, &maxRunning);
  ASSERT_EQ(rows.size(), 20u);
  EXPECT_LE(maxRunning, 4u) << "the broker ran more cells at once than --max-concurrent";
  for (const auto& r : rows) {
    EXPECT_EQ(r.state, "finished") << r.cellId;
    EXPECT_EQ(r.outcome, "succeeded") << r.cellId;
  }
  // One log, every run's events in it, the whole chain verifiable.
  auto verify = runCellos({"verify", "--state-dir", stateDir_, system_->eventsPath()});
  EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
  for (const auto& runId : runIds) {
    auto logs = cellos({"logs", runId});
    EXPECT_NE(logs.out.find("lifecycle.v1.destroyed"), std::string::npos) << runId;
  }
}

TEST_F(HostService, ABrokerKilledMidCellLeavesNoResidueAndItsSuccessorClosesTheRun) {
  auto submitted =
      cellos({"submit", document("orphan", cell("svc-orphan", "sleep 1000 & sleep 1000"))});
  ASSERT_EQ(submitted.status, 0) << submitted.err;
  std::string runId = submitted.out.substr(0, 36);
  for (int i = 0; i < 100 && ps().at(0).state != "running"; ++i) std::this_thread::sleep_for(50ms);
  // Let the command start (the cgroup has processes), so there is something to tear down.
  auto cellProcesses = [] {
    return std::filesystem::exists("/sys/fs/cgroup/pids/cellos/svc-orphan")
               ? readFile("/sys/fs/cgroup/pids/cellos/svc-orphan/cgroup.procs")
               : readFile("/sys/fs/cgroup/cellos/svc-orphan/cgroup.procs");
  };
  // init, the shell and its two sleeps: the command is really running.
  auto count = [&] {
    std::string procs = cellProcesses();
    return std::count(procs.begin(), procs.end(), '\n');
  };
  for (int i = 0; i < 200 && count() < 4; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_GE(count(), 4) << "the cell's command never ran: " << cellProcesses();

  pid_t broker = system_->pids().back();
  ASSERT_EQ(exeName(broker), "cellos-broker");
  ASSERT_EQ(kill(broker, SIGKILL), 0);

  // Within 10 s the VM launcher and DNS helper have torn the cell down on their own: no
  // process below the surviving daemons but the VM launcher's own launcher half, no cgroup, no
  // mount.
  pid_t agent = system_->pids()[1];
  ASSERT_EQ(exeName(agent), "cellos-vmm-agent");
  auto leftovers = [&]() {
    std::vector<std::string> found;
    std::vector<pid_t> pending;
    for (pid_t p : system_->pids()) {
      if (p != broker) pending.push_back(p);
    }
    while (!pending.empty()) {
      pid_t p = pending.back();
      pending.pop_back();
      for (pid_t child : childrenOf(p)) {
        bool launcherHalf = p == agent && exeName(child) == "cellos-vmm-agent";
        // The launcher half's gVisor spawner (when runsc is installed) lives as long as it does.
        launcherHalf = launcherHalf || (exeName(child) == "cellos-vmm-agent" &&
                                        statusField(child, "Name") == "vmm-gvisor");
        if (!launcherHalf)
          found.push_back("process " + std::to_string(child) + " (" + exeName(child) + ")");
        pending.push_back(child);
      }
    }
    for (const auto& r : hostResidue()) {
      if (r.rfind("cgroup", 0) == 0 || r.rfind("mount", 0) == 0) found.push_back(r);
    }
    return found;
  };
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::vector<std::string> residue;
  do {
    std::this_thread::sleep_for(100ms);
    residue = leftovers();
  } while (!residue.empty() && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(residue, std::vector<std::string>{}) << "the cell or its DNS child outlived the broker";

  // The restarted broker closes the interrupted run's event stream.
  system_->restart("cellos-broker");
  // The new broker does not know the run any more; read the log directly.
  std::vector<nlohmann::json> runEvents;
  for (const auto& line : readLines(system_->eventsPath())) {
    auto event = nlohmann::json::parse(line);
    if (event["data"]["runId"] == runId) runEvents.push_back(event);
  }
  ASSERT_FALSE(runEvents.empty());
  const auto& last = runEvents.back();
  EXPECT_EQ(last["type"], "dev.cellos.events.cell.lifecycle.v1.destroyed");
  EXPECT_EQ(last["data"]["outcome"], "failed");
  EXPECT_EQ(last["data"]["terminalState"], "forced");
  EXPECT_EQ(last["data"]["cellId"], "svc-orphan");
  auto verify = runCellos({"verify", "--state-dir", stateDir_, system_->eventsPath()});
  EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
  // And it serves again.
  EXPECT_EQ(cellos({"submit", "--wait", document("after", cell("svc-after", "true"))}).status, 0);
}

// Runs `cellos` as another user (with its primary and supplementary groups) and returns its
// exit status and stdout.
RunResult runAs(const std::string& user, std::vector<std::string> args) {
  passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) return {-1, "", "no user " + user};
  int out[2];
  if (pipe(out) < 0) return {-1, "", "pipe"};
  std::string path = binDir() + "/cellos";
  args.insert(args.begin(), path);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    if (initgroups(user.c_str(), pw->pw_gid) < 0 ||
        setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
        setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
      _exit(126);
    }
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) text.append(buf, n);
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), text, ""};
}

TEST_F(HostService, AClientSeesAndCancelsOnlyItsOwnRuns) {
  auto submitted = cellos({"submit", document("root-run", cell("svc-roots", "sleep 1000"))});
  ASSERT_EQ(submitted.status, 0) << submitted.err;
  std::string rootsRun = submitted.out.substr(0, 36);

  // The `cellos` account is a member of group cellos, so the broker serves it, as another user.
  auto theirPs = runAs("cellos", {"ps", "--socket=" + socket_});
  ASSERT_EQ(theirPs.status, 0) << theirPs.out;
  EXPECT_EQ(theirPs.out.find(rootsRun), std::string::npos) << "another user's run is listed";
  auto theirCancel = runAs("cellos", {"cancel", rootsRun, "--socket=" + socket_});
  EXPECT_EQ(theirCancel.status, 1) << theirCancel.out;
  EXPECT_NE(theirCancel.out.find("no such run"), std::string::npos) << theirCancel.out;
  auto rows = ps();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0].state, "finished") << "another user cancelled root's run";
  EXPECT_EQ(cellos({"cancel", rootsRun}).status, 0);
  waitAllFinished(30s);
}

}  // namespace
}  // namespace cellos::testing
