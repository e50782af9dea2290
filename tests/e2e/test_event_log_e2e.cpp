// End-to-end: the broker's event log with the real daemons — size-based rotation that keeps the
// chain across files, redaction before signing, the dead-letter directory, and crashes: the
// broker killed between signing and writing, a write cut short mid-line, the signer killed
// during a stream of signing. After every restart `cellos verify` accepts the log, and every
// event that is not in it is accounted for (dead letter or signed gap declaration), never
// silently missing.

#include "tests/e2e/event_daemons.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

namespace cellos::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> readLinesOf(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<nlohmann::json> eventsIn(const std::vector<std::string>& files) {
  std::vector<nlohmann::json> out;
  for (const auto& file : files) {
    for (const auto& line : readLinesOf(file)) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

std::vector<nlohmann::json> deadLetters(const std::string& directory) {
  std::vector<nlohmann::json> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    std::ifstream in(entry.path());
    out.push_back(nlohmann::json::parse(in));
  }
  return out;
}

// The cell id an event is about ("urn:cellos:cell:<id>").
std::string cellOf(const nlohmann::json& event) {
  std::string subject = event.value("subject", "");
  auto colon = subject.rfind(':');
  return colon == std::string::npos ? "" : subject.substr(colon + 1);
}

std::vector<std::string> documents(const std::string& prefix, size_t count) {
  std::vector<std::string> out;
  for (size_t i = 0; i < count; ++i) out.push_back(rejectedDocument(prefix + std::to_string(i)));
  return out;
}

class EventLogE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: starts the privileged daemons";
    char dir[] = "/tmp/cellos-evlog.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    stateDir_ = dir;
    chmod(dir, 0755);
    daemons_ = std::make_unique<EventDaemons>(stateDir_);
  }
  void TearDown() override {
    daemons_.reset();
    if (!stateDir_.empty()) std::filesystem::remove_all(stateDir_);
  }

  VerifyResult verify(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--keys", daemons_->signerDir() + "/keyset.json"};
    args.insert(args.end(), extra.begin(), extra.end());
    for (const auto& f : logFiles(daemons_->eventsPath())) args.push_back(f);
    return cellosVerify(args);
  }

  std::string stateDir_;
  std::unique_ptr<EventDaemons> daemons_;
};

TEST_F(EventLogE2E, RotationKeepsTheChainAcrossFiles) {
  daemons_->startAll({"--events-max-bytes=6000"});
  // Ten rounds of four: batches stay small, so files end near the limit.
  for (int round = 0; round < 10; ++round) {
    auto results =
        submitDocuments(daemons_->socket("broker"), documents("rot" + std::to_string(round), 4));
    for (const auto& r : results) ASSERT_TRUE(r.delivered) << r.error;
  }
  daemons_->stopAll();

  auto files = logFiles(daemons_->eventsPath());
  ASSERT_GE(files.size(), 3u) << "40 events of ~1.5 KiB in 6000-byte files must rotate";
  uint64_t expected = 0;
  for (const auto& file : files) {
    auto size = std::filesystem::file_size(file);
    auto events = eventsIn({file});
    ASSERT_FALSE(events.empty()) << file;
    // One batch may be larger than the limit; a file only goes past it with its first batch.
    if (file != files.back()) {
      EXPECT_LE(size, 6000u + 4 * 4096u) << file;
    }
    for (const auto& e : events) {
      EXPECT_EQ(e["sequence"],
                std::string(20 - std::to_string(expected).size(), '0') + std::to_string(expected));
      ++expected;
    }
    if (file != files.back()) {
      // Named after the last sequence it holds.
      EXPECT_EQ(file.substr(file.size() - 20), events.back()["sequence"].get<std::string>());
    }
  }
  EXPECT_EQ(expected, 40u);
  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("OK: 40 events verified in " + std::to_string(files.size()) + " files"),
            std::string::npos)
      << ok.out;
  // Dropping a middle file breaks the chain, naming the first line after the hole.
  std::vector<std::string> args = {"--keys", daemons_->signerDir() + "/keyset.json", files[0]};
  args.insert(args.end(), files.begin() + 2, files.end());
  auto broken = cellosVerify(args);
  EXPECT_EQ(broken.status, 1);
  EXPECT_NE(broken.out.find(files[2] + ":1: sequence"), std::string::npos) << broken.out;
}

TEST_F(EventLogE2E, RedactedFieldsAreReplacedBeforeSigning) {
  daemons_->startAll({"--redact=argv", "--redact=violations"});
  std::string secretArgv =
      "apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: redacted\n"
      "  lifetime: {ttlSeconds: 60}\n  run:\n    argv: [/bin/echo, "
      "hunter2-secret]\n";
  auto results = submitDocuments(daemons_->socket("broker"),
                                 {secretArgv, rejectedDocument("redacted-rejected")}, true);
  ASSERT_TRUE(results[0].delivered) << results[0].error;
  EXPECT_EQ(results[0].outcome, "succeeded");
  daemons_->stopAll();
  bool sawStarted = false, sawRejected = false;
  for (const auto& e : eventsIn({daemons_->eventsPath()})) {
    EXPECT_EQ(e.dump().find("hunter2-secret"), std::string::npos) << e.dump();
    if (e["type"] == "dev.cellos.events.cell.lifecycle.v1.started") {
      sawStarted = true;
      EXPECT_EQ(e["data"]["argv"], "[redacted]");
      EXPECT_EQ(e["data"]["image"], "host") << "only the configured fields are replaced";
    }
    if (e["type"] == "dev.cellos.events.cell.admission.v1.rejected") {
      sawRejected = true;
      EXPECT_EQ(e["data"]["violations"], "[redacted]");
    }
  }
  EXPECT_TRUE(sawStarted);
  EXPECT_TRUE(sawRejected);
  // The signature covers the redacted form.
  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
}

TEST_F(EventLogE2E, EventsTheLogCannotTakeGoToTheDeadLetterDirectoryAndFillTheChain) {
  daemons_->startAll();
  auto before = submitDocuments(daemons_->socket("broker"), documents("before", 3));
  ASSERT_TRUE(before[0].delivered) << before[0].error;
  daemons_->stop("broker");
  auto sizeBefore = std::filesystem::file_size(daemons_->eventsPath());
  // A broker whose log may not grow any more: every write of a batch fails (EFBIG).
  daemons_->setFileSizeLimit("broker", sizeBefore + 10);
  daemons_->startBroker();
  auto lost = submitDocuments(daemons_->socket("broker"), documents("lost", 4));
  for (const auto& r : lost) {
    EXPECT_TRUE(r.delivered) << "a dead-lettered event is durable: " << r.error;
  }
  daemons_->stop("broker");
  EXPECT_EQ(std::filesystem::file_size(daemons_->eventsPath()), sizeBefore)
      << "a failed batch leaves no partial line behind";
  // Room again: the chain continues after the dead-lettered events (no gap to declare).
  daemons_->setFileSizeLimit("broker", 0);
  daemons_->startBroker();
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), documents("after", 3))[0].delivered);
  daemons_->stopAll();

  auto letters = deadLetters(daemons_->deadLetterDir());
  ASSERT_EQ(letters.size(), 4u);
  std::set<std::string> cells;
  for (const auto& letter : letters) {
    EXPECT_EQ(letter["sink"], "jsonl");
    EXPECT_NE(letter["reason"].get<std::string>().find("could not take it"), std::string::npos);
    cells.insert(cellOf(letter["event"]));
  }
  EXPECT_EQ(cells, (std::set<std::string>{"lost0", "lost1", "lost2", "lost3"}));
  EXPECT_EQ(eventsIn({daemons_->eventsPath()}).size(), 6u);

  // With the dead letters (found beside the log) the chain is whole.
  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("OK: 10 events verified"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("4 events verified in place from the dead-letter directory"),
            std::string::npos)
      << ok.out;
  // Without them, the gap is reported at the first line after it.
  std::string empty = stateDir_ + "/no-letters";
  std::filesystem::create_directory(empty);
  auto gap = verify({"--dead-letter", empty});
  EXPECT_EQ(gap.status, 1);
  EXPECT_NE(gap.out.find(daemons_->eventsPath() + ":4: sequence 7 does not follow 2: events 3..6 "
                                                  "are missing"),
            std::string::npos)
      << gap.out;
}

TEST_F(EventLogE2E, BrokerKilledBetweenSigningAndWritingDeclaresTheGapAtItsNextStart) {
  // The third signed batch is held in memory, never written; the broker is killed there.
  daemons_->startAll({"--test-hold-signed-batch=3"});
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), {rejectedDocument("a0")})[0].delivered);
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), {rejectedDocument("a1")})[0].delivered);
  std::thread submitter(
      [&]() { submitDocuments(daemons_->socket("broker"), documents("held", 3)); });
  bool held = daemons_->waitForLog("broker", "test hook: holding", 30s);
  if (held) daemons_->kill9("broker");
  submitter.join();
  ASSERT_TRUE(held) << daemons_->log("broker");
  EXPECT_EQ(eventsIn({daemons_->eventsPath()}).size(), 2u) << "the held batch was not written";

  // The signer persisted its head past the held events; the restarted broker notices.
  daemons_->startBroker();
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), documents("second", 2))[0].delivered);
  daemons_->stopAll();
  auto events = eventsIn({daemons_->eventsPath()});
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[2]["type"], "dev.cellos.events.log.v1.resumed");
  EXPECT_EQ(events[2]["data"]["lastWrittenSequence"], "00000000000000000001");
  uint64_t resumedAt = std::stoull(events[2]["sequence"].get<std::string>());
  EXPECT_GE(resumedAt, 3u) << "at least one held event was signed";
  EXPECT_LE(resumedAt, 5u);
  EXPECT_NE(daemons_->log("broker").find("declaring the gap"), std::string::npos);

  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(
      ok.out.find("declared gap: events 2.." + std::to_string(resumedAt - 1) +
                  " were signed but never written (declared at " + daemons_->eventsPath() + ":3)"),
      std::string::npos)
      << ok.out;

  // The declaration binds to the line before it: delete that line and verification fails.
  auto lines = readLinesOf(daemons_->eventsPath());
  std::ofstream(daemons_->eventsPath(), std::ios::trunc) << lines[0] << "\n"
                                                         << lines[2] << "\n"
                                                         << lines[3] << "\n"
                                                         << lines[4] << "\n";
  auto bad = verify();
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find(daemons_->eventsPath() + ":2: log.v1.resumed event does not name the "
                                                  "previous line"),
            std::string::npos)
      << bad.out;
}

TEST_F(EventLogE2E, AWriteCutShortByACrashIsDeadLetteredAndCutOff) {
  daemons_->startAll();
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), documents("whole", 3))[0].delivered);
  daemons_->kill9("broker");
  // What a crash in the middle of write(2) leaves: the next signed event, cut short. (The
  // signer signed it; the head is past it.)
  auto lines = readLinesOf(daemons_->eventsPath());
  {
    std::ofstream out(daemons_->eventsPath(), std::ios::app);
    out << lines.back().substr(0, lines.back().size() / 2);
  }
  auto truncated = verify();
  EXPECT_EQ(truncated.status, 1);
  EXPECT_NE(truncated.out.find(daemons_->eventsPath() + ":4: truncated last line"),
            std::string::npos)
      << truncated.out;

  daemons_->startBroker();
  ASSERT_TRUE(submitDocuments(daemons_->socket("broker"), documents("later", 1))[0].delivered);
  daemons_->stopAll();
  auto letters = deadLetters(daemons_->deadLetterDir());
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_TRUE(letters[0].contains("partialLine"));
  // The restarted broker cut the partial line off; the signer had not signed anything past
  // the last whole line, so no gap needed declaring.
  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_NE(ok.out.find("1 partial lines cut off by a crash"), std::string::npos) << ok.out;
}

TEST_F(EventLogE2E, SignerKilledDuringAStreamLosesNothingSilently) {
  std::mt19937 random(std::random_device{}());
  std::set<std::string> submittedIds;
  std::set<std::string> acknowledged;
  for (int round = 0; round < 4; ++round) {
    daemons_->startAll();
    auto docs = documents("r" + std::to_string(round) + "-", 60);
    for (size_t i = 0; i < 60; ++i)
      submittedIds.insert("r" + std::to_string(round) + "-" + std::to_string(i));
    std::vector<Submission> results;
    std::thread submitter([&]() { results = submitDocuments(daemons_->socket("broker"), docs); });
    // Anywhere in the stream: before, during or after signing of any batch.
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 40));
    daemons_->kill9("signer");
    submitter.join();
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].delivered)
        acknowledged.insert("r" + std::to_string(round) + "-" + std::to_string(i));
    }
    daemons_->stopAll();  // the broker exits on its own when its signer is gone
  }
  // Every submitted event is in the log or in the dead letters — exactly once — and every one
  // the broker acknowledged is in the log.
  std::map<std::string, int> seen;
  for (const auto& e : eventsIn({daemons_->eventsPath()})) {
    if (e["type"] == "dev.cellos.events.log.v1.resumed") continue;
    seen[cellOf(e)] += 1;
    EXPECT_TRUE(e["type"] == "dev.cellos.events.cell.admission.v1.rejected");
  }
  for (const auto& id : acknowledged) EXPECT_EQ(seen[id], 1) << id << " acknowledged";
  for (const auto& letter : deadLetters(daemons_->deadLetterDir())) {
    ASSERT_TRUE(letter.contains("event"));
    seen[cellOf(letter["event"])] += 1;
  }
  for (const auto& id : submittedIds) {
    // A submission the broker never read (its connection died first) has no event at all.
    EXPECT_LE(seen[id], 1) << id;
    if (acknowledged.count(id)) {
      EXPECT_EQ(seen[id], 1) << id;
    }
  }
  auto ok = verify();
  EXPECT_EQ(ok.status, 0) << ok.out;
}

}  // namespace
}  // namespace cellos::testing
