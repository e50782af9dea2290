#pragma once
// What the linux-backend end-to-end tests share: a state directory per test, `cellos run` of a
// document, the events it wrote, and the residue check after every test.

#include "tests/e2e/cellos_process.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cellos::testing {

class CellE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: embedded mode starts privileged daemons";
    stateDir_ = makeTempDir();
    events_ = stateDir_ + "/events.jsonl";
    baseline_ = ourResidue();
  }
  void TearDown() override {
    if (stateDir_.empty()) return;
    // After every test: nothing of any cell may be left on the host. What was there before the
    // test started (another engineer's run on a shared machine) is not this test's residue.
    std::vector<std::string> residue;
    for (const auto& r : ourResidue()) {
      if (std::find(baseline_.begin(), baseline_.end(), r) == baseline_.end()) residue.push_back(r);
    }
    std::string text;
    for (const auto& r : residue) text += r + "\n";
    EXPECT_TRUE(residue.empty()) << text;
    std::filesystem::remove_all(stateDir_);
  }

  std::vector<std::string> runArgs(const std::string& document,
                                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"run",     document,   "--state-dir",
                                     stateDir_, "--events", events_};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  std::string writeDocument(const std::string& name, const std::string& yaml) {
    std::string path = stateDir_ + "/" + name;
    writeFile(path, yaml);
    return path;
  }
  RunResult run(const std::string& name, const std::string& yaml,
                const std::vector<std::string>& extra = {}) {
    return runCellos(runArgs(writeDocument(name, yaml), extra));
  }
  std::vector<nlohmann::json> events() {
    std::vector<nlohmann::json> out;
    for (const auto& line : readLines(events_)) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  // The data of every event of type dev.cellos.events.cell.<suffix>, in log order.
  std::vector<nlohmann::json> eventData(const std::string& suffix) {
    std::vector<nlohmann::json> out;
    for (const auto& e : events()) {
      if (e["type"] == "dev.cellos.events.cell." + suffix) out.push_back(e["data"]);
    }
    return out;
  }
  nlohmann::json completed() {
    auto all = eventData("command.v1.completed");
    return all.empty() ? nlohmann::json() : all.back();
  }

  std::string stateDir_, events_;
  std::vector<std::string> baseline_;
};

// A document running `argv` with `env`, plus extra YAML under spec (authority, limits ...).
inline std::string cellDocument(const std::string& id, const nlohmann::json& argv,
                                const std::string& runExtra = "", const std::string& specExtra = "",
                                int ttlSeconds = 60) {
  return "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: " + id +
         "\n  lifetime: {ttlSeconds: " + std::to_string(ttlSeconds) + "}\n" + specExtra +
         "  run:\n    argv: " + argv.dump() + "\n" + runExtra;
}

}  // namespace cellos::testing
