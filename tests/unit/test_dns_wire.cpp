#include "core/dns_wire.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellos::core {
namespace {

using Bytes = std::vector<uint8_t>;

// What `dig @127.0.0.1 example.com A` (BIND 9.18) sends: RD and AD set, one question, and an
// EDNS OPT record carrying a client cookie. 52 bytes.
// clang-format off
const Bytes kDigQuery = {
    0x1a, 0x2b,  // id
    0x01, 0x20,  // flags: RD, AD
    0x00, 0x01,  // qdcount 1
    0x00, 0x00,  // ancount 0
    0x00, 0x00,  // nscount 0
    0x00, 0x01,  // arcount 1 (the OPT record)
    // offset 12: question name "example.com"
    0x07, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0x03, 'c', 'o', 'm', 0x00,
    0x00, 0x01,  // qtype A
    0x00, 0x01,  // qclass IN
    // offset 29: OPT pseudo-record
    0x00,        // owner: root
    0x00, 0x29,  // type OPT (41)
    0x04, 0xd0,  // requestor's UDP payload size 1232
    0x00, 0x00, 0x00, 0x00,  // extended rcode, version 0, flags (DO clear)
    0x00, 0x0c,              // rdlength 12
    0x00, 0x0a, 0x00, 0x08,  // option COOKIE, length 8
    0x3c, 0x5f, 0x11, 0x9e, 0x42, 0x07, 0xb6, 0x1d,  // client cookie
};
// clang-format on

// A 12-byte header with the given counts.
Bytes header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an = 0, uint16_t ns = 0,
             uint16_t ar = 0) {
  return {static_cast<uint8_t>(id >> 8),    static_cast<uint8_t>(id),
          static_cast<uint8_t>(flags >> 8), static_cast<uint8_t>(flags),
          static_cast<uint8_t>(qd >> 8),    static_cast<uint8_t>(qd),
          static_cast<uint8_t>(an >> 8),    static_cast<uint8_t>(an),
          static_cast<uint8_t>(ns >> 8),    static_cast<uint8_t>(ns),
          static_cast<uint8_t>(ar >> 8),    static_cast<uint8_t>(ar)};
}

void append(Bytes& out, std::initializer_list<uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void appendLabel(Bytes& out, std::string_view label) {
  out.push_back(static_cast<uint8_t>(label.size()));
  out.insert(out.end(), label.begin(), label.end());
}

// A query header (RD set, one question) followed by the given name bytes, qtype A, class IN.
Bytes queryWithNameBytes(std::initializer_list<uint8_t> name) {
  Bytes packet = header(0x4242, kDnsFlagRd, 1);
  append(packet, name);
  append(packet, {0x00, 0x01, 0x00, 0x01});
  return packet;
}

DnsParseError queryError(const Bytes& packet) {
  auto result = parseQuery(packet);
  EXPECT_TRUE(std::holds_alternative<DnsParseError>(result));
  return std::holds_alternative<DnsParseError>(result) ? std::get<DnsParseError>(result)
                                                       : DnsParseError::kTooShort;
}

DnsParseError responseError(const Bytes& packet) {
  auto result = parseResponse(packet);
  EXPECT_TRUE(std::holds_alternative<DnsParseError>(result));
  return std::holds_alternative<DnsParseError>(result) ? std::get<DnsParseError>(result)
                                                       : DnsParseError::kTooShort;
}

DnsQuery mustParseQuery(const Bytes& packet) {
  auto result = parseQuery(packet);
  if (auto* err = std::get_if<DnsParseError>(&result)) {
    ADD_FAILURE() << "parseQuery failed: " << describe(*err);
    return DnsQuery{};
  }
  return std::get<DnsQuery>(result);
}

DnsResponse mustParseResponse(const Bytes& packet) {
  auto result = parseResponse(packet);
  if (auto* err = std::get_if<DnsParseError>(&result)) {
    ADD_FAILURE() << "parseResponse failed: " << describe(*err);
    return DnsResponse{};
  }
  return std::get<DnsResponse>(result);
}

TEST(DnsQtype, NamesAndNumbers) {
  const std::vector<std::pair<std::string, uint16_t>> known = {
      {"A", 1},  {"AAAA", 28}, {"CNAME", 5}, {"HTTPS", 65}, {"SVCB", 64}, {"MX", 15},  {"TXT", 16},
      {"NS", 2}, {"PTR", 12},  {"SRV", 33},  {"SOA", 6},    {"CAA", 257}, {"ANY", 255}};
  for (const auto& [name, value] : known) {
    EXPECT_EQ(qtypeFromName(name), value) << name;
    EXPECT_EQ(qtypeName(value), name);
  }
  EXPECT_EQ(qtypeFromName("aaaa"), 28);
  EXPECT_EQ(qtypeName(99), "TYPE99");
  EXPECT_EQ(qtypeFromName("TYPE99"), 99);
  EXPECT_EQ(qtypeFromName("TYPE65535"), 65535);
  EXPECT_FALSE(qtypeFromName("TYPE65536").has_value());
  EXPECT_FALSE(qtypeFromName("TYPE007").has_value());
  EXPECT_FALSE(qtypeFromName("TYPE").has_value());
  EXPECT_FALSE(qtypeFromName("TYPE1x").has_value());
  EXPECT_FALSE(qtypeFromName("AXFRX").has_value());
  EXPECT_FALSE(qtypeFromName("").has_value());
  for (uint32_t t = 0; t <= 0xffff; ++t) {
    const auto type = static_cast<uint16_t>(t);
    ASSERT_EQ(qtypeFromName(qtypeName(type)), type);
  }
}

TEST(DnsParseQuery, DigQueryWithEdnsCookie) {
  ASSERT_EQ(kDigQuery.size(), 52u);
  DnsQuery query = mustParseQuery(kDigQuery);
  EXPECT_EQ(query.id, 0x1a2b);
  EXPECT_EQ(query.flags, 0x0120);
  EXPECT_EQ(query.question.name, "example.com");
  EXPECT_EQ(query.question.qtype, kDnsTypeA);
  EXPECT_EQ(query.question.qclass, kDnsClassIn);
  EXPECT_EQ(query.questionEnd, 29u);
}

TEST(DnsEdnsUdpSize, ReadsTheOptRecordsClassOrZeroWithoutOne) {
  EXPECT_EQ(ednsUdpSize(mustParseQuery(kDigQuery), kDigQuery), 1232);
  Bytes plain = buildQuery(9, "example.com", kDnsTypeA);
  EXPECT_EQ(ednsUdpSize(mustParseQuery(plain), plain), 0);
}

TEST(DnsParseQuery, LowerCasesMixedCaseName) {
  // dig +dns0x20-style mixed case: "ApI.GitHub.COM" AAAA.
  Bytes packet = header(7, kDnsFlagRd, 1);
  appendLabel(packet, "ApI");
  appendLabel(packet, "GitHub");
  appendLabel(packet, "COM");
  append(packet, {0x00, 0x00, 0x1c, 0x00, 0x01});
  DnsQuery query = mustParseQuery(packet);
  EXPECT_EQ(query.question.name, "api.github.com");
  EXPECT_EQ(query.question.qtype, kDnsTypeAaaa);
}

TEST(DnsParseQuery, RootName) {
  DnsQuery query = mustParseQuery(queryWithNameBytes({0x00}));
  EXPECT_EQ(query.question.name, ".");
  EXPECT_EQ(query.questionEnd, 17u);
}

TEST(DnsParseQuery, NameOfExactly255WireBytesIsAccepted) {
  Bytes packet = header(1, 0, 1);
  for (int i = 0; i < 3; ++i) appendLabel(packet, std::string(63, 'a'));
  appendLabel(packet, std::string(61, 'b'));  // 3*64 + 62 + 1 (root) = 255
  append(packet, {0x00, 0x00, 0x01, 0x00, 0x01});
  DnsQuery query = mustParseQuery(packet);
  EXPECT_EQ(query.question.name.size(), 253u);
}

TEST(DnsParseQuery, TruncatedHeader) {
  Bytes packet = header(1, 0, 1);
  packet.pop_back();
  EXPECT_EQ(queryError(packet), DnsParseError::kTooShort);
  EXPECT_EQ(queryError({}), DnsParseError::kTooShort);
}

TEST(DnsParseQuery, QrSet) {
  Bytes packet = kDigQuery;
  packet[2] |= 0x80;
  EXPECT_EQ(queryError(packet), DnsParseError::kNotAQuery);
}

TEST(DnsParseQuery, OpcodeNotQuery) {
  Bytes packet = kDigQuery;
  packet[2] |= 0x20;  // opcode 4, NOTIFY
  EXPECT_EQ(queryError(packet), DnsParseError::kBadOpcode);
  packet = kDigQuery;
  packet[2] |= 0x10;  // opcode 2, STATUS
  EXPECT_EQ(queryError(packet), DnsParseError::kBadOpcode);
}

TEST(DnsParseQuery, QuestionCountZeroAndTwo) {
  Bytes none = header(1, kDnsFlagRd, 0);
  EXPECT_EQ(queryError(none), DnsParseError::kQuestionCount);

  Bytes two = header(1, kDnsFlagRd, 2);
  append(two, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});
  append(two, {0x01, 'b', 0x00, 0x00, 0x01, 0x00, 0x01});
  EXPECT_EQ(queryError(two), DnsParseError::kQuestionCount);
}

TEST(DnsParseQuery, AnswerOrAuthorityRecordsInQuery) {
  Bytes packet = queryWithNameBytes({0x01, 'a', 0x00});
  packet[7] = 1;  // ancount
  EXPECT_EQ(queryError(packet), DnsParseError::kTrailingSections);
  packet[7] = 0;
  packet[9] = 1;  // nscount
  EXPECT_EQ(queryError(packet), DnsParseError::kTrailingSections);
  packet[9] = 0;
  packet[11] = 2;  // arcount 2
  EXPECT_EQ(queryError(packet), DnsParseError::kTrailingSections);
}

TEST(DnsParseQuery, TrailingBytesAfterLastSection) {
  Bytes packet = queryWithNameBytes({0x01, 'a', 0x00});
  packet.push_back(0x00);
  EXPECT_EQ(queryError(packet), DnsParseError::kTrailingSections);

  Bytes withOpt = kDigQuery;
  withOpt.push_back(0xff);
  EXPECT_EQ(queryError(withOpt), DnsParseError::kTrailingSections);
}

TEST(DnsParseQuery, AdditionalRecordMustBeOpt) {
  Bytes packet = kDigQuery;
  packet[31] = 0x01;  // OPT type 41 -> A
  EXPECT_EQ(queryError(packet), DnsParseError::kTrailingSections);

  // An OPT type under a non-root owner ("a") is not an OPT record either.
  Bytes owned = header(1, 0, 1, 0, 0, 1);
  append(owned, {0x00, 0x00, 0x01, 0x00, 0x01});
  append(owned, {0x01, 'a', 0x00, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0x00, 0x00});
  EXPECT_EQ(queryError(owned), DnsParseError::kTrailingSections);
  owned.erase(owned.begin() + 17, owned.begin() + 19);  // owner back to the root
  EXPECT_EQ(mustParseQuery(owned).questionEnd, 17u);
}

TEST(DnsParseQuery, OptRecordOverrunsPacket) {
  Bytes packet = kDigQuery;
  packet.pop_back();  // rdlength still says 12
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
  packet.resize(35);  // cut inside the OPT fixed fields
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
  packet = header(1, 0, 1, 0, 0, 1);  // arcount 1 but nothing after the question
  append(packet, {0x00, 0x00, 0x01, 0x00, 0x01});
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseQuery, CompressionLoops) {
  // A pointer to itself at offset 12.
  EXPECT_EQ(queryError(queryWithNameBytes({0xc0, 0x0c})), DnsParseError::kPointerLoop);
  // "a" then a pointer back to the start of the same name.
  EXPECT_EQ(queryError(queryWithNameBytes({0x01, 'a', 0xc0, 0x0c})), DnsParseError::kPointerLoop);
  // "a" then a pointer into its own label bytes.
  EXPECT_EQ(queryError(queryWithNameBytes({0x01, 'a', 0xc0, 0x0d})), DnsParseError::kPointerLoop);
}

TEST(DnsParseQuery, ForwardPointer) {
  // Offset 12 points at offset 14, which holds a perfectly good name: still refused.
  EXPECT_EQ(queryError(queryWithNameBytes({0xc0, 0x0e, 0x01, 'a', 0x00})), DnsParseError::kBadName);
}

TEST(DnsParseQuery, PointerOutOfBounds) {
  EXPECT_EQ(queryError(queryWithNameBytes({0xc1, 0x00})), DnsParseError::kBadName);
  EXPECT_EQ(queryError(queryWithNameBytes({0xff, 0xff})), DnsParseError::kBadName);
}

TEST(DnsParseQuery, PointerIntoHeader) {
  EXPECT_EQ(queryError(queryWithNameBytes({0xc0, 0x02})), DnsParseError::kBadName);
  // The id bytes 0x01 'a' and the zero flags byte read as the name "a" if followed: refused.
  Bytes packet = header(0x0161, 0, 1);
  append(packet, {0xc0, 0x00, 0x00, 0x01, 0x00, 0x01});
  EXPECT_EQ(queryError(packet), DnsParseError::kBadName);
}

TEST(DnsParseQuery, PointerCutInHalf) {
  Bytes packet = header(1, 0, 1);
  packet.push_back(0xc0);
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseQuery, LabelOverrunsPacket) {
  Bytes packet = header(1, 0, 1);
  append(packet, {0x05, 'a', 'b'});  // says 5 bytes, has 2
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseQuery, NameWithoutTerminator) {
  Bytes packet = header(1, 0, 1);
  append(packet, {0x01, 'a'});
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseQuery, QuestionFixedFieldsMissing) {
  Bytes packet = header(1, 0, 1);
  append(packet, {0x01, 'a', 0x00, 0x00, 0x01, 0x00});  // qclass cut short
  EXPECT_EQ(queryError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseQuery, NameOver255Bytes) {
  Bytes packet = header(1, 0, 1);
  for (int i = 0; i < 3; ++i) appendLabel(packet, std::string(63, 'a'));
  appendLabel(packet, std::string(62, 'b'));  // 3*64 + 63 + 1 = 256
  append(packet, {0x00, 0x00, 0x01, 0x00, 0x01});
  EXPECT_EQ(queryError(packet), DnsParseError::kNameTooLong);

  Bytes many = header(1, 0, 1);
  for (int i = 0; i < 200; ++i) appendLabel(many, "x");
  append(many, {0x00, 0x00, 0x01, 0x00, 0x01});
  EXPECT_EQ(queryError(many), DnsParseError::kNameTooLong);
}

TEST(DnsParseQuery, ReservedLabelTypes) {
  EXPECT_EQ(queryError(queryWithNameBytes({0x41, 0x00})), DnsParseError::kBadName);  // 0x40
  EXPECT_EQ(queryError(queryWithNameBytes({0x81, 0x00})), DnsParseError::kBadName);  // 0x80
}

TEST(DnsParseQuery, LabelBytesThatTextCannotCarry) {
  // A label containing '.' would read as two labels: "api.github" + "com" != api.github.com.
  EXPECT_EQ(queryError(queryWithNameBytes({0x0a, 'a', 'p', 'i', '.', 'g', 'i', 't', 'h', 'u', 'b',
                                           0x03, 'c', 'o', 'm', 0x00})),
            DnsParseError::kBadName);
  EXPECT_EQ(queryError(queryWithNameBytes({0x02, 'a', 0x00, 0x00})), DnsParseError::kBadName);
  EXPECT_EQ(queryError(queryWithNameBytes({0x02, 'a', ' ', 0x00})), DnsParseError::kBadName);
  EXPECT_EQ(queryError(queryWithNameBytes({0x02, 'a', 0xc3, 0x00})), DnsParseError::kBadName);
  // Underscore is fine (SRV and DMARC names use it).
  EXPECT_EQ(mustParseQuery(queryWithNameBytes({0x05, '_', 'h', 't', 't', 'p', 0x00})).question.name,
            "_http");
}

TEST(DnsParseQuery, DescribeIsDistinctForEveryError) {
  const std::vector<DnsParseError> all = {
      DnsParseError::kTooShort,      DnsParseError::kNotAQuery, DnsParseError::kBadOpcode,
      DnsParseError::kQuestionCount, DnsParseError::kBadName,   DnsParseError::kNameTooLong,
      DnsParseError::kPointerLoop,   DnsParseError::kTruncated, DnsParseError::kTrailingSections};
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_FALSE(describe(all[i]).empty());
    for (std::size_t j = 0; j < i; ++j) EXPECT_NE(describe(all[i]), describe(all[j]));
  }
}

TEST(DnsBuildQuery, RoundTripsThroughParseQuery) {
  Bytes packet = buildQuery(0xbeef, "Api.GitHub.com", kDnsTypeAaaa);
  DnsQuery query = mustParseQuery(packet);
  EXPECT_EQ(query.id, 0xbeef);
  EXPECT_EQ(query.flags, kDnsFlagRd);
  EXPECT_EQ(query.question.name, "api.github.com");
  EXPECT_EQ(query.question.qtype, kDnsTypeAaaa);
  EXPECT_EQ(query.question.qclass, kDnsClassIn);
  EXPECT_EQ(query.questionEnd, packet.size());
  // The encoder keeps the caller's case on the wire.
  EXPECT_EQ(packet[13], 'A');

  DnsQuery noRecursion = mustParseQuery(buildQuery(1, "example.com.", 65, false));
  EXPECT_EQ(noRecursion.flags, 0);
  EXPECT_EQ(noRecursion.question.name, "example.com");
  EXPECT_EQ(noRecursion.question.qtype, 65);

  EXPECT_EQ(mustParseQuery(buildQuery(2, ".", 2)).question.name, ".");
  EXPECT_EQ(mustParseQuery(buildQuery(2, "", 2)).question.name, ".");
}

TEST(DnsBuildQuery, RefusesNamesParseQueryWouldRefuse) {
  EXPECT_TRUE(buildQuery(1, "a..b", 1).empty());
  EXPECT_TRUE(buildQuery(1, "..", 1).empty());
  EXPECT_TRUE(buildQuery(1, "a..", 1).empty());
  EXPECT_TRUE(buildQuery(1, ".a", 1).empty());
  EXPECT_TRUE(buildQuery(1, std::string(64, 'a') + ".com", 1).empty());
  EXPECT_TRUE(buildQuery(1, "sp ace.com", 1).empty());
  EXPECT_FALSE(buildQuery(1, std::string(63, 'a') + ".com", 1).empty());

  const std::string longest = std::string(63, 'a') + "." + std::string(63, 'a') + "." +
                              std::string(63, 'a') + "." + std::string(61, 'a');
  EXPECT_EQ(mustParseQuery(buildQuery(1, longest, 1)).question.name, longest);
  EXPECT_TRUE(buildQuery(1, longest + "a", 1).empty());
}

TEST(DnsSetPacketId, RewritesOnlyTheId) {
  Bytes packet = kDigQuery;
  setPacketId(packet, 0xfeed);
  EXPECT_EQ(packet[0], 0xfe);
  EXPECT_EQ(packet[1], 0xed);
  EXPECT_TRUE(std::equal(packet.begin() + 2, packet.end(), kDigQuery.begin() + 2));

  Bytes tiny = {0x01};
  setPacketId(tiny, 0xffff);
  EXPECT_EQ(tiny, Bytes{0x01});
}

TEST(DnsBuildErrorResponse, RefusedRoundTripsThroughParseResponse) {
  DnsQuery query = mustParseQuery(kDigQuery);
  Bytes reply = buildErrorResponse(query, kDigQuery, DnsRcode::kRefused);
  DnsResponse response = mustParseResponse(reply);
  EXPECT_EQ(response.id, 0x1a2b);
  EXPECT_EQ(response.rcode, DnsRcode::kRefused);
  EXPECT_EQ(response.flags, kDnsFlagQr | kDnsFlagRd | kDnsFlagRa | 5);
  EXPECT_FALSE(response.truncated);
  EXPECT_EQ(response.question.name, "example.com");
  EXPECT_EQ(response.question.qtype, kDnsTypeA);
  EXPECT_EQ(response.question.qclass, kDnsClassIn);
  EXPECT_TRUE(response.answers.empty());
  // Header and question only: the OPT record is not echoed.
  EXPECT_EQ(reply.size(), query.questionEnd);
}

TEST(DnsBuildErrorResponse, KeepsClientCaseAndDropsRdWhenNotAsked) {
  Bytes packet = buildQuery(0x0102, "ExAmPlE.CoM", kDnsTypeA, /*recursionDesired=*/false);
  DnsQuery query = mustParseQuery(packet);
  Bytes reply = buildErrorResponse(query, packet, DnsRcode::kNxDomain);
  // Byte-identical question, so a resolver checking 0x20 case randomisation accepts it.
  EXPECT_TRUE(std::equal(packet.begin() + 12, packet.end(), reply.begin() + 12, reply.end()));
  DnsResponse response = mustParseResponse(reply);
  EXPECT_EQ(response.rcode, DnsRcode::kNxDomain);
  EXPECT_EQ(response.flags & kDnsFlagRd, 0);
  EXPECT_EQ(response.flags & kDnsFlagRa, kDnsFlagRa);
}

TEST(DnsBuildErrorResponse, MismatchedPacketFallsBackToParsedQuestion) {
  DnsQuery query = mustParseQuery(kDigQuery);
  Bytes other = buildQuery(9, "other.test", kDnsTypeAaaa);
  DnsResponse response = mustParseResponse(buildErrorResponse(query, other, DnsRcode::kServFail));
  EXPECT_EQ(response.id, 0x1a2b);
  EXPECT_EQ(response.rcode, DnsRcode::kServFail);
  EXPECT_EQ(response.question.name, "example.com");
  EXPECT_EQ(response.question.qtype, kDnsTypeA);

  DnsResponse fromNothing = mustParseResponse(buildErrorResponse(query, {}, DnsRcode::kRefused));
  EXPECT_EQ(fromNothing.question.name, "example.com");
}

TEST(DnsBuildHeaderOnlyResponse, EchoesIdAndOpcode) {
  Bytes notify = kDigQuery;
  notify[2] |= 0x20;  // opcode NOTIFY, which parseQuery refuses
  auto reply = buildHeaderOnlyResponse(notify, DnsRcode::kNotImp);
  ASSERT_TRUE(reply.has_value());
  ASSERT_EQ(reply->size(), 12u);
  EXPECT_EQ((*reply)[0], 0x1a);
  EXPECT_EQ((*reply)[1], 0x2b);
  EXPECT_EQ((*reply)[2], 0x80 | 0x20 | 0x01);  // QR, opcode 4, RD
  EXPECT_EQ((*reply)[3], 0x80 | 0x04);         // RA, NOTIMP
  EXPECT_EQ((*reply)[5], 0);                   // qdcount 0
  EXPECT_EQ(responseError(*reply), DnsParseError::kBadOpcode);

  Bytes response = kDigQuery;
  response[2] |= 0x80;
  EXPECT_FALSE(buildHeaderOnlyResponse(response, DnsRcode::kFormErr).has_value());
  EXPECT_FALSE(buildHeaderOnlyResponse(Bytes{1, 2, 3}, DnsRcode::kFormErr).has_value());
}

// A response to "www.example.com A":
//   www.example.com.  CNAME  cdn.example.com.   (rdata compressed against the question)
//   cdn.example.com.  A      93.184.216.34      (owner is a pointer into the CNAME rdata)
//   cdn.example.com.  AAAA   2606:2800:220:1::1
//   evil.test.        A      6.6.6.6            (not on the chain: must be ignored)
Bytes chainResponse() {
  Bytes packet = header(0x7777, kDnsFlagQr | kDnsFlagRd | kDnsFlagRa, 1, 4);
  // offset 12: question
  append(packet, {0x03, 'w', 'w', 'w'});                      // 12
  append(packet, {0x07, 'E', 'x', 'a', 'm', 'p', 'l', 'e'});  // 16: "example.com" starts here
  append(packet, {0x03, 'c', 'o', 'm', 0x00});                // 24
  append(packet, {0x00, 0x01, 0x00, 0x01});                   // 29: A IN
  // offset 33: answer 1, CNAME
  append(packet, {0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x06});
  append(packet, {0x03, 'C', 'D', 'N', 0xc0, 0x10});  // offset 45: "cdn" + pointer to 16
  // offset 51: answer 2, A for the name at 45
  append(packet, {0xc0, 0x2d, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04});
  append(packet, {93, 184, 216, 34});
  // answer 3, AAAA for the name at 45
  append(packet, {0xc0, 0x2d, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x10});
  append(packet, {0x26, 0x06, 0x28, 0x00, 0x02, 0x20, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x01});
  // answer 4, A for an unrelated name
  append(packet, {0x04, 'e', 'v', 'i', 'l', 0x04, 't', 'e', 's', 't', 0x00});
  append(packet, {0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04, 6, 6, 6, 6});
  return packet;
}

TEST(DnsParseResponse, CnameChainWithCompression) {
  DnsResponse response = mustParseResponse(chainResponse());
  EXPECT_EQ(response.id, 0x7777);
  EXPECT_EQ(response.rcode, DnsRcode::kNoError);
  EXPECT_EQ(response.question.name, "www.example.com");
  ASSERT_EQ(response.answers.size(), 4u);

  const DnsRecord& cname = response.answers[0];
  EXPECT_EQ(cname.name, "www.example.com");
  EXPECT_EQ(cname.type, kDnsTypeCname);
  EXPECT_EQ(cname.ttl, 3600u);
  EXPECT_EQ(cnameTarget(cname), "cdn.example.com");
  // Expanded, lower-cased wire form.
  EXPECT_EQ(cname.rdata,
            (Bytes{3, 'c', 'd', 'n', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0}));

  EXPECT_EQ(response.answers[1].name, "cdn.example.com");
  EXPECT_EQ(response.answers[1].ttl, 60u);
  EXPECT_EQ(response.answers[2].type, kDnsTypeAaaa);
  EXPECT_EQ(response.answers[3].name, "evil.test");
  EXPECT_FALSE(cnameTarget(response.answers[1]).has_value());

  auto v4 = ipv4Answers(response);
  ASSERT_EQ(v4.size(), 1u);
  EXPECT_EQ(v4[0], (std::array<uint8_t, 4>{93, 184, 216, 34}));
  auto v6 = ipv6Answers(response);
  ASSERT_EQ(v6.size(), 1u);
  EXPECT_EQ(v6[0][0], 0x26);
  EXPECT_EQ(v6[0][15], 0x01);
}

TEST(DnsParseResponse, CnameRdataMustBeExactlyOneName) {
  Bytes packet = chainResponse();
  packet[44] = 0x07;  // CNAME rdlength 6 -> 7: one byte of the next record counted as rdata
  EXPECT_EQ(responseError(packet), DnsParseError::kBadName);

  // The only record: CNAME rdata "b." followed by two stray bytes inside rdlength.
  Bytes extra = header(1, kDnsFlagQr, 1, 1);
  append(extra, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});
  append(extra, {0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x05, 0x01, 'b', 0x00});
  append(extra, {'x', 'y'});
  EXPECT_EQ(responseError(extra), DnsParseError::kBadName);
  extra[30] = 0x03;  // rdlength 5 -> 3: now exact, with two bytes after the last record
  EXPECT_EQ(mustParseResponse(extra).answers.size(), 1u);
}

TEST(DnsParseResponse, CnameLoopInAnswersTerminates) {
  // a.test CNAME b.test, b.test CNAME a.test, plus an A for b.test.
  Bytes packet = header(1, kDnsFlagQr, 1, 3);
  append(packet, {0x01, 'a', 0x04, 't', 'e', 's', 't', 0x00, 0x00, 0x01, 0x00, 0x01});  // 12..23
  append(packet, {0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x04});
  append(packet, {0x01, 'b', 0xc0, 0x0e});  // offset 36: "b.test"
  append(packet, {0xc0, 0x24, 0x00, 0x05, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x02, 0xc0, 0x0c});
  append(packet, {0xc0, 0x24, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x04, 10, 0, 0, 1});
  DnsResponse response = mustParseResponse(packet);
  ASSERT_EQ(response.answers.size(), 3u);
  EXPECT_EQ(cnameTarget(response.answers[1]), "a.test");
  auto v4 = ipv4Answers(response);
  ASSERT_EQ(v4.size(), 1u);
  EXPECT_EQ(v4[0], (std::array<uint8_t, 4>{10, 0, 0, 1}));
}

TEST(DnsParseResponse, AddressHelpersSkipWrongClassOrLength) {
  // Three answers for the question name "a": A in class CH, A with 5 bytes of rdata, AAAA with
  // 4 bytes; none is an address the helpers may return. Then one good A.
  Bytes packet = header(5, kDnsFlagQr, 1, 4);
  append(packet, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});
  append(packet, {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x04, 1, 1, 1, 1});
  append(packet, {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x05, 2, 2, 2, 2, 2});
  append(packet, {0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x04, 3, 3, 3, 3});
  append(packet, {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 1, 0x00, 0x04, 4, 4, 4, 4});
  DnsResponse response = mustParseResponse(packet);
  ASSERT_EQ(response.answers.size(), 4u);
  auto v4 = ipv4Answers(response);
  ASSERT_EQ(v4.size(), 1u);
  EXPECT_EQ(v4[0], (std::array<uint8_t, 4>{4, 4, 4, 4}));
  EXPECT_TRUE(ipv6Answers(response).empty());
}

TEST(DnsParseResponse, RecordCap) {
  constexpr uint16_t kSent = 300;
  Bytes packet = header(2, kDnsFlagQr, 1, kSent);
  append(packet, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});
  for (uint16_t i = 0; i < kSent; ++i) {
    append(packet, {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 5, 0x00, 0x04, 10, 0,
                    static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)});
  }
  DnsResponse response = mustParseResponse(packet);
  EXPECT_EQ(response.answers.size(), kMaxDnsAnswerRecords);
  EXPECT_EQ(ipv4Answers(response).size(), kMaxDnsAnswerRecords);

  // Records past the cap are never read, so a header that overstates the count is harmless.
  Bytes overstated = header(2, kDnsFlagQr, 1, 0xffff);
  append(overstated, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});
  for (std::size_t i = 0; i < kMaxDnsAnswerRecords; ++i) {
    append(overstated, {0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 5, 0x00, 0x04, 10, 0, 0, 1});
  }
  EXPECT_EQ(mustParseResponse(overstated).answers.size(), kMaxDnsAnswerRecords);
}

TEST(DnsParseResponse, RecordOverrunsPacket) {
  Bytes packet = chainResponse();
  packet.pop_back();
  EXPECT_EQ(responseError(packet), DnsParseError::kTruncated);
  packet.resize(40);  // inside the first record's fixed fields
  EXPECT_EQ(responseError(packet), DnsParseError::kTruncated);
}

TEST(DnsParseResponse, TruncatedFlagKeepsCompleteRecords) {
  const Bytes full = chainResponse();
  constexpr std::size_t kLastRecordStart = 95;  // "evil.test" A: 11 + 10 + 4 bytes
  ASSERT_EQ(full.size(), kLastRecordStart + 25);
  // Cut anywhere in the last record: inside its owner name, its fixed fields or its rdata.
  for (std::size_t size = kLastRecordStart; size < full.size(); ++size) {
    Bytes packet(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
    EXPECT_EQ(responseError(packet), DnsParseError::kTruncated) << size;
    packet[2] |= 0x02;  // TC
    DnsResponse response = mustParseResponse(packet);
    EXPECT_TRUE(response.truncated);
    EXPECT_EQ(response.answers.size(), 3u) << size;
  }
}

TEST(DnsParseResponse, HeaderErrors) {
  EXPECT_EQ(responseError(Bytes(11, 0)), DnsParseError::kTooShort);
  EXPECT_EQ(responseError(kDigQuery), DnsParseError::kNotAQuery);
  Bytes packet = chainResponse();
  packet[5] = 0;  // qdcount 0
  EXPECT_EQ(responseError(packet), DnsParseError::kQuestionCount);
  packet = chainResponse();
  packet[2] |= 0x28;  // opcode 5 (UPDATE)
  EXPECT_EQ(responseError(packet), DnsParseError::kBadOpcode);
}

TEST(DnsParseResponse, OutOfRangeRcodeIsKept) {
  Bytes packet = chainResponse();
  packet[3] = (packet[3] & 0xf0) | 0x09;  // NOTAUTH
  EXPECT_EQ(static_cast<int>(mustParseResponse(packet).rcode), 9);
}

TEST(DnsParseResponse, PointerLoopBetweenTwoNames) {
  // Answer 2's owner (offset 30) points back to 28, and the bytes at 28 (answer 1's TXT rdata)
  // point forward to 30 again.
  Bytes packet = header(3, kDnsFlagQr, 1, 2);
  append(packet, {0x00, 0x00, 0x01, 0x00, 0x01});  // 12..16: question for the root
  // 17: answer 1, owner root, TXT, rdlength 2, rdata (28..29) = pointer to 30.
  append(packet, {0x00, 0x00, 0x10, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x02, 0xc0, 0x1e});
  // 30: answer 2, owner = pointer to 28.
  append(packet, {0xc0, 0x1c, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x04, 1, 2, 3, 4});
  EXPECT_EQ(responseError(packet), DnsParseError::kPointerLoop);
}

TEST(DnsParseResponse, PointerChainLongerThanCapIsRejected) {
  // TXT rdata holding a chain of pointers, each pointing at the previous one; the first points
  // at the question name. The next record's owner enters the chain at its far end.
  auto build = [](std::size_t links) {
    Bytes packet = header(4, kDnsFlagQr, 1, 2);
    append(packet, {0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01});  // 12: question "a"
    const std::size_t rdataStart = packet.size() + 12;          // owner, type, class, ttl, rdlength
    const std::size_t rdlength = 2 * links;
    append(packet, {0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01, 0, 0, 0, 0,
                    static_cast<uint8_t>(rdlength >> 8), static_cast<uint8_t>(rdlength)});
    for (std::size_t i = 0; i < links; ++i) {
      const std::size_t target = i == 0 ? 12 : rdataStart + 2 * (i - 1);
      append(packet, {static_cast<uint8_t>(0xc0 | (target >> 8)), static_cast<uint8_t>(target)});
    }
    const std::size_t last = rdataStart + 2 * (links - 1);
    append(packet, {static_cast<uint8_t>(0xc0 | (last >> 8)), static_cast<uint8_t>(last), 0x00,
                    0x01, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x04, 1, 2, 3, 4});
    return packet;
  };
  // The owner's own pointer plus `links` more: 127 jumps is the most allowed.
  EXPECT_EQ(mustParseResponse(build(126)).answers.at(1).name, "a");
  EXPECT_EQ(responseError(build(127)), DnsParseError::kPointerLoop);
  EXPECT_EQ(responseError(build(1000)), DnsParseError::kPointerLoop);
}

}  // namespace
}  // namespace cellos::core
