// The event log's file names and dead-letter records (eventlog/format.h), which the broker
// writes and the event forwarder and `cellos verify` read: they must agree on every name.

#include "eventlog/format.h"

#include <gtest/gtest.h>

#include <string>

namespace cellos::eventlog {
namespace {

TEST(EventLogFormat, ARotatedFileNamesTheLastSequenceItHolds) {
  EXPECT_EQ(rotatedLogName("events.jsonl", 1234), "events.jsonl.00000000000000001234");
  EXPECT_EQ(rotatedLogSequence("events.jsonl.00000000000000001234", "events.jsonl"), 1234u);
  EXPECT_EQ(rotatedLogSequence(rotatedLogName("events.jsonl", UINT64_MAX), "events.jsonl"),
            UINT64_MAX);
  // Names sort in sequence order, which `cellos verify events.jsonl.* events.jsonl` relies on.
  EXPECT_LT(rotatedLogName("events.jsonl", 9), rotatedLogName("events.jsonl", 10));
}

TEST(EventLogFormat, OnlyTheLogsOwnRotatedFilesAreRotatedFiles) {
  const std::string log = "events.jsonl";
  EXPECT_FALSE(rotatedLogSequence("events.jsonl", log));
  EXPECT_FALSE(rotatedLogSequence("events.jsonl.dead-letter", log));
  EXPECT_FALSE(rotatedLogSequence("other.jsonl.00000000000000001234", log));
  EXPECT_FALSE(rotatedLogSequence("events.jsonlx00000000000000001234", log));
  EXPECT_FALSE(rotatedLogSequence("events.jsonl.0000000000000001234", log));    // 19 digits
  EXPECT_FALSE(rotatedLogSequence("events.jsonl.000000000000000001234", log));  // 21 digits
  EXPECT_FALSE(rotatedLogSequence("events.jsonl.0000000000000000123x", log));
  EXPECT_FALSE(rotatedLogSequence("events.jsonl.-0000000000000000123", log));
  EXPECT_FALSE(rotatedLogSequence("xevents.jsonl.0000000000000001234", log));
}

TEST(EventLogFormat, TheDeadLettersLiveBesideTheLog) {
  EXPECT_EQ(defaultDeadLetterPath("/var/log/cellos/events.jsonl"),
            "/var/log/cellos/events.jsonl.dead-letter");
}

TEST(EventLogFormat, ASignedEventIsNamedBySequenceAndIdAndFoundAgainBySequence) {
  nlohmann::json event = {{"id", "0190-abc"}, {"sequence", "00000000000000000042"}};
  DeadLetter letter = eventDeadLetter(event, "nats", "JetStream refused it", 7);
  EXPECT_EQ(letter.name, "00000000000000000042-0190-abc.json");
  EXPECT_EQ(
      letter.record,
      (nlohmann::json{{"reason", "JetStream refused it"}, {"sink", "nats"}, {"event", event}}));
  EXPECT_EQ(signedDeadLetterSequence(letter.name), 42u);
}

TEST(EventLogFormat, AnUnsignedEventIsNamedByIdOrElseByTime) {
  DeadLetter withId = eventDeadLetter({{"id", "0190-abc"}}, "signer", "no signer", 7);
  EXPECT_EQ(withId.name, "unsigned-0190-abc.json");
  EXPECT_EQ(withId.record["sink"], "signer");
  EXPECT_FALSE(signedDeadLetterSequence(withId.name));

  EXPECT_EQ(eventDeadLetter({{"type", "x"}}, "signer", "no signer", 1733560000123456).name,
            "unsigned-1733560000123456.json");
  EXPECT_EQ(eventDeadLetter("not an object", "signer", "no signer", 5).name, "unsigned-5.json");
}

TEST(EventLogFormat, EventAttributesCannotWalkOutOfTheDirectory) {
  DeadLetter byId = eventDeadLetter({{"id", "../../etc/passwd"}}, "signer", "r", 1);
  EXPECT_EQ(byId.name, "unsigned-______etc_passwd.json");
  DeadLetter bySequence = eventDeadLetter({{"id", "a/b"}, {"sequence", "../x"}}, "jsonl", "r", 1);
  EXPECT_EQ(bySequence.name, "___x-a_b.json");
  EXPECT_FALSE(signedDeadLetterSequence(bySequence.name));
  // An empty id, and a long one, cut to 64 characters.
  EXPECT_EQ(
      eventDeadLetter({{"id", ""}, {"sequence", "00000000000000000001"}}, "jsonl", "r", 1).name,
      "00000000000000000001-no-id.json");
  EXPECT_EQ(eventDeadLetter({{"id", std::string(100, 'a')}}, "signer", "r", 1).name,
            "unsigned-" + std::string(64, 'a') + ".json");
}

TEST(EventLogFormat, APartialLineKeepsItsBytesEvenWhenCutInsideAUtf8Sequence) {
  std::string cut = "{\"id\":\"caf\xc3";  // "café" cut after the first byte of "é"
  DeadLetter letter = partialLineDeadLetter(cut, 1733560000123456);
  EXPECT_EQ(letter.name, "partial-1733560000123456.json");
  EXPECT_EQ(letter.record["sink"], "jsonl");
  EXPECT_FALSE(signedDeadLetterSequence(letter.name));

  std::string text = deadLetterText(letter.record);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);  // one line
  auto back = nlohmann::json::parse(text);
  EXPECT_EQ(back["partialLine"], "{\"id\":\"caf\xef\xbf\xbd");  // the cut byte replaced by U+FFFD
  EXPECT_EQ(back["reason"], letter.record["reason"]);
}

}  // namespace
}  // namespace cellos::eventlog
