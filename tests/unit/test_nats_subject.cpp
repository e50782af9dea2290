// NATS subjects of signed events: cellos.events.<host>.<cellId>.<phase>, and no event can
// address another subject through its attributes.

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

}  // namespace
}  // namespace cellos::forwarder
