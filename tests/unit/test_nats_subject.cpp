// NATS subjects of signed events: cellos.events.<host>.<cellId>.<phase>, and no event can
// address another subject through its attributes; of checkpoints: cellos.checkpoints.<origin>.

#include "event-forwarder/nats_subject.h"

#include <gtest/gtest.h>

namespace cellos::forwarder {
namespace {

nlohmann::json event(const std::string& source, const std::string& subject,
                     const std::string& type) {
  return {{"source", source}, {"subject", subject}, {"type", type}};
}

TEST(NatsSubject, HostCellAndPhaseOfACellEvent) {
  EXPECT_EQ(subjectFor(event("urn:cellos:host:h1", "urn:cellos:cell:hello",
                             "dev.cellos.events.cell.lifecycle.v1.started")),
            "cellos.events.h1.hello.lifecycle");
  EXPECT_EQ(subjectFor(event("urn:cellos:host:h1", "urn:cellos:cell:hello",
                             "dev.cellos.events.cell.observability.v1.dns_query")),
            "cellos.events.h1.hello.observability");
}

TEST(NatsSubject, TheLogsOwnEvents) {
  EXPECT_EQ(subjectFor(event("urn:cellos:host:h1", "urn:cellos:log:h1",
                             "dev.cellos.events.log.v1.resumed")),
            "cellos.events.h1._log.log");
}

TEST(NatsSubject, TokensCannotAddressOtherSubjects) {
  EXPECT_EQ(subjectFor(event("urn:cellos:host:a.b", "urn:cellos:cell:x.>",
                             "dev.cellos.events.cell.lifecycle.v1.started")),
            "cellos.events.a_b.x__.lifecycle");
  EXPECT_EQ(subjectFor(event("urn:cellos:host:*", "urn:cellos:cell:a b", "other.type")),
            "cellos.events._.a_b._");
  EXPECT_EQ(subjectFor(nlohmann::json::object()), "cellos.events._._._");
}

// A checkpoint goes to cellos.checkpoints.<origin> (its first line, one token) with the note's
// digest as message id: two notes for one tree size (a fork) are two messages.
TEST(NatsSubject, CheckpointsByOriginAndDigest) {
  std::string note = "cellos/ed25519:4bd69a0ffa4a40aa/0\n24\nroot=\n\n\xE2\x80\x94 sig\n";
  EXPECT_EQ(checkpointSubjectFor(note), "cellos.checkpoints.cellos/ed25519:4bd69a0ffa4a40aa/0");
  EXPECT_EQ(checkpointSubjectFor("host.example/a b>*\n1\n"),
            "cellos.checkpoints.host_example/a_b__");
  EXPECT_EQ(checkpointSubjectFor(""), "cellos.checkpoints._");
  std::string id = checkpointMessageId(note);
  EXPECT_EQ(id.rfind("checkpoint-", 0), 0u);
  EXPECT_EQ(id.size(), std::string("checkpoint-").size() + 64);
  std::string fork = note;
  fork[note.find("root")] = 'R';
  EXPECT_NE(checkpointMessageId(fork), id);
  EXPECT_EQ(checkpointMessageId(std::string(note)), id);
}

}  // namespace
}  // namespace cellos::forwarder
